"""Phase 4 — tensor parallelism. Your code for Exercises 4.1 to 4.3.

Check your work with ``make check EX=4.1`` (or ``python -m nanoinfer.check 4.1``), or in notebook 04 with
``check("4.1")``. Then run the engine on your code: ``with nanoinfer.use_exercises("4.1"): llm = LLM(...,
tensor_parallel_size=2)`` (every rank of that engine loads its weights with your ``shard_weight``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist  # noqa: F401  (dist.all_reduce(t) sums t over the group, in place)
import torch.nn.functional as F
from torch import nn


def shard_weight(tensor: torch.Tensor, rank: int, world_size: int, parallel: str) -> torch.Tensor:
    """Exercise 4.1: the piece of a full (unsharded) weight or bias that rank ``rank`` of ``world_size`` keeps.

    ``tensor`` is a weight [out_features, in_features] or a bias [out_features], as stored in a checkpoint.
    - ``parallel="column"``: each rank owns an equal, contiguous slice of the *output* features: rank r keeps
      rows [r*n, (r+1)*n) of the weight (n = out_features / world_size) and the same entries of the bias.
    - ``parallel="row"``: each rank owns a slice of the *input* features: columns [r*n, (r+1)*n) of the
      weight (the last dimension). A bias is not split: every rank keeps it whole (it is added once, after
      the all-reduce that sums the ranks' partial products).
    Raise ValueError, naming the value, for any other ``parallel`` or when ``world_size`` does not divide the
    dimension that is split. With ``world_size=1`` the piece is the whole tensor.
    The engine's column-, merged- and QKV-parallel layers and its row-parallel layers load every weight
    through this function (``nanoinfer/layers/linear.py``).
    """
    raise NotImplementedError("Exercise 4.1: write shard_weight(tensor, rank, world_size, parallel)")


def row_parallel_linear(x: torch.Tensor, weight: torch.Tensor, bias, all_reduce, linear=F.linear) -> torch.Tensor:
    """Exercise 4.2: the forward pass of a row-parallel linear layer on one rank (part 1 of 4.2).

    ``x`` [..., in_features / tp] is this rank's slice of the input features and ``weight``
    [out_features, in_features / tp] its slice of the weight; ``bias`` [out_features] (or None) is whole.
    Multiply this rank's slice (its partial product ``linear(x, weight, None)``, i.e. x @ weight.T), sum the
    partial products of all ranks with exactly one call ``all_reduce(partial)`` (a function that takes a
    tensor and returns the sum over the ranks: use the tensor it returns), then add the bias once.
    Return [..., out_features], the same on every rank. The engine's RowParallelLinear (o_proj and
    down_proj) runs this when Exercise 4.2 is selected.
    """
    raise NotImplementedError("Exercise 4.2: write row_parallel_linear(x, weight, bias, all_reduce)")


class CustomParallelLinear(nn.Module):
    """Exercise 4.2: a tensor-parallel linear layer, column- or row-parallel (part 2 of 4.2).

    ``CustomParallelLinear(in_features, out_features, tp_size, tp_rank, parallel, bias)`` holds rank
    ``tp_rank``'s shard of a linear layer y = x @ W.T + b (W: [out_features, in_features]):
    - ``parallel="column"``: ``weight`` [out_features / tp_size, in_features], ``bias`` [out_features / tp_size];
      ``forward(x)`` takes the whole input [..., in_features] and returns this rank's slice of the output
      features [..., out_features / tp_size]. No communication.
    - ``parallel="row"``: ``weight`` [out_features, in_features / tp_size], ``bias`` [out_features] (whole);
      ``forward(x)`` takes this rank's slice of the input features [..., in_features / tp_size] and returns
      the whole output [..., out_features] after one all-reduce over the process group
      (``torch.distributed``, already initialised by the caller when tp_size > 1; with tp_size 1, no
      communication). Reuse ``row_parallel_linear``.
    So a column layer followed by a row layer needs one all-reduce in all: the column layer's output slice is
    exactly the row layer's input slice. Parameters are ``nn.Parameter(..., requires_grad=False)`` named
    ``weight`` and ``bias`` (``bias`` is None when ``bias=False``). Raise ValueError, naming the value, for a
    ``parallel`` other than "column" or "row", a ``tp_rank`` outside [0, tp_size), or a split dimension that
    tp_size does not divide.
    """

    def __init__(self, in_features: int, out_features: int, tp_size: int, tp_rank: int, parallel: str = "column",
                 bias: bool = True) -> None:
        raise NotImplementedError("Exercise 4.2: write CustomParallelLinear.__init__")

    def load(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Keep this rank's shard of the full ``weight`` [out_features, in_features] and ``bias``
        [out_features] (use ``shard_weight``)."""
        raise NotImplementedError("Exercise 4.2: write CustomParallelLinear.load")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("Exercise 4.2: write CustomParallelLinear.forward")


def comm_bytes_per_token(config, tp_size: int, dtype_bytes: int) -> dict[str, int]:
    """Exercise 4.3: the bytes each rank's collectives carry per token, as the engine counts them.

    ``config``: a model config with ``num_hidden_layers``, ``hidden_size`` and ``vocab_size`` (a Hugging Face
    config, or any object with those attributes); activations and logits are ``dtype_bytes`` per value.
    Return ``{"all_reduce": bytes per token fed to the model, "all_gather": bytes per token sampled}``:
    - all-reduce: the embedding's (each rank looks up only the ids of its vocabulary shard; one all-reduce of
      the hidden-size vector assembles it), then two per decoder layer (after o_proj and after down_proj),
      each of one hidden-size vector per token;
    - all-gather: each rank's logits shard joined into whole rows, for the positions that sample. The
      vocabulary is split into tp_size equal shards of ceil(vocab_size / tp_size) rows (the last one padded),
      and the gathered row counts the padding.
    Count each collective's tensor as the engine's counters do (``nanoinfer/parallel/comm.py``): an
    all-reduce by the bytes of the tensor summed, an all-gather by the bytes of the result. With
    ``tp_size=1`` there are no collectives: both are 0.
    """
    raise NotImplementedError("Exercise 4.3: write comm_bytes_per_token(config, tp_size, dtype_bytes)")
