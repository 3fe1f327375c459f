"""The tile-matmul kernel (fast/tile_linear_triton.py: decode linears of a few rows on the tensor cores, and the
MLP's gate/up product fused with SiLU-and-mul) against a float32 torch reference, on fresh random shapes and values.
Without a GPU it runs in Triton's interpreter (conftest), which has no bfloat16: float16 there, bfloat16 on a GPU."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import linear_inputs, relative_error
from nanoinfer.fast.tile_linear_triton import block_config, supported, tile_linear
from nanoinfer.layers.activation import silu_and_mul

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HALF = torch.bfloat16 if DEVICE == "cuda" else torch.float16
TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1e-2}  # the output's own rounding dominates


def inputs(rows, n, k, seed, bias):
    return linear_inputs(rows, n, k, HALF, seed, bias, DEVICE)


@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, 80), n=st.integers(1, 150), k=st.integers(1, 300), seed=st.integers(0, 2**16),
       bias=st.booleans(), config=st.sampled_from([None, (16, 32, 64, 4, 2), (32, 64, 32, 4, 3)]))
def test_tile_linear_matches_float32(rows, n, k, seed, bias, config):
    x, w, b = inputs(rows, n, k, seed, bias)
    want = F.linear(x.float(), w.float(), None if b is None else b.float())  # the inputs as rounded, in float32
    got = tile_linear(x, w, b, config=config)
    assert got.shape == (rows, n) and got.dtype == HALF
    assert relative_error(got, want) < TOLERANCE[HALF], f"{rows}x{k} @ {n}x{k}: expected F.linear's product"


@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, 80), half_n=st.integers(1, 90), k=st.integers(1, 200), seed=st.integers(0, 2**16),
       bias=st.booleans())
def test_gated_product_is_the_reference_activation_of_gate_and_up(rows, half_n, k, seed, bias):
    x, w, b = inputs(rows, 2 * half_n, k, seed, bias)
    # The reference layers: the product rounded to the dtype, then layers/activation.py's silu_and_mul
    want = silu_and_mul(F.linear(x.float(), w.float(), None if b is None else b.float()).to(HALF))
    got = tile_linear(x, w, b, gated=True)
    assert got.shape == (rows, half_n)
    assert relative_error(got, want) < TOLERANCE[HALF], "expected silu(x @ gate.T) * (x @ up.T), gate rows first"
    assert_rounded_as_the_reference_layers(got, x, w, b)


def assert_rounded_as_the_reference_layers(got, x, w, b, most_differing=1.0):
    """``got`` against the kernel's own [rows, 2n] product put through the reference activation: rounded where the
    reference layers round, the two are equal but where silu's exp rounds differently (a unit in the last place of
    silu, two of the product). Rounded once at the end instead, ~40% of a layer's values differ."""
    steps = silu_and_mul(tile_linear(x, w, b)).float()
    ulp = torch.finfo(HALF).eps  # relative, of normal numbers; subnormals are spaced by smallest_normal * eps
    tolerance = 2 * ulp * steps.abs() + 4 * torch.finfo(HALF).smallest_normal * ulp
    differing = (got.float() != steps).float().mean().item()
    assert ((got.float() - steps).abs() <= tolerance).all() and differing <= most_differing, (
        f"{differing:.1%} of the values differ: expected the product rounded to the dtype, then silu(gate) rounded, "
        "then times up (layers/activation.py)")


@pytest.mark.parametrize("seed", [0, 1])
def test_gated_rounding_on_a_layer_sized_case(seed):
    """16 rows of 512 outputs: enough values to count how many differ (0.02% in Triton's interpreter)."""
    x, w, b = inputs(16, 2 * 512, 256, seed, True)
    assert_rounded_as_the_reference_layers(tile_linear(x, w, b, gated=True), x, w, b, most_differing=0.02)


