"""``python -m nanoinfer.serve [model] [--port 8000]``: an OpenAI-compatible server (nanoinfer/serving/server.py).

    python -m nanoinfer.serve                       # the default model, SmolLM2-135M-Instruct, on 127.0.0.1:8000
    python -m nanoinfer.serve path/to/hf_dir --port 8001 --knob max_num_seqs=8 --knob num_kvcache_blocks=256

SIGINT or SIGTERM: stop taking requests, let those in flight finish for up to --shutdown-timeout seconds,
abort the rest, free the KV cache and exit (the last line on stderr says how many blocks are free).
"""

from __future__ import annotations

import argparse
import ast
import signal
import sys
from pathlib import Path


def parse_knob(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--knob takes NAME=VALUE (an EngineConfig field), got {text!r}")
    try:
        return name.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name.strip(), value  # a plain string: device=cpu


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default=None, help="a Hugging Face directory (default: the embedded model)")
    p.add_argument("--host", default="127.0.0.1"), p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None, help="the name clients ask for (default: the directory's)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests held beyond max_num_seqs before the server answers 503")
    p.add_argument("--shutdown-timeout", type=float, default=10.0,
                   help="seconds in-flight requests get to finish on SIGINT/SIGTERM before they are aborted")
    p.add_argument("--knob", type=parse_knob, action="append", default=[], metavar="NAME=VALUE",
                   help="an engine knob (EngineConfig field), repeatable")
    args = p.parse_args(argv)
    if args.max_queue < 0:
        p.error(f"--max-queue must be >= 0, got {args.max_queue}")

    import uvicorn

    from nanoinfer import LLM
    from nanoinfer.serving.async_llm import AsyncLLM
    from nanoinfer.serving.server import build_app

    llm = LLM(args.model, **dict(args.knob))
    name = args.served_model_name or Path(str(llm.engine.model_dir or args.model or "nanoinfer")).name
    async_llm = AsyncLLM(llm)
    app = build_app(async_llm, name, args.max_queue, args.shutdown_timeout)
    # uvicorn handles SIGINT/SIGTERM (closes the listener, waits for the connections, runs the lifespan's
    # end), then raises the signal again for the handler it found: ours lets the clean-up below run.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                    timeout_graceful_shutdown=args.shutdown_timeout)
    finally:
        if async_llm.running:
            async_llm.stop_now()
        bm = llm.block_manager
        print(f"nanoinfer.serve: stopped; KV blocks free: {bm.num_free_blocks}/{bm.num_blocks}", file=sys.stderr,
              flush=True)
        llm.shutdown()


if __name__ == "__main__":
    main()
