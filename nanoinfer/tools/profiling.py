"""Where the time of a decode step goes: torch.profiler over a few engine steps, kernels grouped into
attention, GEMMs, sampling, element-wise ops and communication, and the host time nothing covers.

    from nanoinfer.tools.profiling import profile_decode
    table = profile_decode(llm, num_seqs=64, context_len=1024, trace_path="decode_trace.json")

On a GPU the times are kernel (device) times; "CPU overhead" is the wall time the device sat idle, which
is what CUDA graphs remove. On a CPU the operators' own times are used instead.
"""

from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

from nanoinfer.sampling_params import SamplingParams

# Substrings of kernel / operator names, checked in this order (the first match wins).
CATEGORIES = [
    ("communication", ("nccl", "allreduce", "all_reduce", "all_gather", "gloo", "c10d")),
    ("attention", ("_decode_kernel", "_decode_reduce", "_prefill_kernel", "_store_kv", "flash", "attn",
                   "scaled_dot_product", "index_select", "index_copy", "fmha")),
    ("sampling", ("argmax", "exponential", "sort", "cumsum", "topk", "distribution", "multinomial",
                  "gumbel", "_chunk_best_kernel", "_pick_chunk_kernel", "MaxOps")),
    ("GEMM", ("gemm", "xmma", "cutlass", "nvjet", "cublas", "aten::mm", "aten::addmm", "aten::linear",
              "aten::matmul", "sm90", "sm80")),
    ("copies", ("memcpy", "memset", "CatArrayBatchedCopy", "aten::copy_", "aten::to", "aten::fill_")),
    ("norm / rotary / activation", ("triton_", "_qk_prologue_kernel", "elementwise", "vectorized",
                                    "reduce_kernel", "aten::mul", "aten::add", "aten::silu", "aten::rsqrt",
                                    "aten::pow", "aten::mean", "aten::cat", "aten::neg", "aten::embedding")),
]


def category(name: str) -> str:
    lowered = name.lower()
    return next((label for label, keys in CATEGORIES if any(k.lower() in lowered for k in keys)), "other")


def _start_decoding(llm, num_seqs: int, context_len: int, steps: int) -> None:
    """Queue ``num_seqs`` random prompts of ``context_len`` tokens and run until every one is decoding."""
    vocab = llm.engine.hf_config.vocab_size
    g = torch.Generator().manual_seed(0)
    for _ in range(num_seqs):
        prompt = torch.randint(0, vocab, (context_len,), generator=g).tolist()
        llm.engine.add_request(prompt, SamplingParams(temperature=0.0, max_tokens=steps + 8, ignore_eos=True))
    while any(s.num_uncomputed_tokens > 1 for s in llm.scheduler.running) or llm.scheduler.waiting:
        llm.engine.step()
    for _ in range(2):  # warm decode steps (graphs, caches) before measuring
        llm.engine.step()


def time_per_kernel(events, steps: int, cuda: bool) -> tuple[dict, dict, dict]:
    """Milliseconds per step by category and by kernel (on a CPU: by operator), and the host time of the
    engine's own named ranges (``record_function("nanoinfer.*")``), from a profiler's ``key_averages()``."""
    kernels, host = {}, {}  # name -> milliseconds per step
    for evt in events:
        if evt.key.startswith("nanoinfer."):  # (a GPU copy of the range has no host time: keep the larger)
            name = evt.key.removeprefix("nanoinfer.")
            host[name] = max(host.get(name, 0.0), evt.cpu_time_total / 1e3 / steps)
            continue
        if cuda:  # the kernels and copies themselves. An operator launched outside a CUDA graph (the LM
            # head's matmul, the logits' gather, the sampler) also carries its kernels' time, and a named
            # range (nccl:all_gather, ...) has a copy on the GPU timeline spanning them: both would count twice
            on_device = evt.device_type != torch.autograd.DeviceType.CPU and not evt.is_user_annotation
            us = evt.self_device_time_total if on_device else 0
        else:
            us = evt.self_cpu_time_total if evt.key.startswith("aten::") else 0
        if us > 0:
            kernels[evt.key] = kernels.get(evt.key, 0.0) + us / 1e3 / steps
    totals: dict[str, float] = {}
    for name, ms in kernels.items():
        totals[category(name)] = totals.get(category(name), 0.0) + ms
    return totals, kernels, host


def profile_decode(llm, num_seqs: int = 1, context_len: int = 512, steps: int = 5,
                   trace_path: str | None = None, top_kernels: int = 30):
    """A DataFrame of the time per category (milliseconds per step, share) over ``steps`` decode steps of
    ``num_seqs`` sequences; ``.attrs`` holds the wall time per step and the ``top_kernels`` longest kernels."""
    import pandas as pd

    cuda = llm.engine.device.type == "cuda"
    _start_decoding(llm, num_seqs, context_len, steps)
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            llm.engine.step()
        if cuda:
            torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - start) * 1e3 / steps
    llm.engine.abort_all()
    if trace_path:
        prof.export_chrome_trace(trace_path)

    totals, kernels, host = time_per_kernel(prof.key_averages(), steps, cuda)
    if cuda:  # what the device did not cover: the launch and Python overhead that CUDA graphs remove
        totals["CPU overhead (device idle)"] = max(0.0, wall_ms - sum(totals.values()))
    table = pd.DataFrame({"ms_per_step": totals}).sort_values("ms_per_step", ascending=False)
    table["share"] = table["ms_per_step"] / table["ms_per_step"].sum()
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:top_kernels]
    table.attrs.update(wall_ms_per_step=wall_ms, host_ms_per_step=host, num_seqs=num_seqs, context_len=context_len,
                       device=str(llm.engine.device), graphs=llm.model_runner.graphs is not None,
                       top_kernels=[{"name": name, "category": category(name), "ms_per_step": ms} for name, ms in top])
    return table
