"""Execute notebooks top to bottom in a plain Python process: for machines without Jupyter (the lent GPU
machines), where nbval and nbconvert cannot run.

    python3 scripts/run_notebook.py notebooks/03_gpu_execution.ipynb --out $OUT

Each notebook's code cells run in order in one namespace, with the notebook's folder as the working
directory, ``display()`` printing a text form, matplotlib drawing off-screen and IPython magics skipped.
An executed copy (text outputs, per-cell seconds) and a summary line per notebook go to ``--out``; the exit
status is 1 if any cell raised (the run of that notebook stops there, the next one still runs).

The default model's GGUF is too big to carry to those machines. ``--default-model-from DIR`` (a folder with
the converted model's config.json and tokenizer files, no weights) puts that model, with random weights of
the same shape, where ``LLM()`` looks for it (``$NANOINFER_CACHE``): speeds and shapes are the real model's,
generated text is noise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import time
import traceback
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def install_default_model(source: Path) -> Path:
    """Copy config and tokenizer from ``source`` into the cache and write random weights of that shape."""
    sys.path.insert(0, str(ROOT))
    from nanoinfer.tools.convert import DEFAULT_MODEL_NAME, cache_dir

    out = cache_dir() / DEFAULT_MODEL_NAME
    if (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, out / f.name)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out), dtype=torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    shutil.copy(source / "config.json", out / "config.json")  # save_pretrained rewrites it
    return out


class _Widgets(types.ModuleType):
    """Enough of ipywidgets for a notebook's sliders: ``interactive(f, x=Slider(value=v))`` calls ``f(v)``."""

    def __getattr__(self, name):
        if name.startswith("__"):  # (a module's dunders: importers probe __file__, __spec__, ...)
            raise AttributeError(name)
        if name == "interactive":
            return lambda fn, **kw: fn(**{k: getattr(w, "value", w) for k, w in kw.items()})
        return lambda *a, value=None, **kw: types.SimpleNamespace(value=value)


def text_of(obj) -> str:
    if hasattr(obj, "to_string"):
        return obj.to_string()
    return repr(obj)


def run_notebook(path: Path, out_dir: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.show = lambda *a, **k: plt.close("all")
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        sys.modules["ipywidgets"] = _Widgets("ipywidgets")

    nb = json.loads(path.read_text())
    namespace: dict = {"__name__": "__main__"}
    namespace["display"] = lambda *objs, **kw: [print(text_of(o)) for o in objs]
    cwd, ok, seconds = os.getcwd(), True, []
    os.chdir(path.parent)
    sys.path[:0] = [str(ROOT), str(path.parent)]
    try:
        for index, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            lines = "".join(cell["source"]).splitlines()
            source = "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))
            buffer = io.StringIO()
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                try:
                    value = run_cell(source, namespace, f"{path.name}[cell {index}]")
                    if value is not None:
                        print(text_of(value))
                except Exception:
                    traceback.print_exc()
                    ok = False
            seconds.append(time.perf_counter() - t0)
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": buffer.getvalue()}]
            cell["execution_count"] = len(seconds)
            cell.setdefault("metadata", {})["seconds"] = round(seconds[-1], 2)
            print(f"  cell {index:>3}: {seconds[-1]:7.2f} s{'' if ok else '  FAILED'}", flush=True)
            if not ok:
                print(buffer.getvalue()[-4000:], flush=True)
                break
    finally:
        os.chdir(cwd)
        plt.close("all")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / path.name).write_text(json.dumps(nb, indent=1))
    print(f"{path.name}: {'ok' if ok else 'FAILED'}, {len(seconds)} code cells, {sum(seconds):.1f} s of cell time",
          flush=True)
    return ok


def run_cell(source: str, namespace: dict, name: str):
    """Run a cell; return the value of its last line when that is an expression (as Jupyter shows it). A
    top-level ``await`` (as IPython allows) runs in an event loop of the cell's own."""
    import ast
    import asyncio
    import inspect

    def run(code):
        result = eval(code, namespace)
        return asyncio.run(result) if inspect.iscoroutine(result) else result

    tree = ast.parse(source)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    run(compile(tree, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT))
    return None if last is None else run(compile(ast.Expression(last.value), name, "eval",
                                                 flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("executed"))
    parser.add_argument("--default-model-from", type=Path, default=None)
    args = parser.parse_args()
    if args.default_model_from:
        print("default model (random weights):", install_default_model(args.default_model_from), flush=True)
    results = [run_notebook(nb.resolve(), args.out) for nb in args.notebooks]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
