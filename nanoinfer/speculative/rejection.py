"""Speculative sampling's accept/reject rule (Exercise 8.1), and the probabilities it compares.

A draft proposed tokens d_1..d_n from distributions q_1..q_n; the target scored them in one pass, giving
p_1..p_{n+1}. Draft token d_i is accepted with probability min(1, p_i(d_i) / q_i(d_i)), in order, until the
first rejection. At a rejection the token is drawn from the residual max(0, p_i - q_i), normalised; if all n
are accepted, a bonus token is drawn from p_{n+1}. Every step then yields 1..n+1 tokens, each distributed
exactly as the target would have sampled it (Leviathan et al. 2023, Chen et al. 2023). With greedy requests
p and q are one-hot: the rule accepts the longest prefix that matches the target's argmax, plus one token.
"""

from __future__ import annotations

import torch

from nanoinfer.layers.sampler import apply_top_k_top_p
from nanoinfer.sampling_params import SamplingParams


def rejection_sample(target_probs: torch.Tensor, draft_probs: torch.Tensor, draft_tokens: torch.Tensor,
                     num_drafts: torch.Tensor, uniforms: torch.Tensor,
                     noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The accept/reject step for a batch (Exercise 8.1).

    target_probs [B, k+1, V], draft_probs [B, k, V] (float), draft_tokens [B, k] (int64), num_drafts [B]
    (int64: row b drafted its first num_drafts[b] <= k tokens; the rest is padding, never accepted),
    uniforms [B, k] in [0, 1) (accept draft i when uniforms[i] * q_i(d_i) < p_i(d_i)), noise [B, V] Exp(1)
    (the one draw per row: argmax(r / noise) picks token v with probability r_v / sum(r)).
    Returns (num_accepted [B] int64, next_token [B] int64): the accepted drafts, then the corrected token
    (from the residual, at the first rejection) or the bonus token (from p at num_drafts, when all passed).
    """
    B, k = draft_tokens.shape
    rows = torch.arange(B, device=target_probs.device)
    p = target_probs[:, :k].gather(2, draft_tokens.unsqueeze(2)).squeeze(2)  # p_i(d_i)
    q = draft_probs.gather(2, draft_tokens.unsqueeze(2)).squeeze(2)  # q_i(d_i)
    accept = (uniforms * q < p) & (torch.arange(k, device=p.device) < num_drafts.unsqueeze(1))
    num_accepted = accept.long().cumprod(dim=1).sum(dim=1)  # up to the first rejection
    p_next = target_probs[rows, num_accepted]
    rejected = num_accepted < num_drafts
    if k:  # (the clamp keeps a row that accepted all k in range; its residual is not used)
        q_next = draft_probs[rows, num_accepted.clamp(max=k - 1)]
        p_next = torch.where(rejected.unsqueeze(1), (p_next - q_next).clamp_min(0.0), p_next)
    return num_accepted, (p_next / noise).argmax(dim=1)


def probabilities(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Each row's sampling distribution [rows, V] float32, as the sampler draws from it: the temperature,
    top-k and top-p cuts; a greedy row is one-hot at its argmax (the sampler's first-maximum rule)."""
    logits = logits.float()
    greedy = torch.tensor([p.greedy for p in params], device=logits.device)
    one_hot = torch.zeros_like(logits).scatter_(1, logits.max(dim=-1).indices.unsqueeze(1), 1.0)
    if bool(greedy.all()):
        return one_hot
    t = torch.tensor([1.0 if p.greedy else p.temperature for p in params], device=logits.device)
    if any(p.top_k > 0 or p.top_p < 1.0 for p in params):
        top_k = torch.tensor([p.top_k if p.top_k > 0 else logits.shape[1] for p in params], device=logits.device)
        logits = apply_top_k_top_p(logits, t, top_k, torch.tensor([p.top_p for p in params], device=logits.device))
    return torch.where(greedy.unsqueeze(1), one_hot, torch.softmax(logits / t.unsqueeze(1), dim=-1))
