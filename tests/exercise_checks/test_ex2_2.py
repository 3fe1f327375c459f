"""Exercise 2.2: ShortestJobFirst and LongestJobFirst, as sort keys and inside the scheduler."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoinfer import SamplingParams
from nanoinfer.engine.policies import SchedulingPolicy
from nanoinfer.engine.sequence import Sequence

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
# (prompt length, max_tokens, arrival time): few distinct values, so that ties happen
jobs = st.lists(st.tuples(st.integers(1, 6), st.integers(1, 4), st.integers(0, 3)), min_size=1, max_size=12)


def make_seqs(specs) -> list[Sequence]:
    seqs = []
    for i, (plen, max_tokens, arrival) in enumerate(specs):
        seq = Sequence(i, list(range(plen)), SamplingParams(max_tokens=max_tokens), arrival_time=float(arrival))
        seqs.append(seq)
    return seqs


def work(seq) -> int:
    return seq.num_prompt_tokens + seq.sampling_params.max_tokens


def describe(seqs) -> list[str]:
    return [f"id={s.seq_id} work={work(s)} arrival={s.metrics.arrival_time:g}" for s in seqs]


def check_order(policy, seqs, sign: int, name: str) -> None:
    got = sorted(seqs, key=policy.priority)
    want = sorted(seqs, key=lambda s: (sign * work(s), s.metrics.arrival_time, s.seq_id))
    if [s.seq_id for s in got] != [s.seq_id for s in want]:
        i = next(i for i, (a, b) in enumerate(zip(got, want)) if a is not b)
        raise AssertionError(
            f"{name}: sorting by priority() gives, from position {i}, {describe(got[i:i + 3])}; expected "
            f"{describe(want[i:i + 3])}. Work = num_prompt_tokens + max_tokens, "
            f"{'smallest' if sign > 0 else 'largest'} first; ties: earlier arrival_time, then smaller seq_id")


def test_are_policies(impl):
    """both are SchedulingPolicy subclasses named 'sjf' and 'ljf'"""
    for cls, name in ((impl.ShortestJobFirst, "sjf"), (impl.LongestJobFirst, "ljf")):
        policy = cls()
        assert isinstance(policy, SchedulingPolicy), f"{cls.__name__} must subclass SchedulingPolicy"
        assert policy.name == name, f"{cls.__name__}.name is {policy.name!r}, expected {name!r}"


@SETTINGS
@given(jobs)
def test_shortest_job_first_order(impl, specs):
    """SJF: least work first, ties broken first-come-first-served"""
    check_order(impl.ShortestJobFirst(), make_seqs(specs), +1, "ShortestJobFirst")


@SETTINGS
@given(jobs)
def test_longest_job_first_order(impl, specs):
    """LJF: most work first, ties broken first-come-first-served"""
    check_order(impl.LongestJobFirst(), make_seqs(specs), -1, "LongestJobFirst")


@pytest.mark.engine
@pytest.mark.parametrize("policy", ["sjf", "ljf"])
def test_in_the_scheduler(impl, tiny_llm, policy):
    """one sequence at a time (max_num_seqs=1): requests finish in the policy's order"""
    llm = tiny_llm(scheduling_policy=policy, max_num_seqs=1)
    rng = random.Random()
    specs = [(rng.randint(1, 60), rng.randint(1, 8)) for _ in range(8)]
    prompts = [[rng.randrange(512) for _ in range(n)] for n, _ in specs]
    params = [SamplingParams(temperature=0, max_tokens=m, ignore_eos=True) for _, m in specs]
    outs = llm.generate(prompts, params, use_tqdm=False)
    finished = [o.request_id for o in sorted(outs, key=lambda o: o.metrics.finished_time)]
    sign = 1 if policy == "sjf" else -1
    want = sorted(range(len(specs)), key=lambda i: (sign * sum(specs[i]), i))
    assert finished == want, (
        f"scheduling_policy={policy!r}: requests (prompt, max_tokens) {specs} finished in the order {finished}, "
        f"expected {want}")
