"""One request as the engine sees it: its tokens, how many of them sit in the KV cache, and its block table."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import torch

from nanoinfer.sampling_params import SamplingParams


PENDING_TOKEN = -1  # a sampled token whose value is still on the device (async scheduling)


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # not holding KV blocks: new, or preempted
    RUNNING = "running"  # holds KV blocks for all of its tokens
    FINISHED = "finished"


@dataclass
class RequestMetrics:
    """Wall-clock timestamps (time.perf_counter) and counts for one request."""

    arrival_time: float
    num_prompt_tokens: int
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finished_time: float | None = None
    num_output_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served by the prefix cache at first admission
    num_preemptions: int = 0
    num_spec_steps: int = 0  # speculative decoding (nanoinfer/speculative): decode steps that verified drafts,
    num_drafted_tokens: int = 0  # the tokens drafted in them,
    num_accepted_tokens: int = 0  # and how many of those the target accepted

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    @property
    def time_per_output_token(self) -> float | None:
        """Mean gap between output tokens after the first one (decode speed seen by the user)."""
        if self.finished_time is None or self.first_token_time is None or self.num_output_tokens < 2:
            return None
        return (self.finished_time - self.first_token_time) / (self.num_output_tokens - 1)

    @property
    def e2e_latency(self) -> float | None:
        return None if self.finished_time is None else self.finished_time - self.arrival_time

    @property
    def acceptance_rate(self) -> float | None:
        return self.num_accepted_tokens / self.num_drafted_tokens if self.num_drafted_tokens else None

    @property
    def mean_accepted_length(self) -> float | None:
        """Tokens per speculative step: the accepted drafts plus the target's own token."""
        return 1 + self.num_accepted_tokens / self.num_spec_steps if self.num_spec_steps else None

    def as_dict(self) -> dict:
        return {"prompt_tokens": self.num_prompt_tokens, "output_tokens": self.num_output_tokens,
                "cached_tokens": self.num_cached_tokens, "preemptions": self.num_preemptions,
                "ttft_s": self.time_to_first_token, "tpot_s": self.time_per_output_token, "e2e_s": self.e2e_latency,
                "drafted_tokens": self.num_drafted_tokens, "accepted_tokens": self.num_accepted_tokens,
                "acceptance_rate": self.acceptance_rate, "mean_accepted_length": self.mean_accepted_length}


class Sequence:
    """Token ids of one request (prompt, then generated tokens) and the state the scheduler keeps for it.

    ``num_computed_tokens`` counts the leading tokens whose keys and values are already in the KV cache.
    A step feeds tokens ``[num_computed_tokens, num_computed_tokens + n)``; when that reaches the end of
    ``token_ids`` the step's last logits give the next token. So a prefill is a step with many new
    tokens, a decode step has exactly one, and a chunked prefill is a prefill cut into several steps.

    With async scheduling the engine launches the next step before the host has read the last sampled
    token: ``token_ids`` then ends with ``num_pending_tokens`` placeholders (PENDING_TOKEN) that the
    model runner fills from the device, and the scheduler fills in when the values arrive.
    """

    def __init__(
        self,
        seq_id: int,
        prompt_token_ids: list[int],
        sampling_params: SamplingParams,
        prompt: str | None = None,
        arrival_time: float | None = None,
    ) -> None:
        self.seq_id = seq_id
        self.prompt = prompt
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(self.token_ids)
        self.sampling_params = sampling_params
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0
        self.block_table: list[int] = []
        self.block_hashes: list[int] = []  # chained prefix-cache hashes of its full blocks (BlockManager),
        self.block_token_bytes = b""  # and those blocks' tokens as int64 bytes (checked on a prefix-cache hit)
        self.num_published_blocks = 0  # leading blocks already offered to the prefix cache
        self.num_pending_tokens = 0  # trailing placeholders whose values are still on the device
        self.finish_reason: str | None = None
        self.metrics = RequestMetrics(
            arrival_time=time.perf_counter() if arrival_time is None else arrival_time,
            num_prompt_tokens=self.num_prompt_tokens,
        )
        # A private random stream makes a seeded request reproducible whatever shares its batch.
        self.generator: torch.Generator | None = None

    def __len__(self) -> int:
        return len(self.token_ids)

    def __repr__(self) -> str:
        return (f"Sequence(id={self.seq_id}, status={self.status.value}, tokens={len(self)}, "
                f"computed={self.num_computed_tokens}, blocks={self.block_table})")

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_known_tokens(self) -> int:
        """Tokens whose values the host knows (all but the pending placeholders)."""
        return len(self.token_ids) - self.num_pending_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        """Tokens still to feed before the next token can be sampled (1 while decoding)."""
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    def num_blocks_needed(self, block_size: int, num_tokens: int | None = None) -> int:
        n = self.num_tokens if num_tokens is None else num_tokens
        return (n + block_size - 1) // block_size

    def block_token_ids(self, index: int, block_size: int) -> list[int]:
        return self.token_ids[index * block_size : (index + 1) * block_size]
