"""Exercise 1.1: TraceRecorder, a listener that records the engine's lifecycle events."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoinfer import SamplingParams
from nanoinfer.engine.events import EngineEvent, EventBus

SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
KINDS = ["request_added", "admitted", "prefill_chunk", "forward", "sampled", "token_appended", "finished"]
COMPONENTS = ["LLM", "LLMEngine", "Scheduler", "BlockManager", "ModelRunner"]
COLUMNS = ["kind", "component", "time", "step", "seq_id"]

# One emitted event: (kind, component, seq_id or None, seq_ids or None, step)
event_specs = st.lists(
    st.tuples(st.sampled_from(KINDS), st.sampled_from(COMPONENTS), st.none() | st.integers(0, 6),
              st.none() | st.lists(st.integers(0, 6), max_size=4, unique=True), st.integers(0, 40)),
    max_size=25,
)


def emit_all(recorder, specs) -> list[EngineEvent]:
    """Emit the events through a real EventBus that ``recorder`` listens to; return what a plain listener saw."""
    bus = EventBus()
    bus.subscribe(recorder)
    seen: list[EngineEvent] = []
    unsubscribe = bus.subscribe(seen.append)
    for kind, component, seq_id, seq_ids, step in specs:
        bus.step = step
        data = {"num_tokens": len(seq_ids or ())}
        if seq_ids is not None:
            data["seq_ids"] = seq_ids
        bus.emit(kind, component, seq_id, **data)
    unsubscribe()
    return seen


def describe(e: EngineEvent) -> str:
    return f"EngineEvent(kind={e.kind!r}, component={e.component!r}, step={e.step}, seq_id={e.seq_id}, data={e.data})"


@SETTINGS
@given(event_specs)
def test_records_every_event_in_order(impl, specs):
    """recorder(event) keeps each event, in arrival order, with all its fields"""
    recorder = impl.TraceRecorder()
    emitted = emit_all(recorder, specs)
    assert hasattr(recorder, "events"), "TraceRecorder must keep its events in a list attribute `events`"
    got = list(recorder.events)
    assert len(got) == len(emitted), f"{len(emitted)} events were emitted but recorder.events holds {len(got)}"
    assert len(recorder) == len(emitted), f"len(recorder) is {len(recorder)}, expected {len(emitted)}"
    for i, (g, e) in enumerate(zip(got, emitted)):
        fields = (g.kind, g.component, g.time, g.step, g.seq_id, g.data)
        assert fields == (e.kind, e.component, e.time, e.step, e.seq_id, e.data), (
            f"event {i}: recorded {describe(g)}, expected {describe(e)} (same order, same fields)")


@SETTINGS
@given(event_specs, st.sets(st.sampled_from(KINDS), max_size=4))
def test_kinds_filter(impl, specs, kinds):
    """TraceRecorder(kinds=...) keeps only those kinds; kinds=None keeps all"""
    recorder = impl.TraceRecorder(kinds=kinds)
    emitted = emit_all(recorder, specs)
    want = [e.kind for e in emitted if e.kind in kinds]
    got = [e.kind for e in recorder.events]
    assert got == want, f"TraceRecorder(kinds={sorted(kinds)}) kept kinds {got}, expected {want}"


def test_drops_tensors_and_leaves_the_event_alone(impl):
    """tensors in event.data are not kept (seq_ids and other values are); the original event is unchanged"""
    recorder = impl.TraceRecorder()
    logits = torch.randn(2, 7)
    event = EngineEvent("sampled", "ModelRunner", 1.5, 3, None, {"seq_ids": [4, 2], "token_ids": [1, 5],
                                                                  "logits": logits})
    recorder(event)
    kept = recorder.events[0]
    assert "logits" not in kept.data, "the recorder kept a tensor (data['logits']); drop torch.Tensor values"
    assert kept.data == {"seq_ids": [4, 2], "token_ids": [1, 5]}, (
        f"kept data {kept.data}, expected every non-tensor value: {{'seq_ids': [4, 2], 'token_ids': [1, 5]}}")
    assert "logits" in event.data and event.data["logits"] is logits, (
        "the recorder changed the event it was given: store a copy with the filtered data instead")
    assert kept.involves(2) and kept.involves(4) and not kept.involves(3), (
        f"the kept event's seq_ids {kept.data.get('seq_ids')} should still list requests 4 and 2 (and not 3)")


@SETTINGS
@given(event_specs)
def test_frame(impl, specs):
    """frame(): one row per event, columns kind, component, time (s since the first event), step, seq_id"""
    recorder = impl.TraceRecorder()
    emitted = emit_all(recorder, specs)
    frame = recorder.frame()
    assert isinstance(frame, pd.DataFrame), f"frame() returned {type(frame).__name__}, expected a DataFrame"
    assert list(frame.columns) == COLUMNS, f"frame() has columns {list(frame.columns)}, expected {COLUMNS}"
    assert len(frame) == len(emitted), f"frame() has {len(frame)} rows, expected {len(emitted)}"
    if not emitted:
        return
    t0 = emitted[0].time
    want_time = [e.time - t0 for e in emitted]
    assert frame["time"].tolist() == pytest.approx(want_time, abs=1e-9), (
        f"time column {frame['time'].tolist()[:5]}..., expected seconds since the first event {want_time[:5]}...")
    assert frame["time"].iloc[0] == 0.0, "the first row's time must be 0.0"
    assert frame["kind"].tolist() == [e.kind for e in emitted], "kind column does not follow the events"
    assert frame["component"].tolist() == [e.component for e in emitted], "component column is wrong"
    assert frame["step"].tolist() == [e.step for e in emitted], "step column is wrong"
    assert str(frame["seq_id"].dtype) == "Int64", (
        f"seq_id column has dtype {frame['seq_id'].dtype}, expected the nullable integer dtype 'Int64'")
    got_ids = [None if pd.isna(v) else int(v) for v in frame["seq_id"]]
    assert got_ids == [e.seq_id for e in emitted], f"seq_id column {got_ids}, expected {[e.seq_id for e in emitted]}"


def test_empty_frame(impl):
    """frame() with no events: an empty DataFrame that still has the five columns"""
    frame = impl.TraceRecorder().frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 0, f"expected an empty DataFrame, got {frame!r}"
    assert list(frame.columns) == COLUMNS, f"empty frame() has columns {list(frame.columns)}, expected {COLUMNS}"


@SETTINGS
@given(event_specs, st.integers(0, 6))
def test_for_request(impl, specs, seq_id):
    """for_request(seq_id): the events involving that request (its own and steps whose seq_ids list it)"""
    recorder = impl.TraceRecorder()
    emitted = emit_all(recorder, specs)
    def key(e):
        return (e.kind, e.component, e.time, e.step, e.seq_id)

    want = [key(e) for e in emitted if e.seq_id == seq_id or seq_id in e.data.get("seq_ids", ())]
    got = [key(e) for e in recorder.for_request(seq_id)]
    assert got == want, (f"for_request({seq_id}) returned {len(got)} events {[k[:2] for k in got]}, "
                         f"expected {len(want)}: "
                         f"{[k[:2] for k in want]} (those whose seq_id is {seq_id} or whose data['seq_ids'] lists it)")


@pytest.mark.engine
def test_in_the_engine(impl, tiny_llm):
    """subscribed to a real engine, it sees each request from request_added to finished"""
    llm = tiny_llm()
    recorder = impl.TraceRecorder()
    unsubscribe = llm.events.subscribe(recorder)
    outs = llm.generate([[5, 6, 7, 8] * 5, [9, 10, 11]], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True),
                        use_tqdm=False)
    unsubscribe()
    frame = recorder.frame()
    for out in outs:
        kinds = [e.kind for e in recorder.for_request(out.request_id)]
        for needed in ("request_added", "admitted", "forward", "token_appended", "finished"):
            assert needed in kinds, f"request {out.request_id}: no {needed!r} event among {kinds}"
        assert kinds.index("request_added") < kinds.index("admitted") < kinds.index("finished"), (
            f"request {out.request_id}: events out of order {kinds}; expected request_added, then admitted, "
            "then finished: keep the events in the order the engine raises them")
    assert frame["step"].is_monotonic_increasing, "steps in the frame go backwards: keep the events in order"
    assert frame["time"].is_monotonic_increasing, "times in the frame go backwards: keep the events in order"