def test_leading_dimensions_strided_rows_and_no_rows():
    x, w, b = inputs(6, 33, 50, 3, True)
    assert tile_linear(x.reshape(2, 3, 50), w, b).shape == (2, 3, 33)
    wide = torch.zeros(6, 80, device=DEVICE, dtype=HALF)
    wide[:, :50] = x
    assert relative_error(tile_linear(wide[:, :50], w, b), F.linear(x.float(), w.float(), b.float())) < TOLERANCE[HALF]
    assert tile_linear(x[:0], w).shape == (0, 33)


def test_it_refuses_a_weight_it_cannot_read():
    x, w, _ = inputs(4, 8, 16, 0, False)
    with pytest.raises(ValueError, match="16 columns"):
        tile_linear(x, w[:, :8])
    with pytest.raises(ValueError, match="got 7 rows"):
        tile_linear(x, w[:7], gated=True)
    assert not supported(torch.zeros(4, 4)) and not supported(torch.zeros(4, 8, dtype=HALF)[:, ::2])


@pytest.mark.parametrize("gated", [False, True])
def test_block_config_fits_the_rows(gated):
    for rows in (2, 3, 8, 16, 17, 64, 130, 256):
        block_m, block_n, block_k, warps, stages = block_config(rows, 3072, 1024, gated)
        assert 16 <= block_m and (block_m < 2 * rows or block_m == 16), f"{rows} rows: a tile of {block_m} rows"
        assert block_n >= 16 and block_k >= 16 and warps in (4, 8) and stages >= 1


def test_the_engine_ops_send_it_the_rows_it_serves(monkeypatch):
    """skinny_linear_triton's ``linear`` and ``gate_up_silu`` (the ops nanoinfer/fast installs): one row to the
    skinny kernel, MIN_ROWS-MAX_ROWS rows of 16-bit weights of at most MAX_K columns here, the rest to cuBLAS."""
    import nanoinfer.fast.skinny_linear_triton as skinny
    import nanoinfer.fast.tile_linear_triton as tile

    calls = []

    def recorder(kernel):
        def record(x, w, b=None, gated=False):
            calls.append((kernel, x.shape[0], w.shape[1], gated))
            return torch.zeros(x.shape[0], w.shape[0] // (1 + gated), dtype=x.dtype, device=x.device)
        return record

    monkeypatch.setattr(tile, "tile_linear", recorder("tile"))
    monkeypatch.setattr(skinny, "skinny_linear", recorder("skinny"))
    for rows, k in ((1, 64), (tile.MIN_ROWS, 64), (tile.MAX_ROWS, tile.MAX_K), (tile.MAX_ROWS + 1, 64),
                    (tile.MAX_ROWS, tile.MAX_K + 16)):
        x, w, _ = inputs(rows, 8, k, 0, False)
        skinny.linear(x, w)
        skinny.linear(x.float(), w.float())  # (float32: never the tile kernel)
    assert calls == [("skinny", 1, 64, False), ("skinny", 1, 64, False), ("tile", tile.MIN_ROWS, 64, False),
                     ("tile", tile.MAX_ROWS, tile.MAX_K, False)]

    class GateUp:  # what gate_up_silu reads of a LlamaMLP: its gate_up_proj and act_fn
        weight, bias = inputs(1, 16, 64, 1, False)[1], None

        def __call__(self, x):
            return F.linear(x, self.weight)

    class MLP:
        gate_up_proj = GateUp()

        def act_fn(self, h):
            calls.append(("cuBLAS, then the activation", h.shape[0]))
            return h[:, :8]

    calls.clear()
    for rows in (1, tile.MAX_ROWS, tile.MAX_ROWS + 1):
        skinny.gate_up_silu(MLP(), inputs(rows, 8, 64, 2, False)[0])
    assert calls == [("skinny", 1, 64, True), ("tile", tile.MAX_ROWS, 64, True),
                     ("cuBLAS, then the activation", tile.MAX_ROWS + 1)]
