"""Tensor-parallel worker processes: ranks 1..N-1 are spawned here, each runs its shard of the model and serves
the calls that rank 0 (runner.py, in the caller's process) sends through a pipe just before it runs them itself.

Processes never outlive the engine: ``shutdown`` (also at interpreter exit) stops them, each worker exits
when its pipe closes, and on Linux the kernel kills a worker whose parent dies. A watchdog thread sees a
worker die and turns the stuck or failing collective into a clear error within seconds.
"""

from __future__ import annotations

import atexit
import ctypes
import faulthandler
import os
import signal
import socket
import sys
import threading
import time
import traceback
import weakref
from contextlib import suppress
from datetime import timedelta
from multiprocessing.connection import wait

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nanoinfer.engine.model_runner import ModelRunner
from nanoinfer.parallel.comm import comm_stats, peer_all_reduce_enabled, set_tensor_parallel
from nanoinfer.parallel.peer_memory import (alternate_output_slots, disable_peer_all_reduce, enable_peer_all_reduce,
                                            peer_buffer_kept)
from nanoinfer.workbook.registry import select_exercises, selected

COLLECTIVE_TIMEOUT = timedelta(seconds=120)  # a last resort: the watchdog normally reports dead ranks first


class WorkerDied(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_rank(rank: int, size: int, port: int, device: torch.device, dtype: torch.dtype, timed: bool = False,
              all_reduce: str = "auto") -> None:
    """Join the tensor-parallel group: NCCL between GPUs, gloo between CPU processes. On GPUs, small all-reduces
    then go through peer memory where the GPUs allow it (peer_memory.py, the ``all_reduce`` knob)."""
    set_tensor_parallel(rank, size)
    comm_stats.reset()
    comm_stats.timed = timed
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # When a rank dies, collectives already queued on the others never finish. PyTorch's default (3)
        # kills the process when NCCL's watchdog times them out; 2 aborts the communicator and lets the
        # caller, which has already raised WorkerDied, live on (the user's own choice wins).
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")
    else:  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // size))
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size,
                            timeout=COLLECTIVE_TIMEOUT, **({"device_id": device} if device.type == "cuda" else {}))
    if device.type == "cuda":
        enable_peer_all_reduce(device, dtype, all_reduce)


def parameter_summary(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], float]]:
    """Each parameter's shape and float64 sum on this rank: which piece of each weight the rank holds."""
    return {name: (tuple(p.shape), p.double().sum().item()) for name, p in model.named_parameters()}


def rank_device(device_type: str, rank: int) -> torch.device:
    return torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")


