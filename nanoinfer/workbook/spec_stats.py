"""Statistics for speculative sampling (its tests, Exercise 8.1's check, notebook 08): many draws of the
accept/reject rule from small controlled distributions, and a chi-square test of the tokens it emits against
the target's distribution (no scipy: the p-value is the chi-square survival function, the regularised upper
incomplete gamma)."""

from __future__ import annotations

import torch


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of observed ``counts`` [V] under ``probs`` [V] (categories with probability 0 must be empty)."""
    n = counts.sum()
    support = probs > 0
    if bool((counts[~support] > 0).any()):
        return 0.0  # a token the target never emits
    expected = n * probs[support].double()
    stat = ((counts[support].double() - expected) ** 2 / expected).sum()
    dof = int(support.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat / 2))


def controlled_case(seed: int, V: int = 6, k: int = 3):
    """Target distributions p_1..p_{k+1} and draft distributions q_1..q_k over V tokens that do not depend on
    the tokens before them (so each emitted position's distribution is known), with some zeros."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(k + 1, V, generator=g) ** 2
    q = torch.rand(k, V, generator=g) ** 2
    p[:, 0] = 0.0  # a token the target never emits, but the draft proposes
    q[:, 1] = 0.0  # a token the draft never proposes, which the target does emit
    return p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)


def emitted(rule, p: torch.Tensor, q: torch.Tensor, n: int, seed: int) -> list[torch.Tensor]:
    """Run ``rule`` (rejection_sample's signature) on n independent rows: drafts drawn from q, fresh uniforms
    and noise. Returns, for each output position j, the tokens of the rows that emitted one there."""
    g = torch.Generator().manual_seed(seed)
    k, V = q.shape
    drafts = torch.stack([torch.multinomial(q[i], n, replacement=True, generator=g) for i in range(k)], dim=1)
    uniforms = torch.rand(n, k, generator=g)
    noise = torch.empty(n, V).exponential_(generator=g)
    accepted, token = rule(p.expand(n, k + 1, V), q.expand(n, k, V), drafts, torch.full((n,), k), uniforms, noise)
    out = torch.cat([drafts, torch.zeros(n, 1, dtype=torch.int64)], dim=1)
    out[torch.arange(n), accepted] = token  # the accepted drafts, then the rule's own token
    return [out[accepted >= j, j] for j in range(k + 1)]


def worst_p_value(rule, seed: int, n: int = 40_000, V: int = 6, k: int = 3) -> float:
    """The smallest chi-square p-value over the output positions: is every emitted token ~ p_j?"""
    p, q = controlled_case(seed, V, k)
    return min(chi_square_p_value(torch.bincount(tokens, minlength=V), p[j])
               for j, tokens in enumerate(emitted(rule, p, q, n, seed + 1)))
