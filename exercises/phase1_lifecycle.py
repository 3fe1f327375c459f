"""Phase 1 — the request lifecycle. Your code for Exercises 1.1 and 1.2.

Check your work with ``make check EX=1.1`` (or ``python -m nanoinfer.check 1.1``), or in notebook 01 with
``check("1.1")``. The engine's events are described in ``nanoinfer/engine/events.py``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch  # noqa: F401  (you will want torch.Tensor)

from nanoinfer.engine.events import EngineEvent

TRACE_COLUMNS = ["kind", "component", "time", "step", "seq_id"]


class TraceRecorder:
    """Exercise 1.1: a listener for the engine's event bus that keeps the lifecycle events it hears.

    Use: ``unsubscribe = llm.events.subscribe(recorder)``. The bus then calls ``recorder(event)`` with an
    ``EngineEvent`` (kind, component, time, step, seq_id, data) for everything the engine does.

    Build:
      * ``TraceRecorder(kinds=None)``: keep only events whose kind is in ``kinds``; ``None`` keeps all.
      * ``recorder(event)``: append the event to the list ``recorder.events``, in arrival order. Drop the
        values of ``event.data`` that are ``torch.Tensor`` (the sampler attaches its logits: a long trace
        would pin them all in memory) and keep the rest, ``data["seq_ids"]`` included. Do not modify the
        event you were given: store a copy (``EngineEvent(kind, component, time, step, seq_id, data)``).
      * ``len(recorder)``: the number of events kept.
      * ``recorder.frame()``: a pandas DataFrame, one row per kept event, columns ``TRACE_COLUMNS`` in that
        order. ``time`` in seconds since the first kept event (float; the first row is 0.0), ``step`` an
        int, ``seq_id`` the nullable integer dtype ``"Int64"`` (step events have no seq_id: ``pd.NA``).
        No events: an empty frame with those columns.
      * ``recorder.for_request(seq_id)``: the kept events that involve this request, in order
        (``event.involves(seq_id)`` tells you).
    """

    def __init__(self, kinds: Iterable[str] | None = None) -> None:
        raise NotImplementedError("Exercise 1.1: write TraceRecorder.__init__ (keep `kinds`, start `events` empty)")

    def __call__(self, event: EngineEvent) -> None:
        raise NotImplementedError("Exercise 1.1: write TraceRecorder.__call__ (store a copy of the event)")

    def __len__(self) -> int:
        raise NotImplementedError("Exercise 1.1: write TraceRecorder.__len__")

    def frame(self):
        raise NotImplementedError("Exercise 1.1: write TraceRecorder.frame (a DataFrame with TRACE_COLUMNS)")

    def for_request(self, seq_id: int) -> list[EngineEvent]:
        raise NotImplementedError("Exercise 1.1: write TraceRecorder.for_request")


def component_path(events: list[EngineEvent], seq_id: int) -> list[str]:
    """Exercise 1.2: the ordered list of components a request passed through.

    ``events`` is a trace (for instance ``TraceRecorder.events``, or the list ``llm.trace()`` fills), possibly
    out of order. Keep the events that involve ``seq_id`` (``event.involves(seq_id)``), sort them by
    ``event.time`` with a stable sort (equal times keep their list order), take each event's ``component``
    and merge consecutive repeats: ``["Scheduler", "Scheduler", "ModelRunner"]`` -> ``["Scheduler",
    "ModelRunner"]``. A request that no event involves has the path ``[]``.
    """
    raise NotImplementedError("Exercise 1.2: write component_path(events, seq_id)")
