"""Exercise 5.5: unpermute_qk undoes the row interleaving llama.cpp applies to q and k in GGUF files."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def to_gguf_order(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """What llama.cpp's converter does: within a head, row 2j <- row j, row 2j+1 <- row j + head_dim/2."""
    head_dim = weight.shape[0] // num_heads
    half = head_dim // 2
    order = [h * head_dim + (r % 2) * half + r // 2 for h in range(num_heads) for r in range(head_dim)]
    return weight[order]


@SETTINGS
@given(st.integers(1, 8), st.integers(1, 16).map(lambda n: 2 * n), st.integers(1, 12), st.integers(0, 2**31))
def test_inverts_llama_cpp(impl, num_heads, head_dim, cols, seed):
    """unpermute_qk(to_gguf_order(W), heads) == W, exactly"""
    w = torch.randn(num_heads * head_dim, cols, generator=torch.Generator().manual_seed(seed))
    gguf = to_gguf_order(w, num_heads)
    got = impl.unpermute_qk(gguf.clone(), num_heads)
    assert tuple(got.shape) == tuple(w.shape), f"returned shape {tuple(got.shape)}, expected {tuple(w.shape)}"
    if not torch.equal(got, w):
        rows = (got != w).any(dim=1).nonzero().flatten().tolist()
        raise AssertionError(
            f"{num_heads} heads x head_dim {head_dim}: rows {rows[:8]} are not back in Hugging Face order. Within a "
            "head, GGUF row 2j holds original row j and row 2j+1 holds original row j + head_dim/2")


def test_row_labels(impl):
    """a labelled example: each row holds its original index"""
    heads, head_dim = 2, 8
    w = torch.arange(heads * head_dim, dtype=torch.float32).unsqueeze(1)
    gguf = to_gguf_order(w, heads)
    got = impl.unpermute_qk(gguf, heads).flatten().tolist()
    want = w.flatten().tolist()
    assert got == want, (f"GGUF rows {gguf.flatten().int().tolist()} unpermuted to {[int(x) for x in got]}, "
                         f"expected {[int(x) for x in want]}")
