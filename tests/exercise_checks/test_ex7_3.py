"""Exercise 7.3: settings picked from a sweep, on random sweep tables (the rule written out here), on tables
with known answers, and on a real sweep of a tiny model."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
COLUMNS = ["generated_tok_s", "ttft_ms_p99", "tpot_ms_p99", "peak_kv_blocks"]


def by_hand(sweep, objective, maximize, at_most, at_least):
    best = None
    for label, row in sweep.iterrows():
        if math.isnan(row[objective]):
            continue
        if any(not row[c] <= b for c, b in at_most.items()) or any(not row[c] >= b for c, b in at_least.items()):
            continue
        if best is None or (row[objective] > best[1] if maximize else row[objective] < best[1]):
            best = (label, row[objective])
    return None if best is None else best[0]


values = st.one_of(st.integers(0, 20).map(float), st.just(math.nan))


@SETTINGS
@given(st.lists(st.tuples(*[values] * len(COLUMNS)), min_size=1, max_size=12), st.sampled_from(COLUMNS),
       st.booleans(), st.dictionaries(st.sampled_from(COLUMNS), st.integers(0, 20), max_size=2),
       st.dictionaries(st.sampled_from(COLUMNS), st.integers(0, 20), max_size=2))
def test_random_sweeps(impl, rows, objective, maximize, at_most, at_least):
    sweep = pd.DataFrame(rows, columns=COLUMNS)
    sweep.insert(0, "max_num_seqs", [2**i for i in range(len(rows))])
    want = by_hand(sweep, objective, maximize, at_most, at_least)
    goal = f"{'max' if maximize else 'min'} {objective}, at_most={at_most}, at_least={at_least}"
    if want is None:
        with pytest.raises(ValueError):
            impl.pick_settings(sweep, objective, maximize, at_most, at_least)
        return
    got = impl.pick_settings(sweep, objective, maximize, at_most, at_least)
    assert isinstance(got, pd.Series), f"expected a row (a pandas Series), got {type(got).__name__}"
    assert got.name == want, (f"{goal} over\n{sweep.to_string()}\nexpected the row with max_num_seqs="
                              f"{sweep.loc[want, 'max_num_seqs']}, got max_num_seqs={got.get('max_num_seqs')}")


def test_known_answers(impl):
    sweep = pd.DataFrame({"max_num_seqs": [1, 4, 16, 64], "generated_tok_s": [50.0, 160.0, 400.0, 410.0],
                          "ttft_ms_p99": [9000.0, 2500.0, 700.0, 1200.0], "peak_kv_blocks": [8, 30, 120, 480]})
    assert impl.pick_settings(sweep, "generated_tok_s")["max_num_seqs"] == 64
    assert impl.pick_settings(sweep, "generated_tok_s", at_most={"ttft_ms_p99": 1000})["max_num_seqs"] == 16, (
        "the most tokens/s with p99 TTFT <= 1000 ms is max_num_seqs=16 (64 is faster but its p99 TTFT is 1200 ms)")
    assert impl.pick_settings(sweep, "peak_kv_blocks", maximize=False,
                              at_least={"generated_tok_s": 150})["max_num_seqs"] == 4
    with pytest.raises(ValueError):
        impl.pick_settings(sweep, "generated_tok_s", at_most={"ttft_ms_p99": 100})
    with pytest.raises(ValueError, match="ttft_p99"):
        impl.pick_settings(sweep, "generated_tok_s", at_most={"ttft_p99": 100})


@pytest.mark.engine
def test_on_a_real_sweep(impl, tiny_llama):
    """a max_num_seqs sweep of a tiny model: your pick for 'most tokens/s with p99 TTFT under the median' is
    the rule's"""
    from nanoinfer import bench

    sweep = bench.sweep("chatbot", "max_num_seqs", [1, 2, 8], model=str(tiny_llama), scale=1 / 32, progress=False)
    bound = float(sweep.ttft_ms_p99.median())
    want = by_hand(sweep, "generated_tok_s", True, {"ttft_ms_p99": bound}, {})
    got = impl.pick_settings(sweep, "generated_tok_s", at_most={"ttft_ms_p99": bound})
    assert got.name == want, f"{sweep[['max_num_seqs', 'generated_tok_s', 'ttft_ms_p99']]}\nexpected row {want}, got {got.name}"
