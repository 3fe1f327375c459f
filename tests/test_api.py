"""The user-facing API: the default model, chat, outputs, metrics, timeline and hooks."""

import pytest

from helpers import assert_no_leaks
from nanoinfer import LLM, SamplingParams


@pytest.fixture(scope="module")
def default_llm():
    return LLM()


def test_default_model_answers_in_english(default_llm):
    out = default_llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                           SamplingParams(temperature=0.0, max_tokens=24))
    assert "Paris" in out.text
    assert out.finish_reason == "stop"  # it ended its answer with the end-of-turn token
    replies = default_llm.chat([[{"role": "user", "content": "Say hello."}],
                                [{"role": "user", "content": "Why do people drink coffee?"}]],
                               SamplingParams(temperature=0.0, max_tokens=48))
    assert any(w in replies[0].text.lower() for w in ("hello", "hi"))
    # A 135M model is no oracle, but its answers are English sentences: mostly common English words.
    common = {"the", "a", "to", "and", "of", "is", "it", "you", "that", "in", "for", "can", "are", "people",
              "coffee", "drink", "because", "their", "they", "as", "energy", "help", "many", "or", "with"}
    words = [w.strip(".,!?;:'\"()").lower() for w in replies[1].text.split()]
    assert len(words) >= 8 and sum(w in common for w in words) / len(words) > 0.25, replies[1].text
    assert_no_leaks(default_llm)


def test_outputs_and_metrics(default_llm):
    prompts = ["Once upon a time", "The three primary colours are"]
    outs = default_llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True),
                                use_tqdm=False)
    assert [o.prompt for o in outs] == prompts
    for o in outs:
        assert len(o.token_ids) == 12 and o.text == o.outputs[0].text and isinstance(o.text, str)
        m = o.metrics
        assert 0 < m.time_to_first_token <= m.e2e_latency and m.time_per_output_token > 0
        assert m.num_prompt_tokens == len(o.prompt_token_ids)
    frame = default_llm.requests_frame(outs)
    assert list(frame.columns[:3]) == ["request_id", "prompt_tokens", "output_tokens"]
    # The same prompts again hit the prefix cache for their full blocks (none here: prompts < 16 tokens).
    long = "The quick brown fox jumps over the lazy dog. " * 4
    default_llm.generate([long], SamplingParams(max_tokens=2), use_tqdm=False)
    again = default_llm.generate([long], SamplingParams(max_tokens=2), use_tqdm=False)[0]
    assert again.metrics.num_cached_tokens >= 32


def test_timeline_and_trace(default_llm):
    default_llm.reset_metrics()
    with default_llm.trace() as events:
        default_llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=5, ignore_eos=True), use_tqdm=False)
    timeline = default_llm.step_timeline()
    assert list(timeline["phase"]) == ["prefill"] + ["decode"] * 4
    assert timeline["num_sampled"].sum() == 5
    assert ((timeline.wait_s > 0) & (timeline.wait_s <= timeline.postprocess_s)).all()  # the wait is part of it
    kinds = [e.kind for e in events if e.seq_id is not None]
    assert kinds[:3] == ["request_added", "blocks_allocated", "admitted"]
    assert kinds[-2:] == ["blocks_freed", "finished"]
    components = {e.component for e in events}
    assert components == {"LLM", "LLMEngine", "Scheduler", "BlockManager", "ModelRunner"}
    # Without subscribers nothing is recorded.
    default_llm.generate(["Hello"], SamplingParams(max_tokens=2), use_tqdm=False)
    assert len(events) == len([e for e in events])


def test_prompt_forms(default_llm):
    ids = default_llm.tokenizer.encode("Hi there")
    one = default_llm.generate(ids, SamplingParams(temperature=0, max_tokens=3), use_tqdm=False)
    two = default_llm.generate("Hi there", SamplingParams(temperature=0, max_tokens=3), use_tqdm=False)
    assert len(one) == len(two) == 1 and one[0].token_ids == two[0].token_ids


def test_repr_names_the_essentials(default_llm):
    text = repr(default_llm)
    backend = default_llm.model_runner.backend.name
    assert "LlamaForCausalLM" in text and f"attention={backend}" in text and "kv_blocks=" in text
    assert backend in ("cpu", "torch")  # the C kernel when a compiler is found, else the torch reference
