"""Speculative decoding against plain decoding, measured in one run and one process: the same prompts, greedy,
through one engine per configuration (plain first), the engines alternating ``--repeats`` times; the best
decode tokens/s of each (output tokens of the decode steps over their seconds), the end-to-end tokens/s, the
acceptance rate and mean accepted length, and whether every configuration's tokens equal plain decoding's.
Writes a record (card, date, command, commit) to OUT.json.

    # CPU, the default model, prompt lookup on an input-grounded workload (rewrite a given passage), batch 1
    python scripts/spec_bench.py --workload rewrite --batch 1 \
        --spec '{"method": "ngram", "num_speculative_tokens": 4}' --commit $(git rev-parse --short HEAD) OUT.json
    # GPU, qwen3-0.6b's shape on random weights, a smaller random draft, the self-draft, prompt lookup
    python scripts/spec_bench.py --model qwen3-0.6b --workload repetitive --batch 1,16 \
        --spec '{"method": "draft_model", "model": "qwen3-draft-tiny"}' --spec '{"method": "ngram"}' ... OUT.json

Records made with it: notebooks/reference_results/cpu_speculative.json and h200_speculative.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shlex
import sys
import time

import torch

from nanoinfer import LLM
from nanoinfer.tools.bench import decode_run, tokens_agreement
from nanoinfer.tools.workloads import rewrite_prompts

def prompts_for(llm: LLM, workload: str, batch: int, prompt_len: int, seed: int = 0) -> list[list[int]]:
    """rewrite: chats asking to rewrite or summarise a passage (tools/workloads.py); repetitive:
    random ids, a random chunk repeated (random-weight shapes have no tokenizer); random: random ids."""
    if workload == "rewrite":
        return rewrite_prompts(llm, batch)
    rng = random.Random(seed)
    vocab = llm.engine.hf_config.vocab_size
    out = []
    for _ in range(batch):
        if workload == "repetitive":
            chunk = [rng.randrange(vocab) for _ in range(32)]
            out.append((chunk * (prompt_len // 32 + 1))[:prompt_len])
        else:
            out.append([rng.randrange(vocab) for _ in range(prompt_len)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--model", default=None, help="a checkpoint or a named shape; default: the default model")
    ap.add_argument("--spec", action="append", required=True, help="a speculative_config as JSON (repeatable)")
    ap.add_argument("--workload", choices=["rewrite", "repetitive", "random"], default="rewrite")
    ap.add_argument("--batch", default="1", help="batch sizes, comma-separated")
    ap.add_argument("--prompt-len", type=int, default=256, help="(repetitive and random workloads)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kv-gib", type=float, default=None, help="KV budget per engine (GPU: several engines share it)")
    ap.add_argument("--max-num-seqs", type=int, default=None, help="(also the largest CUDA graph captured)")
    ap.add_argument("--dtype", default="auto", help="float32 on a GPU: greedy tokens must then equal plain decoding's")
    ap.add_argument("--commit", required=True, help="the commit that holds the code measured")
    args = ap.parse_args()
    specs = [None] + [json.loads(s) for s in args.spec]
    knobs = {"max_model_len": 2048, "dtype": args.dtype}
    if args.max_num_seqs:
        knobs["max_num_seqs"] = args.max_num_seqs
    if args.kv_gib:
        knobs["kv_cache_memory_bytes"] = int(args.kv_gib * 2**30)
    llms = [LLM(args.model, speculative_config=s, **knobs) for s in specs]
    cuda = llms[0].engine.device.type == "cuda"
    card = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()}, " \
                                                        f"{torch.get_num_threads()} threads)"
    results = []
    for batch in [int(b) for b in args.batch.split(",")]:
        prompts = prompts_for(llms[0], args.workload, batch, args.prompt_len)
        for llm in llms:
            decode_run(llm, prompts, 8)  # warm-up of this batch's shapes
        best: list[dict | None] = [None] * len(llms)
        for _ in range(args.repeats):  # alternating: a slow spell of the machine hits every engine alike
            for i, llm in enumerate(llms):
                r = decode_run(llm, prompts, args.max_tokens)
                if best[i] is None or r["decode_tokens_per_s"] > best[i]["decode_tokens_per_s"]:
                    best[i] = r
        plain = best[0]
        for spec, r in zip(specs, best):
            row = {"batch": batch, "speculative_config": spec, **{k: v for k, v in r.items() if k != "tokens"},
                   "speedup_decode": r["decode_tokens_per_s"] / plain["decode_tokens_per_s"],
                   "speedup_e2e": r["e2e_tokens_per_s"] / plain["e2e_tokens_per_s"],
                   "same_tokens_as_plain": r["tokens"] == plain["tokens"],
                   # bfloat16: a verify step's wider matmuls round differently, and a near-tie may flip
                   "tokens_before_first_difference": tokens_agreement(r["tokens"], plain["tokens"]),
                   "prompt_tokens": sum(map(len, prompts)) // batch}
            results.append(row)
            print(json.dumps(row))
    record = {"card": card, "date": time.strftime("%Y-%m-%d"), "commit": args.commit,
              "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
              "model": args.model or "default (SmolLM2-135M-Instruct)", "dtype": str(llms[0].engine.dtype),
              "workload": args.workload,
              "max_tokens": args.max_tokens, "repeats": args.repeats,
              "fast_paths": [llm.fast_paths().to_dict("records") for llm in llms[1:]], "results": results}
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    for llm in llms:
        llm.shutdown()


if __name__ == "__main__":
    main()
