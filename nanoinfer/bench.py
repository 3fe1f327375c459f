"""Throughput benchmark: the same workload through nanoinfer and through a peer, measured in one run.

    python -m nanoinfer.bench                         # CPU default: 32 requests, SmolLM2, vs transformers
    python -m nanoinfer.bench --peer none             # nanoinfer only
    python -m nanoinfer.bench --num-requests 64 --max-output 256

Requests are random token ids (as in nano-vllm's bench) with prompt and output lengths drawn uniformly
from the given ranges, ``ignore_eos`` so every request produces exactly its requested tokens. Throughput
counts requested output tokens per second of wall time for both engines. transformers' ``generate`` pads
each batch to its longest prompt and runs it to its longest requested output: the extra tokens it
computes are reported but not counted as throughput.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from dataclasses import asdict, dataclass

import torch


@dataclass
class Workload:
    name: str
    prompts: list[list[int]]
    output_lens: list[int]
    temperature: float = 0.0

    @property
    def num_output_tokens(self) -> int:
        return sum(self.output_lens)

    @property
    def num_prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)


def random_workload(num_requests: int, prompt_range: tuple[int, int], output_range: tuple[int, int],
                    vocab_size: int, seed: int = 0, temperature: float = 0.0, name: str = "random") -> Workload:
    rng = random.Random(seed)
    prompts = [[rng.randrange(vocab_size) for _ in range(rng.randint(*prompt_range))] for _ in range(num_requests)]
    outputs = [rng.randint(*output_range) for _ in range(num_requests)]
    return Workload(name, prompts, outputs, temperature)


@dataclass
class Result:
    engine: str
    seconds: float
    output_tokens: int  # requested tokens produced
    computed_tokens: int  # tokens the engine actually generated (padding included)
    prompt_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.seconds


def run_nanoinfer(llm, workload: Workload) -> Result:
    from nanoinfer import SamplingParams

    params = [SamplingParams(temperature=workload.temperature, max_tokens=n, ignore_eos=True, seed=i)
              for i, n in enumerate(workload.output_lens)]
    llm.generate([[1, 2, 3]], SamplingParams(max_tokens=2), use_tqdm=False)  # warm-up
    llm.reset_metrics()
    t0 = time.perf_counter()
    outputs = llm.generate(workload.prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    produced = sum(len(o.token_ids) for o in outputs)
    assert produced == workload.num_output_tokens, "nanoinfer produced a different number of tokens than requested"
    return Result("nanoinfer", seconds, produced, produced, workload.num_prompt_tokens)


def run_transformers_generate(model_dir: str, workload: Workload, dtype: torch.dtype, batch_size: int,
                              device: torch.device) -> Result:
    """transformers' padded ``generate``: batches of ``batch_size`` in workload order, left-padded."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    pad = 0
    computed = 0

    def run_batch(prompts, max_new):
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        kwargs = dict(do_sample=workload.temperature > 0, pad_token_id=pad)
        if workload.temperature > 0:
            kwargs.update(temperature=workload.temperature, top_k=0, top_p=1.0)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new, min_new_tokens=max_new, **kwargs)
        return out.shape[1] - width

    run_batch([[1, 2, 3]], 2)  # warm-up
    t0 = time.perf_counter()
    for start in range(0, len(workload.prompts), batch_size):
        prompts = workload.prompts[start : start + batch_size]
        max_new = max(workload.output_lens[start : start + batch_size])
        computed += run_batch(prompts, max_new) * len(prompts)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return Result(f"transformers generate (batch {batch_size})", seconds, workload.num_output_tokens, computed,
                  workload.num_prompt_tokens)


def print_table(results: list[Result]) -> None:
    base = results[0]
    print(f"\n{'engine':<40} {'seconds':>8} {'out tok/s':>10} {'computed':>9} {'vs nanoinfer':>13}")
    for r in results:
        ratio = base.tokens_per_s / r.tokens_per_s
        print(f"{r.engine:<40} {r.seconds:8.2f} {r.tokens_per_s:10.1f} {r.computed_tokens:9d} "
              f"{'' if r is base else f'{ratio:.2f}x slower':>13}")


def environment() -> dict:
    env = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "python": platform.python_version(),
           "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name()
    else:
        env["device"] = platform.processor() or platform.machine()
    return env


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a Hugging Face directory (default: the embedded SmolLM2)")
    p.add_argument("--num-requests", type=int, default=32)
    p.add_argument("--min-prompt", type=int, default=16)
    p.add_argument("--max-prompt", type=int, default=256)
    p.add_argument("--min-output", type=int, default=32)
    p.add_argument("--max-output", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--peer", choices=["transformers", "none"], default="transformers")
    p.add_argument("--peer-batch-size", type=int, default=None, help="transformers batch size (default: all)")
    p.add_argument("--max-num-seqs", type=int, default=512)
    p.add_argument("--max-num-batched-tokens", type=int, default=16384)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the small ops (default: on for CUDA, off for CPU)")
    p.add_argument("--attention-backend", default="auto")
    args = p.parse_args(argv)

    from nanoinfer import LLM

    llm = LLM(args.model, dtype=args.dtype, max_num_seqs=args.max_num_seqs, kvcache_block_size=args.block_size,
              max_num_batched_tokens=args.max_num_batched_tokens, enforce_eager=args.enforce_eager,
              attention_backend=args.attention_backend, compile=args.compile)
    workload = random_workload(args.num_requests, (args.min_prompt, args.max_prompt),
                               (args.min_output, args.max_output), llm.engine.hf_config.vocab_size, args.seed,
                               args.temperature)
    print(f"{llm}\nworkload: {args.num_requests} requests, prompts {args.min_prompt}-{args.max_prompt} tokens "
          f"({workload.num_prompt_tokens} in all), outputs {args.min_output}-{args.max_output} tokens "
          f"({workload.num_output_tokens} in all), temperature {args.temperature}, ignore_eos")
    results = [run_nanoinfer(llm, workload)]
    phases = llm.engine.metrics.summary()
    print("nanoinfer phases: " + ", ".join(f"{k} {v['steps']} steps {v['seconds']:.2f} s ({v['tokens_per_s']:.0f} tok/s)"
                                          for k, v in phases.items()))
    model_dir, dtype, device = str(llm.engine.model_dir), llm.engine.dtype, llm.engine.device
    del llm
    if args.peer == "transformers":
        batch = args.peer_batch_size or args.num_requests
        results.append(run_transformers_generate(model_dir, workload, dtype, batch, device))
    print_table(results)
    record = {"workload": {"name": workload.name, "requests": args.num_requests,
                           "prompt_tokens": workload.num_prompt_tokens, "output_tokens": workload.num_output_tokens},
              "results": [{**asdict(r), "tokens_per_s": r.tokens_per_s} for r in results],
              "env": environment(), "args": vars(args)}
    if len(results) > 1:
        record["speedup"] = results[0].tokens_per_s / results[1].tokens_per_s
        print(f"\nnanoinfer / {results[1].engine}: {record['speedup']:.2f}x")
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
