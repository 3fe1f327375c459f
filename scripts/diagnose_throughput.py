"""Where the nano-vllm workload's time goes on a GPU (the workload of `python -m nanoinfer.bench`: 256
requests, prompts and outputs of 100-1,024 tokens, temperature 0.6, random weights of the Qwen3-0.6B shape).

What it measures: one generate of the whole workload after a warm-up, with the engine's per-step timeline
(OUT_DIR/timeline.csv: phase, sequences, tokens, schedule / launch / wait seconds of every step) and its
summary (OUT_DIR/summary.json, also printed: throughput, prefill and decode seconds, host time per decode
step by batch size, and how far each batch size's decode steps run over their floor: the weights and the
used KV blocks at the copy bandwidth measured here); then, unless --no-kernels, torch.profiler over 20 decode
steps at 256 and at 16 sequences of 1,024 tokens: OUT_DIR/kernels_N.txt (kernels by GPU time) and host_N.txt
(by CPU time). With --midrun N: ``profile_workload`` over 4 decode steps of the same workload after N steps
(OUT_DIR/midrun_profile.json: ms per step by category, the longest kernels, bytes per step).

    python scripts/diagnose_throughput.py OUT_DIR [--model qwen3-0.6b] [--no-kernels] [--midrun 300]

Run from the repository root on a machine with one GPU. Records made with it:
notebooks/reference_results/h100_nano_vllm_timeline_summary.json (summary.json) and run 1 of
h200_nano_vllm_fused.json.
"""

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from nanoinfer import LLM, SamplingParams
from nanoinfer.tools.bench import named_workload
from nanoinfer.tools.profiling import _start_decoding, profile_workload
from nanoinfer.tools.roofline import machine_rates

p = argparse.ArgumentParser()
p.add_argument("out", type=Path)
p.add_argument("--model", default="qwen3-0.6b")
p.add_argument("--kernels", action=argparse.BooleanOptionalAction, default=True)
p.add_argument("--midrun", type=int, default=None, help="profile 4 decode steps after this many")
args = p.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

llm = LLM(args.model, max_num_seqs=512, max_num_batched_tokens=16384)
work = named_workload("nano-vllm", llm.engine.hf_config.vocab_size)
params = [SamplingParams(temperature=work.temperature, max_tokens=n, ignore_eos=True) for n in work.output_lens]
llm.generate([[1, 2, 3]], SamplingParams(max_tokens=2), use_tqdm=False)
llm.reset_metrics()
t0 = time.perf_counter()
llm.generate(work.prompts, params, use_tqdm=False)
torch.cuda.synchronize()
seconds = time.perf_counter() - t0
frame = llm.step_timeline()
frame.to_csv(args.out / "timeline.csv", index=False)
decode = frame[frame.phase == "decode"]
summary = {
    "seconds": seconds, "tok_per_s": work.num_output_tokens / seconds,
    "prefill_s": float(frame[frame.phase == "prefill"].seconds.sum()),
    "decode_s": float(decode.seconds.sum()), "decode_steps": len(decode),
    "host_s (schedule + launch)": float((decode.schedule_s + decode.model_s).sum()),
    "wait_s (postprocess, incl. waiting for the GPU)": float(decode.postprocess_s.sum()),
}
for lo, hi in ((1, 32), (33, 128), (129, 512)):
    part = decode[(decode.num_seqs >= lo) & (decode.num_seqs <= hi)]
    summary[f"decode {lo}-{hi} seqs"] = {"steps": len(part), "s": round(float(part.seconds.sum()), 3),
                                         "host_ms": round(float((part.schedule_s + part.model_s).mean() * 1e3), 3),
                                         "step_ms": round(float(part.seconds.mean() * 1e3), 3)}
rates = machine_rates(llm.engine.device, llm.engine.dtype)
memory = llm.engine.memory_report()
floor_s = (memory["weights_bytes"] + decode.used_blocks * memory["kv_bytes_per_block"]) / rates["bandwidth"]
by_batch = (decode.seconds - floor_s).groupby(pd.cut(decode.num_seqs, [0, 8, 32, 64, 128, 192, 256, 512]),
                                              observed=True)
summary["bandwidth_Bps"] = rates["bandwidth"]
summary["decode ms over floor, by batch"] = {str(k): {"steps": int(v.size), "ms": round(float(v.mean()) * 1e3, 3)}
                                             for k, v in by_batch}
print(json.dumps(summary, indent=1))
(args.out / "summary.json").write_text(json.dumps(summary, indent=1))

if args.midrun is not None:
    prof = profile_workload(llm, work, "decode", wait=args.midrun, warmup=1, active=4, top_kernels=45)
    (args.out / "midrun_profile.json").write_text(json.dumps(
        {"ms_per_step": prof["ms_per_step"].round(4).to_dict(), "top_kernels": prof.attrs["top_kernels"],
         **{k: prof.attrs[k] for k in ("unprofiled_wall_ms_per_step", "tokens_per_step", "bytes_per_step")}},
        indent=1))

if args.kernels:
    from torch.profiler import ProfilerActivity, profile

    for num_seqs in (256, 16):
        _start_decoding(llm, num_seqs, 1024, 40)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                llm.engine.step()
            torch.cuda.synchronize()
        llm.engine.abort_all()
        table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=70)
        (args.out / f"kernels_{num_seqs}.txt").write_text(table)
        cpu = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=70)
        (args.out / f"host_{num_seqs}.txt").write_text(cpu)
llm.shutdown()
