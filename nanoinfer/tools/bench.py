"""The benchmark: workloads through the engine, measured as a table; the same run beside a peer; suites and sweeps.

Python (one row per run, a DataFrame; ``nanoinfer.bench`` is this module):

    from nanoinfer import bench
    bench.run("chatbot", scale=1/16)                                  # builds an engine for the workload
    bench.run(workload, llm=llm)                                      # or measures one you built
    bench.suite(["chatbot", "rag_qa"], [{"max_num_seqs": 4}, {"max_num_seqs": 16}], scale=1/16)
    bench.sweep("chatbot", "max_num_seqs", [1, 4, 16], scale=1/16)

Command line (the same table, plus transformers on the same workload, and a JSON record):

    python -m nanoinfer.bench                          # CPU: 32 mixed requests on SmolLM2 vs transformers
    python -m nanoinfer.bench --model qwen3-0.6b       # GPU: nano-vllm's workload on random Qwen3-0.6B weights
    python -m nanoinfer.bench --suite --scale 0.0625   # the six seed workloads, scaled down, no peer
    python -m nanoinfer.bench --workload chatbot --sweep max_num_seqs=1,4,16 --scale 0.0625

Requests are random token ids with ``ignore_eos``, so every request produces exactly its requested tokens, all
queued at once (offline serving: TTFT includes the wait for a place in the batch). Two throughputs per engine:
*requested* tokens per second (what users receive) and *generated* (all the engine decoded: transformers runs
each batch to its longest request). Latencies come from each request's own timestamps (``RequestMetrics``):
time to first token (TTFT), time per output token after the first (TPOT) and end to end, at p50/p90/p99. The
roofline (``tools/roofline.py``) is the fastest any engine could run the workload on this machine.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from nanoinfer import LLM, SamplingParams
from nanoinfer.tools.gpu_monitor import GpuMonitor
from nanoinfer.tools.peer import Result, hf_model, run_transformers_generate, run_transformers_generate_batch
from nanoinfer.tools.roofline import ModelCost, machine_rates, sync, workload_floor
from nanoinfer.tools.workloads import SEED_CATEGORIES, WORKLOADS, Workload, named_workload, random_workload
from nanoinfer.workbook.registry import learner_code

__all__ = ["run", "suite", "sweep", "run_suite", "pick_settings", "memory_settings", "latency_percentiles", "Workload", "WORKLOADS", "SEED_CATEGORIES",
           "named_workload", "random_workload", "environment", "provenance", "main"]

PERCENTILES = (50, 90, 99)
LATENCIES = {"ttft": "time_to_first_token", "tpot": "time_per_output_token", "e2e": "e2e_latency"}  # RequestMetrics
KNOBS = ("max_num_seqs", "max_num_batched_tokens", "kvcache_block_size", "gpu_memory_utilization")  # in every row


def latency_percentiles(metrics) -> dict:
    """``{ttft,tpot,e2e}_ms_p{50,90,99}`` over a list of RequestMetrics (numpy's linear interpolation between
    ranks); a latency no request has (TPOT of one-token outputs) is NaN."""
    out = {}
    for name, attr in LATENCIES.items():
        values = [v for v in (getattr(m, attr) for m in metrics) if v is not None]
        for q in PERCENTILES:
            out[f"{name}_ms_p{q}"] = 1e3 * float(np.percentile(values, q)) if values else math.nan
    return out


def _workload(workload: str | Workload, vocab_size: int, scale: float, seed: int) -> Workload:
    return workload if isinstance(workload, Workload) else named_workload(workload, vocab_size, seed, scale=scale)


def _needed_len(workload: str | Workload, scale: float) -> int:
    """``max_model_len`` that holds the workload's longest request (known before the model is loaded)."""
    if isinstance(workload, Workload):
        return workload.max_len + 1
    spec = WORKLOADS[workload]
    return max(4, round(spec.prompt[1] * scale)) + max(2, round(spec.output[1] * scale)) + 1


