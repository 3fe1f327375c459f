"""Scheduling policies: in which order waiting requests are admitted.

A policy gives each sequence a priority key; lower keys go first. The scheduler sorts the waiting queue
by it before admitting, and preemption picks its victim among the running sequences the policy ranks
last. First-come-first-served is the default; Exercise 2.2 writes shortest- and longest-job-first.
"""

from __future__ import annotations

from nanoinfer.engine.sequence import Sequence
from nanoinfer.extensions import implementation


class SchedulingPolicy:
    """First come, first served: order by arrival time (then by id, for requests added together)."""

    name = "fifo"

    def priority(self, seq: Sequence) -> tuple:
        return (seq.metrics.arrival_time, seq.seq_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def make_policy(policy: str | SchedulingPolicy) -> SchedulingPolicy:
    if isinstance(policy, SchedulingPolicy):
        return policy
    if policy == "fifo":
        return SchedulingPolicy()
    if policy == "sjf":
        return implementation("2.2", "ShortestJobFirst")()
    if policy == "ljf":
        return implementation("2.2", "LongestJobFirst")()
    raise ValueError(
        f"scheduling_policy must be 'fifo', 'sjf', 'ljf' or a SchedulingPolicy instance, got {policy!r}"
    )
