"""Exercise 7.1: the benchmark-suite runner, on fake engines (every order and column checked) and through
``nanoinfer.bench.suite`` on a tiny model."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=25, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


class FakeLLM:
    def __init__(self, log: list, setting: dict) -> None:
        self.setting, self.log, self.closed = setting, log, False
        log.append(("build", setting))

    def shutdown(self) -> None:
        self.closed = True
        self.log.append(("shutdown", self.setting))


knob_values = st.dictionaries(st.sampled_from(["max_num_seqs", "max_num_batched_tokens", "kvcache_block_size"]),
                              st.integers(1, 4096), max_size=3)


@SETTINGS
@given(st.lists(knob_values, min_size=1, max_size=4), st.lists(st.text("abcxyz", min_size=1, max_size=6),
                                                               min_size=1, max_size=4), st.integers(0, 10**6))
def test_one_engine_per_setting_a_row_per_pair(impl, settings_list, workloads, salt):
    log, engines = [], []

    def build(**setting):
        engines.append(FakeLLM(log, setting))
        return engines[-1]

    def measure(workload, llm):
        assert not llm.closed, "measure ran on an engine already shut down"
        log.append(("measure", workload))
        return pd.DataFrame([{"workload": workload, "tok_s": (hash(workload) + salt + len(log)) % 1000}])

    frame = impl.run_suite(workloads, settings_list, build, measure, progress=False)
    assert isinstance(frame, pd.DataFrame), f"run_suite returned a {type(frame).__name__}, expected a DataFrame"
    n = len(settings_list) * len(workloads)
    assert len(frame) == n, f"{len(settings_list)} settings x {len(workloads)} workloads: expected {n} rows, got {len(frame)}"
    assert list(frame.index) == list(range(n)), f"expected the index 0..{n - 1}, got {list(frame.index)}"
    expected_log = []
    for s in settings_list:
        expected_log += [("build", s)] + [("measure", w) for w in workloads] + [("shutdown", s)]
    assert log == expected_log, ("expected, for each setting in order: build its engine, measure every workload "
                                 f"in order, shut it down;\nexpected {expected_log}\ngot      {log}")
    assert list(frame.workload) == [w for _ in settings_list for w in workloads], "rows out of order"
    for i, (s, w) in enumerate((s, w) for s in settings_list for w in workloads):
        for knob, value in s.items():
            assert knob in frame.columns, f"the setting's knob {knob!r} is missing from the columns {list(frame.columns)}"
            assert frame.loc[i, knob] == value, f"row {i} ({w}): expected {knob}={value}, got {frame.loc[i, knob]}"


def test_engine_shut_down_when_a_run_fails(impl):
    log = []

    def measure(workload, llm):
        if workload == "bad":
            raise RuntimeError("the run failed")
        return pd.DataFrame([{"workload": workload}])

    with pytest.raises(RuntimeError, match="the run failed"):
        impl.run_suite(["ok", "bad"], [{"max_num_seqs": 2}], lambda **s: FakeLLM(log, s), measure, progress=False)
    assert log[-1] == ("shutdown", {"max_num_seqs": 2}), (
        "a run raised, and the engine was not shut down: its KV cache (and any worker processes) would leak")


@pytest.mark.engine
def test_through_the_bench(impl, tiny_llama, engine_code):
    """nanoinfer.bench.suite runs your run_suite when 7.1 is selected: a row per (setting, workload)"""
    from nanoinfer import bench

    with engine_code():
        frame = bench.suite(["chatbot", "rag_qa"], [{"max_num_seqs": 2}, {"max_num_seqs": 8}], model=str(tiny_llama),
                            scale=1 / 64, progress=False)
    assert list(frame.workload) == ["chatbot", "rag_qa"] * 2
    assert list(frame.max_num_seqs) == [2, 2, 8, 8]
    want = [bench.named_workload(w, 512, scale=1 / 64).num_output_tokens for w in frame.workload]
    assert list(frame.output_tokens) == want, f"expected {want} output tokens per row, got {list(frame.output_tokens)}"
    assert (frame.mean_decode_batch <= frame.max_num_seqs).all(), "a decode step held more sequences than max_num_seqs"
