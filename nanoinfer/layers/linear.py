"""Linear layers that split their weight over tensor-parallel ranks, each with its own weight loader.

Column-parallel: each rank owns a slice of the *output* features; no communication.
Row-parallel: each rank owns a slice of the *input* features and holds a partial sum; an all-reduce
adds the partial sums (the bias is added once, after it). A column layer followed by a row layer
(attention: qkv then o; MLP: gate/up then down) needs one all-reduce per pair.

Checkpoints store q, k, v (and gate, up) as separate tensors; the engine packs them into one matmul.
The loader calls ``param.weight_loader(param, tensor, shard_id)``: it cuts this rank's piece (``shard_weight``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoinfer.parallel.comm import all_reduce, all_reduce_output, tp_rank, tp_size
from nanoinfer.workbook.registry import learner_code


def _divide(numerator: int, denominator: int, what: str) -> int:
    if numerator % denominator:
        raise ValueError(f"{what} ({numerator}) is not divisible by tensor_parallel_size ({denominator})")
    return numerator // denominator


def shard_weight(tensor: torch.Tensor, rank: int, world_size: int, parallel: str) -> torch.Tensor:
    """Rank ``rank``'s piece of a full weight [out, in] or bias [out]. "column": a slice of the output features
    (dim 0, the bias too); "row": of the input features (last dim), the bias whole (added once, after the sum)."""
    if parallel not in ("column", "row"):
        raise ValueError(f"parallel must be 'column' or 'row', got {parallel!r}")
    if parallel == "row" and tensor.dim() == 1:
        return tensor
    dim = 0 if parallel == "column" else tensor.dim() - 1
    n = _divide(tensor.shape[dim], world_size, f"{parallel}-parallel dimension {dim}")
    return tensor.narrow(dim, rank * n, n)


def row_parallel_linear(x: torch.Tensor, weight: torch.Tensor, bias, all_reduce, linear=F.linear) -> torch.Tensor:
    """This rank's partial product with its input slice (x [..., in / tp], weight [out, in / tp]), summed over
    the ranks by one ``all_reduce``; the bias added once, after the sum."""
    y = all_reduce(linear(x, weight, None))
    return y if bias is None else y + bias


class LinearBase(nn.Module):
    def __init__(self, input_size: int, output_size: int, bias: bool) -> None:
        super().__init__()
        self.tp_rank, self.tp_size = tp_rank(), tp_size()
        self.input_size, self.output_size = input_size, output_size  # this rank's shapes
        self.weight = nn.Parameter(torch.empty(output_size, input_size), requires_grad=False)
        self.weight.weight_loader = self.weight_loader
        if bias:
            self.bias = nn.Parameter(torch.empty(output_size), requires_grad=False)
            self.bias.weight_loader = self.weight_loader
        else:
            self.register_parameter("bias", None)
        self.op = F.linear  # (on a CPU, nanoinfer/fast may multiply by a packed copy of the weight instead)
        self.shard = learner_code("4.1", shard_weight)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
        param.data.copy_(loaded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x, self.weight, self.bias)


class ColumnParallelLinear(LinearBase):
    """Output features split over ranks: rank r computes rows [r*n, (r+1)*n) of the output."""

    def __init__(self, input_size: int, output_size: int, bias: bool = False) -> None:
        super().__init__(input_size, _divide(output_size, tp_size(), "output size"), bias)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
        param.data.copy_(self.shard(loaded, self.tp_rank, self.tp_size, "column"))


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several column-parallel outputs stacked in one matmul, e.g. the MLP's gate and up projections."""

    def __init__(self, input_size: int, output_sizes: list[int], bias: bool = False) -> None:
        self.output_sizes = output_sizes
        super().__init__(input_size, sum(output_sizes), bias)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: int) -> None:
        n = self.output_sizes[shard_id] // self.tp_size
        offset = sum(self.output_sizes[:shard_id]) // self.tp_size
        param.data.narrow(0, offset, n).copy_(self.shard(loaded, self.tp_rank, self.tp_size, "column"))


class QKVParallelLinear(ColumnParallelLinear):
    """Query, key and value projections in one matmul, split by attention head.

    With grouped-query attention there may be fewer KV heads than ranks: then each KV head is
    replicated on ``tp_size / num_kv_heads`` ranks (which must divide evenly).
    """

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int, num_kv_heads: int, bias: bool = False):
        tp = tp_size()
        self.head_dim = head_dim
        self.num_heads = _divide(num_heads, tp, "number of attention heads")
        if num_kv_heads >= tp:
            self.num_kv_heads = _divide(num_kv_heads, tp, "number of key/value heads")
        else:
            _divide(tp, num_kv_heads, "tensor_parallel_size as a multiple of the key/value heads")
            self.num_kv_heads = 1
        total = (num_heads + 2 * self.num_kv_heads * tp) * head_dim
        super().__init__(hidden_size, total, bias)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: str) -> None:
        q_size = self.num_heads * self.head_dim
        kv_size = self.num_kv_heads * self.head_dim
        if shard_id == "q":
            offset, piece = 0, self.shard(loaded, self.tp_rank, self.tp_size, "column")
        else:
            offset = q_size if shard_id == "k" else q_size + kv_size
            # in pieces of this rank's KV heads; replicated heads (fewer than ranks): rank r takes r * heads // tp
            pieces = loaded.shape[0] // kv_size
            piece = self.shard(loaded, self.tp_rank * pieces // self.tp_size, pieces, "column")
        param.data.narrow(0, offset, piece.shape[0]).copy_(piece)


class RowParallelLinear(LinearBase):
    """Input features split over ranks; partial outputs are summed by an all-reduce.

    On GPUs with the peer-memory all-reduce the output is a view of a shared buffer that a later
    row-parallel layer overwrites (``parallel/peer_memory.py``): consume it, do not keep it."""

    def __init__(self, input_size: int, output_size: int, bias: bool = False) -> None:
        super().__init__(_divide(input_size, tp_size(), "input size"), output_size, bias)
        self.output_slot = 0  # the shared buffer the peer-memory all-reduce sums in (parallel/peer_memory.py)
        self.row_parallel = learner_code("4.2", row_parallel_linear)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
        param.data.copy_(self.shard(loaded, self.tp_rank, self.tp_size, "row"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.row_parallel is not row_parallel_linear:  # Exercise 4.2 selected: the learner's code, as written
            return self.row_parallel(x, self.weight, self.bias, all_reduce)
        if self.tp_size == 1:
            return self.op(x, self.weight, self.bias)
        out = all_reduce_output(self.output_slot, (*x.shape[:-1], self.output_size), x.dtype)
        if out is None or self.op is not F.linear:  # (an int8 weight: its own kernel, nanoinfer/quantization.py)
            return row_parallel_linear(x, self.weight, self.bias, all_reduce, self.op)
        y = all_reduce(torch.matmul(x, self.weight.t(), out=out))  # GPUs with peer memory: multiply into the
        return y if self.bias is None else y + self.bias  # shared buffer and sum there

