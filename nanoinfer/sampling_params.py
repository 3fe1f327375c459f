"""Per-request sampling settings, named as vLLM names them."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    """How to pick each next token of one request, and when to stop.

    temperature: 0 means greedy (argmax); higher values flatten the distribution.
    top_k: keep the k most likely tokens; -1 keeps them all.
    top_p: keep the smallest set of tokens whose probabilities add up to top_p (nucleus sampling).
    seed: a per-request seed: the same noise at each position whatever else is in the batch, so the same tokens
      beside requests of the same shapes (16-bit GPU matmuls round otherwise at other batch sizes: near-ties turn).
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
        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"SamplingParams.{name} must be a finite number, got {value!r}")
            return value

        def integer(name: str) -> int:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"SamplingParams.{name} must be an integer, got {value!r}")
            return value

        if integer("max_tokens") < 1:
            raise ValueError(f"SamplingParams.max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if number("temperature") < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0 (0 means greedy), got {self.temperature!r}")
        if not 0.0 < number("top_p") <= 1.0:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")
        if integer("top_k") < -1 or self.top_k == 0:
            raise ValueError(f"SamplingParams.top_k must be -1 (disabled) or a positive integer, got {self.top_k!r}")
        if self.seed is not None:
            integer("seed")
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"SamplingParams.ignore_eos must be True or False, got {self.ignore_eos!r}")
        ids = self.stop_token_ids
        ids = None if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__") else list(ids)
        if ids is None or not all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in ids):
            raise ValueError("SamplingParams.stop_token_ids must be a list of integer token ids, "
                             f"got {self.stop_token_ids!r}")
        self.stop_token_ids = [int(t) for t in ids]

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