def run(workload: str | Workload, llm: LLM | None = None, *, model: str | None = None, scale: float = 1.0,
        seed: int = 0, progress: bool = True, **knobs):
    """Run one workload (a name in ``WORKLOADS`` or a ``Workload``) and return a one-row DataFrame: throughput,
    latency percentiles, phase shares, KV blocks, preemptions, prefix-cache hits, GPU utilisation (NVML), and the
    engine's knobs. Pass ``llm`` to measure an engine you built, or ``model`` and knobs to build one for this
    run (shut down afterwards). ``.attrs["details"]``: the per-request table and the step timeline."""
    if llm is not None and (knobs or model is not None):
        raise ValueError("pass either llm= or model=/knobs to build one, not both")
    own = llm is None
    if own:
        llm = LLM(model, **{"max_model_len": _needed_len(workload, scale), **knobs})
    try:
        return _measure(llm, _workload(workload, llm.engine.hf_config.vocab_size, scale, seed), scale, progress)
    finally:
        if own:
            llm.shutdown()


def _measure(llm: LLM, w: Workload, scale: float, progress: bool):
    params = [SamplingParams(temperature=w.temperature, max_tokens=n, ignore_eos=True) for n in w.output_lens]
    llm.generate([[1, 2, 3]], SamplingParams(max_tokens=2), use_tqdm=False)  # warm-up
    llm.reset_metrics()
    before = llm.cache_stats()
    device = llm.engine.device
    with GpuMonitor(device) as monitor:
        t0 = time.perf_counter()
        outputs = llm.generate(w.prompts, params, use_tqdm=progress)
        seconds = time.perf_counter() - t0
    produced = sum(len(o.token_ids) for o in outputs)
    if produced != w.num_output_tokens:
        raise RuntimeError(f"the engine produced {produced} tokens, the workload asked for {w.num_output_tokens}")
    after, steps = llm.cache_stats(), llm.step_timeline()
    hits, misses = after["hit_tokens"] - before["hit_tokens"], after["miss_tokens"] - before["miss_tokens"]
    by_phase = steps.groupby("phase")["seconds"].sum()
    decode = steps[steps.phase == "decode"]
    row = {
        "workload": w.name, "scale": scale, "requests": len(w.prompts), "prompt_tokens": w.num_prompt_tokens,
        "output_tokens": produced, "seconds": seconds, "requests_per_s": len(w.prompts) / seconds,
        "requested_tok_s": w.num_output_tokens / seconds, "generated_tok_s": produced / seconds,
        **latency_percentiles([o.metrics for o in outputs]),
        "prefill_share": by_phase.get("prefill", 0.0) / steps.seconds.sum(),
        "decode_share": by_phase.get("decode", 0.0) / steps.seconds.sum(),
        "steps": len(steps), "prefill_steps": int((steps.phase == "prefill").sum()), "decode_steps": len(decode),
        "mean_decode_batch": float(decode.num_seqs.mean()) if len(decode) else math.nan,
        "peak_kv_blocks": int(steps.used_blocks.max()), "kv_blocks": llm.block_manager.num_blocks,
        "preemptions": int(steps.num_preempted.sum()),
        "prefix_hit_rate": hits / (hits + misses) if hits + misses else 0.0,
        "gpu_util_mean": math.nan, "gpu_util_max": math.nan, "gpu_mem_peak_gb": math.nan,
        **monitor.summary(),
        **{k: getattr(llm.config, k) for k in KNOBS}, "device": str(device),
    }
    frame = pd.DataFrame([row])
    frame.attrs["details"] = RunDetails(llm.requests_frame(outputs), [o.metrics for o in outputs], steps,
                                        monitor.samples)
    return frame


@dataclass(eq=False)  # compared by identity: pandas compares the attrs of frames it concatenates
class RunDetails:
    """What a row summarises: ``row.attrs["details"]``."""

    requests: pd.DataFrame  # one row per request (LLM.requests_frame)
    metrics: list  # each request's RequestMetrics (its raw timestamps)
    timeline: pd.DataFrame  # one row per engine step (LLM.step_timeline)
    gpu_samples: list  # (time, utilisation %, memory bytes) from NVML


def run_suite(workloads: list, settings: list[dict], build, measure, progress: bool = True) -> pd.DataFrame:
    """One engine per setting (``build(**setting)``), every workload through it (``measure(workload, llm)``, one
    row each), engines shut down even when a run fails; one DataFrame, a row per (setting, workload) in that
    order, with the setting's knobs as columns. Exercise 7.1 (``exercises/phase7_benchmarking.py``)."""
    rows = []
    with tqdm(total=len(settings) * len(workloads), desc="benchmark", unit="run", disable=not progress) as bar:
        for setting in settings:
            llm = build(**setting)
            try:
                for workload in workloads:
                    rows.append(measure(workload, llm).assign(**setting))
                    bar.update()
            finally:
                llm.shutdown()
    return pd.concat(rows, ignore_index=True)


