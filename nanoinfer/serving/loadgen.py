"""A load generator: requests at Poisson arrival times, in process or over HTTP, and what latency they saw.

    arrival_times(rate, n, rng)          a Poisson process: independent exponential gaps of mean 1/rate
    simulate_arrivals(llm, ...)          continuous batching: the engine's step loop, each request added
                                         when its time comes, so it joins the running batch at the next step
    static_batching(llm, ...)            the baseline: wait for a batch (or a timeout), run it to completion,
                                         then take the next; who arrives meanwhile waits for the whole batch
    compare_batching(llm, ...)           both at the same rates: the Orca lesson, measured, as a DataFrame
    http_load(base_url, ...)             the same arrivals sent to the server (python -m nanoinfer.serve)

``arrival_times`` and ``simulate_arrivals`` are Exercise 8.3's reference; ``compare_batching`` runs the
learner's when 8.3 is selected. A request's arrival time is when it
was due, not when the loop got round to adding it: a request that arrives during a step waits for it, and its
time to first token counts that wait, as a client's would.

    python -m nanoinfer.serving.loadgen --duration 60 --rates 0.5,1,2    # the default model, in process
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import deque

import numpy as np

from nanoinfer.sampling_params import SamplingParams

PERCENTILES = (50, 90, 99)


def arrival_times(rate: float, num_requests: int, rng: np.random.Generator) -> np.ndarray:
    """Seconds from the start at which each of ``num_requests`` requests arrives: a Poisson process of
    ``rate`` requests per second has independent exponential gaps of mean 1/rate (the first one too)."""
    if not rate > 0:
        raise ValueError(f"rate must be > 0 requests per second, got {rate!r}")
    return np.cumsum(rng.exponential(1.0 / rate, size=num_requests))


def summarize(frame, seconds: float) -> dict:
    """Latency percentiles (TTFT, TPOT, end to end) and throughput of one run's requests: ``frame`` has the
    columns of RequestMetrics.as_dict (ttft_s, tpot_s, e2e_s, output_tokens); ``seconds``: the run's length."""
    out: dict = {"requests": len(frame), "seconds": seconds}
    for name in ("ttft", "tpot", "e2e"):
        values = frame[f"{name}_s"].dropna().to_numpy(dtype=float) if len(frame) else np.array([])
        for q in PERCENTILES:
            out[f"{name}_p{q}"] = float(np.percentile(values, q)) if len(values) else float("nan")
    out["output_tokens"] = int(frame["output_tokens"].sum()) if len(frame) else 0
    out["throughput_tok_s"] = out["output_tokens"] / seconds if seconds > 0 else float("nan")
    out["throughput_req_s"] = len(frame) / seconds if seconds > 0 else float("nan")
    return out


def _add(engine, prompt: list[int], params: SamplingParams, due: float):
    seq = engine.add_request(prompt, params, prompt)
    seq.metrics.arrival_time = due  # it arrived when it was due, even if a step was running then
    return seq


def metrics_frame(seqs):
    """The engine's per-request metrics (RequestMetrics.as_dict) of these sequences, one row each."""
    import pandas as pd

    return pd.DataFrame([s.metrics.as_dict() for s in seqs], columns=["prompt_tokens", "output_tokens",
                        "cached_tokens", "preemptions", "ttft_s", "tpot_s", "e2e_s"])


def _params(sampling_params, n: int) -> list[SamplingParams]:
    return list(sampling_params) if isinstance(sampling_params, (list, tuple)) else [sampling_params] * n


def simulate_arrivals(llm, prompts: list[list[int]], sampling_params, times) -> dict:
    """Continuous batching under arrivals: request i (token ids ``prompts[i]``) arrives ``times[i]`` seconds
    after the start and is added to the engine then; the loop steps while anything runs and sleeps until
    the next arrival when nothing does. Returns ``summarize`` of the requests' own RequestMetrics."""
    engine, params = llm.engine, _params(sampling_params, len(prompts))
    seqs, i, start = [], 0, time.perf_counter()
    try:
        while i < len(times) or engine.has_unfinished_requests():
            now = time.perf_counter()
            while i < len(times) and start + times[i] <= now:  # everything due joins at the next step
                seqs.append(_add(engine, prompts[i], params[i], start + times[i]))
                i += 1
            if engine.has_unfinished_requests():
                engine.step()
            elif i < len(times):
                time.sleep(max(0.0, start + times[i] - time.perf_counter()))
    except BaseException:
        engine.abort_all()
        raise
    return summarize(metrics_frame(seqs), time.perf_counter() - start)


