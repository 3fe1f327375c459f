"""Token embedding and LM head, split over tensor-parallel ranks by vocabulary rows."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoinfer.distributed import all_gather_last_dim, all_gather_stacked, all_reduce, tp_rank, tp_size
from nanoinfer.layers.cpu_packed import linear


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
    """Each rank computes the logits of its vocabulary rows; an all-gather joins them."""

    def __init__(self, num_embeddings: int, embedding_dim: int, bias: bool = False) -> None:
        super().__init__(num_embeddings, embedding_dim)
        assert not bias, "LM-head bias is not supported"
        self.packed_weight: torch.Tensor | None = None  # a CPU-only packed copy (layers/cpu_packed.py)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = all_gather_last_dim(linear(hidden, self.weight, None, self.packed_weight))
        return logits[..., : self.num_embeddings]

    def sample(self, hidden: torch.Tensor, temperatures: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """The seeded Gumbel-max draw (layers/sampler_triton.py) without joining the logits: each rank
        draws the winner of its own vocabulary rows, and only the winners and their scores travel (16
        bytes a row instead of a whole row of logits). Returns the token ids, the same on every rank and
        the same as sampling the joined logits."""
        offer = self.offer(hidden, temperatures, seeds)
        return offer[1].long() if self.tp_size == 1 else best_offer(all_gather_stacked(offer))

    def offer(self, hidden: torch.Tensor, temperatures: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """This rank's winner per row: float64 [2, rows] of (score, token id); token ids are exact in a
        float64, so one collective carries both."""
        from nanoinfer.layers.sampler_triton import seeded_gumbel_max_triton

        own = max(0, min(self.shard_size, self.num_embeddings - self.vocab_start))  # padding rows never win
        if own == 0:  # (a last shard of padding only: it offers nothing)
            nothing = torch.zeros(2, hidden.shape[0], dtype=torch.float64, device=hidden.device)
            nothing[0] = float("-inf")
            return nothing
        logits = linear(hidden, self.weight, None, self.packed_weight)[:, :own]
        tokens, scores = seeded_gumbel_max_triton(logits, temperatures, seeds, first_col=self.vocab_start)
        return torch.stack([scores.double(), tokens.double()])


def best_offer(offers: torch.Tensor) -> torch.Tensor:
    """The token of the best score among the ranks' offers ([ranks, 2, rows]); on a tie the lowest rank,
    which holds the lowest token id, as the draw over whole rows picks."""
    best_rank = offers[:, 0].argmax(dim=0)
    return offers[:, 1].gather(0, best_rank.unsqueeze(0)).squeeze(0).long()
