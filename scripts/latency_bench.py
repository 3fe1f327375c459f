"""Issue 23's GPU latency measurements, for the nanoinfer on PYTHONPATH (so that one device call can measure two
commits with the same code), written as JSON:

  batch-1 decode   qwen3-0.6b shape, a 128-token prompt, 512 greedy tokens: ms per token (decode seconds / steps,
                   three runs), the step timeline's medians, the batch-1 CUDA graph's replay time alone (CUDA
                   events, 100 replays) and its kernels per step (torch.profiler); with and without
                   ``skinny_matmuls`` where the engine has that knob
  batches          qwen3-0.6b shape, decode batches of ``--batches`` sequences (128-token prompts, ``--tokens`` greedy
                   tokens each): ms per decode step, three runs after a warm-up run
  prefill          llama-3.2-1b shape, the mixed workload (200 requests, prompts 50-1,500, outputs 20-700): the
                   16,384-token prefill steps' host times (schedule, prepare, host postprocess = postprocess less
                   the wait for the step before) against the step's device time (CUDA events around the step)

    python scripts/latency_bench.py --label after --out after.json
    python scripts/latency_bench.py --merge before.json after.json --out notebooks/reference_results/h200_latency.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

COLUMNS = ["schedule_s", "prepare_s", "forward_s", "sample_s", "postprocess_s", "wait_s", "seconds"]


def medians_ms(frame) -> dict:
    return {c.removesuffix("_s") + "_ms": round(float(frame[c].median()) * 1e3, 3) for c in COLUMNS}


def replay_ms(graph, replays: int = 100) -> float:
    for _ in range(10):
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / replays


def kernels_per_step(llm, prompt, steps: int = 10) -> tuple[float, float]:
    """(kernels, kernel microseconds) per batch-1 decode step, from torch.profiler's CUDA activity."""
    from nanoinfer import SamplingParams
    from torch.profiler import ProfilerActivity, profile

    engine = llm.engine
    engine.add_request(prompt, SamplingParams(temperature=0.0, max_tokens=steps + 20, ignore_eos=True))
    for _ in range(8):
        engine.step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            engine.step()
        torch.cuda.synchronize()
    engine.abort_all()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
               and "memcpy" not in e.name.lower() and "memset" not in e.name.lower()]
    return len(kernels) / steps, sum(e.device_time for e in kernels) / steps


def decode_runs(llm, prompts, params, runs: int = 3) -> tuple[list[float], list]:
    """Milliseconds per decode step of ``runs`` generates after a warm-up one, and each run's decode timeline."""
    llm.generate(prompts, params, use_tqdm=False)
    ms, timelines = [], []
    for _ in range(runs):
        llm.reset_metrics()
        llm.generate(prompts, params, use_tqdm=False)
        timeline = llm.step_timeline()
        decode = timeline[timeline.phase == "decode"]
        ms.append(float(decode.seconds.sum() / len(decode) * 1e3))
        timelines.append(decode)
    return ms, timelines


def batch1(shape: str, **knobs) -> dict:
    from nanoinfer import LLM, SamplingParams

    llm = LLM(shape, max_model_len=1024, **knobs)
    prompt = [(7 * i + 3) % llm.engine.hf_config.vocab_size for i in range(128)]
    params = SamplingParams(temperature=0.0, max_tokens=512, ignore_eos=True)
    runs, timelines = decode_runs(llm, [prompt], params)
    import pandas as pd

    kernels, kernel_us = kernels_per_step(llm, prompt)
    result = {"knobs": knobs, "ms_per_token_runs": runs, "ms_per_token": statistics.median(runs),
              "decode_steps": len(timelines[-1]), "step_medians": medians_ms(pd.concat(timelines)),
              "graph_replay_ms": replay_ms(llm.model_runner.graphs.graphs[1]),
              "kernels_per_step": kernels, "kernel_us_per_step": kernel_us,
              "fast_paths": llm.model_runner.fast_paths.summary()}
    llm.shutdown()
    return result


def batches(shape: str, sizes: list[int], tokens: int) -> dict:
    from nanoinfer import LLM, SamplingParams

    llm = LLM(shape, max_model_len=1024)
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    result = {"tokens": tokens}
    for size in sizes:
        prompts = [[(7 * i + 3 * b) % 1000 + 1 for i in range(128)] for b in range(size)]
        runs, _ = decode_runs(llm, prompts, params)
        result[str(size)] = {"ms_per_step_runs": runs, "ms_per_step": statistics.median(runs)}
    llm.shutdown()
    return result


