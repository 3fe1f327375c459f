"""What a step costs and what the machine can do: FLOPs and bytes of a step, the copy bandwidth and matmul rate
measured here, and the floor they set (a step cannot beat the larger of bytes / bandwidth and FLOPs / rate).

    rates = machine_rates(llm.engine.device, llm.engine.dtype)
    cost = ModelCost.of(llm)
    flops, nbytes = cost.step(tokens=512, contexts=[(512, 512)], sampled=1)   # a 512-token prefill
    floor_s = max(nbytes / rates["bandwidth"], flops / rates["matmul_flops"])
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from nanoinfer.models.llama import head_dim_of


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on a CPU): timings stop the clock after it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(fn, device: torch.device, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls. On a GPU by CUDA events around the call: a host clock adds the launch
    and the synchronisation, which made an H200's 1 GiB copy read 3.9 TB/s instead of 4.2
    (h200_copy_bandwidth_timing.json)."""
    fn()  # once untimed: allocation, kernel selection
    times = []
    for _ in range(repeats):
        sync(device)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def copy_bandwidth(device: torch.device, nbytes: int | None = None, repeats: int = 5) -> list[float]:
    """Bytes per second of a large copy (bytes read plus bytes written), one figure per repeat."""
    nbytes = nbytes or ((1 << 30) if device.type == "cuda" else (128 << 20))
    a = torch.empty(nbytes // 2, dtype=torch.uint8, device=device).fill_(1)
    b = torch.empty_like(a)
    return [2 * a.numel() / t for t in _best_seconds(lambda: b.copy_(a), device, repeats)]


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 5) -> list[float]:
    """FLOP/s of an n x n matmul in the engine's dtype, one figure per repeat."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return [2 * n**3 / t for t in _best_seconds(lambda: a @ b, device, repeats)]


def machine_rates(device: torch.device, dtype: torch.dtype, repeats: int | None = None) -> dict:
    """The best of several copies and matmuls: what this machine can do (the spreads are kept too). On a GPU 20 of
    each, a few milliseconds: single 1 GiB copies on one H200 spread from 3.9 to 4.2 TB/s
    (h200_copy_bandwidth_timing.json); on a CPU 5."""
    repeats = repeats or (20 if device.type == "cuda" else 5)
    copies, matmuls = copy_bandwidth(device, repeats=repeats), matmul_rate(device, dtype, repeats=repeats)
    return {"bandwidth": max(copies), "matmul_flops": max(matmuls), "bandwidth_runs": copies,
            "matmul_flops_runs": matmuls, "ridge_flop_per_byte": max(matmuls) / max(copies)}


@dataclass
class ModelCost:
    """FLOPs and bytes of one step of a decoder, from its shape (the reference formula, written once)."""

    body_params: int  # weights every fed token multiplies (all but the embedding)
    head_params: int  # the LM head: only sampled positions multiply it
    weight_bytes: int  # read once per step
    kv_bytes_per_token: int
    num_layers: int
    attention_width: int  # query heads x head dim

    @classmethod
    def of(cls, llm) -> "ModelCost":
        e = llm.engine
        hf, params = e.hf_config, list(e.model_runner.model.parameters())
        embed = hf.vocab_size * hf.hidden_size
        report = e.memory_report()
        return cls(sum(p.numel() for p in params) - embed, embed, report["weights_bytes"],
                   report["kv_bytes_per_token"], hf.num_hidden_layers, hf.num_attention_heads * head_dim_of(hf))

    def step(self, tokens: int, contexts: list[tuple[int, int]], sampled: int) -> tuple[float, float]:
        """``tokens`` fed, ``contexts`` = [(new tokens, context length after the step)] per sequence,
        ``sampled`` positions through the LM head. Matmuls: 2 FLOPs per weight per token; causal attention:
        4 x layers x width per query-key pair, q new queries over contexts c -> q (c - (q - 1) / 2) pairs.
        Bytes: every weight once, and each sequence's K and V once."""
        flops = 2 * self.body_params * tokens + 2 * self.head_params * sampled
        flops += sum(4 * self.num_layers * self.attention_width * q * (c - (q - 1) / 2) for q, c in contexts)
        nbytes = self.weight_bytes + sum(c for _, c in contexts) * self.kv_bytes_per_token
        return flops, nbytes


def floor_seconds(flops: float, nbytes: float, rates: dict) -> dict:
    """The step's floor and which resource sets it."""
    memory_s, compute_s = nbytes / rates["bandwidth"], flops / rates["matmul_flops"]
    return {"memory_s": memory_s, "compute_s": compute_s, "floor_s": max(memory_s, compute_s),
            "bound": "memory" if memory_s >= compute_s else "compute"}


def workload_floor(cost: ModelCost, workload, rates: dict, max_num_batched_tokens: int) -> dict:
    """The fastest any engine could run ``workload`` here, phase by phase, each phase's floor the larger of its
    bytes and its FLOPs. Prefill: every prompt token once, the weights once per step of at most
    ``max_num_batched_tokens`` tokens. Decode: all requests together, as many steps as the longest output, the
    weights once per step and each sequence's KV once per token. (A per-step maximum would be higher still.)"""
    prompts, outputs = [len(p) for p in workload.prompts], workload.output_lens
    prefill_steps = -(-sum(prompts) // max_num_batched_tokens)
    prefill_flops = sum(cost.step(n, [(n, n)], 1)[0] for n in prompts)
    prefill_bytes = prefill_steps * cost.weight_bytes + sum(prompts) * cost.kv_bytes_per_token  # K/V written
    decode_steps = max(outputs) - 1  # the first token of each request comes from its prefill
    kv_reads = sum((n - 1) * p + n * (n - 1) // 2 for p, n in zip(prompts, outputs))
    decode_flops = sum(2 * cost.body_params * (n - 1) + 2 * cost.head_params * (n - 1) for n in outputs)
    decode_flops += 4 * cost.num_layers * cost.attention_width * kv_reads
    decode_bytes = decode_steps * cost.weight_bytes + kv_reads * cost.kv_bytes_per_token
    prefill, decode = floor_seconds(prefill_flops, prefill_bytes, rates), floor_seconds(decode_flops, decode_bytes, rates)
    seconds = prefill["floor_s"] + decode["floor_s"]
    return {"prefill": prefill, "decode": decode, "floor_seconds": seconds, "weight_bytes": cost.weight_bytes,
            "kv_read_bytes": kv_reads * cost.kv_bytes_per_token, "decode_steps": decode_steps,
            "bandwidth_Bps": rates["bandwidth"], "matmul_flops": rates["matmul_flops"],
            "tokens_per_s": workload.num_output_tokens / seconds}