def worker_main(rank: int, size: int, port: int, config, hf_config, model_dir, device_type: str, dtype, exercises,
                conn) -> None:
    """A worker's whole life: join the group, build its ModelRunner shard, then serve calls until told to stop
    or until the pipe to rank 0 closes. ``exercises``: those rank 0 runs the learner's code for, imported here
    afresh from disk (a notebook that has not reloaded an edited module runs the old code on rank 0 only)."""
    if sys.platform.startswith("linux"):  # the kernel kills this process when its parent dies, even by SIGKILL
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>` prints where a stuck rank is, to the caller's stderr
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    conn.send(("spawned", None))
    try:
        select_exercises(*exercises)
        device = rank_device(device_type, rank)
        init_rank(rank, size, port, device, dtype, config.measure_communication, config.all_reduce)
        runner = ModelRunner(config, hf_config, model_dir, device, dtype)
        alternate_output_slots(runner.model)
        conn.send(("ready", None))
        while True:
            try:
                method, args, reply = conn.recv()
            except EOFError:  # rank 0 is gone
                break
            if method == "shutdown":
                runner.release()  # CUDA graphs that captured NCCL calls must go before the communicator
                disable_peer_all_reduce()
                dist.destroy_process_group()  # together with every other rank: see WorkerGroup.shutdown
                break
            if method == "parameter_summary":  # (the model's, not the runner's: see ParallelModelRunner)
                result = parameter_summary(runner.model)
            else:
                result = getattr(runner, method)(*args)
            if reply:
                conn.send(("ok", result))
    except BaseException:  # report, then exit: rank 0's collectives fail as this process's sockets close
        with suppress(Exception):
            conn.send(("error", traceback.format_exc()))
        os._exit(1)
    os._exit(0)


class WorkerGroup:
    """Ranks 1..size-1 of one engine. Creating it also makes the calling process rank 0 of the group."""

    def __init__(self, config, hf_config, model_dir, device: torch.device, dtype: torch.dtype) -> None:
        self.size = size = config.tensor_parallel_size
        self.closed = False
        self.failure: str | None = None
        self._threads = torch.get_num_threads()  # rank 0 shares the cores while the group lives
        port = free_port()
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for rank in range(1, size):
            parent, child = ctx.Pipe()
            args = (rank, size, port, config, hf_config, model_dir, device.type, dtype, sorted(selected()), child)
            proc = ctx.Process(target=worker_main, name=f"nanoinfer-tp{rank}", daemon=True, args=args)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        self._finalizer = weakref.finalize(self, _stop, self.conns, self.procs)
        atexit.register(self._finalizer)
        try:
            for rank, conn in enumerate(self.conns, start=1):
                self._await_spawned(rank, conn)
            init_rank(0, size, port, device, dtype, config.measure_communication, config.all_reduce)
            for rank, conn in enumerate(self.conns, start=1):
                self._receive(rank, conn)  # "ready": its shard is loaded
        except BaseException:
            self.shutdown()
            raise
        threading.Thread(target=self._watch, name="nanoinfer-tp-watchdog", daemon=True).start()

    def _await_spawned(self, rank: int, conn, timeout: float = 300.0) -> None:
        """Wait until a new worker has started Python and unpickled its arguments."""
        proc = self.procs[rank - 1]
        if wait([conn, proc.sentinel], timeout=timeout) and conn.poll():
            with suppress(EOFError):  # it died before saying anything
                if conn.recv()[0] == "spawned":
                    return
        proc.join(timeout=5)
        hint = ("; if this runs from a script, create the LLM under `if __name__ == '__main__':` (workers are "
                "spawned processes and import the main module again)") if proc.exitcode == 1 else ""
        raise WorkerDied(f"tensor-parallel rank {rank} exited during start-up (exit code {proc.exitcode}){hint}")

    def call(self, method: str, *args, reply: bool = False) -> None:
        """Start ``method(*args)`` on every worker (rank 0 runs it itself right after)."""
        self.check()
        for rank, conn in enumerate(self.conns, start=1):
            try:
                conn.send((method, args, reply))
            except (BrokenPipeError, ConnectionResetError, EOFError):
                self._raise_dead(rank)

    def replies(self) -> list:
        """The results of the last ``call(..., reply=True)``, one per worker."""
        return [self._receive(rank, conn) for rank, conn in enumerate(self.conns, start=1)]

    def _receive(self, rank: int, conn):
        try:
            kind, payload = conn.recv()
        except (EOFError, ConnectionResetError):
            self._raise_dead(rank)
        if kind == "error":
            self.failure = f"tensor-parallel rank {rank} failed:\n{payload}"
            self.shutdown()
            raise WorkerDied(self.failure)
        return payload

    def _watch(self) -> None:
        """If a worker dies while the group is live: record why, and abort NCCL so rank 0's collective raises."""
        sentinels = {p.sentinel: (rank, p) for rank, p in enumerate(self.procs, start=1)}
        ready = wait(list(sentinels))
        if self.closed:
            return
        rank, proc = sentinels[ready[0]]
        proc.join(timeout=1)
        self.failure = f"tensor-parallel rank {rank} (pid {proc.pid}) died with exit code {proc.exitcode}"
        # Aborting NCCL makes rank 0's NCCL kernels return. Not with the peer-memory all-reduce: its kernel
        # cannot be aborted, and the abort can block behind it (rank 0 polls its step and sees the failure).
        abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
        if (abort is not None and dist.is_initialized() and dist.get_backend() == "nccl"
                and not peer_all_reduce_enabled()):
            with suppress(Exception):
                abort()

    def check(self) -> None:
        """Raise WorkerDied if a worker has failed (the watchdog records it) or the group was shut down."""
        if self.failure:
            raise WorkerDied(self.failure + "; create a new LLM")
        if self.closed:
            raise WorkerDied("the tensor-parallel workers were shut down; create a new LLM")

    def _raise_dead(self, rank: int):
        proc = self.procs[rank - 1]
        proc.join(timeout=5)
        self.failure = self.failure or f"tensor-parallel rank {rank} (pid {proc.pid}) died with exit code {proc.exitcode}"
        self.shutdown()
        raise WorkerDied(self.failure)

    def explain(self, error: BaseException) -> BaseException:
        """Turn an error out of a collective into the worker failure that caused it, if any. The socket
        of a killed worker can close a moment before the process is reaped, so give the watchdog time."""
        deadline = time.monotonic() + 3.0
        while self.failure is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.failure is None:
            return error
        self.shutdown()
        return WorkerDied(self.failure)

    def shutdown(self) -> None:
        """All ranks tear the group down together (NCCL's teardown waits for its peers), then the workers exit.
        After a GPU failure the NCCL group stays (a teardown would wait for the dead rank): use a new process."""
        if self.closed:
            return
        self.closed = True
        if dist.is_initialized():
            if self.failure is None:
                for conn in self.conns:
                    with suppress(Exception):
                        conn.send(("shutdown", (), False))
            disable_peer_all_reduce(after_failure=self.failure is not None)
            if self.failure is None or dist.get_backend() != "nccl":  # gloo's teardown never waits
                with suppress(Exception):
                    dist.destroy_process_group()
            elif peer_buffer_kept():  # this GPU never leaves that kernel: CUDA's teardown at exit would wait
                atexit.register(_exit_without_gpu_teardown)
        self._finalizer()
        set_tensor_parallel(0, 1)
        comm_stats.reset()
        comm_stats.timed = False
        torch.set_num_threads(self._threads)


def _exit_without_gpu_teardown() -> None:
    """At exit after a rank died with the peer-memory all-reduce on: end the process at once (status 1, later
    atexit handlers skipped) instead of waiting for a kernel that waits for the dead rank."""
    sys.stdout.flush()
    print("nanoinfer: a tensor-parallel rank died; exiting without GPU teardown", file=sys.stderr, flush=True)
    os._exit(1)


def _stop(conns, procs) -> None:
    """Stop every worker: ask politely, then terminate, then kill. Safe to call twice."""
    for conn in conns:
        with suppress(Exception):
            conn.send(("shutdown", (), False))
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    for conn in conns:
        conn.close()
