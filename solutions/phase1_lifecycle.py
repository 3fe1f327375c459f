"""Phase 1 — the request lifecycle: record what the engine does, then read a request's path out of it."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from nanoinfer.engine.events import EngineEvent

TRACE_COLUMNS = ["kind", "component", "time", "step", "seq_id"]


class TraceRecorder:
    """Exercise 1.1: a listener for the engine's event bus that keeps every lifecycle event it hears.

    Subscribe it with ``unsubscribe = llm.events.subscribe(recorder)``; the bus then calls
    ``recorder(event)`` once per event, in the order the engine raises them.

    Contract:
      * ``TraceRecorder(kinds=None)``: ``kinds``, if given, is the set of event kinds to keep; others are
        ignored. ``None`` keeps everything.
      * ``recorder(event)`` appends the event to ``recorder.events`` (a list, in arrival order). Tensors in
        ``event.data`` (the sampler's logits) are dropped so that a long trace does not pin memory; every
        other field, ``data["seq_ids"]`` included, is kept.
      * ``len(recorder)`` is the number of events kept.
      * ``recorder.frame()`` is a pandas DataFrame with one row per kept event and the columns
        kind, component, time, step, seq_id, in that order. ``time`` is in seconds since the first kept
        event (so the first row has 0.0); ``seq_id`` is a nullable integer (``pd.NA`` for step events).
      * ``recorder.for_request(seq_id)`` lists, in order, the events that involve that request: its own
        events and the step events whose ``seq_ids`` include it (``EngineEvent.involves``).
    """

    def __init__(self, kinds: Iterable[str] | None = None) -> None:
        self.kinds = None if kinds is None else frozenset(kinds)
        self.events: list[EngineEvent] = []

    def __call__(self, event: EngineEvent) -> None:
        if self.kinds is not None and event.kind not in self.kinds:
            return
        data = {k: v for k, v in event.data.items() if not isinstance(v, torch.Tensor)}
        self.events.append(EngineEvent(event.kind, event.component, event.time, event.step, event.seq_id, data))

    def __len__(self) -> int:
        return len(self.events)

    def frame(self):
        import pandas as pd

        t0 = self.events[0].time if self.events else 0.0
        frame = pd.DataFrame(
            [(e.kind, e.component, e.time - t0, e.step, e.seq_id) for e in self.events], columns=TRACE_COLUMNS
        )
        frame["time"] = frame["time"].astype(float)
        frame["step"] = frame["step"].astype(int)
        frame["seq_id"] = frame["seq_id"].astype("Int64")
        return frame

    def for_request(self, seq_id: int) -> list[EngineEvent]:
        return [e for e in self.events if e.involves(seq_id)]


def component_path(events: list[EngineEvent], seq_id: int) -> list[str]:
    """Exercise 1.2: the components a request passed through, in time order.

    Keep the events that involve ``seq_id`` (``event.involves(seq_id)``: its own events and the step events
    whose ``data["seq_ids"]`` list it), order them by ``event.time`` (a stable sort: events with equal times
    keep their order in the list), take each one's ``component`` and merge consecutive repeats, so that
    ``Scheduler, Scheduler, ModelRunner, Scheduler`` becomes ``Scheduler, ModelRunner, Scheduler``.
    A request that appears in no event has the empty path.
    """
    path: list[str] = []
    for event in sorted((e for e in events if e.involves(seq_id)), key=lambda e: e.time):
        if not path or path[-1] != event.component:
            path.append(event.component)
    return path
