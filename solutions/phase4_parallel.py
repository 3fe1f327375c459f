"""Phase 4 — tensor parallelism: sharding a weight (4.1) and the row-parallel forward (4.2) are the engine's own
code; the parallel linear layer (4.2) and the communication volume (4.3) are written out here."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

# The engine's own reference code for the exercises it runs at a hook (nanoinfer/workbook/registry.py).
from nanoinfer.layers.linear import row_parallel_linear, shard_weight  # noqa: F401  Exercises 4.1 and 4.2


def _sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t)  # in place
    return t


class CustomParallelLinear(nn.Module):
    """Exercise 4.2: rank ``tp_rank``'s shard of a column- or row-parallel linear layer (see exercises/)."""

    def __init__(self, in_features: int, out_features: int, tp_size: int, tp_rank: int, parallel: str = "column",
                 bias: bool = True) -> None:
        super().__init__()
        if parallel not in ("column", "row"):
            raise ValueError(f"parallel must be 'column' or 'row', got {parallel!r}")
        if not 0 <= tp_rank < tp_size:
            raise ValueError(f"tp_rank must be in [0, tp_size={tp_size}), got {tp_rank}")
        split = out_features if parallel == "column" else in_features
        if split % tp_size:
            raise ValueError(f"tp_size={tp_size} does not divide the {'out' if parallel == 'column' else 'in'}"
                             f"_features ({split}) that {parallel}-parallelism splits")
        self.tp_size, self.tp_rank, self.parallel = tp_size, tp_rank, parallel
        rows, cols = (out_features // tp_size, in_features) if parallel == "column" else (out_features,
                                                                                          in_features // tp_size)
        self.weight = nn.Parameter(torch.empty(rows, cols), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(rows), requires_grad=False) if bias else None

    @torch.no_grad()
    def load(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        self.weight.copy_(shard_weight(weight, self.tp_rank, self.tp_size, self.parallel))
        if self.bias is not None:
            self.bias.copy_(shard_weight(bias, self.tp_rank, self.tp_size, self.parallel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.parallel == "column":
            return F.linear(x, self.weight, self.bias)
        return row_parallel_linear(x, self.weight, self.bias, _sum_over_ranks if self.tp_size > 1 else (lambda t: t))


def comm_bytes_per_token(config, tp_size: int, dtype_bytes: int) -> dict[str, int]:
    """Exercise 4.3: bytes per token fed (all-reduces) and per token sampled (the logits' all-gather)."""
    if tp_size == 1:
        return {"all_reduce": 0, "all_gather": 0}
    all_reduces = 2 * config.num_hidden_layers + 1  # two per layer (o_proj, down_proj), one for the embedding
    padded_vocab = -(-config.vocab_size // tp_size) * tp_size  # tp_size equal shards, the last one padded
    return {"all_reduce": all_reduces * config.hidden_size * dtype_bytes, "all_gather": padded_vocab * dtype_bytes}
