"""Throughput benchmark: one workload through nanoinfer and through a peer, measured in the same run.

    python -m nanoinfer.bench                          # CPU: 32 mixed requests on SmolLM2 vs transformers
    python -m nanoinfer.bench --model qwen3-0.6b       # GPU: nano-vllm's workload on random Qwen3-0.6B weights
    python -m nanoinfer.bench --workload rag_qa --peer none
    python -m nanoinfer.bench --model qwen3-0.6b --peer transformers --peer-requests 64

Requests are random token ids with ``ignore_eos``, so every request produces exactly its requested tokens. Two
throughputs are reported per engine: *requested* tokens per second (what a user receives) and *generated* tokens
per second (all the engine decoded: transformers runs each batch to its longest request); the ratio on generated
tokens credits the peer for its extra tokens. The memory roofline (``roofline``) is the fastest any engine could
decode this workload on this machine, at the copy bandwidth measured here.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, replace

import torch

from nanoinfer import LLM, SamplingParams
from nanoinfer.tools.shapes import shape_config


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

    def head(self, n: int) -> "Workload":
        return Workload(f"{self.name}[:{n}]", self.prompts[:n], self.output_lens[:n], self.temperature)


# name: (requests, prompt length range, output length range, temperature); a fixed length is (n, n)
WORKLOADS = {
    "cpu-mixed": (32, (16, 256), (32, 128), 0.0),
    "nano-vllm": (256, (100, 1024), (100, 1024), 0.6),  # nano-vllm's bench.py
    "chatbot": (256, (128, 128), (256, 256), 0.6),
    "rag_qa": (128, (2048, 2048), (64, 64), 0.6),
    "code_gen": (256, (512, 512), (512, 512), 0.6),
    "summarization": (64, (4096, 4096), (256, 256), 0.6),
    "repeated_prefix": (256, (1024, 1024), (128, 128), 0.6),  # every prompt shares its first 960 tokens
}


def random_workload(num_requests: int, prompt_range: tuple[int, int], output_range: tuple[int, int],
                    vocab_size: int, seed: int = 0, temperature: float = 0.0, name: str = "random",
                    shared_prefix: int = 0) -> Workload:
    rng = random.Random(seed)
    prefix = [rng.randrange(vocab_size) for _ in range(shared_prefix)]
    prompts = []
    for _ in range(num_requests):
        n = rng.randint(*prompt_range)
        prompts.append(prefix[:n] + [rng.randrange(vocab_size) for _ in range(n - min(n, shared_prefix))])
    return Workload(name, prompts, [rng.randint(*output_range) for _ in range(num_requests)], temperature)


def named_workload(name: str, vocab_size: int, seed: int = 0, num_requests: int | None = None) -> Workload:
    n, prompt, output, temperature = WORKLOADS[name]
    shared = 960 if name == "repeated_prefix" else 0
    return random_workload(num_requests or n, prompt, output, vocab_size, seed, temperature, name, shared)


@dataclass
class Result:
    engine: str
    seconds: float
    requested_tokens: int  # tokens the requests asked for
    generated_tokens: int  # tokens the engine decoded (padding to the longest request included)
    num_requests: int

    @property
    def requested_per_s(self) -> float:
        return self.requested_tokens / self.seconds

    @property
    def generated_per_s(self) -> float:
        return self.generated_tokens / self.seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_nanoinfer(llm, workload: Workload) -> Result:
    # No per-request seeds: with the torch sampler a seeded request draws its noise from its own generator.
    params = [SamplingParams(temperature=workload.temperature, max_tokens=n, ignore_eos=True)
              for n in workload.output_lens]
    llm.generate([[1, 2, 3]], SamplingParams(max_tokens=2), use_tqdm=False)  # warm-up
    llm.reset_metrics()
    t0 = time.perf_counter()
    outputs = llm.generate(workload.prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    produced = sum(len(o.token_ids) for o in outputs)
    assert produced == workload.num_output_tokens, "nanoinfer produced a different number of tokens than requested"
    return Result("nanoinfer", seconds, produced, produced, len(workload.prompts))


def _hf_model(model_dir: str | None, shape: str | None, dtype: torch.dtype, device: torch.device, attn: str):
    from transformers import AutoModelForCausalLM

    if model_dir is not None:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=attn)
    else:  # a named shape: transformers' own random initialisation, same architecture and size
        config = shape_config(shape)
        config._attn_implementation = attn
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    return model.to(device).eval()


def run_transformers_generate(model, workload: Workload, batch_size: int, device: torch.device) -> Result:
    """transformers' padded ``generate``: ``batch_size`` requests at a time, left-padded, to the longest output."""

    def run_batch(prompts, max_new):
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)  # 0: padding
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        kwargs = dict(do_sample=workload.temperature > 0, pad_token_id=0)
        if workload.temperature > 0:
            kwargs.update(temperature=workload.temperature, top_k=0, top_p=1.0)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new, min_new_tokens=max_new, **kwargs)
        return out.shape[1] - width

    run_batch([[1, 2, 3]], 2)  # warm-up
    generated = 0
    _sync(device)
    t0 = time.perf_counter()
    for start in range(0, len(workload.prompts), batch_size):
        prompts = workload.prompts[start : start + batch_size]
        generated += run_batch(prompts, max(workload.output_lens[start : start + batch_size])) * len(prompts)
    _sync(device)
    return Result(f"transformers generate (batch {batch_size})", time.perf_counter() - t0,
                  workload.num_output_tokens, generated, len(workload.prompts))


