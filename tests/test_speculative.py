"""Speculative decoding (nanoinfer/speculative): greedy output token for token the same as without it, with
prefix hits, chunked prefill and forced preemption in the same runs and no KV block leaked; the accept/reject
rule keeps the target's distribution (and a wrong rule is caught); the knob's checks; the metrics."""

from __future__ import annotations

import pytest
import torch

from helpers import assert_no_leaks, make_tiny_checkpoint
from nanoinfer import LLM, SamplingParams
from nanoinfer.speculative.ngram import prompt_lookup
from nanoinfer.speculative.rejection import rejection_sample
from nanoinfer.workbook.spec_stats import worst_p_value

GREEDY = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)
# chunked prefill (prompts up to 120 tokens, 48 a step) and preemption (14 blocks of 16 for 8 sequences)
TIGHT = dict(max_model_len=160, num_kvcache_blocks=14, max_num_batched_tokens=48)


@pytest.fixture(scope="module")
def tiny_draft(tmp_path_factory):
    """A separate draft: a one-layer Llama with other random weights and the tiny models' vocabulary."""
    return make_tiny_checkpoint("llama", tmp_path_factory.mktemp("draft"), seed=1, num_hidden_layers=1)


def run_twice(path, prompts, params=GREEDY, **knobs):
    """Generate twice (the second time every prompt hits the prefix cache); check that nothing leaked."""
    llm = LLM(str(path), **knobs)
    outs = [llm.generate(prompts, params, use_tqdm=False) for _ in range(2)]
    assert_no_leaks(llm)
    return llm, outs


def speculative(method: str, ref_path, draft) -> dict:
    return {"ngram": {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 1},
            "self": {"method": "draft_model", "model": "self", "num_draft_layers": 1},
            "draft": {"method": "draft_model", "model": str(draft), "num_speculative_tokens": 3},
            "target as draft": {"method": "draft_model", "model": str(ref_path), "num_speculative_tokens": 5},
            }[method]


@pytest.mark.parametrize("method", ["ngram", "self", "draft", "target as draft"])
@pytest.mark.parametrize("name", ["qwen3", "llama"])
def test_greedy_equals_plain_decoding(name, method, reference, tiny_draft):
    ref = reference(name)
    llm, outs = run_twice(ref.path, ref.prompts, speculative_config=speculative(method, ref.path, tiny_draft), **TIGHT)
    for out in outs:
        assert [o.token_ids for o in out] == ref.greedy
    stats, steps = llm.cache_stats(), llm.step_timeline()
    assert stats["preemptions"] > 0 and stats["hit_tokens"] > 0
    assert (steps.num_tokens > 48).sum() == 0 and steps.num_drafted.sum() > 0  # chunked; speculated
    metrics = [o.metrics for out in outs for o in out]
    assert steps.num_drafted.sum() == sum(m.num_drafted_tokens for m in metrics)
    assert steps.num_accepted.sum() == sum(m.num_accepted_tokens for m in metrics)
    assert steps.num_sampled.sum() == sum(m.num_output_tokens for m in metrics)
    if method == "target as draft":  # the draft is the target: every draft is accepted
        assert all(m.acceptance_rate == 1.0 for m in metrics if m.num_drafted_tokens)


