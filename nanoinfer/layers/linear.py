"""Linear layers that split their weight over tensor-parallel ranks, each with its own weight loader.

Column-parallel: each rank owns a slice of the *output* features; no communication.
Row-parallel: each rank owns a slice of the *input* features and holds a partial sum; an all-reduce
adds the partial sums (the bias is added once, after it). A column layer followed by a row layer
(attention: qkv then o; MLP: gate/up then down) needs one all-reduce per pair.

Checkpoints store q, k, v (and gate, up) as separate tensors; the engine packs them into one matmul.
The loader calls ``param.weight_loader(param, tensor, shard_id)`` to put each piece in its place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoinfer.parallel.comm import all_reduce, all_reduce_output, tp_rank, tp_size


def _divide(numerator: int, denominator: int, what: str) -> int:
    if numerator % denominator:
        raise ValueError(f"{what} ({numerator}) is not divisible by tensor_parallel_size ({denominator})")
    return numerator // denominator


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

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
        param.data.copy_(loaded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x, self.weight, self.bias)


class ColumnParallelLinear(LinearBase):
    """Output features split over ranks: rank r computes rows [r*n, (r+1)*n) of the output."""

    def __init__(self, input_size: int, output_size: int, bias: bool = False) -> None:
        super().__init__(input_size, _divide(output_size, tp_size(), "output size"), bias)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
        n = param.shape[0]
        param.data.copy_(loaded.narrow(0, self.tp_rank * n, n))


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several column-parallel outputs stacked in one matmul, e.g. the MLP's gate and up projections."""

    def __init__(self, input_size: int, output_sizes: list[int], bias: bool = False) -> None:
        self.output_sizes = output_sizes
        super().__init__(input_size, sum(output_sizes), bias)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: int) -> None:
        n = self.output_sizes[shard_id] // self.tp_size
        offset = sum(self.output_sizes[:shard_id]) // self.tp_size
        param.data.narrow(0, offset, n).copy_(loaded.narrow(0, self.tp_rank * n, n))


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
            offset, size, start = 0, q_size, self.tp_rank * q_size
        else:
            offset = q_size if shard_id == "k" else q_size + kv_size
            # rank r uses KV head r * num_kv_heads_total // tp_size when heads are replicated
            total_kv_heads = loaded.shape[0] // self.head_dim
            first_head = self.tp_rank * total_kv_heads // self.tp_size
            size, start = kv_size, first_head * self.head_dim
        param.data.narrow(0, offset, size).copy_(loaded.narrow(0, start, size))


class RowParallelLinear(LinearBase):
    """Input features split over ranks; partial outputs are summed by an all-reduce.

    On GPUs with the peer-memory all-reduce the output is a view of a shared buffer that a later
    row-parallel layer overwrites (``parallel/peer_memory.py``): consume it, do not keep it."""

    def __init__(self, input_size: int, output_size: int, bias: bool = False) -> None:
        super().__init__(_divide(input_size, tp_size(), "input size"), output_size, bias)
        self.output_slot = 0  # the shared buffer the peer-memory all-reduce sums in (parallel/peer_memory.py)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
        if param.dim() == 1:  # the bias is not split
            param.data.copy_(loaded)
            return
        n = param.shape[1]
        param.data.copy_(loaded.narrow(1, self.tp_rank * n, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return self.op(x, self.weight, self.bias)
        out = all_reduce_output(self.output_slot, (*x.shape[:-1], self.output_size), x.dtype)
        if out is None:
            y = all_reduce(self.op(x, self.weight, None))
        else:  # GPUs with peer memory: multiply straight into the shared buffer, sum there
            y = all_reduce(torch.matmul(x, self.weight.t(), out=out))
        return y if self.bias is None else y + self.bias

