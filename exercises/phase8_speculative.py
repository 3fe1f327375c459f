"""Phase 8 — speculative decoding. Your code for Exercise 8.1.

Check your work with ``make check EX=8.1`` (or ``python -m nanoinfer.check 8.1``).
The engine runs your function at every speculative decode step once the exercise is selected
(``nanoinfer/speculative/speculator.py``), e.g. ``LLM(speculative_config={"method": "ngram"})``.
"""

from __future__ import annotations

import torch


def rejection_sample(target_probs: torch.Tensor, draft_probs: torch.Tensor, draft_tokens: torch.Tensor,
                     num_drafts: torch.Tensor, uniforms: torch.Tensor,
                     noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exercise 8.1: the accept/reject step of speculative sampling, for a batch of B sequences.

    A draft proposed tokens d_1..d_k with distributions q_1..q_k (``draft_tokens`` [B, k] int64,
    ``draft_probs`` [B, k, V]); the target scored them in one pass: p_1..p_{k+1} (``target_probs``
    [B, k+1, V]; p_i is the target's distribution for the token at draft position i, p_{k+1} after all k).
    Row b drafted only its first ``num_drafts[b]`` (<= k) tokens; later positions are padding, never accepted.

    Accept d_1, d_2, ... in order while ``uniforms[b, i] * q_i(d_i) < p_i(d_i)`` (that is, with probability
    min(1, p/q)); stop at the first rejection. Then draw one more token with the row's ``noise[b]`` ([B, V],
    Exp(1) draws), as argmax(r / noise) over a distribution r (this picks v with probability r_v / sum(r)):
      - after a rejection at position i: r = max(0, p_i - q_i), the residual (no need to normalise: why?)
      - when all num_drafts[b] drafts were accepted: r = p at position num_drafts[b], the bonus token.

    Return (num_accepted [B] int64, next_token [B] int64). No Python loop over the batch is needed:
    ``cumprod`` over the accept flags counts the accepted prefix, ``gather`` picks p_i(d_i).
    """
    raise NotImplementedError("Exercise 8.1: write rejection_sample(target_probs, draft_probs, draft_tokens, "
                              "num_drafts, uniforms, noise)")