@pytest.mark.parametrize("method", ["ngram", pytest.param("self", marks=pytest.mark.slow)])
def test_greedy_default_model(method, reference):
    """SmolLM2, 3 prompts, 24 tokens (its CPU time is the file's largest): prefix hits, chunks, preemption."""
    ref = reference("smollm2")
    spec = {"method": "ngram", "prompt_lookup_min": 1} if method == "ngram" else {  # (k=2: half the draft passes)
        "method": "draft_model", "model": "self", "num_draft_layers": 6, "num_speculative_tokens": 2}
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    prompts = [ref.prompts[i] for i in (1, 3, 6)]  # the longest three: chunked by 16 tokens
    llm, outs = run_twice(ref.path, prompts, params, speculative_config=spec, max_model_len=64, num_kvcache_blocks=5,
                          max_num_batched_tokens=16)
    for out in outs:
        assert [o.token_ids for o in out] == [ref.greedy[i][:24] for i in (1, 3, 6)]
    assert llm.cache_stats()["preemptions"] > 0 and llm.cache_stats()["hit_tokens"] > 0
    # (the first 6 of SmolLM2's 30 layers, untrained as a draft, rarely agree with the whole model: drafted only)
    counts = [o.metrics.num_accepted_tokens if method == "ngram" else o.metrics.num_drafted_tokens for o in outs[0]]
    assert sum(counts) > 0


