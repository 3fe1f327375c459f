"""Streaming and aborts on a GPU (``pytest -m gpu``): async scheduling and CUDA graphs on, so a request's
last token may still be on the device when it is polled or aborted."""

from __future__ import annotations

import asyncio

import pytest

from helpers import assert_no_leaks
from nanoinfer import LLM, SamplingParams

pytestmark = pytest.mark.gpu
GREEDY = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
PROMPTS = [[1, 2, 3, 4], list(range(5, 40)), list(range(100, 117))]


def test_stream_and_async_abort_on_gpu(tiny_llama):
    """llm.stream's tokens are generate's; AsyncLLM adds, finishes and aborts requests mid-way; no block leaks"""
    from nanoinfer.serving.async_llm import AsyncLLM

    llm = LLM(str(tiny_llama), max_model_len=256, num_kvcache_blocks=64, dtype="float32")
    assert llm.engine.async_scheduling
    want = [o.token_ids for o in llm.generate(PROMPTS, GREEDY, use_tqdm=False)]
    got: dict[int, list[int]] = {}
    for out in llm.stream(PROMPTS, GREEDY):
        got.setdefault(out.index, []).extend(out.new_token_ids)
    assert [got[i] for i in range(len(PROMPTS))] == want
    stream = llm.stream(PROMPTS, SamplingParams(max_tokens=200, ignore_eos=True))
    next(stream)
    stream.close()
    assert_no_leaks(llm)

    engine = AsyncLLM(llm)

    async def one(prompt):
        ids = []
        async for out in engine.generate(prompt, GREEDY, prompt):
            ids += out.new_token_ids
        return ids

    async def abandoned():
        async for _ in engine.generate(PROMPTS[0], SamplingParams(max_tokens=200, ignore_eos=True), PROMPTS[0]):
            break

    async def main():
        results = await asyncio.gather(*(one(p) for p in PROMPTS), abandoned())
        await engine.shutdown()
        return results[:-1]

    assert asyncio.run(main()) == want
    assert_no_leaks(llm)
    again = [o.token_ids for o in llm.generate(PROMPTS, GREEDY, use_tqdm=False)]
    assert again == want, "the engine after an abort mid-flight gives the same tokens"
    llm.shutdown()
