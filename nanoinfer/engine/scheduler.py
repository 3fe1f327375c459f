"""Continuous batching: every step, decide which sequences run and how many tokens each feeds.

A step is either a *prefill* step (new prompts, or chunks of them) or a *decode* step (one token for
every running sequence). Prefill goes first, so new requests join the running batch as soon as there
is room; sequences then decode together until they finish, and finished ones leave at once.

Limits per step: ``max_num_batched_tokens`` tokens and ``max_num_seqs`` sequences. A prompt longer than
the token budget left is cut into chunks over several steps (chunked prefill). When a decode step needs
a new KV block and none is free, a running sequence is preempted: its blocks are freed and it waits to
be recomputed (preemption by recompute); its full blocks usually survive in the prefix cache.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from nanoinfer.config import EngineConfig
from nanoinfer.engine.block_manager import BlockManager
from nanoinfer.engine.events import EventBus
from nanoinfer.engine.policies import choose_preemption_victim, make_policy
from nanoinfer.engine.sequence import PENDING_TOKEN, Sequence, SequenceStatus
from nanoinfer.workbook.registry import learner_code


@dataclass
class ScheduledBatch:
    phase: str  # "prefill" or "decode"
    seqs: list[Sequence]
    num_new_tokens: list[int]  # tokens each sequence feeds in this step
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)

    def samples(self) -> list[bool]:
        """Which sequences reach their last token in this step, and so get a new token sampled."""
        return [s.num_computed_tokens + n == s.num_tokens for s, n in zip(self.seqs, self.num_new_tokens)]


class Scheduler:
    def __init__(
        self,
        config: EngineConfig,
        block_manager: BlockManager,
        eos_token_ids: set[int],
        events: EventBus | None = None,
    ) -> None:
        self.block_manager = block_manager
        self.max_num_batched_tokens = config.max_num_batched_tokens
        # A decode step feeds one token per sequence, so the token budget also caps the batch.
        self.max_num_seqs = min(config.max_num_seqs, config.max_num_batched_tokens)
        self.max_model_len = config.max_model_len
        self.chunked_prefill = config.enable_chunked_prefill
        self.eos_token_ids = eos_token_ids
        self.policy = make_policy(config.scheduling_policy)
        self._choose_victim = learner_code("2.4", choose_preemption_victim)
        self.bus = events if events is not None else EventBus()
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    # ---- scheduling ----------------------------------------------------------------------------
    def schedule(self) -> ScheduledBatch | None:
        return self._schedule_prefill() or self._schedule_decode()

    def _schedule_prefill(self) -> ScheduledBatch | None:
        budget = self.max_num_batched_tokens
        seqs: list[Sequence] = []
        counts: list[int] = []

        def add(seq: Sequence, n: int) -> None:
            seqs.append(seq)
            counts.append(n)
            first = seq.num_computed_tokens
            self.block_manager.publish_full_blocks(seq, first + n)
            if self.bus:
                self.bus.emit("prefill_chunk", "Scheduler", seq.seq_id, start=first, num_tokens=n,
                              last=first + n == seq.num_tokens)

        # 1. Prompts already admitted but cut short by the token budget continue first.
        for seq in self.running:
            if seq.num_uncomputed_tokens > 1 and budget > 0:
                n = min(seq.num_uncomputed_tokens, budget)
                budget -= n
                add(seq, n)

        # 2. Admit waiting requests in policy order while tokens, sequence slots and blocks last.
        self.waiting.sort(key=self.policy.priority)
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if not self.chunked_prefill and seq.num_tokens > budget:
                break
            if not self.block_manager.try_allocate(seq):
                break  # not enough free blocks: wait for running sequences to finish
            self.waiting.pop(0)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            if seq.metrics.first_scheduled_time is None:
                seq.metrics.first_scheduled_time = time.perf_counter()
                seq.metrics.num_cached_tokens = seq.num_computed_tokens
            if self.bus:
                self.bus.emit("admitted", "Scheduler", seq.seq_id, num_cached_tokens=seq.num_computed_tokens,
                              policy=self.policy.name)
            n = min(seq.num_uncomputed_tokens, budget)
            budget -= n
            add(seq, n)

        return ScheduledBatch("prefill", seqs, counts) if seqs else None

    def _schedule_decode(self) -> ScheduledBatch | None:
        if not self.running:
            return None
        scheduled: list[Sequence] = []
        preempted: list[Sequence] = []
        # A sequence whose pending token will end it is not scheduled again; it waits for that value.
        waiting_for_value: list[Sequence] = []
        queue: deque[Sequence] = deque()
        for seq in self.running:
            (waiting_for_value if seq.num_pending_tokens and self._ends_by_length(seq) else queue).append(seq)
        while queue:
            seq = queue.popleft()
            # The token fed now needs a KV slot; make room by preempting until it fits.
            while not self.block_manager.try_reserve(seq, seq.num_tokens):
                victim = self._choose_victim([*queue, *scheduled, seq], self.policy)
                self._preempt(victim)
                preempted.append(victim)
                if victim is seq:
                    break
                (queue if victim in queue else scheduled).remove(victim)
            else:
                scheduled.append(seq)
                self.block_manager.publish_full_blocks(seq, seq.num_tokens)
                if self.bus:
                    self.bus.emit("decode_step", "Scheduler", seq.seq_id, position=seq.num_tokens - 1)
        self.running = scheduled + waiting_for_value
        if not scheduled:
            return None
        # Longest context first: attention kernels start their programs in batch order, so long sequences
        # then run alongside short ones instead of trailing alone at the end of each launch (with
        # nano-vllm's mixed lengths on an H200, decode attention ran 3-4% faster this way; the CPU kernel's
        # dynamic OpenMP schedule hands sequences out in the same order, unmeasured there).
        batch = sorted(scheduled, key=lambda s: s.num_tokens, reverse=True)
        return ScheduledBatch("decode", batch, [1] * len(batch), preempted)

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        seq.metrics.num_preemptions += 1
        self.block_manager.counters.preemptions += 1
        self.waiting.append(seq)
        if self.bus:
            self.bus.emit("preempted", "Scheduler", seq.seq_id, num_tokens=seq.num_tokens)

    # ---- after the model ran -------------------------------------------------------------------
    def advance(self, batch: ScheduledBatch) -> list[int | None]:
        """Right after a step is launched: count its tokens as computed, and give every sequence that
        samples a placeholder for the token to come. Returns each placeholder's index (None: no token)."""
        positions: list[int | None] = []
        for seq, n, samples in zip(batch.seqs, batch.num_new_tokens, batch.samples()):
            seq.num_computed_tokens += n
            positions.append(len(seq.token_ids) if samples else None)
            if samples:
                seq.token_ids.append(PENDING_TOKEN)
                seq.num_pending_tokens += 1
        return positions

    def complete(self, batch: ScheduledBatch, positions: list[int | None],
                 sampled: list[int | None]) -> list[Sequence]:
        """When a step's tokens reach the host: fill the placeholders in, retire finished sequences."""
        finished: list[Sequence] = []
        now = time.perf_counter()
        for seq, pos, token_id in zip(batch.seqs, positions, sampled):
            if pos is None or seq.is_finished:  # no token, or the sequence ended (or was aborted) meanwhile
                continue
            seq.token_ids[pos] = token_id
            seq.num_pending_tokens -= 1
            seq.metrics.num_output_tokens = pos + 1 - seq.num_prompt_tokens
            if seq.metrics.first_token_time is None:
                seq.metrics.first_token_time = now
            if self.bus:
                self.bus.emit("token_appended", "Scheduler", seq.seq_id, token_id=token_id)
            reason = self._finish_reason(seq, pos)
            if reason is not None:
                del seq.token_ids[pos + 1 :]  # a token sampled after the end (async scheduling) is dropped
                seq.num_pending_tokens = 0
                self._finish(seq, reason, now)
                finished.append(seq)
        if finished:
            self.running = [s for s in self.running if not s.is_finished]
            self.waiting = [s for s in self.waiting if not s.is_finished]
        return finished

    def _finish_reason(self, seq: Sequence, pos: int) -> str | None:
        """Why the token at ``pos`` ends the sequence, if it does."""
        params, token_id = seq.sampling_params, seq.token_ids[pos]
        if token_id in params.stop_token_ids or (not params.ignore_eos and token_id in self.eos_token_ids):
            return "stop"
        if pos + 1 - seq.num_prompt_tokens >= params.max_tokens or pos + 1 >= self.max_model_len:
            return "length"
        return None

    def _ends_by_length(self, seq: Sequence) -> bool:
        """Its pending token will end it: scheduling it again would compute a token to throw away."""
        return seq.num_output_tokens >= seq.sampling_params.max_tokens or seq.num_tokens >= self.max_model_len

    def _finish(self, seq: Sequence, reason: str, now: float) -> None:
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        seq.metrics.finished_time = now
        if seq.block_table:  # (a preempted sequence holds none)
            self.block_manager.free(seq)
        if self.bus:
            self.bus.emit("finished", "Scheduler", seq.seq_id, reason=reason,
                          num_output_tokens=seq.num_output_tokens)

    def abort(self, *seqs: Sequence) -> None:
        """Drop these requests (a client gone, an error) so that their KV blocks are free at once."""
        for seq in seqs:
            if seq.status == SequenceStatus.RUNNING:  # (a waiting sequence holds no blocks)
                self.block_manager.free(seq)
            if not seq.is_finished:
                seq.status, seq.finish_reason = SequenceStatus.FINISHED, "abort"
        self.running = [s for s in self.running if not s.is_finished]
        self.waiting = [s for s in self.waiting if not s.is_finished]
