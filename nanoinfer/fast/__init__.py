"""Fast paths: faster ways to compute what the core computes, applied to a built model from this one place.

  packed CPU weights   cpu_packed.py           matmuls on oneDNN-packed weight copies (CPU, float32)
  C small ops          small_ops_cpu.py/.c     RMSNorm, rotary, SiLU-and-mul as C loops (CPU, float32)
  torch.compile        here                    the same small ops and the sampler, compiled (CUDA default)
  fused prologue       qk_prologue_triton.py   q/k norms + rotary + KV write as one kernel per layer (CUDA)
  skinny matmuls       skinny_linear_triton.py batch-1 decode linears, gate/up fused with SiLU (CUDA, one rank);
                       tile_linear_triton.py   2-16 rows on tensor cores, gate/up fused too
  Triton SiLU-and-mul  silu_and_mul_triton.py  the MLP activation of every other step, one kernel (CUDA)
  Triton RMSNorm       rms_norm_triton.py      the residual add and norm of every other step, one kernel (CUDA)
  Triton sampler       sampler_triton.py       the Gumbel-max draw, on each rank's vocabulary shard (CUDA)
  CUDA graphs          cuda_graphs.py          decode steps replayed from recorded graphs, the draw too (CUDA)
  dependent launch     pdl.py                  a decode kernel starts while the one before finishes (Hopper)
The attention kernels are backends of their own (nanoinfer/attention/). Each fast path replaces a reference
op only where the model runs the reference: a learner's exercise code always runs as written. Each is tested
against the reference it replaces. The report says what was replaced and why: ``LLM.fast_paths()``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from functools import partial

import torch

from nanoinfer.fast.cpu_packed import pack_model_weights, packing_available
from nanoinfer.fast.small_ops_cpu import C_OPS, load_small_ops
from nanoinfer.layers.activation import SiluAndMul, silu_and_mul
from nanoinfer.layers.layernorm import RMSNorm, rms_norm
from nanoinfer.layers.rotary_embedding import RotaryEmbedding, apply_rotary
from nanoinfer.layers.sampler import gumbel_max_sample
from nanoinfer.speculative.config import decode_rows_per_seq
from nanoinfer.workbook.registry import selected

SMALL_OPS = (RMSNorm, RotaryEmbedding, SiluAndMul)
REFERENCE_OPS = {RMSNorm: rms_norm, RotaryEmbedding: apply_rotary, SiluAndMul: silu_and_mul}


@dataclass
class FastPath:
    name: str
    applied: str  # what it replaced; "" when it is off
    reason: str  # why it is on or off


class FastPaths(list):
    """One row per fast path of an engine."""

    def add(self, name: str, applied: str, reason: str) -> None:
        self.append(FastPath(name, applied, reason))

    def frame(self):
        import pandas as pd

        return pd.DataFrame([vars(p) for p in self], columns=["name", "applied", "reason"])

    def summary(self) -> str:
        return ", ".join(p.name for p in self if p.applied) or "none"


def apply_fast_paths(runner) -> FastPaths:
    """Apply every fast path the runner's config, device and dtype allow to its built model and sampler."""
    c, device, model = runner.config, runner.device, runner.model
    report = FastPaths()
    cuda, cpu32 = device.type == "cuda", device.type == "cpu" and runner.dtype == torch.float32
    report.add("attention kernels", runner.backend.name if runner.backend.name in ("cpu", "triton") else "",
               f"attention_backend={c.attention_backend!r}" + (f" picked {runner.backend.name!r}" * (
                   c.attention_backend == "auto")))
    if hasattr(runner.backend, "decode_fresh_tokens"):  # (verify rows see the drafts their own step writes)
        runner.backend.decode_fresh_tokens = decode_rows_per_seq(c.speculative_config)
    if learner := {"5.1", "5.2", "3.2"} & selected():
        report.add("learner's code", "", f"Exercise(s) {', '.join(sorted(learner))} selected: run as written, "
                   "neither replaced nor compiled")

    if not (c.pack_cpu_weights and cpu32 and packing_available()):
        report.add("packed CPU weights", "", "pack_cpu_weights=False" if not c.pack_cpu_weights else
                   "float32 on a CPU with oneDNN only")
    else:
        report.add("packed CPU weights", f"F.linear in {pack_model_weights(model)} layers",
                   "pack_cpu_weights=True: faster 4-512-row matmuls for twice the weight memory")

    prologue = ""
    if cuda and c.fused_attention_prologue and runner.backend.name == "triton":
        prologue = _fuse_attention_prologues(model)
    report.add("fused attention prologue", prologue, "CUDA with the triton backend" if prologue else
               "fused_attention_prologue=False" if not c.fused_attention_prologue else
               "CUDA, the triton backend and the reference norm and rotary only")

    skinny = ""
    if cuda and c.skinny_matmuls and c.tensor_parallel_size == 1:
        skinny = _use_skinny_matmuls(model)
    report.add("skinny matmuls", skinny, "CUDA, one rank: cuBLAS reads batch-1 steps' weights slowly" if skinny
               else "skinny_matmuls=False" if not c.skinny_matmuls else "CUDA with one rank only")

    activations = [m for m in model.modules() if isinstance(m, SiluAndMul) and m.op is silu_and_mul] if cuda else []
    if activations:  # (after the skinny matmuls, which fuse the batch-1 activation where it runs the reference)
        from nanoinfer.fast.silu_and_mul_triton import silu_and_mul as triton_silu_and_mul

        for module in activations:
            module.op = triton_silu_and_mul
    report.add("Triton SiLU-and-mul", f"{len(activations)} MLPs" if activations else "",
               "CUDA: torch.compile's kernel read the gate/up product at ~1.7 TB/s" if activations
               else "CUDA and the reference activation only")

    norms = [m for m in model.modules() if isinstance(m, RMSNorm) and m.op is rms_norm] if cuda else []
    if norms:  # (after the skinny matmuls, which compute the batch-1 norms inside them where these run the reference)
        from nanoinfer.fast.rms_norm_triton import rms_norm as triton_rms_norm

        for module in norms:
            module.op = triton_rms_norm
    report.add("Triton RMSNorm", f"{len(norms)} norms" if norms else "",
               "CUDA: torch.compile's kernel took 2.5 us at 136 rows, this one 1.7" if norms
               else "CUDA and the reference norm only")

    wanted = c.sampler == "triton" or (c.sampler == "auto" and cuda)
    triton_sampler = wanted and runner.sampler.sample is gumbel_max_sample
    if triton_sampler:
        from nanoinfer.fast.triton_interpreter import use_interpreter_on_cpu

        use_interpreter_on_cpu(device)  # before the kernels' module is imported
        from nanoinfer.fast.sampler_triton import TritonSampler

        runner.sampler = TritonSampler(device, c.seed)
        report.add("Triton sampler", "gumbel_max_sample", f"sampler={c.sampler!r}" + (" on CUDA" * cuda))
    else:
        report.add("Triton sampler", "", "Exercise 3.2 selected" if wanted else f"sampler={c.sampler!r}")

    compile = c.compile if c.compile is not None else cuda
    small = [m for m in model.modules() if isinstance(m, SMALL_OPS) and m.op is REFERENCE_OPS[type(m)]]
    if compile:  # each op compiled once and shared by every layer; compilation happens at the warm-up
        compiled: dict = {}
        for module in small:
            module.op = compiled.setdefault(module.op, torch.compile(module.op, dynamic=True))
        draw = not triton_sampler and runner.sampler.sample is gumbel_max_sample  # (Triton's is one kernel already)
        if draw:
            runner.sampler.sample = torch.compile(runner.sampler.sample, dynamic=True)
        report.add("torch.compile", f"{len(compiled)} small ops in {len(small)} modules"
                   + (", and the sampler's draw" if draw else ""),
                   f"compile={c.compile}" if c.compile is not None else "compile=None: on for CUDA")
    else:
        report.add("torch.compile", "", "compile=False" if c.compile is False else "compile=None: off on a CPU")

    if not (c.cpu_small_ops and cpu32 and not compile and load_small_ops() is not None):
        report.add("C small ops", "", "cpu_small_ops=False" if not c.cpu_small_ops else
                   "float32 on a CPU with a C compiler, without compile")
    else:
        swapped = Counter()
        for module in small:
            if module.op is REFERENCE_OPS[type(module)]:
                module.op = C_OPS[module.op]
                swapped[type(module).__name__] += 1
        report.add("C small ops", ", ".join(f"{n} x {name}" for name, n in swapped.items()),
                   "cpu_small_ops=True (torch.compile does not pay on a CPU)")
    return report


