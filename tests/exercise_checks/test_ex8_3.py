"""Exercise 8.3: Poisson arrival times, and the step loop that adds requests as they arrive, against the
statistics of a Poisson process and the engine's own per-request metrics (RequestMetrics)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoinfer import SamplingParams

SETTINGS = settings(max_examples=8, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_poisson(times: np.ndarray, rate: float) -> None:
    """Gaps of a Poisson process: mean 1/rate and an exponential distribution (Kolmogorov-Smirnov distance
    under 0.05 with 4,000 gaps: a true exponential exceeds it with probability ~1e-8; uniform gaps of the
    right mean are 0.13 away)."""
    gaps = np.diff(np.concatenate([[0.0], times]))
    assert (gaps > 0).all(), "arrival times must increase (every gap > 0), the first one after 0"
    mean = gaps.mean()
    assert abs(mean * rate - 1) < 0.1, f"the mean gap should be 1/rate = {1 / rate:.4g} s, got {mean:.4g} s"
    x = np.sort(gaps)
    n = len(x)
    cdf = 1 - np.exp(-rate * x)
    distance = max((np.arange(1, n + 1) / n - cdf).max(), (cdf - np.arange(n) / n).max())
    assert distance < 0.05, (f"the gaps are not exponential with rate {rate}: their distribution is {distance:.3f} "
                             "away from it (Kolmogorov-Smirnov); a Poisson process has exponential gaps")


@SETTINGS
@given(st.floats(0.1, 500.0), st.integers(0, 2**32 - 1))
def test_arrival_times_are_a_poisson_process(impl, rate, seed):
    """4,000 arrivals: increasing, exponential gaps of mean 1/rate, drawn from the generator given"""
    times = impl.arrival_times(rate, 4000, np.random.default_rng(seed))
    assert isinstance(times, np.ndarray) and times.shape == (4000,), \
        f"expected an array of 4000 arrival times, got {type(times).__name__} {getattr(times, 'shape', '')}"
    assert_poisson(times, rate)
    again = impl.arrival_times(rate, 4000, np.random.default_rng(seed))
    assert np.array_equal(times, again), "the same seed must give the same arrival times (draw from rng)"
    other = impl.arrival_times(rate, 4000, np.random.default_rng(seed + 1))
    assert not np.array_equal(times, other), "another seed must give other arrival times (draw from rng)"


def test_arrival_times_refuse_a_bad_rate(impl):
    """rate <= 0 raises ValueError"""
    for rate in (0.0, -1.0):
        with pytest.raises(ValueError):
            impl.arrival_times(rate, 10, np.random.default_rng(0))


@pytest.mark.parametrize("wrong", ["uniform gaps", "constant gaps", "twice the rate", "gaussian gaps"])
def test_the_statistics_check_rejects_wrong_processes(wrong):
    """assert_poisson fails for arrival processes that are not Poisson at this rate (the check's own test)"""
    rate, rng = 5.0, np.random.default_rng(1)
    gaps = {"uniform gaps": rng.uniform(0, 2 / rate, 4000), "constant gaps": np.full(4000, 1 / rate),
            "twice the rate": rng.exponential(0.5 / rate, 4000),
            "gaussian gaps": np.abs(rng.normal(1 / rate, 0.3 / rate, 4000))}[wrong]
    with pytest.raises(AssertionError):
        assert_poisson(np.cumsum(gaps), rate)


# ---- the step loop, against the engine's own metrics ----------------------------------------------
def check_against_engine(llm, simulate, prompts, params, times) -> None:
    """Run ``simulate`` with the engine's add_request watched; its result must be the percentiles of the
    engine's RequestMetrics, each request added once, in order, not before it was due, and stamped with
    the time it was due."""
    engine, added = llm.engine, []
    add_request = engine.add_request

    def watched(*args, **kwargs):
        seq = add_request(*args, **kwargs)
        added.append((time.perf_counter(), seq))
        return seq

    engine.add_request = watched
    try:
        result = simulate(llm, prompts, params, times)
    finally:
        del engine.add_request
    seqs = [s for _, s in added]
    assert [s.token_ids[: s.num_prompt_tokens] for s in seqs] == prompts, \
        "every request must be added once, in arrival order, with its prompt's token ids"
    assert all(s.is_finished for s in seqs) and not engine.has_unfinished_requests(), "every request must finish"
    bm = llm.block_manager
    assert bm.num_free_blocks == bm.num_blocks, "KV blocks are still held after the run"
    arrivals = np.array([s.metrics.arrival_time for s in seqs])
    start = arrivals - np.asarray(times)
    assert np.ptp(start) < 1e-6, ("each seq.metrics.arrival_time must be start + times[i], when it was due; they "
                                  f"are off by up to {np.ptp(start) * 1e3:.3f} ms from that")
    lateness = np.array([t for t, _ in added]) - arrivals
    assert lateness.min() >= -1e-6, f"a request was added {-lateness.min() * 1e3:.1f} ms before it was due"
    longest_step = llm.step_timeline()["seconds"].max()
    assert lateness.max() <= longest_step + 0.5, \
        f"a request was added {lateness.max():.3f} s after it was due (longest step {longest_step:.3f} s)"

    def pct(values, q):
        values = [v for v in values if v is not None]
        return float(np.percentile(values, q))

    for name, prop in (("ttft", "time_to_first_token"), ("tpot", "time_per_output_token"), ("e2e", "e2e_latency")):
        for q in (50, 90, 99):
            want = pct([getattr(s.metrics, prop) for s in seqs], q)
            assert result[f"{name}_p{q}"] == pytest.approx(want, rel=1e-9, abs=1e-12), \
                f"{name}_p{q}: got {result[f'{name}_p{q}']}, the engine's metrics give {want}"
    tokens = sum(s.num_output_tokens for s in seqs)
    assert result["requests"] == len(seqs) and result["output_tokens"] == tokens, \
        f"expected requests={len(seqs)}, output_tokens={tokens}; got {result['requests']}, {result['output_tokens']}"
    assert result["seconds"] >= times[-1], f"the run lasted {result['seconds']:.3f} s, less than the last arrival"
    assert result["throughput_tok_s"] == pytest.approx(tokens / result["seconds"]), "throughput = tokens / seconds"


def workload(seed: int, n: int):
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(0, 512, int(rng.integers(4, 40))).tolist() for _ in range(n)]
    params = [SamplingParams(temperature=0.0, max_tokens=int(rng.integers(1, 10)), ignore_eos=True) for _ in range(n)]
    times = np.cumsum(rng.exponential(1 / 60.0, n))  # ~0.2 s of arrivals
    return prompts, params, times


