"""Where the time of a decode step goes: torch.profiler over a few engine steps, kernels grouped into
attention, GEMMs, sampling, element-wise ops and communication, and the host time nothing covers.

    from nanoinfer.tools.profiling import profile_decode
    table = profile_decode(llm, num_seqs=64, context_len=1024, trace_path="decode_trace.json")

On a GPU the times are kernel (device) times; "CPU overhead" is the wall time the device sat idle, which
is what CUDA graphs remove. On a CPU the operators' own times are used instead.

``attention_cost`` times one attention backend on one layer's shapes, outside the engine, and measures the
memory it takes: on a GPU the allocator's peak; on a CPU the bytes of every tensor its operators return
(``TensorBytes``) and the growth of the process's peak resident memory (``peak_rss``).
"""

from __future__ import annotations

import re
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from nanoinfer.sampling_params import SamplingParams

# Substrings of kernel / operator names, checked in this order (the first match wins).
CATEGORIES = [
    ("communication", ("nccl", "allreduce", "all_reduce", "all_gather", "gloo", "c10d")),
    ("attention", ("_decode_kernel", "_decode_reduce", "_prefill_kernel", "_store_kv", "flash", "attn",
                   "scaled_dot_product", "index_select", "index_copy", "fmha")),
    ("sampling", ("argmax", "exponential", "sort", "cumsum", "topk", "distribution", "multinomial",
                  "gumbel", "_chunk_best_kernel", "_pick_chunk_kernel", "MaxOps", "aten::max")),
    ("GEMM", ("gemm", "xmma", "cutlass", "nvjet", "cublas", "aten::mm", "aten::addmm", "aten::linear",
              "aten::matmul", "sm90", "sm80", "mkldnn")),
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
            us = evt.self_cpu_time_total if evt.key.startswith(("aten::", "mkldnn::")) else 0
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
    elif wall_ms > sum(totals.values()):  # the C kernels (called through ctypes, unseen) and Python
        totals["outside PyTorch operators"] = wall_ms - sum(totals.values())
    table = pd.DataFrame({"ms_per_step": totals}).sort_values("ms_per_step", ascending=False)
    table["share"] = table["ms_per_step"] / table["ms_per_step"].sum()
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:top_kernels]
    table.attrs.update(wall_ms_per_step=wall_ms, host_ms_per_step=host, num_seqs=num_seqs, context_len=context_len,
                       device=str(llm.engine.device), graphs=llm.model_runner.graphs is not None,
                       top_kernels=[{"name": name, "category": category(name), "ms_per_step": ms} for name, ms in top])
    return table


class TensorBytes(TorchDispatchMode):
    """Counts the tensors PyTorch's operators return inside the block: their bytes in all and the largest.
    (A fused kernel's own scratch, its tiles in registers or caches, is no tensor and is not counted.)"""

    def __enter__(self):
        self.total = self.largest = 0
        self.largest_shape: tuple[int, ...] = ()
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and func not in _VIEWS and not t._is_view():
                nbytes = t.numel() * t.element_size()
                self.total += nbytes
                if nbytes > self.largest:
                    self.largest, self.largest_shape = nbytes, tuple(t.shape)
        return out


_VIEWS = {torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default, torch.ops.aten.transpose.int,
          torch.ops.aten.expand.default, torch.ops.aten.slice.Tensor, torch.ops.aten.select.int,
          torch.ops.aten.unsqueeze.default, torch.ops.aten.permute.default, torch.ops.aten.alias.default}


def peak_rss(reset: bool = False) -> int | None:
    """This process's peak resident memory in bytes (Linux VmHWM), after resetting it to the current
    resident size if ``reset``; None where /proc does not offer it."""
    try:
        if reset:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+) kB", f.read())[1]) * 1024
    except (OSError, TypeError):
        return None


def attention_cost(backend, context_len: int, *, num_seqs: int = 1, decode: bool = False, num_heads: int = 9,
                   num_kv_heads: int = 3, head_dim: int = 64, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, block_size: int = 16, repeats: int = 3, seed: int = 0) -> dict:
    """One layer's attention through ``backend`` (a name, as for ``attention_backend``, or an AttentionBackend):
    a prefill of ``num_seqs`` fresh prompts of ``context_len`` tokens, or with ``decode`` one new token each
    after ``context_len - 1`` cached ones. Returns the output, the milliseconds of each of ``repeats`` runs
    (after one untimed run) and the memory measures named in the module's docstring."""
    from nanoinfer.attention.backends import make_attention_backend
    from nanoinfer.attention.base import AttentionMetadata

    device = torch.device(device)
    cuda = device.type == "cuda"
    if isinstance(backend, str):
        backend = make_attention_backend(backend, device, block_size, dtype)
    g = torch.Generator(device=device).manual_seed(seed)
    blocks_per_seq = -(-context_len // block_size)
    cache_shape = (num_seqs * blocks_per_seq, block_size, num_kv_heads, head_dim)
    k_cache = torch.randn(cache_shape, generator=g, device=device, dtype=dtype)
    v_cache = torch.randn(cache_shape, generator=g, device=device, dtype=dtype)
    new = 1 if decode else context_len  # tokens each sequence feeds
    q = torch.randn(num_seqs * new, num_heads, head_dim, generator=g, device=device, dtype=dtype)
    k = torch.randn(num_seqs * new, num_kv_heads, head_dim, generator=g, device=device, dtype=dtype)
    v = torch.randn(num_seqs * new, num_kv_heads, head_dim, generator=g, device=device, dtype=dtype)
    tables = torch.arange(num_seqs * blocks_per_seq, dtype=torch.int32, device=device).view(num_seqs, -1)
    positions = torch.arange(context_len - new, context_len, device=device)
    slots = (tables.long()[:, positions // block_size] * block_size + positions % block_size).reshape(-1)

    def metadata() -> AttentionMetadata:  # a fresh one per call: backends keep per-step scratch in it
        return AttentionMetadata(
            is_decode=decode, slot_mapping=slots,
            query_start_loc=torch.arange(0, num_seqs * new + 1, new, dtype=torch.int32, device=device),
            seq_lens=torch.full((num_seqs,), context_len, dtype=torch.int32, device=device), block_tables=tables,
            max_query_len=new, max_seq_len=context_len, block_size=block_size, query_lens_cpu=[new] * num_seqs,
            seq_lens_cpu=[context_len] * num_seqs)

    def run() -> torch.Tensor:
        meta = metadata()
        backend.store_kv(k, v, k_cache, v_cache, meta)
        return backend.forward(q, k, v, k_cache, v_cache, meta, head_dim**-0.5)

    with torch.inference_mode():
        run()  # warm-up: kernels compiled, caches touched
        if cuda:
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        rss_before = peak_rss(reset=True)
        with TensorBytes() as counted:
            out = run()
        rss_after = peak_rss()
        if cuda:
            torch.cuda.synchronize(device)
        measures = {"peak_bytes": torch.cuda.max_memory_allocated(device) - base} if cuda else {
            "peak_rss_growth_bytes": None if rss_before is None else rss_after - rss_before}
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            if cuda:
                torch.cuda.synchronize(device)
            times.append((time.perf_counter() - t0) * 1e3)
    return {"backend": backend.name, "context_len": context_len, "num_seqs": num_seqs, "decode": decode,
            "ms": times, "tensor_bytes": counted.total, "largest_tensor_bytes": counted.largest,
            "largest_tensor_shape": counted.largest_shape, **measures, "output": out}
