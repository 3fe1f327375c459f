"""The batch-1 decode graph of one model shape (default qwen3-0.6b, random weights) replayed on a GPU under
variants of the skinny-matmul path, each captured afresh in the same engine: the kernels' block configurations,
the decode attention's tokens per split, programmatic dependent launch or not, the whole step (the forward graph
and the sampling graph, with the LM head through cuBLAS or the skinny kernel), the norms inside the matmuls or not,
and cuBLAS. Replay time by CUDA
events (5 x 50 replays, the median), one sequence of 640 tokens. Writes a record with card, date, command, commit.

    python scripts/skinny_sweep.py --out notebooks/reference_results/h200_skinny_sweep.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

import nanoinfer.attention.triton_backend as attention
import nanoinfer.fast.pdl as pdl
import nanoinfer.fast.skinny_linear_triton as skinny
from nanoinfer import LLM
from nanoinfer.fast.cuda_graphs import CudaGraphRunner
from nanoinfer.fast.sampler_triton import draw_tokens
from nanoinfer.layers.linear import LinearBase
from nanoinfer.models.llama import LlamaDecoderLayer, LlamaMLP

np2 = triton.next_power_of_2
WHOLE_K = lambda K: min(np2(K), 4096)  # noqa: E731
CONFIGS = {  # (BLOCK_N, BLOCK_K, num_warps) as a function of K, for one row
    "2 rows, whole K, 4 warps": lambda K: (2, WHOLE_K(K), 4),
    "1 row, whole K, 4 warps": lambda K: (1, WHOLE_K(K), 4),
    "4 rows, whole K / 2 above 1,024, 4 warps": lambda K: (max(1, min(4, 4096 // WHOLE_K(K))), WHOLE_K(K), 4),
    "4 rows, whole K / 2 above 1,024, 8 warps": lambda K: (max(1, min(4, 4096 // WHOLE_K(K))), WHOLE_K(K), 8),
    "4 rows, whole K / 2 above 1,024, 2 warps": lambda K: (max(1, min(4, 4096 // WHOLE_K(K))), WHOLE_K(K), 2),
    "8 rows, whole K / 2 above 1,024, 8 warps": lambda K: (max(1, min(8, 8192 // WHOLE_K(K))), WHOLE_K(K), 8),
    "4 rows, whole K, 4 warps": lambda K: (4, WHOLE_K(K), 4),
    "8 rows, whole K, 8 warps": lambda K: (8, WHOLE_K(K), 8),
    "4 rows of 1,024, 4 warps": lambda K: (4, 1024, 4),
    "2 rows of 1,024, 4 warps": lambda K: (2, 1024, 4),
}


def replay_ms(runner, context: int, max_model_len: int, whole_step: bool = False,
              drawn: bool = False) -> tuple[float, list[float]]:
    """The batch-1 forward graph's replay time; ``whole_step``: followed by the sampling graph (the LM head and the
    draw), as ``CudaGraphRunner.sample_step`` replays them; ``drawn``: the forward graph alone, of a runner that
    records the draw (its capture runs the draw once, as the engine's does)."""
    sample = partial(draw_tokens, runner.model.lm_head) if whole_step or drawn else None
    graphs = CudaGraphRunner(runner.model, runner.backend, runner.attention_layers[0].num_kv_heads,
                             runner.hf_config.hidden_size, 1, max_model_len, runner.block_size, runner.device,
                             runner.dtype, sample, 1)
    graphs.capture()
    blocks = -(-context // runner.block_size)  # distinct blocks, read from memory as a real context is
    graphs.seq_lens[:1], graphs.slot_mapping[:1] = context, context - 1
    graphs.block_tables[0, :blocks] = torch.arange(blocks, dtype=torch.int32, device=runner.device)
    replays, runs = [graphs.graphs[1], *(graphs.sample_graphs.values() if whole_step else ())], []
    for _ in range(10):
        for graph in replays:
            graph.replay()
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(50):
            for graph in replays:
                graph.replay()
        end.record()
        torch.cuda.synchronize()
        runs.append(start.elapsed_time(end) / 50)
    graphs.release()
    return sorted(runs)[2], runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen3-0.6b"), p.add_argument("--out", required=True)
    p.add_argument("--max-model-len", type=int, default=1024), p.add_argument("--context", type=int, default=640)
    p.add_argument("--commit", default=None, help="the commit measured (default: git's HEAD)")
    args = p.parse_args()
    llm = LLM(args.model, max_model_len=args.max_model_len)
    runner = llm.model_runner
    measure = lambda: replay_ms(runner, args.context, args.max_model_len)  # noqa: E731
    rows = {"default": measure()}
    default_config, default_split = skinny.block_config, attention.TOKENS_PER_SPLIT
    for name, config in CONFIGS.items():
        skinny.block_config = lambda M, N, K, gated=False, config=config: (config(K) if M == 1 else
                                                                           default_config(M, N, K, gated))
        rows[f"config: {name}"] = measure()
    skinny.block_config = default_config
    for tokens in (256, 128, 64):
        attention.TOKENS_PER_SPLIT = tokens
        rows[f"decode attention: {tokens} tokens per split"] = measure()
    attention.TOKENS_PER_SPLIT = default_split
    pdl.ENABLED = False
    rows["without programmatic dependent launch"] = measure()
    pdl.ENABLED = True
    # The whole step: the forward graph, then the LM head and the draw (cuBLAS's LM head, then the skinny kernel's)
    rows["whole step: forward, then LM head and draw"] = replay_ms(runner, args.context, args.max_model_len, True)
    lm_head = runner.model.lm_head
    if lm_head.op is F.linear and skinny.supported(lm_head.weight):
        lm_head.op = skinny.linear
        rows["whole step, the LM head through the skinny kernel"] = replay_ms(runner, args.context,
                                                                              args.max_model_len, True)
        lm_head.op = F.linear
    # In one-off runs the forward graph replayed ~17 us slower in a runner whose draw had run once (a lead, not
    # understood: docs/benchmarks.md). The other rows' runners never draw; the engine's always do.
    rows["default, in a runner that has drawn"] = replay_ms(runner, args.context, args.max_model_len, drawn=True)
    layers = [m for m in runner.model.modules() if isinstance(m, LlamaDecoderLayer) and m.fused_decode_rows]
    for layer in layers:
        layer.fused_decode_rows = 0
    rows["norms as kernels of their own"] = measure()
    for m in runner.model.modules():  # every linear and MLP back to the reference: cuBLAS
        if isinstance(m, LinearBase) and m.op is skinny.linear:
            m.op = F.linear
        if isinstance(m, LlamaMLP):
            m.fused_gate_up_act = None
    rows["cuBLAS, norms and SiLU as kernels of their own"] = measure()
    llm.shutdown()
    commit = args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                           cwd=Path(__file__).parent).stdout.strip() or "unknown"
    record = {"card": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
              "command": "python scripts/skinny_sweep.py " + " ".join(sys.argv[1:]), "commit": commit,
              "model": args.model, "context": args.context, "max_model_len": args.max_model_len,
              "fused_layers": len(layers), "default_config_one_row": list(default_config(1, 4096, 1024)),
              "replay_ms": {name: {"median": m, "runs": runs} for name, (m, runs) in rows.items()}}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    for name, (m, _) in rows.items():
        print(f"{m:7.3f} ms  {name}")


if __name__ == "__main__":
    main()