def _fuse_attention_prologues(model) -> str:
    """Point every attention layer that runs the reference q/k norms and rotary at the fused Triton kernel."""
    from nanoinfer.fast.qk_prologue_triton import qk_prologue, supported
    from nanoinfer.models.llama import LlamaAttention

    fused = 0
    for layer in model.modules():
        if not isinstance(layer, LlamaAttention) or not supported(layer.head_dim):
            continue
        norms = layer.q_norm is None or (layer.q_norm.op is rms_norm and layer.k_norm.op is rms_norm)
        if norms and layer.rotary_emb.op is apply_rotary:
            layer.fused_prologue = qk_prologue
            fused += 1
    return f"norms, rotary and KV write in {fused} layers" if fused else ""


def _use_skinny_matmuls(model) -> str:
    """Point the linears that run F.linear (not int8 ones) at the skinny kernels for steps of few rows, and fuse the
    MLPs' gate/up product with SiLU-and-mul where both run the reference."""
    import torch.nn.functional as F

    from nanoinfer.fast import skinny_linear_triton as skinny
    from nanoinfer.fast import tile_linear_triton as tile
    from nanoinfer.layers.linear import LinearBase
    from nanoinfer.models.llama import LlamaDecoderLayer, LlamaMLP

    linears = [m for m in model.modules() if isinstance(m, LinearBase) and m.op is F.linear
               and skinny.supported(m.weight)]
    for module in linears:
        module.op = skinny.linear
    mlps = [m for m in model.modules() if isinstance(m, LlamaMLP) and isinstance(m.act_fn, SiluAndMul)
            and m.act_fn.op is silu_and_mul and m.gate_up_proj.op is skinny.linear]
    for mlp in mlps:
        mlp.fused_gate_up_act = skinny.gate_up_silu
    # Whole layers whose norms run the reference: each norm computed inside the matmul after it.
    layers = [m for m in model.modules() if isinstance(m, LlamaDecoderLayer) and type(m).forward is
              LlamaDecoderLayer.forward and m.mlp in mlps and m.self_attn.qkv_proj.op is skinny.linear
              and all(n.op is rms_norm for n in (m.input_layernorm, m.post_attention_layernorm))]
    for layer in layers:
        layer.fused_decode, layer.fused_decode_rows = skinny.decode_layer, skinny.MAX_ROWS
    norms = f", norms in {len(layers)} layers" if layers else ""
    tiled = sum(tile.serves(tile.MIN_ROWS, m.weight) for m in linears)  # (16-bit, K <= MAX_K)
    tiles = f"; {tile.MIN_ROWS}-{tile.MAX_ROWS} rows on tensor cores in {tiled}" if tiled else ""
    return (f"{len(linears)} linears, gate/up + SiLU in {len(mlps)} MLPs{norms} (rows <= {skinny.MAX_ROWS}){tiles}"
            if linears else "")