def prefill(shape: str) -> dict:
    from nanoinfer import LLM, SamplingParams
    from nanoinfer.tools.workloads import random_workload

    llm = LLM(shape, max_model_len=2300)
    workload = random_workload(200, (50, 1500), (20, 700), llm.engine.hf_config.vocab_size, 0)
    params = [SamplingParams(temperature=workload.temperature, max_tokens=n, ignore_eos=True)
              for n in workload.output_lens]
    llm.generate([[1, 2, 3]], SamplingParams(max_tokens=2), use_tqdm=False)
    llm.reset_metrics()
    start = time.perf_counter()
    llm.generate(workload.prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    timeline = llm.step_timeline()
    full = timeline[(timeline.phase == "prefill") & (timeline.num_tokens >= 16000)]
    steps = medians_ms(full)
    steps["host_postprocess_ms"] = round(float((full.postprocess_s - full.wait_s).median()) * 1e3, 3)

    # The device time of a prefill step: an event queued when the step starts (behind the step before's kernels)
    # and one when it returns (behind its own). Fresh prompts before each step keep every step a full prefill.
    vocab = llm.engine.hf_config.vocab_size  # (prompts the cache has not seen: a prefix hit would shorten the step)
    engine, prompts = llm.engine, iter([[(t + 1) % vocab for t in p] for p in workload.prompts])
    device_ms, tokens = [], []
    for i in range(8):
        for _ in range(25):
            engine.add_request(next(prompts), SamplingParams(max_tokens=1, ignore_eos=True))
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        engine.step()
        end.record()
        device_ms.append((begin, end))
        tokens.append(engine.metrics.steps[-1].num_tokens)
    while engine.has_unfinished_requests():
        engine.step()
    torch.cuda.synchronize()
    full_steps = [b.elapsed_time(e) for (b, e), n in zip(device_ms, tokens) if n >= 16000][1:]  # (the first: warm)
    device = statistics.median(full_steps)
    host = steps["schedule_ms"] + steps["host_postprocess_ms"]
    result = {"workload_seconds": seconds, "prefill_steps": int((timeline.phase == "prefill").sum()),
              "full_prefill_steps": len(full), "step_medians": steps, "device_ms_per_full_step": device,
              "device_ms_runs": full_steps, "schedule_plus_host_postprocess_share": host / device,
              "schedule_plus_postprocess_share_of_model_s": (steps["schedule_ms"] + steps["postprocess_ms"])
              / (steps["prepare_ms"] + steps["forward_ms"] + steps["sample_ms"])}
    llm.shutdown()
    return result


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except Exception:
        return "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", default="run"), p.add_argument("--out", required=True)
    p.add_argument("--commit", default=None, help="the commit measured (default: git's HEAD)")
    p.add_argument("--merge", nargs=2, metavar=("BEFORE", "AFTER"), help="join two runs into one record")
    p.add_argument("--parts", nargs="+", choices=["batch1", "batch1_cublas", "batches", "prefill"],
                   default=["batch1", "batch1_cublas", "prefill"], help="what to measure (default: all but batches)")
    p.add_argument("--batches", type=int, nargs="+", default=[4, 16, 48], help="decode batch sizes of 'batches'")
    p.add_argument("--tokens", type=int, default=256, help="tokens per sequence in 'batches'")
    args = p.parse_args()
    if args.merge:
        before, after = (json.loads(Path(f).read_text()) for f in args.merge)
        record = {"card": after["card"], "date": after["date"], "command": after["command"],
                  "commit": after["commit"], "before": before, "after": after, "ratios": {}}
        if "batch1" in before and "batch1" in after:
            record["ratios"] |= {"batch1_ms_per_token": after["batch1"]["ms_per_token"] / before["batch1"]["ms_per_token"],
                                 "batch1_graph_replay": after["batch1"]["graph_replay_ms"]
                                 / before["batch1"]["graph_replay_ms"]}
        for size in set(before.get("batches", {})) & set(after.get("batches", {})) - {"tokens"}:
            record["ratios"][f"ms_per_step_{size}_sequences"] = (after["batches"][size]["ms_per_step"]
                                                                 / before["batches"][size]["ms_per_step"])
        if "prefill" in before and "prefill" in after:
            record["ratios"]["prefill_device_ms"] = (after["prefill"]["device_ms_per_full_step"]
                                                     / before["prefill"]["device_ms_per_full_step"])
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
        print(json.dumps(record["ratios"], indent=1))
        return
    from nanoinfer.config import EngineConfig

    record = {"card": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
              "command": "python scripts/latency_bench.py " + " ".join(sys.argv[1:]),
              "commit": args.commit or commit(), "label": args.label, "torch": torch.__version__}
    if "batch1" in args.parts:
        record["batch1"] = batch1("qwen3-0.6b")
        print("batch-1:", json.dumps(record["batch1"]), flush=True)
    if "batch1_cublas" in args.parts and "skinny_matmuls" in EngineConfig.__dataclass_fields__:
        record["batch1_cublas"] = batch1("qwen3-0.6b", skinny_matmuls=False)
        print("batch-1, cuBLAS:", json.dumps(record["batch1_cublas"]), flush=True)
    if "batches" in args.parts:
        record["batches"] = batches("qwen3-0.6b", args.batches, args.tokens)
        print("batches:", json.dumps(record["batches"]), flush=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    if "prefill" in args.parts:
        record["prefill"] = prefill("llama-3.2-1b")
        print("prefill:", json.dumps(record["prefill"]), flush=True)
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
