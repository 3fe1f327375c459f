"""A request's output as it is produced: its new token ids and text deltas, step by step.

Text is decoded incrementally. A byte-level tokenizer (SmolLM2's, GPT-2's) spends several tokens on one
multi-byte character (an accented letter, a CJK character, an emoji): the text of the first of them ends in
U+FFFD, the replacement character. Such an ending is held back until a later token completes the character
(or the request ends), so a delta never splits a character and the deltas joined are exactly the text of all
the tokens, the text ``generate`` returns (both decode with the engine's one ``detokenize``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from nanoinfer.engine.sequence import RequestMetrics, Sequence

REPLACEMENT = "\ufffd"


@dataclass
class StreamOutput:
    """What one request produced since its previous StreamOutput."""

    index: int  # the prompt's position in the call (llm.stream) or 0 (AsyncLLM.generate)
    request_id: int
    new_token_ids: list[int]
    delta: str | None  # new text (None: the model has no tokenizer)
    finished: bool
    finish_reason: str | None  # "stop", "length" or "abort" once finished
    metrics: RequestMetrics
    num_prompt_tokens: int = 0


class IncrementalDetokenizer:
    """Text deltas of a growing list of token ids that never split a character."""

    def __init__(self, detokenize: Callable[[list[int]], str | None]) -> None:
        self.detokenize = detokenize
        self.token_ids: list[int] = []
        self.sent = ""  # the text handed out so far

    def add(self, new_token_ids: list[int], final: bool) -> str | None:
        self.token_ids += new_token_ids
        text = self.detokenize(self.token_ids)  # the whole text each time: exact, and cheap next to a step
        if text is None:
            return None
        if not final:  # an incomplete character decodes to U+FFFD: wait for the bytes that complete it
            text = text.rstrip(REPLACEMENT)
        if not text.startswith(self.sent):  # what was sent cannot be taken back: keep it, wait
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta


class RequestStream:
    """Follows one Sequence: the tokens that became known since the last poll (with async scheduling the
    last one may still be on the device), and whether it finished."""

    def __init__(self, index: int, seq: Sequence, detokenize: Callable | None = None) -> None:
        self.index, self.seq = index, seq
        self.num_sent = 0  # output tokens already reported
        self.text = IncrementalDetokenizer(detokenize) if detokenize is not None else None
        self.done = False

    def poll(self) -> StreamOutput | None:
        """What is new, or None when nothing is."""
        seq = self.seq
        known = seq.num_known_tokens - seq.num_prompt_tokens
        if self.done or (known == self.num_sent and not seq.is_finished):
            return None
        new = seq.token_ids[seq.num_prompt_tokens + self.num_sent: seq.num_prompt_tokens + known]
        self.num_sent, self.done = known, seq.is_finished
        delta = self.text.add(new, self.done) if self.text is not None else None
        return StreamOutput(self.index, seq.seq_id, new, delta, self.done, seq.finish_reason, seq.metrics,
                            seq.num_prompt_tokens)


def stream_requests(engine, prompts, sampling_params, token_ids) -> Iterator[StreamOutput]:
    """``LLM.stream``: add the (checked) requests, step the engine, yield what each step produced. A consumer
    that stops early (or an error) aborts the requests still running: their KV blocks are free at once."""
    seqs = [engine.add_request(p, sp, ids) for p, sp, ids in zip(prompts, sampling_params, token_ids)]
    streams = [RequestStream(i, s, engine.detokenize) for i, s in enumerate(seqs)]
    try:
        while not all(s.done for s in streams):
            if engine.has_unfinished_requests():
                engine.step()
            for s in streams:
                out = s.poll()
                if out is not None:
                    yield out
    finally:
        engine.abort(*(s for s in seqs if not s.is_finished))


class StopStrings:
    """OpenAI's ``stop`` on a stream of text deltas: the text ends before the first stop string, which is not
    returned. Text that may be the start of a stop string is held back until the next delta settles it."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, delta: str, final: bool) -> tuple[str, bool]:
        """(text to hand out now, whether a stop string was met: the request ends there)."""
        text, self.pending = self.pending + delta, ""
        first = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=None)
        # Where the earliest stop string that the next delta may still complete would start: a longer stop string
        # begun before a complete one ends the text earlier ("baa" in "ba|a" with stops "a" and "baa")
        held = len(text) if final else min((len(text) - k for s in self.stops for k in range(1, len(s))
                                            if text.endswith(s[:k])), default=len(text))
        if first is not None and first <= held:
            return text[:first], True
        self.pending = text[held:]
        return text[:held], False
