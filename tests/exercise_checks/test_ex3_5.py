"""Exercise 3.5: performance_report on made-up step timelines, and against the engine's own metrics."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoinfer import SamplingParams

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
COLUMNS = ["decode_steps", "tokens", "tokens_per_s", "ms_per_token_p50", "ms_per_token_p99"]


def expected(decode: pd.DataFrame) -> dict:
    """The report's row for one configuration's decode steps: each step's time, once per token it produced."""
    waits_ms = np.repeat(decode["seconds"].to_numpy() * 1e3, decode["num_sampled"].to_numpy())
    tokens = int(decode["num_sampled"].sum())
    return {"decode_steps": len(decode), "tokens": tokens, "tokens_per_s": tokens / decode["seconds"].sum(),
            "ms_per_token_p50": float(np.percentile(waits_ms, 50)),
            "ms_per_token_p99": float(np.percentile(waits_ms, 99))}


@st.composite
def timelines(draw):
    """Runs of 1-4 configurations stacked: prefill steps (which must not count) among decode steps of random
    widths and durations, rows of the configurations interleaved as when a notebook concatenates runs."""
    names = draw(st.lists(st.sampled_from(["eager b1", "graphs b1", "eager b8", "graphs b8", "b32", "naive"]),
                          min_size=1, max_size=4, unique=True))
    rng = random.Random(draw(st.integers(0, 2**31)))
    rows = []
    for name in names:
        n_decode = draw(st.integers(1, 40))
        width = rng.randint(1, 64)
        for _ in range(n_decode + rng.randint(0, 3)):
            decode = n_decode > 0 and rng.random() < 0.85
            if decode:
                n_decode -= 1
                width = max(1, width - (rng.random() < 0.2))  # requests finish: the batch narrows
            sampled = width if decode else rng.randint(0, 8)
            rows.append({"config": name, "phase": "decode" if decode else "prefill", "num_seqs": max(1, sampled),
                         "num_tokens": sampled if decode else rng.randint(8, 512), "num_sampled": sampled,
                         "seconds": rng.lognormvariate(-5, 0.6)})
        while n_decode > 0:
            rows.append({"config": name, "phase": "decode", "num_seqs": width, "num_tokens": width,
                         "num_sampled": width, "seconds": rng.lognormvariate(-5, 0.6)})
            n_decode -= 1
    if draw(st.booleans()):
        rng.shuffle(rows)
    frame = pd.DataFrame(rows)
    frame.insert(0, "step", range(1, len(frame) + 1))
    return frame


def check_row(report, config, want, context: str) -> None:
    got = report.loc[config]
    for column, value in want.items():
        assert got[column] == pytest.approx(value, rel=1e-9), (
            f"{context}: {column} for {config!r} is {got[column]}, expected {value:.6g} (decode steps only; "
            "ms per token = each decode step's seconds * 1000, counted once per token it sampled; "
            "percentiles interpolated linearly as numpy.percentile does)")


@SETTINGS
@given(timelines())
def test_on_made_up_timelines(impl, timeline):
    """one row per configuration in order of first appearance; decode steps only; width-weighted percentiles"""
    report = impl.performance_report(timeline.copy(), by="config")
    assert isinstance(report, pd.DataFrame), f"returned a {type(report).__name__}, expected a pandas DataFrame"
    order = list(dict.fromkeys(timeline["config"]))
    assert list(report.index) == order, (
        f"index {list(report.index)}, expected one row per configuration in order of first appearance: {order}")
    assert report.index.name == "config", f"index name {report.index.name!r}, expected the `by` column 'config'"
    missing = [c for c in COLUMNS if c not in report.columns]
    assert not missing, f"missing columns {missing}; expected {COLUMNS}"
    for config in order:
        decode = timeline[(timeline["config"] == config) & (timeline["phase"] == "decode")]
        check_row(report, config, expected(decode), f"a timeline of {len(timeline)} steps")


def test_another_column_name_and_no_decode(impl):
    """`by` names the column; a configuration without decode steps is refused, by name"""
    rng = random.Random()
    seconds = [rng.uniform(0.001, 0.01) for _ in range(5)]
    frame = pd.DataFrame({"backend": ["a"] * 5, "phase": ["prefill"] + ["decode"] * 4,
                          "num_sampled": [1, 2, 2, 2, 1], "seconds": seconds})
    report = impl.performance_report(frame, by="backend")
    assert list(report.index) == ["a"] and report.index.name == "backend", (
        f"by='backend': index {list(report.index)} named {report.index.name!r}, expected ['a'] named 'backend'")
    check_row(report, "a", expected(frame[frame.phase == "decode"]), "by='backend'")
    only_prefill = pd.concat([frame, frame.iloc[:1].assign(backend="b")])
    with pytest.raises(ValueError, match="b"):
        impl.performance_report(only_prefill, by="backend")
        raise AssertionError("configuration 'b' has only a prefill step: expected a ValueError naming it")


@pytest.mark.engine
def test_against_the_engine_metrics(impl, tiny_llm):
    """two runs on a tiny model: tokens and tokens/s equal the engine's own counts and summary()"""
    rng = random.Random()
    runs, summaries, outputs = [], {}, {}
    for n in (1, rng.randint(3, 6)):
        name = f"batch {n}"
        llm = tiny_llm(max_num_seqs=n)
        prompts = [[rng.randrange(512) for _ in range(rng.randint(3, 30))] for _ in range(n)]
        lengths = [rng.randint(3, 12) for _ in range(n)]
        outs = llm.generate(prompts, [SamplingParams(temperature=0, max_tokens=m, ignore_eos=True) for m in lengths],
                            use_tqdm=False)
        runs.append(llm.step_timeline().assign(config=name))
        summaries[name], outputs[name] = llm.engine.metrics.summary()["decode"], outs
    report = impl.performance_report(pd.concat(runs, ignore_index=True))
    for name, summary in summaries.items():
        produced = sum(len(o.token_ids) - 1 for o in outputs[name])  # the first token comes from the prefill
        row = report.loc[name]
        assert row["tokens"] == produced == summary["tokens"], (
            f"{name}: tokens {row['tokens']}, expected {produced} (each request's outputs after its first token)")
        assert row["decode_steps"] == summary["steps"], (
            f"{name}: decode_steps {row['decode_steps']}, expected {summary['steps']} (the engine's decode steps)")
        assert row["tokens_per_s"] == pytest.approx(summary["tokens_per_s"], rel=1e-9), (
            f"{name}: tokens_per_s {row['tokens_per_s']:.1f}, expected {summary['tokens_per_s']:.1f} = "
            "EngineMetrics.summary()['decode']['tokens_per_s']")
        assert row["ms_per_token_p50"] <= row["ms_per_token_p99"], f"{name}: p50 above p99"
    single = runs[0][runs[0].phase == "decode"]  # one sequence: each token waited exactly one step
    check_row(report, "batch 1", {"ms_per_token_p50": float(np.median(single.seconds) * 1e3)}, "batch 1")
