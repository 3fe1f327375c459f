"""Exercise 7.2: a profile classified, on random profile tables (the rules written out here) and on real
profiles of a tiny model's prefill and decode steps."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
CATEGORIES = ["GEMM", "attention", "sampling", "copies", "norm / rotary / activation", "communication", "other"]
HOST = "CPU overhead (device idle)"


def table(ms: dict, host_ms: float, flops: float, nbytes: float, bandwidth: float, matmul_flops: float):
    frame = pd.DataFrame({"ms_per_step": {**ms, HOST: host_ms}}).sort_values("ms_per_step", ascending=False,
                                                                               kind="stable")
    frame["share"] = frame.ms_per_step / frame.ms_per_step.sum()
    frame.attrs.update(host_row=HOST, flops_per_step=flops, bytes_per_step=nbytes, bandwidth=bandwidth,
                       matmul_flops=matmul_flops, wall_ms_per_step=frame.ms_per_step.sum())
    return frame


def by_hand(frame) -> dict:
    a = frame.attrs
    operators = [(name, ms) for name, ms in frame.ms_per_step.items() if name != a["host_row"]]
    top = operators[0]
    for name, ms in operators:
        if ms > top[1]:
            top = (name, ms)
    host = frame.ms_per_step.get(a["host_row"], 0.0)
    memory = a["bytes_per_step"] / a["bandwidth"] >= a["flops_per_step"] / a["matmul_flops"]
    return {"bound": "host" if host > sum(ms for _, ms in operators) else "device",
            "resource": "memory" if memory else "compute", "top_operation": top[0]}


positive = st.floats(1e-3, 1e3, allow_nan=False)


@SETTINGS
@given(st.dictionaries(st.sampled_from(CATEGORIES), positive, min_size=1), positive, st.floats(1e6, 1e15),
       st.floats(1e6, 1e12), st.floats(1e9, 5e12), st.floats(1e10, 1e15))
def test_random_profiles(impl, ms, host_ms, flops, nbytes, bandwidth, matmul_flops):
    frame = table(ms, host_ms, flops, nbytes, bandwidth, matmul_flops)
    got, want = impl.classify_profile(frame), by_hand(frame)
    assert got == want, (f"profile {frame.ms_per_step.round(3).to_dict()}, {flops:.3g} FLOPs and {nbytes:.3g} bytes "
                         f"per step at {bandwidth:.3g} B/s and {matmul_flops:.3g} FLOP/s: expected {want}, got {got}")


def test_known_answers(impl):
    decode = table({"GEMM": 2.0, "attention": 0.5}, 0.4, flops=2e9, nbytes=4e9, bandwidth=3e12, matmul_flops=8e14)
    assert impl.classify_profile(decode) == {"bound": "device", "resource": "memory", "top_operation": "GEMM"}, (
        "a step that reads 4 GB and does 2 GFLOPs on a 3 TB/s, 800 TFLOP/s card is memory-bound; the GEMMs lead")
    prefill = table({"GEMM": 30.0, "attention": 45.0}, 1.0, flops=1e14, nbytes=4e9, bandwidth=3e12, matmul_flops=8e14)
    assert impl.classify_profile(prefill) == {"bound": "device", "resource": "compute",
                                              "top_operation": "attention"}
    small = table({"GEMM": 0.2, "sampling": 0.1}, 0.9, flops=2e9, nbytes=4e9, bandwidth=3e12, matmul_flops=8e14)
    assert impl.classify_profile(small)["bound"] == "host", (
        "0.9 ms with the device idle against 0.3 ms of kernels: the host bounds this step")


@pytest.mark.engine
def test_real_profiles(impl, tiny_llm):
    """prefill and decode profiles of a tiny model: your answer equals the reference's, and a batch-1 decode is
    memory-bound while a long prefill is compute-bound (at rates given, so that the answer is the machine's
    ridge point, not this run's noise)"""
    from nanoinfer.tools.profiling import classify_profile, profile_workload
    from nanoinfer.tools.workloads import random_workload

    llm = tiny_llm(max_model_len=256)
    rates = {"bandwidth": 20e9, "matmul_flops": 100e9}  # a ridge point of 5 FLOP/byte, a 2-core CPU's order
    prefill = profile_workload(llm, random_workload(6, (200, 200), (1, 1), 512, seed=1), "prefill", rates=rates)
    decode = profile_workload(llm, random_workload(1, (8, 8), (12, 12), 512, seed=2), "decode", rates=rates)
    for name, profile in (("prefill", prefill), ("decode", decode)):
        got, want = impl.classify_profile(profile), classify_profile(profile)
        assert got == want, f"the {name} profile {profile.ms_per_step.round(3).to_dict()}: expected {want}, got {got}"
    assert classify_profile(prefill)["resource"] == "compute" and classify_profile(decode)["resource"] == "memory"