def suite(workloads: list, settings: list[dict] | None = None, *, model: str | None = None, scale: float = 1.0,
          seed: int = 0, progress: bool = True):
    """Every workload under every setting of knobs (default: the engine's defaults), one row per pair."""
    settings = list(settings) if settings else [{}]
    need = max(_needed_len(w, scale) for w in workloads)

    def build(**knobs) -> LLM:
        return LLM(model, **{"max_model_len": need, **knobs})

    def measure(workload, llm: LLM):
        return _measure(llm, _workload(workload, llm.engine.hf_config.vocab_size, scale, seed), scale, False)

    return learner_code("7.1", run_suite)(list(workloads), settings, build, measure, progress=progress)


def sweep(workload: str | Workload, knob: str, values: list, *, model: str | None = None, scale: float = 1.0,
          seed: int = 0, progress: bool = True, **fixed):
    """One workload under each value of one knob (other knobs fixed): a row per value."""
    return suite([workload], [{**fixed, knob: v} for v in values], model=model, scale=scale, seed=seed,
                 progress=progress)


def memory_settings(workload: str | Workload, fractions: list[float], *, model: str | None = None,
                    scale: float = 1.0, seed: int = 0) -> list[float]:
    """``gpu_memory_utilization`` values whose KV cache holds each fraction of what the workload needs at once
    (``Workload.kv_blocks_needed``): one probe engine measures what the weights and activations take."""
    probe = LLM(model, max_model_len=_needed_len(workload, scale), gpu_memory_utilization=0.3)  # (as the sweep
    # builds them: CUDA graphs and compiled kernels hold memory of their own)
    report = probe.engine.memory_report()
    w = _workload(workload, probe.engine.hf_config.vocab_size, scale, seed)
    probe.shutdown()
    if "gpu_total_bytes" not in report:
        raise ValueError("gpu_memory_utilization applies on a GPU; on a CPU sweep num_kvcache_blocks")
    total = report["gpu_total_bytes"]
    other = 0.3 * total - report["kv_cache_bytes"]  # weights, peak activations, what the process holds besides
    need = w.kv_blocks_needed(report["block_size"]) * report["kv_bytes_per_block"]
    return [round((other + f * need) / total, 4) for f in fractions]


def pick_settings(sweep: pd.DataFrame, objective: str, maximize: bool = True, at_most: dict | None = None,
                  at_least: dict | None = None) -> pd.Series:
    """The row of ``sweep`` with the best ``objective`` among the rows that meet every bound (``column <=
    at_most[column]``, ``column >= at_least[column]``; a NaN meets none), the first such row on a tie.
    Exercise 7.3's reference: for example the most tokens/s with p99 TTFT under 500 ms is
    ``pick_settings(sweep, "generated_tok_s", at_most={"ttft_ms_p99": 500})``."""
    bounds = {**(at_most or {}), **(at_least or {})}
    missing = [c for c in (objective, *bounds) if c not in sweep.columns]
    if missing:
        raise ValueError(f"the sweep has no column {missing}; it has {list(sweep.columns)}")
    meets = pd.Series(True, index=sweep.index)
    for column, bound in (at_most or {}).items():
        meets &= sweep[column] <= bound
    for column, bound in (at_least or {}).items():
        meets &= sweep[column] >= bound
    candidates = sweep[meets & sweep[objective].notna()]
    if candidates.empty:
        raise ValueError(f"no row of the sweep meets at_most={at_most} and at_least={at_least}")
    best = candidates[objective].idxmax() if maximize else candidates[objective].idxmin()
    return candidates.loc[best]


def run_nanoinfer(llm: LLM, workload: Workload) -> Result:
    """The engine's run as the peer comparison's Result (the table row is in ``.row``)."""
    row = _measure(llm, workload, 1.0, progress=False)
    result = Result("nanoinfer", row.seconds.iloc[0], workload.num_output_tokens, int(row.output_tokens.iloc[0]),
                    len(workload.prompts))
    result.row = row
    return result


