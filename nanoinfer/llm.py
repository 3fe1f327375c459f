"""The user-facing API, shaped like vLLM's: ``LLM(model, **knobs).generate(prompts, sampling_params)``."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence as Seq

from tqdm.auto import tqdm

from nanoinfer.config import EngineConfig
from nanoinfer.engine.events import EngineEvent
from nanoinfer.engine.llm_engine import LLMEngine
from nanoinfer.engine.metrics import requests_frame
from nanoinfer.engine.sequence import RequestMetrics, Sequence
from nanoinfer.sampling_params import SamplingParams
from nanoinfer.serving.stream import StreamOutput, stream_requests

Prompt = str | list[int]


@dataclass
class CompletionOutput:
    index: int
    text: str | None
    token_ids: list[int]
    finish_reason: str | None


@dataclass
class RequestOutput:
    """What ``generate`` returns per prompt; ``.text`` and ``.token_ids`` are shortcuts to ``outputs[0]``."""

    request_id: int
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    metrics: RequestMetrics
    finished: bool = True
    extra: dict = field(default_factory=dict)
    text = property(lambda self: self.outputs[0].text)
    token_ids = property(lambda self: self.outputs[0].token_ids)
    finish_reason = property(lambda self: self.outputs[0].finish_reason)


class LLM:
    """An inference engine for one model.

    ``LLM()`` loads the embedded SmolLM2-135M-Instruct; ``LLM("path/to/hf_dir")`` any supported
    Hugging Face directory (Qwen3, Llama). Knobs are those of :class:`nanoinfer.config.EngineConfig`.
    """

    def __init__(self, model: str | None = None, **config) -> None:
        self.config = EngineConfig.from_kwargs(model, **config)
        self.engine = LLMEngine(self.config)

    def shutdown(self) -> None:
        """Free the KV cache and stop any tensor-parallel workers (also done at interpreter exit)."""
        self.engine.shutdown()

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # ---- the engine's parts, and what they measured --------------------------------------------
    tokenizer = property(lambda self: self.engine.tokenizer)
    events = property(lambda self: self.engine.events)  # the lifecycle hooks (engine/events.py)
    block_manager = property(lambda self: self.engine.block_manager)
    scheduler = property(lambda self: self.engine.scheduler)
    model_runner = property(lambda self: self.engine.model_runner)

    def __repr__(self) -> str:
        e = self.engine
        return (f"LLM(model={str(e.model_dir)!r}, arch={e.hf_config.architectures[0]}, device={e.device}, "
                f"dtype={str(e.dtype).removeprefix('torch.')}, attention={e.model_runner.backend.name}, "
                f"kv_blocks={e.block_manager.num_blocks}x{self.config.kvcache_block_size}, "
                f"fast_paths=[{e.model_runner.fast_paths.summary()}])")

    def fast_paths(self):
        """What nanoinfer/fast replaced in this engine and why (or why not), as a DataFrame."""
        return self.engine.model_runner.fast_paths.frame()

    def cache_stats(self) -> dict:
        """Block usage and prefix-cache hit rates (``get_cache_stats`` in engine/block_manager.py)."""
        return self.engine.block_manager.get_cache_stats()

    def step_timeline(self):
        """The per-step timeline since the engine started (or since ``reset_metrics``) as a DataFrame."""
        return self.engine.metrics.timeline()

    def reset_metrics(self) -> None:
        self.engine.metrics.reset()

    @staticmethod
    def requests_frame(outputs: list[RequestOutput]):
        return requests_frame(outputs)

    @contextmanager
    def trace(self, logits: bool = False) -> Iterator[list[EngineEvent]]:
        """Collect every lifecycle event raised inside the block: ``with llm.trace() as events: ...``.
        ``logits=True``: each ``sampled`` event also carries the step's logits (tensor-parallel ranks then
        sample the joined logits instead of their own shards: the same tokens)."""
        events: list[EngineEvent] = []
        unsubscribe = self.engine.events.subscribe(events.append)
        runner = self.engine.model_runner
        kept, runner.keep_logits = runner.keep_logits, logits or runner.keep_logits
        try:
            yield events
        finally:
            unsubscribe()
            runner.keep_logits = kept

    # ---- generation ----------------------------------------------------------------------------
    def generate(self, prompts: Prompt | Seq[Prompt],
                 sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """Generate for every prompt (text or token ids); results come back in prompt order. Every prompt
        and parameter is checked before any request starts, so bad input fails fast."""
        prompts, sampling_params, token_ids = self._checked(prompts, sampling_params)
        engine = self.engine
        if engine.events:
            engine.events.emit("generate_start", "LLM", num_requests=len(prompts))
        seqs = [engine.add_request(p, sp, ids) for p, sp, ids in zip(prompts, sampling_params, token_ids)]
        bar = tqdm(total=len(seqs), desc="Generating", unit="req", disable=not use_tqdm, dynamic_ncols=True)
        start, last_update = time.perf_counter(), 0.0
        try:
            while engine.has_unfinished_requests():
                finished = engine.step()
                now = time.perf_counter()
                if use_tqdm and (finished or now - last_update > 0.5):
                    out_tokens = sum(s.num_output_tokens for s in seqs)
                    bar.set_postfix_str(f"{out_tokens / (now - start):.0f} tok/s out", refresh=False)
                    bar.update(len(finished))
                    last_update = now
        except BaseException:
            engine.abort_all()  # free every KV block before the error propagates
            raise
        finally:
            bar.close()
        outputs = [self._output(s) for s in seqs]
        if engine.events:
            engine.events.emit("generate_end", "LLM", num_requests=len(prompts))
        return outputs

    def stream(self, prompts: Prompt | Seq[Prompt], sampling_params=None) -> Iterator[StreamOutput]:
        """``generate``, yielding each request's new tokens and text as steps produce them (a delta never splits
        a character; joined, they are generate's text). Leaving early aborts the rest (serving/stream.py)."""
        return stream_requests(self.engine, *self._checked(prompts, sampling_params))

    def _checked(self, prompts, sampling_params) -> tuple[list[Prompt], list[SamplingParams], list[list[int]]]:
        """Prompts, one SamplingParams each, and their token ids, all checked before any request starts."""
        prompts = _as_prompt_list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            sampling_params = [sampling_params] * len(prompts)
        elif not isinstance(sampling_params, (list, tuple)):
            raise TypeError("sampling_params must be a SamplingParams or a list of them, one per prompt; "
                            f"got {type(sampling_params).__name__}")
        elif len(sampling_params) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(sampling_params)} SamplingParams")
        for i, sp in enumerate(sampling_params):
            if not isinstance(sp, SamplingParams):
                raise TypeError(f"sampling_params[{i}] must be a SamplingParams, got {type(sp).__name__}")
        return prompts, sampling_params, [self.engine.tokenize(p, i) for i, p in enumerate(prompts)]

    def chat(self, messages: list[dict] | list[list[dict]], sampling_params: SamplingParams | None = None,
             use_tqdm: bool = False) -> RequestOutput | list[RequestOutput]:
        """Apply the tokenizer's chat template and generate the assistant's reply. ``messages`` is one
        conversation (a list of {"role", "content"} dicts) or a list of them."""
        if self.tokenizer is None:
            raise ValueError(f"{self.engine.model_dir} has no tokenizer, so it has no chat template")
        single = bool(messages) and isinstance(messages[0], dict)
        conversations = [messages] if single else messages
        outputs = self.generate([self.chat_prompt(c) for c in conversations],
                                sampling_params or SamplingParams(temperature=0.0, max_tokens=128), use_tqdm=use_tqdm)
        return outputs[0] if single else outputs

    def chat_prompt(self, conversation: list[dict]) -> list[int]:
        """A conversation's token ids through the tokenizer's chat template, ready for the assistant's reply."""
        text = self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        # The template already holds any special tokens the model needs; don't add a second BOS.
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _output(self, seq: Sequence) -> RequestOutput:
        ids = seq.output_token_ids
        completion = CompletionOutput(0, self.engine.detokenize(ids), ids, seq.finish_reason)
        return RequestOutput(seq.seq_id, seq.prompt, seq.token_ids[: seq.num_prompt_tokens], [completion],
                             seq.metrics, seq.is_finished)


def _as_prompt_list(prompts) -> list[Prompt]:
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts given")
    if all(isinstance(t, int) for t in prompts):  # one prompt given as token ids
        return [prompts]
    for i, p in enumerate(prompts):
        if not isinstance(p, (str, list, tuple)):
            raise TypeError(f"prompt {i} must be a string or a list of token ids, got {type(p).__name__}")
    return [p if isinstance(p, str) else list(p) for p in prompts]
