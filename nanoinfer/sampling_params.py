"""Per-request sampling settings, named as vLLM names them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    """How to pick each next token of one request, and when to stop.

    temperature: 0 means greedy (argmax); higher values flatten the distribution.
    top_k: keep the k most likely tokens; -1 keeps them all.
    top_p: keep the smallest set of tokens whose probabilities add up to top_p (nucleus sampling).
    seed: a per-request seed; the same seed gives the same tokens whatever else is in the batch.
    max_tokens: the most tokens to generate.
    ignore_eos: keep going past the end-of-sequence token (benchmarks use this for fixed lengths).
    stop_token_ids: extra token ids that end the request (the token itself is kept in the output).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 16
    seed: int | None = None
    ignore_eos: bool = False
    stop_token_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"SamplingParams.max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0 (0 means greedy), got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < -1 or self.top_k == 0:
            raise ValueError(f"SamplingParams.top_k must be -1 (disabled) or a positive integer, got {self.top_k!r}")
        if self.seed is not None and not isinstance(self.seed, int):
            raise ValueError(f"SamplingParams.seed must be an integer or None, got {self.seed!r}")
        self.stop_token_ids = [int(t) for t in self.stop_token_ids]

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