def test_rejected_drafts_give_their_blocks_back(tiny_llama):
    """Drafts that the target rejects wrote KV slots past the sequence: after the step the sequence holds only
    the blocks its kept tokens need, and no prefix-cache block ever holds a rejected token."""
    llm = LLM(str(tiny_llama), max_model_len=128, num_kvcache_blocks=32, speculative_config={
        "method": "draft_model", "model": "self", "num_draft_layers": 1, "num_speculative_tokens": 16})
    bm = llm.block_manager
    seq = llm.engine.add_request(list(range(1, 21)), SamplingParams(temperature=0.0, max_tokens=60, ignore_eos=True))
    rejected = 0
    while llm.engine.has_unfinished_requests():
        llm.engine.step()  # 21 tokens + 16 drafts reach a third block, which a rejection gives back
        step = llm.step_timeline().iloc[-1]
        rejected += step.num_drafted - step.num_accepted
        if not seq.is_finished:
            assert len(seq.block_table) == -(-seq.num_computed_tokens // 16) == bm.num_used_blocks
    assert rejected > 0
    blocks = {tuple(seq.token_ids[i : i + 16]) for i in range(0, len(seq.token_ids) - 15, 16)}
    assert bm.num_cached_blocks > 0
    assert all(bm.blocks[b].token_ids in blocks for b in bm.cached_block_ids.values())
    assert_no_leaks(llm)


def test_verify_rows_tell_the_decode_kernel_what_their_step_writes(tiny_llama):
    """A verify step feeds a sequence's last token and its k drafts as k + 1 decode rows, and writes all their keys
    before attention: the Triton decode kernel reads a row's last k + 1 positions only after the kernel before
    (PREFETCH in attention/triton_backend.py)."""
    for spec, fresh in ((None, 1), ({"method": "ngram", "num_speculative_tokens": 3}, 4)):
        llm = LLM(str(tiny_llama), attention_backend="triton", max_model_len=64, num_kvcache_blocks=8,
                  speculative_config=spec)
        assert llm.model_runner.backend.decode_fresh_tokens == fresh
        llm.shutdown()


def test_seeded_sampling_repeats(tiny_qwen3):
    params = SamplingParams(temperature=0.8, top_k=50, max_tokens=24, ignore_eos=True, seed=7)
    prompts = [[3, 4, 5, 3, 4, 5, 3, 4], [9, 9, 9, 9]]
    runs = []
    for method in ("ngram", "self"):
        spec = speculative(method, tiny_qwen3, None)
        llm = LLM(str(tiny_qwen3), max_model_len=128, speculative_config=spec)
        runs.append([[o.token_ids for o in llm.generate(prompts, params, use_tqdm=False)] for _ in range(2)])
        assert runs[-1][0] == runs[-1][1]
        assert_no_leaks(llm)


def accept_always(p, q, d, n, u, e):
    """Wrong: every draft accepted (the output is the draft's distribution)."""
    return rejection_sample(p, q, d, n, torch.zeros_like(u), e)


def resample_from_p(p, q, d, n, u, e):
    """Wrong: after a rejection, a fresh draw from p instead of the residual max(0, p - q)."""
    accepted, token = rejection_sample(p, q, d, n, u, e)
    rows = torch.arange(len(accepted))
    return accepted, (p[rows, accepted] / e).argmax(dim=1)


@pytest.mark.parametrize("rule", [rejection_sample, accept_always, resample_from_p], ids=lambda r: r.__name__)
def test_rule_keeps_the_target_distribution(rule):
    """Chi-square over 40,000 draws from controlled p and q, at every output position: the rule passes, each
    wrong rule fails (p-values far below any threshold)."""
    p_values = [worst_p_value(rule, seed) for seed in (1, 2)]
    if rule is rejection_sample:
        assert min(p_values) > 1e-4, p_values
    else:
        assert max(p_values) < 1e-9, p_values


@pytest.mark.parametrize("spec, words", [
    ({"method": "medusa"}, "speculative_config['method']"),
    ({"method": "ngram", "model": "x"}, "['model']"),
    ({"method": "ngram", "num_speculative_tokens": 0}, "speculative_config['num_speculative_tokens']"),
    ({"method": "ngram", "prompt_lookup_min": 5, "prompt_lookup_max": 2}, "prompt_lookup_min"),
    ({"method": "draft_model"}, "speculative_config['model']"),
    ({"method": "draft_model", "model": "self"}, "num_draft_layers"),
    ({"method": "draft_model", "model": "self", "num_draft_layers": 2}, "fewer than the target's 2 layers"),
    ({"method": "draft_model", "model": "/no/such/dir"}, "neither a checkpoint directory nor a named shape"),
    ("ngram", "must be a dict"),
])
def test_bad_config_is_named_before_any_work(tiny_llama, spec, words):
    with pytest.raises(ValueError, match=None) as err:
        LLM(str(tiny_llama), speculative_config=spec)
    assert words in str(err.value)


def test_draft_must_share_the_vocabulary(tiny_llama, tmp_path):
    other = make_tiny_checkpoint("llama", tmp_path / "v256", vocab_size=256)
    with pytest.raises(ValueError, match="vocabulary of 256 tokens, the target 512"):
        LLM(str(tiny_llama), speculative_config={"method": "draft_model", "model": str(other)})
    with pytest.raises(ValueError, match="async_scheduling"):
        LLM(str(tiny_llama), speculative_config={"method": "ngram"}, async_scheduling=True)
    with pytest.raises(ValueError, match="tensor_parallel_size=2 .a draft model runs on one rank"):
        LLM(str(tiny_llama), speculative_config={"method": "draft_model", "model": "self", "num_draft_layers": 1},
            tensor_parallel_size=2)


def test_prompt_lookup_under_tensor_parallelism(reference):
    """Prompt lookup with two gloo ranks: verify steps run on both shards; tokens as without speculation."""
    ref = reference("qwen3")
    llm, outs = run_twice(ref.path, ref.prompts, speculative_config=speculative("ngram", ref.path, None),
                          tensor_parallel_size=2, **TIGHT)
    for out in outs:
        assert [o.token_ids for o in out] == ref.greedy
    assert llm.cache_stats()["preemptions"] > 0 and llm.step_timeline().num_accepted.sum() > 0
    llm.shutdown()


@pytest.mark.parametrize("tokens, k, want", [
    ([5, 6, 7, 8, 5, 6, 9, 1, 5, 6], 2, [9, 1]),  # the latest occurrence of "5 6", k tokens after it
    ([5, 6, 7, 8, 9, 5, 6, 5, 6], 3, [7, 8, 9]),  # the latest has only 2 tokens after it: the earliest
    ([3, 3, 3, 3, 3, 3], 2, [3, 3]),  # a run: not just the one token after the latest "3 3"
    ([1, 2, 3, 4], 2, []),
])
def test_prompt_lookup(tokens, k, want):
    assert prompt_lookup(tokens, min_n=2, max_n=3, k=k) == want