def static_batching(llm, prompts: list[list[int]], sampling_params, times, batch_size: int,
                    max_wait: float) -> dict:
    """The baseline: a batch starts when ``batch_size`` requests wait or the oldest has waited ``max_wait``
    seconds, and runs to completion before the next starts (finished requests leave, but nobody joins:
    that is what continuous batching changes). Same result format as ``simulate_arrivals``."""
    if batch_size < 1 or max_wait < 0:
        raise ValueError(f"batch_size must be >= 1 and max_wait >= 0, got {batch_size} and {max_wait}")
    engine, params = llm.engine, _params(sampling_params, len(prompts))
    seqs, queue, i, start = [], deque(), 0, time.perf_counter()
    try:
        while i < len(times) or queue:
            now = time.perf_counter()
            while i < len(times) and start + times[i] <= now:
                queue.append(i)
                i += 1
            ready = queue and (len(queue) >= batch_size or now >= start + times[queue[0]] + max_wait
                               or i == len(times))
            if ready:
                batch = [queue.popleft() for _ in range(min(batch_size, len(queue)))]
                seqs += [_add(engine, prompts[j], params[j], start + times[j]) for j in batch]
                while engine.has_unfinished_requests():
                    engine.step()
            else:
                wake = [start + times[i]] if i < len(times) else []
                wake += [start + times[queue[0]] + max_wait] if queue else []
                time.sleep(max(0.0, min(wake) - time.perf_counter()))
    except BaseException:
        engine.abort_all()
        raise
    return summarize(metrics_frame(seqs), time.perf_counter() - start)


def random_prompts(rng: np.random.Generator, num_requests: int, vocab_size: int, min_len: int = 16,
                   max_len: int = 64) -> list[list[int]]:
    """Token-id prompts of random lengths (no shared prefixes: the prefix cache stays out of it)."""
    return [rng.integers(0, vocab_size, size=int(rng.integers(min_len, max_len + 1))).tolist()
            for _ in range(num_requests)]


def compare_batching(llm, rates, duration: float, max_requests: int, output_len: int = 32,
                     batch_size: int = 8, max_wait: float = 1.0, seed: int = 0):
    """Continuous against static batching at each rate, on the same arrivals and prompts (bounded by
    ``duration`` seconds of arrivals and ``max_requests``): one row per (rate, mode)."""
    import pandas as pd

    from nanoinfer.workbook.registry import learner_code

    draw, simulate = learner_code("8.3", arrival_times), learner_code("8.3", simulate_arrivals)  # Exercise 8.3
    rows = []
    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    for rate in rates:
        rng = np.random.default_rng(seed)
        times = draw(rate, max_requests, rng)
        times = times[times <= duration]
        prompts = random_prompts(rng, len(times), llm.engine.hf_config.vocab_size)
        for mode in ("continuous", "static"):
            if mode == "continuous":
                result = simulate(llm, prompts, params, times)
            else:
                result = static_batching(llm, prompts, params, times, batch_size, max_wait)
            rows.append({"rate": rate, "mode": mode, "offered": len(times), **result})
    return pd.DataFrame(rows)


