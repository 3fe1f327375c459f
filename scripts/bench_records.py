"""Notebook 07's GPU record: the seed workloads, the four sweeps and a prefill and a decode profile, on one GPU.

    python scripts/bench_records.py OUT.json --commit HASH [--model qwen3-0.6b] [--scale 1.0]

The record is rewritten after each part, so a run cut short keeps what it finished. Each sweep names the
knob, its values and the workload; the profiles carry their tables and the classification of each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from nanoinfer import LLM, bench  # noqa: E402
from nanoinfer.tools.profiling import classify_profile, profile_workload  # noqa: E402
from nanoinfer.tools.roofline import machine_rates  # noqa: E402
from nanoinfer.tools.workloads import SEED_CATEGORIES, named_workload  # noqa: E402

SWEEPS = [  # (knob, values, workload): the notebook's sweeps at the seed's sizes
    ("max_num_seqs", [8, 32, 128, 512], "chatbot"),
    ("max_num_batched_tokens", [2048, 4096, 8192, 16384], "rag_qa"),
    ("kvcache_block_size", [16, 64, 256], "repeated_prefix"),
]


def table(frame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--commit", required=True)
    p.add_argument("--model", default="qwen3-0.6b")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--profiles-into", default=None,
                   help="measure only the profiles, into this existing record (its other parts keep their commit)")
    args = p.parse_args()
    record = {"card": f"1 x {torch.cuda.get_device_name()} (device tool nvidia-h200)",
              "date": time.strftime("%Y-%m-%d"),
              "command": f"python scripts/bench_records.py $OUT/h200_bench.json --commit '{args.commit}' --model "
                         f"{args.model} --scale {args.scale}",
              "commit": args.commit, "model": args.model, "scale": args.scale, "env": bench.environment()}

    def save() -> None:
        Path(args.out).write_text(json.dumps(record, indent=1, default=str) + "\n")

    t0 = time.perf_counter()
    if args.profiles_into:
        kept = json.loads(Path(args.profiles_into).read_text())
        kept["commit"] = f"{kept['commit']} (suite, sweeps); {args.commit} (profiles, rates)"
        kept["command"] += f"; profiles: {record['command']} --profiles-into RECORD"
        record = kept
        return profile_part(args, record, save, t0)
    record["suite"] = table(bench.suite(list(SEED_CATEGORIES), model=args.model, scale=args.scale))
    print(f"suite done at {time.perf_counter() - t0:.0f} s", flush=True)
    save()

    # gpu_memory_utilization such that the KV cache holds 1/8 to 2x of what chatbot needs at once
    utils = bench.memory_settings("chatbot", [0.125, 0.25, 0.5, 1.0, 2.0], model=args.model, scale=args.scale)
    sweeps = SWEEPS + [("gpu_memory_utilization", utils, "chatbot")]
    record["sweeps"] = []
    for knob, values, workload in sweeps:
        try:
            frame = bench.sweep(workload, knob, values, model=args.model, scale=args.scale)
        except Exception as error:  # (a memory setting too small for the engine: recorded, the rest goes on)
            record["sweeps"].append({"knob": knob, "workload": workload, "values": values, "error": repr(error)})
            continue
        record["sweeps"].append({"knob": knob, "workload": workload, "values": values, "rows": table(frame)})
        print(f"sweep {knob} done at {time.perf_counter() - t0:.0f} s", flush=True)
        save()

    profile_part(args, record, save, t0)


def profile_part(args, record: dict, save, t0: float) -> None:
    llm = LLM(args.model, max_model_len=4400)
    rates = machine_rates(llm.engine.device, llm.engine.dtype)
    record["rates"] = rates
    vocab = llm.engine.hf_config.vocab_size
    record["profiles"] = {}
    for phase, workload, n in (("prefill", "rag_qa", 6), ("decode", "chatbot", 64)):
        work = named_workload(workload, vocab, num_requests=n, scale=args.scale)
        prof = profile_workload(llm, work, phase, rates=rates)
        record["profiles"][phase] = {"workload": workload, "requests": n,
                                     "table": json.loads(prof.to_json(orient="index")),
                                     "attrs": {k: v for k, v in prof.attrs.items() if k != "trace_path"},
                                     "classification": classify_profile(prof)}
        print(phase, classify_profile(prof), flush=True)
    llm.shutdown()
    record["seconds"] = time.perf_counter() - t0
    save()


if __name__ == "__main__":
    main()