@pytest.mark.engine
@settings(max_examples=3, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2**31))
def test_against_the_engine_metrics(impl, tiny_llm, seed):
    """12 requests at ~60/s on the tiny model: the percentiles returned are those of the engine's metrics"""
    llm = tiny_llm()
    check_against_engine(llm, impl.simulate_arrivals, *workload(seed, 12))


def _stamped_when_added(llm, prompts, params, times):
    """forgets to back-date: a request's arrival stamp is when the loop got round to adding it"""
    from nanoinfer.serving.loadgen import metrics_frame, summarize

    engine, seqs, i, start = llm.engine, [], 0, time.perf_counter()
    while i < len(times) or engine.has_unfinished_requests():
        while i < len(times) and start + times[i] <= time.perf_counter():
            seqs.append(engine.add_request(prompts[i], params[i], prompts[i]))
            i += 1
        if engine.has_unfinished_requests():
            engine.step()
        elif i < len(times):
            time.sleep(max(0.0, start + times[i] - time.perf_counter()))
    return summarize(metrics_frame(seqs), time.perf_counter() - start)


def _all_at_once(llm, prompts, params, times):
    from solutions.phase8_serving import simulate_arrivals

    return simulate_arrivals(llm, prompts, params, np.zeros(len(times)))


@pytest.mark.engine
@pytest.mark.parametrize("wrong", [_stamped_when_added, _all_at_once])
def test_the_engine_check_rejects_wrong_loops(tiny_llm, wrong):
    """check_against_engine fails for a loop that stamps arrivals late or adds requests before they are due"""
    llm = tiny_llm()
    with pytest.raises(AssertionError):
        check_against_engine(llm, wrong, *workload(0, 12))
