"""Exercise 3.4: online_softmax_attention: same result as attention, never a full score matrix."""

from __future__ import annotations

import random

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import float64_attention
from torch.overrides import TorchFunctionMode

SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])




def window_mask(lq: int, lk: int, g: torch.Generator) -> torch.Tensor:
    """Each query sees a random window of keys, so that whole tiles are masked for some rows."""
    lo = torch.randint(0, lk, (lq,), generator=g)
    width = torch.randint(1, lk + 1, (lq,), generator=g)
    keys = torch.arange(lk).unsqueeze(0)
    return (keys >= lo.unsqueeze(1)) & (keys < (lo + width).unsqueeze(1))


@st.composite
def inputs(draw):
    seed = draw(st.integers(0, 2**31))
    b, hkv, group = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    lq, lk, d = draw(st.integers(1, 8)), draw(st.integers(1, 90)), draw(st.sampled_from([4, 8, 16]))
    tile = draw(st.sampled_from([1, 3, 16, 32, 64, 128]))
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hkv * group, lq, d, generator=g)
    k = torch.randn(b, hkv, lk, d, generator=g) * 2
    v = torch.randn(b, hkv, lk, d, generator=g)
    mask = window_mask(lq, lk, g).expand(b, 1, lq, lk).clone()
    return q, k, v, mask, d**-0.5, tile


@SETTINGS
@given(inputs())
def test_matches_attention(impl, args):
    """equal to softmax attention for any tile size, masks that hide whole tiles included"""
    q, k, v, mask, scale, tile = args
    out = impl.online_softmax_attention(q, k, v, mask, scale, tile_size=tile)
    want = float64_attention(q, k, v, mask, scale)
    assert tuple(out.shape) == tuple(q.shape), f"output shape {tuple(out.shape)}, expected {tuple(q.shape)}"
    assert out.dtype == q.dtype, f"output dtype {out.dtype}, expected {q.dtype}"
    assert not torch.isnan(out).any(), (
        f"NaN in the output (tile_size {tile}): a row whose keys so far are all masked has m = -inf; "
        "exp(-inf - (-inf)) is NaN")
    err = (out.double() - want).abs().max().item()
    assert err < 1e-4, (f"q {tuple(q.shape)}, k {tuple(k.shape)}, tile_size {tile}: max abs error {err:.2e} against "
                        "softmax attention (rescale l and acc by exp(m_old - m_new) when the max grows)")


class ShapeRecorder(TorchFunctionMode):
    """Records the shape of every floating-point tensor a torch function returns."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.shapes.append(tuple(t.shape))
        return out


def test_never_builds_the_score_matrix(impl):
    """no intermediate has a [.., Lq, Lk] shape: scores exist one tile at a time"""
    lq, lk, d, tile = 7, 150, 8, 32
    g = torch.Generator().manual_seed(random.randrange(2**31))
    q = torch.randn(1, 2, lq, d, generator=g)
    k, v = torch.randn(1, 2, lk, d, generator=g), torch.randn(1, 2, lk, d, generator=g)
    mask = torch.ones(1, 1, lq, lk, dtype=torch.bool)
    with ShapeRecorder() as recorder:
        impl.online_softmax_attention(q, k, v, mask, d**-0.5, tile_size=tile)
    full = [s for s in recorder.shapes if len(s) >= 2 and s[-2:] == (lq, lk)]
    assert not full, (f"built {len(full)} float tensor(s) shaped {full[0]} (Lq={lq} x Lk={lk}); with tile_size={tile} "
                      f"the widest score block should be [.., {lq}, {tile}]")
