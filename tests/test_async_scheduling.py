"""Async scheduling (step N+1 launched before step N's tokens reach the host) must change nothing in
the outputs: the same tokens as the synchronous loop in every scenario, and no block leaks."""

import pytest

from helpers import assert_no_leaks
from nanoinfer import LLM, SamplingParams

SCENARIOS = {
    "plain": dict(),
    "chunked prefill": dict(max_num_batched_tokens=24),
    "preemption": dict(max_model_len=160, num_kvcache_blocks=14),
    "small blocks, sjf": dict(kvcache_block_size=4, scheduling_policy="sjf"),
}


def generate(path, prompts, params, **knobs):
    llm = LLM(str(path), **{"max_model_len": 512, **knobs})
    first = [o.token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    again = [o.token_ids for o in llm.generate(prompts, params, use_tqdm=False)]  # prefix-cache hits
    assert_no_leaks(llm)
    return first, again, llm


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("name", ["qwen3", "llama"])
def test_async_matches_sync_greedy(name, scenario, reference):
    ref = reference(name)
    params = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)
    first, again, llm = generate(ref.path, ref.prompts, params, async_scheduling=True, **SCENARIOS[scenario])
    assert llm.engine.async_scheduling
    assert first == ref.greedy and again == ref.greedy


def test_async_matches_sync_for_smollm2(reference):
    ref = reference("smollm2")
    params = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)
    first, again, _ = generate(ref.path, ref.prompts, params, async_scheduling=True)
    assert first == ref.greedy and again == ref.greedy


def test_async_stops_drop_the_extra_token(tiny_llama):
    """A sequence that stops on a token keeps running one more step in async mode (its stop is seen a
    step late); that extra token must not reach the output, and lengths must match the sync run."""
    prompts = [[1, 2, 3], [4, 5, 6, 7], [9] * 20]
    greedy = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    sync = LLM(str(tiny_llama), max_model_len=256, async_scheduling=False)
    base = [o.token_ids for o in sync.generate(prompts, greedy, use_tqdm=False)]
    stops = [b[i] for b, i in zip(base, (3, 7, 11))]
    params = [SamplingParams(temperature=0.0, max_tokens=24, stop_token_ids=[t], ignore_eos=True) for t in stops]
    asynchronous = LLM(str(tiny_llama), max_model_len=256, async_scheduling=True)
    got = asynchronous.generate(prompts, params, use_tqdm=False)
    want = sync.generate(prompts, params, use_tqdm=False)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert [o.finish_reason for o in got] == ["stop"] * 3
    assert_no_leaks(asynchronous)


def test_async_seeded_sampling_matches_sync(tiny_qwen3):
    params = [SamplingParams(temperature=0.8, top_p=0.9, seed=s, max_tokens=20, ignore_eos=True) for s in range(4)]
    prompts = [[1, 2], [3] * 30, [4, 5, 6], [7] * 17]
    outs = {}
    for mode in (False, True):
        llm = LLM(str(tiny_qwen3), max_model_len=256, async_scheduling=mode)
        outs[mode] = [o.token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    assert outs[True] == outs[False]


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_stepping_past_the_last_request_does_nothing(tiny_llama, async_scheduling):
    """Steps called after every request finished (a loop that counts its own steps) return no sequences, in
    either loop, rather than raising as if the scheduler had lost a pending request."""
    llm = LLM(str(tiny_llama), max_model_len=128, async_scheduling=async_scheduling)
    seq = llm.engine.add_request([3, 1, 4, 1, 5], SamplingParams(max_tokens=2, ignore_eos=True))
    finished = []
    for _ in range(6):
        finished += llm.engine.step()
    assert finished == [seq] and len(seq.output_token_ids) == 2
    assert llm.engine.step() == []
    assert_no_leaks(llm)
