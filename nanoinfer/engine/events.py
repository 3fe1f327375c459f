"""Lifecycle hooks: components announce what they do to whoever subscribed, with a timestamp.

Nothing is built or sent while nobody listens, so the hooks cost nothing in normal runs.

| component    | kinds                                                                     |
|--------------|---------------------------------------------------------------------------|
| LLM          | generate_start, generate_end                                              |
| LLMEngine    | request_added, step_start, step_end                                       |
| Scheduler    | admitted, prefill_chunk, decode_step, preempted, token_appended, finished |
| BlockManager | blocks_allocated, blocks_freed                                            |
| ModelRunner  | forward (one per step; ``seq_ids`` lists the batch), sampled              |

A ``sampled`` event carries the step's logits inside ``LLM.trace(logits=True)`` (else ``logits=None``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class EngineEvent:
    kind: str
    component: str
    time: float  # time.perf_counter()
    step: int
    seq_id: int | None = None  # None for events about a whole step
    data: dict = field(default_factory=dict)

    def involves(self, seq_id: int) -> bool:
        return self.seq_id == seq_id or seq_id in self.data.get("seq_ids", ())


Listener = Callable[[EngineEvent], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self.step = 0  # the engine's current step, stamped on every event

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every event from now on; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def emit(self, kind: str, component: str, seq_id: int | None = None, **data) -> None:
        if not self._listeners:
            return
        event = EngineEvent(kind, component, time.perf_counter(), self.step, seq_id, data)
        for listener in list(self._listeners):
            listener(event)