def decode_run(llm, prompts: list[list[int]], max_tokens: int) -> dict:
    """One greedy run of ``prompts`` (``max_tokens`` each, EOS ignored) with the counters of speculative
    decoding: the tokens, end-to-end and decode tokens/s (output tokens of the decode steps over their
    seconds), decode steps, drafted and accepted tokens, acceptance rate, mean accepted length (tokens per
    verify step: the accepted drafts plus the target's own token)."""
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    llm.reset_metrics()
    sync(llm.engine.device)
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    steps = llm.step_timeline()
    decode = steps[steps.phase == "decode"]
    drafted, accepted = int(decode.num_drafted.sum()), int(decode.num_accepted.sum())
    spec_steps = sum(o.metrics.num_spec_steps for o in outs)
    return {"tokens": [o.token_ids for o in outs], "e2e_tokens_per_s": sum(len(o.token_ids) for o in outs) / seconds,
            "decode_tokens_per_s": float(decode.num_sampled.sum() / decode.seconds.sum()),
            "decode_steps": len(decode), "drafted": drafted, "accepted": accepted,
            "acceptance_rate": accepted / drafted if drafted else None,
            "mean_accepted_length": 1 + accepted / spec_steps if spec_steps else None}


def tokens_agreement(got: list[list[int]], want: list[list[int]]) -> float:
    """The share of ``want``'s tokens that ``got`` matches before each request's first difference (1.0: equal)."""
    same = sum(next((i for i, (a, b) in enumerate(zip(g, w)) if a != b), min(len(g), len(w)))
               for g, w in zip(got, want))
    return same / sum(map(len, want))


def provenance(commit: str | None = None) -> dict:
    """The four facts every record carries: card, date, command, commit (``git`` when run in a checkout)."""
    if commit is None:
        with suppress(Exception):
            head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                  check=True, cwd=Path(__file__).parent).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                   text=True, cwd=Path(__file__).parent).stdout.strip()
            commit = head + (" + uncommitted changes" if dirty else "")
    return {"card": environment()["device"], "date": time.strftime("%Y-%m-%d"),
            "command": "python -m nanoinfer.bench " + " ".join(sys.argv[1:]), "commit": commit or "unknown"}


def _cpu_name() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def environment() -> dict:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU {_cpu_name()}"
    env = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "python": platform.python_version(),
           "threads": torch.get_num_threads(), "device": device}
    with suppress(ImportError):
        import transformers

        env["transformers"] = transformers.__version__
    return env


COLUMNS = ["workload", "requests", "requested_tok_s", "requests_per_s", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50",
           "tpot_ms_p99", "e2e_ms_p99", "prefill_share", "peak_kv_blocks", "preemptions", "prefix_hit_rate"]


def _print_table(frame, extra: tuple = ()) -> None:
    columns = [c for c in (*extra, *COLUMNS, "gpu_util_mean") if c in frame and not frame[c].isna().all()]
    print(frame[columns].to_string(index=False, float_format=lambda v: f"{v:.3g}"))