def run_transformers_generate_batch(model, workload: Workload, device: torch.device) -> Result:
    """transformers' paged continuous batching (``generate_batch``): one config, so all run to the longest."""
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=max(workload.output_lens), min_new_tokens=max(workload.output_lens),
                              do_sample=workload.temperature > 0, temperature=workload.temperature or None,
                              top_k=0, top_p=1.0, eos_token_id=-1, pad_token_id=0)
    warm_up = GenerationConfig(max_new_tokens=2, eos_token_id=-1, pad_token_id=0)
    model.generate_batch(inputs=[[1, 2, 3]], generation_config=warm_up, progress_bar=False)
    _sync(device)
    t0 = time.perf_counter()
    outputs = model.generate_batch(inputs=workload.prompts, generation_config=config, progress_bar=False)
    _sync(device)
    seconds = time.perf_counter() - t0
    return Result("transformers generate_batch (paged)", seconds, workload.num_output_tokens,
                  sum(len(o.generated_tokens) for o in outputs.values()), len(workload.prompts))


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30) -> float:
    """Bytes per second of a large copy, counting bytes read plus bytes written."""
    a = torch.empty(nbytes // 2, dtype=torch.uint8, device=device).fill_(1)
    b = a.clone()  # a first copy, not timed
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(5):
        b.copy_(a)
    _sync(device)
    return 2 * a.numel() * 5 / (time.perf_counter() - t0)


def roofline(llm, workload: Workload, bandwidth: float) -> dict:
    """The memory floor of decoding this workload: weights once per decode step (as many steps as the
    longest output, all requests running together) plus each sequence's KV cache once per token."""
    report = llm.engine.memory_report()
    weights, per_token = report["weights_bytes"], report["kv_bytes_per_token"]
    kv = sum((n * len(p) + n * (n - 1) // 2) * per_token for p, n in zip(workload.prompts, workload.output_lens))
    steps = max(workload.output_lens)
    seconds = (steps * weights + kv) / bandwidth
    return {"weight_bytes": weights, "kv_read_bytes": kv, "decode_steps": steps, "bandwidth_Bps": bandwidth,
            "floor_seconds": seconds, "tokens_per_s": workload.num_output_tokens / seconds}


def environment() -> dict:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()
    env = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "python": platform.python_version(),
           "threads": torch.get_num_threads(), "device": device}
    with suppress(ImportError):
        import transformers

        env["transformers"] = transformers.__version__
    return env


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a Hugging Face directory or a named shape with random weights (qwen3-0.6b, "
                                   "qwen3-8b, llama-3.2-1b, ...); default: the embedded SmolLM2")
    p.add_argument("--workload", choices=sorted(WORKLOADS), help="default: nano-vllm on a GPU, cpu-mixed on a CPU")
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
    p.add_argument("--json-out", default=None, help="also write the JSON record to this file")
    args = p.parse_args(argv)

    gpu = torch.cuda.is_available()
    name = args.workload or ("nano-vllm" if gpu else "cpu-mixed")
    n, prompt_range, output_range, temperature = WORKLOADS[name]
    custom = any(v is not None for v in (args.min_prompt, args.max_prompt, args.min_output, args.max_output))
    prompt_range = (args.min_prompt or prompt_range[0], args.max_prompt or prompt_range[1])
    output_range = (args.min_output or output_range[0], args.max_output or output_range[1])
    temperature = temperature if args.temperature is None else args.temperature
    max_model_len = args.max_model_len or prompt_range[1] + output_range[1] + 1
    knobs = dict(dtype=args.dtype, max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                 max_model_len=max_model_len, tensor_parallel_size=args.tensor_parallel_size,
                 enforce_eager=args.enforce_eager, attention_backend=args.attention_backend, compile=args.compile,
                 async_scheduling=args.async_scheduling, fused_attention_prologue=args.fused_attention_prologue)
    if args.block_size:
        knobs["kvcache_block_size"] = args.block_size
    t0 = time.perf_counter()
    llm = LLM(args.model, **knobs)
    startup = time.perf_counter() - t0
    vocab = llm.engine.hf_config.vocab_size
    if custom:
        workload = random_workload(args.num_requests or n, prompt_range, output_range, vocab, args.seed, temperature,
                                   name="custom")
    else:
        workload = named_workload(name, vocab, args.seed, args.num_requests)
        workload.temperature = temperature
    print(f"{llm}\nstart-up {startup:.1f} s; workload {workload.name}: {len(workload.prompts)} requests, prompts "
          f"{prompt_range[0]}-{prompt_range[1]} tokens ({workload.num_prompt_tokens} in all), outputs "
          f"{output_range[0]}-{output_range[1]} ({workload.num_output_tokens} in all), temperature "
          f"{workload.temperature}, ignore_eos")

    results = [run_nanoinfer(llm, workload)]
    phases = llm.engine.metrics.summary()
    host = llm.step_timeline().groupby("phase")[["schedule_s", "model_s", "postprocess_s"]].mean() * 1e3
    print("mean ms per step (schedule / model incl. prepare and sampling / postprocess):\n" + host.round(3).to_string())
    graphs = llm.model_runner.graphs
    print("nanoinfer phases: " + ", ".join(f"{k} {v['steps']} steps {v['seconds']:.2f} s ({v['tokens_per_s']:.0f} tok/s)"
                                          for k, v in phases.items())
          + (f"; decode {1e3 * phases['decode']['seconds'] / phases['decode']['steps']:.2f} ms/step"
             if phases["decode"]["steps"] else ""))
    roof = roofline(llm, workload, copy_bandwidth(llm.engine.device))
    print(f"memory roofline: {roof['tokens_per_s']:.0f} tok/s ({roof['kv_read_bytes'] / 1e12:.2f} TB of KV reads + "
          f"{roof['decode_steps']} steps x {roof['weight_bytes'] / 1e9:.2f} GB of weights at "
          f"{roof['bandwidth_Bps'] / 1e12:.2f} TB/s); nanoinfer reaches "
          f"{results[0].generated_per_s / roof['tokens_per_s']:.0%} of it")

    peer_workload = workload if args.peer_requests is None else workload.head(args.peer_requests)
    if args.peer_requests is not None:
        results.append(replace(run_nanoinfer(llm, peer_workload), engine=f"nanoinfer (first {args.peer_requests})"))
    model_dir = str(llm.engine.model_dir) if llm.engine.model_dir else None
    dtype, device = llm.engine.dtype, llm.engine.device
    record = {"workload": {"name": workload.name, "requests": len(workload.prompts),
                           "prompt_tokens": workload.num_prompt_tokens, "output_tokens": workload.num_output_tokens},
              "model": args.model or "SmolLM2-135M-Instruct", "engine": repr(llm), "startup_s": startup,
              "phases": phases, "roofline": roof, "memory": llm.engine.memory_report(),
              "cuda_graphs": graphs.coverage.as_dict() if graphs else None, "env": environment(), "args": vars(args)}
    llm.shutdown()  # give the card back to the peer
    del llm
    if args.peer == "transformers":
        for attn, api in ([("paged|sdpa", "generate_batch")] if gpu else []) + [("sdpa", "generate")]:
            try:
                model = _hf_model(model_dir, args.model, dtype, device, attn)
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
    line = json.dumps(record, default=str)
    print(line)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(line + "\n")
    return record


if __name__ == "__main__":
    main()