def capture_cuda_graphs(runner):
    """The runner's decode steps recorded as CUDA graphs (a CudaGraphRunner), or None where the device, the
    config or the attention backend rules them out; reported in ``runner.fast_paths``."""
    c, backend = runner.config, runner.backend
    why = ("CUDA only" if runner.device.type != "cuda" else "enforce_eager=True" if c.enforce_eager else
           "" if backend.supports_cuda_graphs else f"the {backend.name} backend plans each step on the host")
    if why:
        runner.fast_paths.add("CUDA graphs", "", why)
        return None
    from nanoinfer.fast.cuda_graphs import CudaGraphRunner  # (imports nanoinfer.attention: not at the top)
    from nanoinfer.fast.sampler_triton import TritonSampler, draw_tokens

    t0 = time.perf_counter()
    max_batch = min(c.cuda_graph_max_batch_size or 512, c.max_num_seqs * decode_rows_per_seq(c.speculative_config))
    sample = None  # the draw, recorded too where each rank is the whole vocabulary (see cuda_graphs.py)
    if isinstance(runner.sampler, TritonSampler) and c.tensor_parallel_size == 1 and not c.speculative_config:
        sample = partial(draw_tokens, runner.model.lm_head)
    graphs = CudaGraphRunner(runner.model, backend, runner.attention_layers[0].num_kv_heads,
                             runner.hf_config.hidden_size, max_batch, c.max_model_len, c.kvcache_block_size,
                             runner.device, runner.dtype, sample, c.max_num_seqs)
    graphs.capture()
    runner.fast_paths.add("CUDA graphs", f"decode batches of {graphs.sizes[0]}-{graphs.max_batch_size} "
                          f"({len(graphs.sizes)} graphs{', with the draw' * bool(sample)}, "
                          f"{time.perf_counter() - t0:.1f} s)",
                          f"enforce_eager=False, cuda_graph_max_batch_size={c.cuda_graph_max_batch_size}")
    return graphs