def _parse_sweep(text: str) -> tuple[str, list]:
    knob, _, values = text.partition("=")
    if not values:
        raise SystemExit(f"--sweep takes KNOB=V1,V2,... (for example max_num_seqs=1,4,16), got {text!r}")
    return knob, [json.loads(v) for v in values.split(",")]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a Hugging Face directory or a named shape with random weights (qwen3-0.6b, "
                                   "qwen3-8b, llama-3.2-1b, ...); default: the embedded SmolLM2")
    p.add_argument("--workload", choices=sorted(WORKLOADS), help="default: nano-vllm on a GPU, cpu-mixed on a CPU")
    p.add_argument("--suite", action="store_true", help="run the six seed workloads (no peer)")
    p.add_argument("--sweep", metavar="KNOB=V1,V2,...", help="run --workload under each value of one knob (no peer)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply request counts and lengths (0 < scale <= 1)")
    p.add_argument("--num-requests", type=int), p.add_argument("--temperature", type=float)
    p.add_argument("--min-prompt", type=int), p.add_argument("--max-prompt", type=int)
    p.add_argument("--min-output", type=int), p.add_argument("--max-output", type=int)
    p.add_argument("--seed", type=int, default=0), p.add_argument("--dtype", default="auto")
    p.add_argument("--peer", choices=["transformers", "none"], default="transformers")
    p.add_argument("--peer-requests", type=int, default=None,
                   help="run the peer (and a second nanoinfer run) on the workload's first N requests only")
    p.add_argument("--peer-batch-size", type=int, default=None, help="padded generate's batch (default: all)")
    p.add_argument("--max-num-seqs", type=int, default=512), p.add_argument("--max-model-len", type=int)
    p.add_argument("--max-num-batched-tokens", type=int, default=16384)
    p.add_argument("--block-size", type=int, default=None, help="KV block size (default 16; 256 for flash_attn)")
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--enforce-eager", action="store_true"), p.add_argument("--attention-backend", default="auto")
    p.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                   help="launch step N+1 before step N's tokens reach the host (default: on for CUDA)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the small ops (default: on for CUDA, off for CPU)")
    p.add_argument("--fused-attention-prologue", action=argparse.BooleanOptionalAction, default=True,
                   help="GPU: q/k norms, rotary and the KV-cache write as one Triton kernel per layer")
    p.add_argument("--skinny-matmuls", action=argparse.BooleanOptionalAction, default=True,
                   help="GPU: batch-1 decode linears through Triton's skinny kernels (gate/up fused with SiLU)")
    p.add_argument("--commit", default=None, help="the commit measured, for the record (default: git's HEAD)")
    p.add_argument("--json-out", default=None, help="also write the JSON record to this file")
    args = p.parse_args(argv)

    knobs = dict(dtype=args.dtype, max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                 tensor_parallel_size=args.tensor_parallel_size, enforce_eager=args.enforce_eager,
                 attention_backend=args.attention_backend, compile=args.compile,
                 async_scheduling=args.async_scheduling, fused_attention_prologue=args.fused_attention_prologue,
                 skinny_matmuls=args.skinny_matmuls)
    if args.block_size:
        knobs["kvcache_block_size"] = args.block_size
    if args.max_model_len:
        knobs["max_model_len"] = args.max_model_len
    record = provenance(args.commit)
    if args.suite or args.sweep:
        record.update(_table_main(args, knobs))
    else:
        record.update(_compare_main(args, knobs))
    line = json.dumps(record, default=str)
    print(line)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(line + "\n")
    return record


def _table_main(args, knobs: dict) -> dict:
    """--suite / --sweep: the table, no peer."""
    if args.sweep:
        if not args.workload:
            raise SystemExit("--sweep needs --workload")
        knob, values = _parse_sweep(args.sweep)
        knobs.pop(knob, None)
        frame = sweep(args.workload, knob, values, model=args.model, scale=args.scale, seed=args.seed, **knobs)
        _print_table(frame, extra=(knob, "steps", "mean_decode_batch"))
    else:
        names = [args.workload] if args.workload else list(SEED_CATEGORIES)
        frame = suite(names, [knobs], model=args.model, scale=args.scale, seed=args.seed)
        _print_table(frame)
    return {"model": args.model or "SmolLM2-135M-Instruct", "rows": frame.to_dict(orient="records"),
            "env": environment()}


