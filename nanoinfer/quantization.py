"""Int8 weight-only quantization (``LLM(model, quantization="int8")``): the linear layers' weights stored as int8.

Each output row of a weight W [out, in] gets one scale s = max|row| / 127 and is stored as q = round(W / s),
an int8 in [-127, 127] (symmetric: no zero point; -128 unused, so that -q fits too). A product x @ W.T becomes
(x @ q.T) * s: the activations stay in the model's dtype and only the weight bytes shrink, to a quarter of float32
and half of bfloat16. Decoding a few tokens at a time reads every weight once per step and does little arithmetic
with it, so half the bytes can mean nearly half the time on a GPU (measured: scripts/int8_bench.py).

What is quantized: the q/k/v, o, gate/up and down projections (``layers/linear.py``), each rank its own shard
after the shard is loaded. The embeddings and the LM head stay in the model's dtype (the LM head is the most
sensitive matmul, and a tied head is the embedding table itself). Applied from one place, ``quantize_model``,
which the model runner calls once the weights are loaded; it reports what it did in ``LLM.fast_paths()``.

The multiply (``int8_linear``) never keeps a dequantized copy: it hands q and s to a kernel that converts each
block as it multiplies (``fast/int8_matmul_triton.py`` on a GPU, ``fast/int8_matmul_cpu.c`` on a CPU for up to
32 rows; without a C compiler ``torch._weight_int8pack_mm`` for one row), and otherwise (prefill-sized steps; the
fallback, tested against the same float32 reference) converts one layer's weight for the call only and drops it.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from nanoinfer.fast.int8_matmul_cpu import int8_matmul_cpu
from nanoinfer.fast.int8_matmul_cpu import supported as cpu_kernel_supported
from nanoinfer.parallel.comm import tp_size
from nanoinfer.workbook.registry import learner_code, selected

QMAX = 127
CPU_INT8PACK_MAX_ROWS = 1  # torch's CPU int8 kernel (no C compiler here) handles rows one at a time


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: (q int8 [out, in], scale float32 [out]) with weight ~ q * scale[:, None].

    scale = max|row| / 127, so that each row's largest magnitude maps to +-127 and rounding to the nearest
    integer errs by at most scale / 2 per element. An all-zero row gets scale 1 (any would do: its q is 0)."""
    w = weight.float()
    scale = w.abs().amax(dim=1) / QMAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale[:, None]).clamp_(-QMAX, QMAX).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 weight that (q, scale) stands for: q * scale, row by row."""
    return q.float() * scale.float()[:, None]


def int8_linear_reference(x: torch.Tensor, q: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor):
    """The fallback: ``F.linear`` on this layer's weight converted for the call only (then dropped); the scale
    applied to the output, in float32."""
    y = (F.linear(x, q.to(x.dtype)).float() * scale).to(x.dtype)
    return y if bias is None else y + bias


def int8_linear(x: torch.Tensor, q: torch.Tensor, bias: torch.Tensor | None = None, *,
                scale: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, dequantize(q, scale), bias)`` without the dequantized weight: a kernel that reads q."""
    if x.is_cuda:
        from nanoinfer.fast.int8_matmul_triton import int8_matmul, supported  # (imports Triton: GPUs only)

        if supported(x, q):
            return int8_matmul(x, q, scale, bias)
    elif cpu_kernel_supported(x, q):
        return int8_matmul_cpu(x, q, scale, bias)
    elif (rows := x.numel() // x.shape[-1]) <= CPU_INT8PACK_MAX_ROWS and x.dtype == torch.float32:
        y = torch._weight_int8pack_mm(x.reshape(rows, x.shape[-1]), q, scale).reshape(*x.shape[:-1], q.shape[0])
        return y if bias is None else y + bias
    return int8_linear_reference(x, q, bias, scale)


def watch_row_maxima(model: torch.nn.Module, quantization: str | None) -> None:
    """Before the weights load (int8, several ranks): a row-parallel rank keeps a slice of every row, but its
    loader is handed whole rows; note each row's largest magnitude there, for ``quantize_linear``."""
    from nanoinfer.layers.linear import RowParallelLinear

    if quantization is None or tp_size() == 1:
        return
    for module in model.modules():
        if isinstance(module, RowParallelLinear):
            def loader(param, loaded, shard_id=None, module=module, load=module.weight.weight_loader):
                module.row_max = loaded.abs().amax(dim=-1).float().to(param.device)
                load(param, loaded, shard_id)

            module.weight.weight_loader = loader


def quantize_linear(module, quantize) -> None:
    """Replace ``module.weight`` by its int8 rows and a ``weight_scale`` buffer; point ``module.op`` at
    ``int8_linear``. A row-parallel rank holds a slice of every row: so that all ranks (and one rank alone) use
    the whole row's scale, the slice is quantized with one more column holding the row's largest magnitude
    (``watch_row_maxima``): that column sets the scale, and is dropped. (Random weights: each rank its own.)"""
    w = module.weight.data
    row_max = getattr(module, "row_max", None)
    if row_max is not None:
        q, scale = quantize(torch.cat([w.float(), row_max[:, None]], dim=1))
        q = q[:, :-1]
        del module.row_max
    else:
        q, scale = quantize(w)
    if q.dtype != torch.int8 or q.shape != w.shape or scale.shape != w.shape[:1]:
        raise ValueError(f"Exercise 8.2's quantize_per_channel must return (int8 {tuple(w.shape)}, scale "
                         f"[{w.shape[0]}]), got ({q.dtype} {tuple(q.shape)}, {tuple(scale.shape)})")
    module.weight = torch.nn.Parameter(q.contiguous(), requires_grad=False)
    module.register_buffer("weight_scale", scale.float().contiguous())
    module.op = partial(int8_linear, scale=module.weight_scale)


def quantize_model(model: torch.nn.Module, quantization: str | None) -> tuple[str, str]:
    """Quantize the model's linear layers in place; (what was replaced, why) for the fast-path report."""
    if quantization is None:
        return "", "quantization=None"
    from nanoinfer.layers.linear import LinearBase, RowParallelLinear

    quantize = learner_code("8.2", quantize_per_channel)
    # Exercise 4.2's row_parallel_linear (the o and down projections) multiplies with F.linear, as written:
    # with it selected those layers keep their weights in the model's dtype.
    skip = (RowParallelLinear,) if "4.2" in selected() else ()
    layers = [m for m in model.modules() if isinstance(m, LinearBase) and not isinstance(m, skip)]
    for module in layers:
        quantize_linear(module, quantize)
    why = "quantization='int8': per-output-channel int8 weights; embeddings and LM head kept"
    if skip:
        why += "; o/down projections kept (Exercise 4.2 selected: its row_parallel_linear uses F.linear)"
    return f"F.linear in {len(layers)} linear layers", why


def linear_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the linear layers' weights as stored (int8 rows and their scales, or full-precision weights)."""
    from nanoinfer.layers.linear import LinearBase

    total = 0
    for module in model.modules():
        if isinstance(module, LinearBase):
            for t in (module.weight, getattr(module, "weight_scale", None)):
                total += 0 if t is None else t.numel() * t.element_size()
    return total


def compare_to_unquantized(reference, quantized, prompts, max_tokens: int = 32) -> dict:
    """Greedy runs of the same prompts on two engines (LLMs), the unquantized one first: the next-token logits'
    relative error (||a - b|| / ||b|| over the vocabulary, at each prompt's first token: same context on both),
    how often that first token agrees, and the greedy agreement: the share of each continuation that matches up
    to its first differing token (after it the contexts part), averaged over the prompts."""
    from nanoinfer.sampling_params import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    runs = []
    for llm in (reference, quantized):
        with llm.trace(logits=True) as trace:
            outputs = llm.generate(prompts, params, use_tqdm=False)
        first = {}
        for event in trace:
            if event.kind == "sampled":
                for row, seq_id in enumerate(event.data["seq_ids"]):
                    first.setdefault(seq_id - outputs[0].request_id, event.data["logits"][row].double().cpu())
        runs.append(([o.token_ids for o in outputs], [first[i] for i in range(len(prompts))]))
    (ref_tokens, ref_logits), (tokens, logits) = runs
    errors = [((a - b).norm() / b.norm()).item() for a, b in zip(logits, ref_logits)]
    matched = []
    for a, b in zip(tokens, ref_tokens):
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(b))
        matched.append(n / len(b))
    return {"logits_rel_error_mean": sum(errors) / len(errors), "logits_rel_error_max": max(errors),
            "first_token_agreement": sum(a[0] == b[0] for a, b in zip(tokens, ref_tokens)) / len(tokens),
            "greedy_agreement": sum(matched) / len(matched), "prompts": len(prompts), "max_tokens": max_tokens}