async def http_load(base_url: str, model: str, prompts: list[str | list[int]], times, max_tokens: int = 32):
    """Send ``prompts[i]`` to the server's /v1/completions (streamed) ``times[i]`` seconds after the start;
    returns (one row per request: status, ttft_s, tpot_s, e2e_s, output_tokens; ``summarize`` of the
    completed ones). Needs the ``openai`` client (the dev extra)."""
    import openai
    import pandas as pd

    client = openai.AsyncOpenAI(base_url=f"{base_url.rstrip('/')}/v1", api_key="none", max_retries=0)
    start = time.perf_counter()

    async def one(prompt, due: float) -> dict:
        await asyncio.sleep(max(0.0, start + due - time.perf_counter()))
        sent, first, n, status = time.perf_counter(), None, 0, "ok"
        try:
            stream = await client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens,
                                                     temperature=0.0, stream=True, extra_body={"ignore_eos": True},
                                                     stream_options={"include_usage": True})
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].text:
                    first = time.perf_counter()
                if chunk.usage is not None:
                    n = chunk.usage.completion_tokens
        except openai.APIStatusError as e:
            status = str(e.status_code)
        end = time.perf_counter()
        first = first or end
        return {"status": status, "output_tokens": n, "ttft_s": first - sent if status == "ok" else None,
                "tpot_s": (end - first) / (n - 1) if status == "ok" and n > 1 else None,
                "e2e_s": end - sent if status == "ok" else None}

    rows = await asyncio.gather(*(one(p, float(t)) for p, t in zip(prompts, times)))
    seconds = time.perf_counter() - start
    await client.close()
    frame = pd.DataFrame(rows)
    return frame, summarize(frame[frame["status"] == "ok"], seconds)


def http_rows(llm, rates, duration: float, max_requests: int, output_len: int = 32, seed: int = 0):
    """The server (in a thread of this process) under the same arrivals and prompts as ``compare_batching``:
    one row per rate, mode "http", with how many requests were refused or failed."""
    import pandas as pd

    from nanoinfer.serving.server import BackgroundServer

    rows = []
    with BackgroundServer(llm, "nanoinfer", max_queue=max_requests) as server:
        for rate in rates:
            rng = np.random.default_rng(seed)
            times = arrival_times(rate, max_requests, rng)
            times = times[times <= duration]
            prompts = random_prompts(rng, len(times), llm.engine.hf_config.vocab_size)
            frame, result = asyncio.run(http_load(server.url, "nanoinfer", prompts, times, output_len))
            rows.append({"rate": rate, "mode": "http", "offered": len(times), **result,
                         "not_ok": int((frame["status"] != "ok").sum())})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--dtype", default=None, help="default: the device's (float32 on a CPU, bfloat16 on a GPU)")
    p.add_argument("--rates", default="0.5,1,2", help="requests per second, comma-separated")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of arrivals per run")
    p.add_argument("--max-requests", type=int, default=1000)
    p.add_argument("--output-len", type=int, default=32), p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-wait", type=float, default=1.0), p.add_argument("--seed", type=int, default=0)
    p.add_argument("--http", action="store_true",
                   help="also send the same arrivals over HTTP to the server (in a thread, on 127.0.0.1)")
    p.add_argument("--json-out", default=None,
                   help="also write a record to this file: card, date, command, commit, the model, the rows")
    p.add_argument("--commit", default=None, help="the commit measured (default: git rev-parse in a checkout)")
    args = p.parse_args(argv)

    import pandas as pd

    from nanoinfer import LLM

    rates = [float(r) for r in args.rates.split(",")]
    knobs = {"dtype": args.dtype} if args.dtype else {}
    with LLM(args.model, **knobs) as llm:
        model = repr(llm)
        frame = compare_batching(llm, rates, args.duration, args.max_requests, args.output_len, args.batch_size,
                                 args.max_wait, args.seed)
        if args.http:
            frame = pd.concat([frame, http_rows(llm, rates, args.duration, args.max_requests, args.output_len,
                                                args.seed)], ignore_index=True)
        bm = llm.block_manager
        assert bm.num_free_blocks == bm.num_blocks, "KV blocks leaked"
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(frame.round(4).to_string(index=False))
    if args.json_out:
        from nanoinfer.tools.bench import provenance

        record = provenance(args.commit) | {"command": "python -m nanoinfer.serving.loadgen " + " ".join(
            argv if argv is not None else sys.argv[1:]), "engine": model, "duration_s": args.duration,
            "output_len": args.output_len, "batch_size": args.batch_size, "max_wait_s": args.max_wait,
            "rows": frame.to_dict(orient="records")}
        with open(args.json_out, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