def _compare_main(args, knobs: dict) -> dict:
    """The default: one workload through nanoinfer, its roofline, then through transformers."""
    gpu = torch.cuda.is_available()
    name = args.workload or ("nano-vllm" if gpu else "cpu-mixed")
    spec = WORKLOADS[name]
    custom = any(v is not None for v in (args.min_prompt, args.max_prompt, args.min_output, args.max_output))
    prompt_range = (args.min_prompt or spec.prompt[0], args.max_prompt or spec.prompt[1])
    output_range = (args.min_output or spec.output[0], args.max_output or spec.output[1])
    temperature = spec.temperature if args.temperature is None else args.temperature
    knobs.setdefault("max_model_len", prompt_range[1] + output_range[1] + 1)
    t0 = time.perf_counter()
    llm = LLM(args.model, **knobs)
    startup = time.perf_counter() - t0
    vocab = llm.engine.hf_config.vocab_size
    if custom:
        workload = random_workload(args.num_requests or spec.requests, prompt_range, output_range, vocab, args.seed,
                                   temperature, name="custom")
    else:
        workload = named_workload(name, vocab, args.seed, args.num_requests, scale=args.scale)
        workload.temperature = temperature
    print(f"{llm}\nstart-up {startup:.1f} s; workload {workload.name}: {len(workload.prompts)} requests, prompts "
          f"{min(map(len, workload.prompts))}-{max(map(len, workload.prompts))} tokens ({workload.num_prompt_tokens} "
          f"in all), outputs {min(workload.output_lens)}-{max(workload.output_lens)} ({workload.num_output_tokens} in "
          f"all), temperature {workload.temperature}, ignore_eos")

    ours = run_nanoinfer(llm, workload)
    results = [ours]
    _print_table(ours.row)
    phases = llm.engine.metrics.summary()
    host = llm.step_timeline().groupby("phase")[["schedule_s", "model_s", "postprocess_s"]].mean() * 1e3
    print("mean ms per step (schedule / model incl. prepare and sampling / postprocess):\n" + host.round(3).to_string())
    print("nanoinfer phases: " + ", ".join(f"{k} {v['steps']} steps {v['seconds']:.2f} s ({v['tokens_per_s']:.0f} tok/s)"
                                          for k, v in phases.items())
          + (f"; decode {1e3 * phases['decode']['seconds'] / phases['decode']['steps']:.2f} ms/step"
             if phases["decode"]["steps"] else ""))
    rates = machine_rates(llm.engine.device, llm.engine.dtype)
    roof = workload_floor(ModelCost.of(llm), workload, rates, llm.config.max_num_batched_tokens)
    print(f"roofline: {roof['tokens_per_s']:.0f} tok/s (prefill {roof['prefill']['floor_s']:.3f} s, "
          f"{roof['prefill']['bound']}-bound; decode {roof['decode']['floor_s']:.3f} s, {roof['decode']['bound']}-bound: "
          f"{roof['decode_steps']} steps x {roof['weight_bytes'] / 1e9:.2f} GB of weights + "
          f"{roof['kv_read_bytes'] / 1e9:.2f} GB of KV reads at {roof['bandwidth_Bps'] / 1e12:.2f} TB/s, matmuls at "
          f"{roof['matmul_flops'] / 1e12:.1f} TFLOP/s); nanoinfer reaches {ours.generated_per_s / roof['tokens_per_s']:.0%} of it")

    peer_workload = workload if args.peer_requests is None else workload.head(args.peer_requests)
    if args.peer_requests is not None:
        first = run_nanoinfer(llm, peer_workload)
        first.engine = f"nanoinfer (first {args.peer_requests})"
        results.append(first)
    model_dir = str(llm.engine.model_dir) if llm.engine.model_dir else None
    dtype, device = llm.engine.dtype, llm.engine.device
    graphs = llm.model_runner.graphs
    record = {"workload": {"name": workload.name, "requests": len(workload.prompts),
                           "prompt_tokens": workload.num_prompt_tokens, "output_tokens": workload.num_output_tokens},
              "model": args.model or "SmolLM2-135M-Instruct", "engine": repr(llm), "startup_s": startup,
              "row": ours.row.to_dict(orient="records")[0], "phases": phases, "roofline": roof,
              "memory": llm.engine.memory_report(), "cuda_graphs": graphs.coverage.as_dict() if graphs else None,
              "env": environment(), "args": vars(args)}
    llm.shutdown()  # give the card back to the peer
    del llm
    if args.peer == "transformers":
        for attn, api in ([("paged|sdpa", "generate_batch")] if gpu else []) + [("sdpa", "generate")]:
            try:
                model = hf_model(model_dir, args.model, dtype, device, attn)
                if api == "generate_batch":
                    results.append(run_transformers_generate_batch(model, peer_workload, device))
                else:
                    batch = args.peer_batch_size or len(peer_workload.prompts)
                    results.append(run_transformers_generate(model, peer_workload, batch, device))
                del model
                torch.cuda.empty_cache()  # (nothing to do without CUDA)
            except Exception as e:  # a peer that fails is reported, not fatal
                print(f"transformers {api} failed: {type(e).__name__}: {e}")
    print(f"\n{'engine':<40} {'requests':>8} {'seconds':>8} {'requested/s':>12} {'generated/s':>12}")
    for r in results:
        print(f"{r.engine:<40} {r.num_requests:8d} {r.seconds:8.2f} {r.requested_per_s:12.1f} {r.generated_per_s:12.1f}")
    record["results"] = [{**asdict(r), "requested_per_s": r.requested_per_s, "generated_per_s": r.generated_per_s}
                         for r in results]
    ours = results[1] if args.peer_requests is not None else results[0]
    for r in results[1:]:
        if not r.engine.startswith("nanoinfer"):
            ratios = {"requested": ours.requested_per_s / r.requested_per_s,
                      "generated": ours.generated_per_s / r.generated_per_s}
            record.setdefault("speedups", {})[r.engine] = ratios
            print(f"nanoinfer / {r.engine}: {ratios['requested']:.2f}x on requested tokens, "
                  f"{ratios['generated']:.2f}x on generated tokens")
    return record


if __name__ == "__main__":
    main()
