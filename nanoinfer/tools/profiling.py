"""Where the time of a decode step goes: torch.profiler over a few engine steps, kernels grouped into
attention, GEMMs, sampling, element-wise ops and communication, and the host time nothing covers.

    from nanoinfer.tools.profiling import profile_decode, profile_workload
    table = profile_decode(llm, num_seqs=64, context_len=1024, trace_path="decode_trace.json")
    table = profile_workload(llm, workload, "prefill", wait=1, warmup=1, active=3, trace_dir="traces/")

On a GPU the times are kernel (device) times; "CPU overhead" is the wall time the device sat idle, which
is what CUDA graphs remove. On a CPU the operators' own times are used instead.

``attention_cost`` times one attention backend on one layer's shapes, outside the engine, and measures the
memory it takes: on a GPU the allocator's peak; on a CPU the bytes of every tensor its operators return
(``TensorBytes``) and the growth of the process's peak resident memory (``peak_rss``).
"""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from nanoinfer.sampling_params import SamplingParams

if TYPE_CHECKING:
    import pandas as pd

# Substrings of kernel / operator names, checked in this order (the first match wins).
CATEGORIES = [
    ("communication", ("nccl", "allreduce", "all_reduce", "all_gather", "gloo", "c10d")),
    ("attention", ("_decode_kernel", "_decode_reduce", "_prefill_kernel", "_store_kv", "flash", "attn",
                   "scaled_dot_product", "index_select", "index_copy", "fmha", "cpu_kernel::paged", "cpu_kernel::store_kv")),
    ("sampling", ("argmax", "exponential", "sort", "cumsum", "topk", "distribution", "multinomial",
                  "gumbel", "_chunk_best_kernel", "_pick_chunk_kernel", "MaxOps", "aten::max", "aten::div",
                  "aten::_softmax")),  # (temperatures divide the logits; top-p's softmax)
    ("GEMM", ("gemm", "xmma", "cutlass", "nvjet", "cublas", "aten::mm", "aten::addmm", "aten::linear",
              "aten::matmul", "sm90", "sm80", "mkldnn")),
    ("copies", ("memcpy", "memset", "CatArrayBatchedCopy", "aten::copy_", "aten::to", "aten::fill_")),
    ("norm / rotary / activation", ("triton_", "_qk_prologue_kernel", "elementwise", "vectorized",
                                    "reduce_kernel", "aten::mul", "aten::add", "aten::silu", "aten::rsqrt",
                                    "aten::pow", "aten::mean", "aten::cat", "aten::neg", "aten::embedding", "cpu_kernel::rms_norm",
                                    "cpu_kernel::rotary", "cpu_kernel::silu")),
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
            us = evt.self_cpu_time_total if evt.key.startswith(("aten::", "mkldnn::", "cpu_kernel::")) else 0
        if us > 0:
            kernels[evt.key] = kernels.get(evt.key, 0.0) + us / 1e3 / steps
    totals: dict[str, float] = {}
    for name, ms in kernels.items():
        totals[category(name)] = totals.get(category(name), 0.0) + ms
    return totals, kernels, host


HOST = {True: "CPU overhead (device idle)", False: "outside PyTorch operators"}  # by cuda: the host's row


def _table(prof, steps: int, wall_ms: float, cuda: bool, top_kernels: int):
    """The profiler's operators as milliseconds per step by category, with the host's row (the wall time
    that no kernel, or on a CPU no operator, covers) and a share column."""
    import pandas as pd

    totals, kernels, host = time_per_kernel(prof.key_averages(), steps, cuda)
    # On a GPU: the launch and Python overhead that CUDA graphs remove. On a CPU: Python and the engine's
    # bookkeeping (the C kernels show as cpu_kernel::* ranges, fast/cpu_build.py).
    totals[HOST[cuda]] = max(0.0, wall_ms - sum(totals.values()))
    table = pd.DataFrame({"ms_per_step": totals}).sort_values("ms_per_step", ascending=False)
    table["share"] = table["ms_per_step"] / table["ms_per_step"].sum()
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:top_kernels]
    table.attrs.update(wall_ms_per_step=wall_ms, host_ms_per_step=host, host_row=HOST[cuda],
                       top_kernels=[{"name": name, "category": category(name), "ms_per_step": ms} for name, ms in top])
    return table


def profile_decode(llm, num_seqs: int = 1, context_len: int = 512, steps: int = 5,
                   trace_path: str | None = None, top_kernels: int = 30):
    """A DataFrame of the time per category (milliseconds per step, share) over ``steps`` decode steps of
    ``num_seqs`` sequences; ``.attrs`` holds the wall time per step and the ``top_kernels`` longest kernels."""
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
    table = _table(prof, steps, wall_ms, cuda, top_kernels)
    table.attrs.update(num_seqs=num_seqs, context_len=context_len, device=str(llm.engine.device),
                       graphs=llm.model_runner.graphs is not None)
    return table


def _step_cost(cost, events) -> tuple[float, float, int]:
    """FLOPs, bytes and tokens of one step, from the scheduler's events of that step."""
    contexts = [(e.data["num_tokens"], e.data["start"] + e.data["num_tokens"]) for e in events
                if e.kind == "prefill_chunk"]
    contexts += [(1, e.data["position"] + 1) for e in events if e.kind == "decode_step"]
    sampled = sum(len(e.data["seq_ids"]) for e in events if e.kind == "sampled")
    tokens = sum(q for q, _ in contexts)
    return (*cost.step(tokens, contexts, sampled), tokens)


