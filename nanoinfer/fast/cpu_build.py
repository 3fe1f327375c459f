"""Build a C source file of this package into a shared library with the system compiler, once.

The CPU kernels (``attention/cpu_backend.c``, ``fast/small_ops_cpu.c``) are compiled the first time they
are needed (``cc``, OpenMP) and cached under ``$NANOINFER_CACHE/kernels``, keyed by the source, the flags
and the CPU's instruction sets. Without a compiler, or when the build fails, callers get None and use torch.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

# -ffast-math at compile time only (vectorised expf, reassociated sums): linked in, it would switch the
# whole process's floating point to flush-to-zero, under torch and everything else.
COMPILE_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC", "-c"]
if platform.machine() in ("x86_64", "AMD64"):
    COMPILE_FLAGS.insert(2, "-mprefer-vector-width=512")  # AVX-512 where the CPU has it
LINK_FLAGS = ["-shared", "-fopenmp", "-lm"]
_build_lock = threading.Lock()


def float32_cpu(*tensors) -> bool:
    """The C kernels take float32 CPU tensors only (a GPU pointer would crash them)."""
    return all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)


def _cpu_signature() -> str:
    """-march=native binaries are only valid on CPUs with the same instruction sets."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = platform.processor()
    return hashlib.sha256(f"{platform.machine()} {flags}".encode()).hexdigest()[:8]


def _compile(compiler: list[str], source: Path, path: Path) -> str | None:
    """Compile and link into ``path``; the compiler's complaint on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".so.tmp")
    os.close(fd)
    obj = tmp.removesuffix(".so.tmp") + ".o"
    try:
        for command in ([*compiler, *COMPILE_FLAGS, str(source), "-o", obj],
                        [*compiler, obj, *LINK_FLAGS, "-o", tmp]):
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                return f"{' '.join(command)}: {result.stderr.strip()[:500]}"
        os.replace(tmp, path)  # atomic: another process sees no file or the whole file
        return None
    finally:
        for leftover in (obj, tmp):
            if os.path.exists(leftover):
                os.unlink(leftover)


class ProfiledFunction:
    """A C function that shows in torch.profiler as a ``cpu_kernel::NAME`` range while a profiler runs (torch
    cannot see into ctypes calls otherwise); ``argtypes``/``restype`` pass through to the function."""

    __slots__ = ("_fn", "_label")

    def __init__(self, name: str, fn) -> None:
        object.__setattr__(self, "_fn", fn)
        object.__setattr__(self, "_label", f"cpu_kernel::{name}")

    def __call__(self, *args):
        if not torch.autograd.profiler._is_profiler_enabled and not torch._C._autograd._profiler_enabled():
            return self._fn(*args)
        with torch.profiler.record_function(self._label):
            return self._fn(*args)

    def __getattr__(self, name: str):
        return getattr(self._fn, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._fn, name, value)


class ProfiledLibrary:
    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib, self._functions = lib, {}

    def __getattr__(self, name: str) -> ProfiledFunction:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._functions:
            self._functions[name] = ProfiledFunction(name, getattr(self._lib, name))
        return self._functions[name]


def build_and_load(source: Path, what: str) -> ProfiledLibrary | None:
    """The library built from ``source``, compiled if the cache has none; None when it cannot be built (a warning
    names ``what`` the first time; a marker file keeps later processes from trying again). Callers cache it."""
    from nanoinfer.tools.convert import cache_dir

    compiler = shlex.split(os.environ.get("CC", "")) or [shutil.which("cc") or shutil.which("gcc") or ""]
    if not compiler[0] or shutil.which(compiler[0]) is None:
        return None
    key = hashlib.sha256(source.read_bytes() + " ".join([*compiler, *COMPILE_FLAGS, *LINK_FLAGS]).encode())
    path = cache_dir() / "kernels" / f"{source.stem}-{key.hexdigest()[:12]}-{_cpu_signature()}.so"
    failed = path.with_suffix(".failed")
    try:
        with _build_lock:
            if failed.exists():
                return None
            if not path.exists():
                error = _compile(compiler, source, path)
                if error is not None:
                    failed.write_text(error)
                    warnings.warn(f"could not build {what} ({error}); using torch instead (delete {failed} to try "
                                  "again)")
                    return None
        # torch has loaded its own libgomp.so.1; the kernels' OpenMP calls resolve to it: one thread pool
        return ProfiledLibrary(ctypes.CDLL(str(path)))
    except (OSError, subprocess.SubprocessError) as error:
        warnings.warn(f"could not build or load {what}: {error}; using torch instead")
        return None
