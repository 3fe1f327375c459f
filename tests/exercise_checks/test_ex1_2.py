"""Exercise 1.2: component_path, the ordered list of components a request passed through."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoinfer import SamplingParams
from nanoinfer.engine.events import EngineEvent

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
COMPONENTS = ["LLM", "LLMEngine", "Scheduler", "BlockManager", "ModelRunner"]


def expected_path(events, seq_id):
    involved = [e for e in events if e.seq_id == seq_id or seq_id in e.data.get("seq_ids", ())]
    involved.sort(key=lambda e: e.time)  # stable
    path = []
    for e in involved:
        if not path or path[-1] != e.component:
            path.append(e.component)
    return path


# (component, time, seq_id or None, seq_ids or None); times come from a small set so that ties happen
random_events = st.lists(
    st.tuples(st.sampled_from(COMPONENTS), st.integers(0, 12).map(lambda t: t / 4),
              st.none() | st.integers(0, 3), st.none() | st.lists(st.integers(0, 3), max_size=3, unique=True)),
    max_size=30,
).map(lambda specs: [EngineEvent("k", c, t, 0, s, {} if ids is None else {"seq_ids": ids}) for c, t, s, ids in specs])


def show(events):
    return [(e.component, e.time, e.seq_id, e.data.get("seq_ids")) for e in events]


def test_example(impl):
    """a small hand-made trace: request 0's path, with a step event that lists it in seq_ids"""
    events = [
        EngineEvent("request_added", "LLMEngine", 0.0, 0, 0),
        EngineEvent("request_added", "LLMEngine", 0.1, 0, 1),
        EngineEvent("blocks_allocated", "BlockManager", 0.2, 1, 0),
        EngineEvent("admitted", "Scheduler", 0.3, 1, 0),
        EngineEvent("prefill_chunk", "Scheduler", 0.4, 1, 0),
        EngineEvent("forward", "ModelRunner", 0.5, 1, None, {"seq_ids": [0, 1]}),
        EngineEvent("sampled", "ModelRunner", 0.6, 1, None, {"seq_ids": [0, 1]}),
        EngineEvent("token_appended", "Scheduler", 0.7, 1, 0),
        EngineEvent("finished", "Scheduler", 0.8, 1, 1),
    ]
    got = impl.component_path(events, 0)
    want = ["LLMEngine", "BlockManager", "Scheduler", "ModelRunner", "Scheduler"]
    assert got == want, f"component_path(example, 0) returned {got}, expected {want}"
    assert impl.component_path(events, 7) == [], "a request that no event involves has the empty path []"


@SETTINGS
@given(random_events, st.integers(0, 3))
def test_random_traces(impl, events, seq_id):
    """involved events, sorted by time (stable), components with consecutive repeats merged"""
    given_events = list(events)
    got = impl.component_path(given_events, seq_id)
    want = expected_path(events, seq_id)
    assert given_events == events, "component_path must not reorder or change the list it is given"
    assert got == want, f"component_path(events, {seq_id}) returned {got}, expected {want}\nevents: {show(events)}"


@SETTINGS
@given(random_events, st.integers(0, 3), st.randoms(use_true_random=False))
def test_order_of_the_list_does_not_matter(impl, events, seq_id, rng):
    """events given out of order (distinct times): the path follows event.time"""
    seen, distinct = set(), []
    for e in events:
        if e.time not in seen:
            seen.add(e.time)
            distinct.append(e)
    shuffled = list(distinct)
    rng.shuffle(shuffled)
    got = impl.component_path(shuffled, seq_id)
    want = expected_path(distinct, seq_id)
    assert got == want, (f"component_path(shuffled events, {seq_id}) returned {got}, expected {want}: sort by time\n"
                         f"events: {show(shuffled)}")


@pytest.mark.engine
def test_in_the_engine(impl, tiny_llm):
    """a real trace: every request's path starts at LLMEngine and goes through all four engine components"""
    llm = tiny_llm()
    rng = random.Random()
    prompts = [[rng.randrange(512) for _ in range(rng.randint(3, 40))] for _ in range(3)]
    with llm.trace() as events:
        outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=3, ignore_eos=True), use_tqdm=False)
    for out in outs:
        got = impl.component_path(events, out.request_id)
        want = expected_path(events, out.request_id)
        assert got == want, f"request {out.request_id}: component_path returned {got}, expected {want}"
        assert got[0] == "LLMEngine" and {"Scheduler", "BlockManager", "ModelRunner"} <= set(got)