def profile_workload(llm, workload, phase: str = "decode", *, wait: int = 2, warmup: int = 1, active: int = 3,
                     trace_dir: str | None = None, rates: dict | None = None, top_kernels: int = 30):
    """Profile ``active`` engine steps of one phase of ``workload`` under torch.profiler, after ``wait`` steps
    unrecorded (timed: the host row is their median wall time less the kernels' time) and ``warmup`` recorded
    then dropped (the profiler's own start-up). ``phase="prefill"``: the
    requests ask for one token each, and step i gets the prompts ``i::steps``, added just before it, so every
    step is a prefill. ``"decode"``: every prompt is prefilled first, unprofiled. Returns the per-category table of ``profile_decode``; ``.attrs`` adds the profiled steps'
    tokens, FLOPs and bytes per step (``tools/roofline.py``), the machine's rates (``machine_rates``, measured
    unless given) and the trace's path: ``trace_dir`` gets a Chrome-trace JSON that Perfetto
    (ui.perfetto.dev) and TensorBoard's profiler view both open."""
    from torch.profiler import schedule, tensorboard_trace_handler

    from nanoinfer.tools.roofline import ModelCost, machine_rates

    if phase not in ("prefill", "decode"):
        raise ValueError(f"phase must be 'prefill' or 'decode', got {phase!r}")
    engine, cuda = llm.engine, llm.engine.device.type == "cuda"
    total = wait + warmup + active
    if phase == "prefill" and len(workload.prompts) < total:
        raise ValueError(f"a prefill profile feeds each of its wait + warmup + active = {total} steps fresh prompts: "
                         f"the workload has {len(workload.prompts)}")
    rates = rates or machine_rates(engine.device, engine.dtype)
    requests = [(p, SamplingParams(temperature=workload.temperature, ignore_eos=True,
                                   max_tokens=1 if phase == "prefill" else n))
                for p, n in zip(workload.prompts, workload.output_lens)]
    if phase == "decode":
        for prompt, params in requests:
            engine.add_request(prompt, params)
    handler = tensorboard_trace_handler(trace_dir) if trace_dir else None
    cost, costs, walls = ModelCost.of(llm), [], []
    try:
        if phase == "decode":  # prefill everything first, unprofiled
            while engine.scheduler.waiting or any(s.num_uncomputed_tokens > 1 for s in engine.scheduler.running):
                engine.step()
        with llm.trace() as events, profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []),
                                            schedule=schedule(wait=wait, warmup=warmup, active=active, repeat=1),
                                            on_trace_ready=handler) as prof:
            for i in range(total):
                if phase == "prefill":  # step i prefills the i-th share of the prompts
                    for prompt, params in requests[i::total]:
                        engine.add_request(prompt, params)
                if not engine.has_unfinished_requests():
                    raise ValueError(f"the workload has {i} {phase} steps, the schedule needs wait + warmup + "
                                     f"active = {total}: give it more requests, longer prompts or outputs")
                first = len(events)
                start = time.perf_counter()
                engine.step()
                if cuda:
                    torch.cuda.synchronize()
                walls.append(time.perf_counter() - start)
                if i >= wait + warmup:
                    costs.append(_step_cost(cost, events[first:]))
                prof.step()
    finally:
        engine.abort_all()
    # The host row: the step's wall time less its kernels. The profiler slows the host down (it records every
    # operator), so the wall time is taken from the unrecorded "wait" steps where there are any.
    profiled_ms = 1e3 * sum(walls[wait + warmup:]) / active
    unprofiled_ms = 1e3 * statistics.median(walls[:wait]) if wait else None
    table = _table(prof, active, unprofiled_ms or profiled_ms, cuda, top_kernels)
    traces = sorted(Path(trace_dir).glob("*.pt.trace.json*"), key=lambda p: p.stat().st_mtime) if trace_dir else []
    table.attrs.update(phase=phase, device=str(engine.device), steps=active, profiled_wall_ms_per_step=profiled_ms,
                       unprofiled_wall_ms_per_step=unprofiled_ms,
                       tokens_per_step=sum(c[2] for c in costs) / active,
                       flops_per_step=sum(c[0] for c in costs) / active,
                       bytes_per_step=sum(c[1] for c in costs) / active,
                       bandwidth=rates["bandwidth"], matmul_flops=rates["matmul_flops"],
                       trace_path=str(traces[-1]) if traces else None)
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


def classify_profile(profile: pd.DataFrame) -> dict:
    """What bounds a profiled step (Exercise 7.2's reference), from a ``profile_workload`` table:
    - ``bound``: "host" when the host's row (``attrs["host_row"]``: time no kernel covered) is longer than all
      the operators together, else "device";
    - ``resource``: "memory" when the step's bytes over the bandwidth take at least as long as its FLOPs over
      the matmul rate (``attrs``: bytes_per_step, flops_per_step, bandwidth, matmul_flops), else "compute";
    - ``top_operation``: the operator category (not the host's row) with the most time, the first on a tie."""
    from nanoinfer.tools.roofline import floor_seconds

    a = profile.attrs
    ms = profile["ms_per_step"]
    host = float(ms.get(a["host_row"], 0.0))
    operators = ms.drop(a["host_row"], errors="ignore")
    resource = floor_seconds(a["flops_per_step"], a["bytes_per_step"],
                             {"bandwidth": a["bandwidth"], "matmul_flops": a["matmul_flops"]})["bound"]
    return {"bound": "host" if host > operators.sum() else "device", "resource": resource,
            "top_operation": str(operators.idxmax())}
