"""Exercise 4.1: shard_weight, the piece of a weight or bias each tensor-parallel rank keeps."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import tp2_and_one_rank_tokens

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def cases(draw):
    """A full weight [out, in] and bias [out] with distinct entries, a world size dividing both, a rank."""
    world = draw(st.integers(1, 6))
    out_f, in_f = world * draw(st.integers(1, 7)), world * draw(st.integers(1, 7))
    rank = draw(st.integers(0, world - 1))
    offset = draw(st.integers(0, 1000))
    weight = torch.arange(out_f * in_f, dtype=torch.float32).reshape(out_f, in_f) + offset
    bias = -torch.arange(out_f, dtype=torch.float32) - offset
    return weight, bias, rank, world


def _where(piece, full: torch.Tensor) -> str:
    """Where a 2-D ``piece`` of ``full`` (whose entries are distinct) starts, and its shape."""
    if not isinstance(piece, torch.Tensor) or piece.dim() != 2 or piece.numel() == 0:
        return repr(piece) if not isinstance(piece, torch.Tensor) else f"a tensor of shape {tuple(piece.shape)}"
    at = (full == piece[0, 0]).nonzero()
    start = f"row {at[0, 0].item()}, column {at[0, 1].item()}" if len(at) else "no entry of the weight"
    return f"shape {tuple(piece.shape)} starting at {start}"


@SETTINGS
@given(cases())
def test_column(impl, case):
    """column: rank r keeps rows [r*n, (r+1)*n) of the weight and the same entries of the bias"""
    weight, bias, rank, world = case
    n = weight.shape[0] // world
    got = impl.shard_weight(weight.clone(), rank, world, "column")
    want = weight[rank * n:(rank + 1) * n]
    assert isinstance(got, torch.Tensor) and torch.equal(got, want), (
        f"weight {tuple(weight.shape)}, rank {rank} of {world}, column: expected rows {rank * n}..{(rank + 1) * n - 1} "
        f"(all columns), shape {tuple(want.shape)}; got {_where(got, weight)}")
    got_bias = impl.shard_weight(bias.clone(), rank, world, "column")
    assert torch.equal(got_bias, bias[rank * n:(rank + 1) * n]), (
        f"bias [{bias.shape[0]}], rank {rank} of {world}, column: expected entries {rank * n}..{(rank + 1) * n - 1} "
        f"(each rank adds the bias of its own output features); got shape {tuple(got_bias.shape)}")


@SETTINGS
@given(cases())
def test_row(impl, case):
    """row: rank r keeps columns [r*n, (r+1)*n) of the weight; the bias whole"""
    weight, bias, rank, world = case
    n = weight.shape[1] // world
    got = impl.shard_weight(weight.clone(), rank, world, "row")
    want = weight[:, rank * n:(rank + 1) * n]
    assert isinstance(got, torch.Tensor) and torch.equal(got, want), (
        f"weight {tuple(weight.shape)}, rank {rank} of {world}, row: expected columns {rank * n}..{(rank + 1) * n - 1} "
        f"(all rows), shape {tuple(want.shape)}; got {_where(got, weight)}")
    got_bias = impl.shard_weight(bias.clone(), rank, world, "row")
    assert torch.equal(got_bias, bias), (
        f"bias [{bias.shape[0]}], rank {rank} of {world}, row: expected the whole bias (it is added once, after the "
        f"all-reduce); got shape {tuple(got_bias.shape)}")


@SETTINGS
@given(cases(), st.sampled_from(["column", "row"]))
def test_the_pieces_make_the_whole(impl, case, parallel):
    """the ranks' weight pieces, side by side, are the full weight: nothing lost, nothing twice"""
    weight, _, _, world = case
    pieces = [impl.shard_weight(weight.clone(), r, world, parallel) for r in range(world)]
    joined = torch.cat(pieces, dim=0 if parallel == "column" else 1)
    assert torch.equal(joined, weight), (
        f"weight {tuple(weight.shape)}, {world} ranks, {parallel}: the {world} pieces joined along dim "
        f"{0 if parallel == 'column' else 1} should give the weight back; shapes {[tuple(p.shape) for p in pieces]}")


def test_bad_input(impl):
    """a world size that does not divide the split dimension, or an unknown kind, raises ValueError"""
    weight = torch.zeros(6, 10)
    for args, what in (((weight, 0, 4, "column"), "4 ranks and 6 output features"),
                       ((weight, 0, 4, "row"), "4 ranks and 10 input features"),
                       ((weight, 0, 2, "diagonal"), "parallel='diagonal'")):
        with pytest.raises(ValueError):
            impl.shard_weight(*args)
            pytest.fail(f"{what}: expected a ValueError naming the value")



@pytest.mark.engine
def test_in_the_engine_at_two_ranks(engine_code, tmp_path):
    """a TP=2 engine whose ranks load every weight with your shard_weight gives the greedy tokens of one rank"""
    got, want = tp2_and_one_rank_tokens(tmp_path, engine_code)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a == b, (f"prompt {i}: TP=2 with your shard_weight generated {a}, one rank {b}: a rank holds the "
                        "wrong piece of some weight (q/k/v and gate/up are column-parallel, o_proj and down_proj row)")
