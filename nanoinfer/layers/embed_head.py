"""Token embedding and LM head, split over tensor-parallel ranks by vocabulary rows."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoinfer.parallel.comm import all_gather_last_dim, all_reduce, tp_rank, tp_size


class VocabParallelEmbedding(nn.Module):
    """Rank r holds rows [r*n, (r+1)*n) of the table (the last shard is zero-padded when the vocabulary
    does not divide evenly). Each rank embeds the ids it owns, zeros the others, and an all-reduce sums."""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.tp_rank, self.tp_size = tp_rank(), tp_size()
        self.num_embeddings = num_embeddings
        self.shard_size = -(-num_embeddings // self.tp_size)
        self.vocab_start = self.tp_rank * self.shard_size
        self.weight = nn.Parameter(torch.empty(self.shard_size, embedding_dim), requires_grad=False)
        self.weight.weight_loader = self.weight_loader

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
        rows = loaded[self.vocab_start : self.vocab_start + self.shard_size]
        param.data.zero_()
        param.data[: rows.shape[0]].copy_(rows)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return F.embedding(input_ids, self.weight)
        local = input_ids - self.vocab_start
        mine = (local >= 0) & (local < self.shard_size)
        y = F.embedding(local.clamp(0, self.shard_size - 1), self.weight) * mine.unsqueeze(-1)
        return all_reduce(y)


class ParallelLMHead(VocabParallelEmbedding):
    """Each rank computes the logits of its vocabulary rows; an all-gather joins them. (On GPUs,
    nanoinfer/fast/sampler_triton.py samples each rank's rows where they are, without the gather.)"""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__(num_embeddings, embedding_dim)
        self.op = F.linear  # (on a CPU, nanoinfer/fast may multiply by a packed copy of the weight instead)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.op(hidden, self.weight, None)
        return all_gather_last_dim(logits)[..., : self.num_embeddings] if self.tp_size > 1 else logits
