"""Prompt-lookup drafting (method "ngram"): no second model. If the sequence's last n tokens occurred before,
propose the tokens that followed them then. Rewriting, summarising or editing a given text repeats long
spans of the input, so the guesses are often right and cost nothing to make."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def prompt_lookup(token_ids: list[int], min_n: int, max_n: int, k: int) -> list[int]:
    """Up to ``k`` tokens that followed an earlier occurrence of the sequence's last n tokens, for the longest
    n in [min_n, max_n] that occurs; [] when none does. The occurrence: the latest with k tokens after it (the
    most recent context is the likeliest to repeat), else the earliest (in a run such as "a a a a" the latest
    occurrence is followed by one token only)."""
    tokens = np.asarray(token_ids, dtype=np.int64)
    for n in range(min(max_n, len(tokens) - 1), min_n - 1, -1):
        # windows of every earlier start (the suffix itself excluded), compared with the suffix at once
        windows = sliding_window_view(tokens[:-1], n)
        hits = np.flatnonzero((windows == tokens[-n:]).all(axis=1))
        if len(hits):
            full = hits[hits + n + k <= len(tokens)]
            start = (full[-1] if len(full) else hits[0]) + n
            return tokens[start : start + k].tolist()
    return []


class NgramProposer:
    bytes_per_block = 0  # no KV cache of its own

    def __init__(self, spec: dict) -> None:
        self.min_n, self.max_n = spec["prompt_lookup_min"], spec["prompt_lookup_max"]

    def describe(self) -> str:
        return f"prompt lookup, n-grams of {self.min_n}-{self.max_n} tokens"

    def propose(self, seqs, rooms: list[int], noise) -> tuple[list[list[int]], None]:
        """Drafts per sequence (at most its room); no draft distributions: each draft is a point mass."""
        return [prompt_lookup(s.token_ids, self.min_n, self.max_n, r) if r else [] for s, r in zip(seqs, rooms)], None

    def accepted(self, seqs, lengths, drafts, kept) -> None:
        pass

    def setup_kv_cache(self, num_blocks: int) -> None:
        pass

    def shutdown(self) -> None:
        pass
