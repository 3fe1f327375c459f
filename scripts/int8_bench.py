"""Unquantized against int8 weight-only quantization (``quantization="int8"``), measured in one run and one process:
batch-1 decode tokens/s (alternating the two engines, the best of ``--repeats`` each), the linear layers' weight
bytes, the next-token logits' relative error and the greedy agreement over fixed prompts
(``nanoinfer.quantization.compare_to_unquantized``), and with ``--kernels`` the time of one linear layer's
product per shape and row count, for each kernel that could do it (the int8 kernels checked against float32 on
the same inputs). Writes a record (card, date, command, commit) to OUT.json.

    python scripts/int8_bench.py --commit $(git rev-parse --short HEAD) OUT.json              # CPU: the default model, float32
    python scripts/int8_bench.py --model qwen3-0.6b --kernels --commit ... OUT.json           # GPU: bfloat16, random weights

Records made with it: notebooks/reference_results/cpu_int8.json and h200_int8.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time

import torch
import torch.nn.functional as F

from nanoinfer import LLM, SamplingParams
from nanoinfer.quantization import compare_to_unquantized, dequantize, linear_weight_bytes, quantize_per_channel

TEXTS = ["The capital of France is", "List three uses of a paperclip:", "Q: What is 12 times 7?\nA:",
         "In machine learning, overfitting means", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
         "Photosynthesis is the process by which plants turn sunlight, water and carbon dioxide into",
         "Here is a short story about a robot who learns to paint. Once upon a time,",
         "The history of the printing press begins in the fifteenth century, when"]


def decode_tokens_per_s(llm, prompt: list[int], output_len: int) -> float:
    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    llm.reset_metrics()
    llm.generate([prompt], params, use_tqdm=False)
    return llm.engine.metrics.summary()["decode"]["tokens_per_s"]


def timed_ms(fn, device: torch.device) -> float:
    """Milliseconds per call: the best of 3 runs of 50 calls (5 on a CPU) after a warm-up."""
    iters = 50 if device.type == "cuda" else 5
    fn()
    best = float("inf")
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / iters * 1e3)
    return best


def kernel_table(llm, device: torch.device, dtype: torch.dtype, rows_list) -> list[dict]:
    """Each distinct linear shape of the model, at each row count: ms per product of every candidate."""
    from nanoinfer.layers.linear import LinearBase
    from nanoinfer.quantization import int8_linear_reference

    candidates = {}
    if device.type == "cuda":
        from nanoinfer.fast import int8_matmul_triton as k

        candidates["triton_gemv (tuned)"] = lambda x, q, s: k.gemv(x, q, s, None, x.new_empty(x.shape[0], q.shape[0]))
        for bn, bk, w in k.GEMV_CONFIGS:
            candidates[f"triton_gemv_{bn}x{bk}w{w}"] = (
                lambda x, q, s, c=(bn, bk, w): k.gemv(x, q, s, None, x.new_empty(x.shape[0], q.shape[0]), *c))
        candidates["triton_tiles"] = lambda x, q, s: k.matmul(x, q, s, None, x.new_empty(x.shape[0], q.shape[0]),
                                                              *k.matmul_config(x.shape[0], x.dtype))
    else:
        from nanoinfer.fast.int8_matmul_cpu import int8_matmul_cpu

        candidates["c_int8"] = lambda x, q, s: int8_matmul_cpu(x, q, s)
    candidates["torch_int8pack_mm"] = lambda x, q, s: torch._weight_int8pack_mm(x, q, s.to(x.dtype))
    candidates["dequantize_per_call"] = lambda x, q, s: int8_linear_reference(x, q, None, s)
    shapes = sorted({tuple(m.weight.shape) for m in llm.engine.model_runner.model.modules() if isinstance(m, LinearBase)})
    table = []
    for n, k_ in shapes:
        w = torch.randn(n, k_, device=device, dtype=dtype) * 0.02
        q, s = quantize_per_channel(w)
        for rows in rows_list:
            x = torch.randn(rows, k_, device=device, dtype=dtype)
            want = x.double() @ dequantize(q, s).double().T
            row = {"N": n, "K": k_, "rows": rows, f"{dtype}_F.linear_ms": timed_ms(lambda: F.linear(x, w), device)}
            for name, fn in candidates.items():
                if (name.startswith("triton_gemv") and rows > 16) or (name == "torch_int8pack_mm" and rows > 16
                                                                       and device.type == "cpu"):
                    continue  # (far too slow there)
                try:
                    got = fn(x, q, s)
                except Exception as error:  # (a kernel missing on this device or build)
                    row[name] = f"unavailable: {type(error).__name__}: {str(error)[:120]}"
                    continue
                err = ((got.double() - want).norm() / want.norm()).item()
                row[name] = {"ms": timed_ms(lambda: fn(x, q, s), device), "rel_error": err}
            table.append(row)
            print(json.dumps(row), flush=True)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out"), p.add_argument("--model", default=None, help="default: the default model (SmolLM2-135M)")
    p.add_argument("--dtype", default="auto"), p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=256), p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--agreement-tokens", type=int, default=32)
    p.add_argument("--kernels", action="store_true", help="also time one layer's product per kernel")
    p.add_argument("--card", default=None), p.add_argument("--commit", default="unknown")
    args = p.parse_args()

    knobs = dict(dtype=args.dtype, max_model_len=args.prompt_len + max(args.output_len, args.agreement_tokens) + 16,
                 max_num_seqs=8, num_kvcache_blocks=1024)  # (a fixed KV budget: two engines share the device)
    t0 = time.perf_counter()
    engines = {"unquantized": LLM(args.model, **knobs), "int8": LLM(args.model, quantization="int8", **knobs)}
    startup = time.perf_counter() - t0
    base, int8 = engines["unquantized"], engines["int8"]
    runner = base.engine.model_runner
    device, dtype = runner.device, runner.dtype
    vocab = runner.hf_config.vocab_size
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (args.prompt_len,), generator=g).tolist()
    if base.tokenizer is not None:  # a real checkpoint: text prompts
        prompts = [base.tokenizer.encode(t) for t in TEXTS]
    else:  # random weights: random prompts (agreement on noise logits; the speed is the real shape's)
        prompts = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in (5, 17, 40, 64, 90, 33, 120, 8)]

    for llm in engines.values():  # warm-up (compilation, CUDA graphs already captured)
        decode_tokens_per_s(llm, prompt, 16)
    speed = {name: [] for name in engines}
    for _ in range(args.repeats):  # alternating, so that a drift in the machine hits both
        for name, llm in engines.items():
            speed[name].append(decode_tokens_per_s(llm, prompt, args.output_len))
            print(f"{name}: {speed[name][-1]:.1f} decode tok/s", flush=True)
    best = {name: max(v) for name, v in speed.items()}
    quality = compare_to_unquantized(base, int8, prompts, args.agreement_tokens)
    print(json.dumps(quality), flush=True)
    linear = {name: linear_weight_bytes(llm.engine.model_runner.model) for name, llm in engines.items()}
    total = {name: sum(t.numel() * t.element_size() for t in [*llm.engine.model_runner.model.parameters(),
                                                                   *llm.engine.model_runner.model.buffers()])
             for name, llm in engines.items()}
    card = args.card or (f"1 x {torch.cuda.get_device_name()}" if device.type == "cuda"
                         else f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    record = {
        "card": card, "date": time.strftime("%Y-%m-%d"),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "commit": args.commit,
        "torch": torch.__version__, "model": args.model or "SmolLM2-135M-Instruct (default)", "dtype": str(dtype),
        "engine": {"unquantized": repr(base), "int8": repr(int8)}, "startup_s": startup,
        "fast_paths_int8": int8.fast_paths().to_dict("records"),
        "batch1_decode": {"prompt_tokens": args.prompt_len, "output_tokens": args.output_len,
                          "tokens_per_s": speed, "best_tokens_per_s": best,
                          "int8_over_unquantized": best["int8"] / best["unquantized"]},
        "linear_weight_bytes": linear, "linear_int8_share": linear["int8"] / linear["unquantized"],
        "model_bytes (parameters and buffers)": total,
        "quality": quality,
        "quality_prompts": "text prompts (TEXTS in this script)" if base.tokenizer is not None else
                           "random token prompts on random weights (agreement of noise logits: a lower bound)",
    }
    if args.kernels:
        rows = [1, 2, 4, 8, 16, 64, 512, 2048] if device.type == "cuda" else [1, 4, 16, 64]
        record["kernels"] = kernel_table(base, device, dtype, rows)
    print(f"batch-1 decode: unquantized {best['unquantized']:.1f} tok/s, int8 {best['int8']:.1f} tok/s "
          f"({best['int8'] / best['unquantized']:.3f}x); linear weights {linear['int8'] / linear['unquantized']:.1%} "
          f"of {dtype}; logits error {quality['logits_rel_error_mean']:.4f}; greedy agreement "
          f"{quality['greedy_agreement']:.3f}", flush=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1, default=str)


if __name__ == "__main__":
    main()
