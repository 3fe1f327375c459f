"""Engine vs transformers on the same weights, float32 on the CPU: logits and greedy tokens.

Every scenario below is one where paged-KV engines have shipped bugs: shared prefixes, fully cached
prompts, chunked prefill, preemption, and preempted sequences returning through the prefix cache.
"""

import pytest

from helpers import assert_no_leaks, hf_next_token_logits, relative_error
from nanoinfer import LLM, SamplingParams

MODELS = ["qwen3", "llama", "gemma", "smollm2"]
GREEDY = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)


def run(llm, prompts, events=False):
    with llm.trace(logits=events) as trace:
        outputs = llm.generate(prompts, GREEDY, use_tqdm=False)
    return ([o.token_ids for o in outputs], trace) if events else [o.token_ids for o in outputs]


def assert_same_tokens(got, expected):
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"prompt {i}: first difference at token {next(j for j, (a, b) in enumerate(zip(g, e)) if a != b)}"


@pytest.mark.parametrize("name", MODELS)
def test_logits_and_greedy_match_transformers(name, reference):
    ref = reference(name)
    llm = LLM(str(ref.path), max_model_len=512)
    tokens, trace = run(llm, ref.prompts, events=True)
    assert_same_tokens(tokens, ref.greedy)
    # Next-token logits of every prompt, from the prefill step, against transformers' forward pass.
    sampled = [e for e in trace if e.kind == "sampled"]
    expected = hf_next_token_logits(ref.model, ref.prompts)
    checked = set()
    for event in sampled:
        for row, seq_id in enumerate(event.data["seq_ids"]):
            if seq_id not in checked:
                err = relative_error(event.data["logits"][row], expected[seq_id])
                assert err < 1e-4, f"prompt {seq_id}: logits differ from transformers by {err:.2e}"
                checked.add(seq_id)
    assert checked == set(range(len(ref.prompts)))
    assert_no_leaks(llm)


@pytest.mark.parametrize("name", ["qwen3", "llama", "gemma"])
def test_decode_logits_match_transformers_at_every_step(name, reference):
    """Logits after each generated token equal transformers' forward pass over prompt + output so far."""
    ref = reference(name)
    llm = LLM(str(ref.path), max_model_len=512)
    tokens, trace = run(llm, ref.prompts[:4], events=True)
    for event in (e for e in trace if e.kind == "sampled"):
        for row, seq_id in enumerate(event.data["seq_ids"]):
            prompt = ref.prompts[seq_id]
            # how many tokens this sequence had produced before this step
            before = sum(1 for e in trace if e.kind == "token_appended" and e.seq_id == seq_id
                         and e.step < event.step)
            context = prompt + tokens[seq_id][:before]
            expected = hf_next_token_logits(ref.model, [context])[0]
            assert relative_error(event.data["logits"][row], expected) < 1e-4
    assert_no_leaks(llm)


@pytest.mark.parametrize("name", MODELS)
def test_shared_prefixes_within_and_across_calls(name, reference):
    ref = reference(name)
    prefix = [t for p in ref.prompts for t in p][:40]
    prompts = [prefix + p[:9] for p in ref.prompts]  # 8 prompts sharing 2 full blocks
    from helpers import hf_greedy

    expected = hf_greedy(ref.model, prompts, 32)
    llm = LLM(str(ref.path), max_model_len=512)
    assert_same_tokens(run(llm, prompts), expected)
    first = llm.cache_stats()
    assert first["hit_blocks"] >= 2 * (len(prompts) - 1), f"expected prefix hits within one call: {first}"
    assert_no_leaks(llm)
    # The same batch again: every full prompt block is cached now.
    assert_same_tokens(run(llm, prompts), expected)
    second = llm.cache_stats()
    assert second["hit_tokens"] - first["hit_tokens"] >= sum((len(p) - 1) // 16 * 16 for p in prompts)
    assert_no_leaks(llm)


@pytest.mark.parametrize("name", MODELS)
def test_fully_cached_prompt_still_computes_its_last_token(name, reference):
    """A prompt whose every block is cached must still run (at least) its last token to get logits."""
    ref = reference(name)
    long = [t for p in ref.prompts for t in p]  # all prompts joined: at least 49 tokens
    prompts = [long[:48], long[:49], long[:16], long[:17]]  # block-aligned and one past
    from helpers import hf_greedy

    expected = hf_greedy(ref.model, prompts, 32)
    llm = LLM(str(ref.path), max_model_len=512)
    assert_same_tokens(run(llm, prompts), expected)
    with llm.trace() as trace:
        again = llm.generate(prompts, GREEDY, use_tqdm=False)
    assert_same_tokens([o.token_ids for o in again], expected)
    cached = {e.seq_id: e.data["num_cached_tokens"] for e in trace if e.kind == "admitted"}
    # 48 tokens: 3 full blocks, but the last token must run, so only 2 can hit; 49 tokens: all 3 hit.
    assert sorted(cached.values()) == [0, 16, 32, 48]
    assert_no_leaks(llm)


@pytest.mark.parametrize("name", MODELS)
def test_chunked_prefill(name, reference):
    ref = reference(name)
    llm = LLM(str(ref.path), max_model_len=512, max_num_batched_tokens=24)
    tokens, trace = run(llm, ref.prompts, events=True)
    assert_same_tokens(tokens, ref.greedy)
    assert any(e.kind == "prefill_chunk" and not e.data["last"] for e in trace), "no prompt was split"
    assert max(s.num_tokens for s in llm.engine.metrics.steps) <= 24
    assert_no_leaks(llm)


@pytest.mark.parametrize("name", MODELS)
def test_preemption_keeps_outputs(name, reference):
    """A KV budget far below the batch's needs forces preemptions; outputs must not change."""
    ref = reference(name)
    max_model_len = 160
    llm = LLM(str(ref.path), max_model_len=max_model_len, num_kvcache_blocks=max_model_len // 16 + 4)
    tokens, trace = run(llm, ref.prompts, events=True)
    assert_same_tokens(tokens, ref.greedy)
    preemptions = [e for e in trace if e.kind == "preempted"]
    assert preemptions, "the tiny KV budget caused no preemption"
    assert llm.cache_stats()["preemptions"] == len(preemptions)
    assert_no_leaks(llm)


@pytest.mark.parametrize("name", MODELS)
def test_preempted_sequence_returns_through_prefix_cache(name, reference):
    """Two 64-token prompts in 9 blocks of 16: both are admitted (4 blocks each), the first decode step
    needs a fifth block for each, so the later one is preempted. Its published prompt blocks wait in
    the free pool; when it is readmitted it must find (most of) them in the prefix cache."""
    ref = reference(name)
    joined = [t for p in ref.prompts for t in p]
    prompts = [joined[:64], joined[-64:]]
    from helpers import hf_greedy

    expected = hf_greedy(ref.model, prompts, 32)
    llm = LLM(str(ref.path), max_model_len=128, num_kvcache_blocks=9)
    tokens, trace = run(llm, prompts, events=True)
    assert_same_tokens(tokens, expected)
    preempted = [e for e in trace if e.kind == "preempted"]
    assert [e.seq_id for e in preempted] == [1]
    readmission = [e for e in trace if e.kind == "admitted" and e.seq_id == 1][-1]
    assert readmission.time > preempted[0].time
    assert readmission.data["num_cached_tokens"] >= 32, readmission.data
    assert_no_leaks(llm)


def test_float32_outputs_identical_across_block_sizes_and_policies(reference):
    ref = reference("llama")
    for block_size, policy in [(1, "fifo"), (64, "sjf"), (256, "ljf")]:
        llm = LLM(str(ref.path), max_model_len=512, kvcache_block_size=block_size, scheduling_policy=policy)
        assert_same_tokens(run(llm, ref.prompts), ref.greedy)
        assert_no_leaks(llm)


def test_naive_attention_backend_matches(reference):
    ref = reference("qwen3")
    llm = LLM(str(ref.path), max_model_len=512, attention_backend="naive")
    assert_same_tokens(run(llm, ref.prompts), ref.greedy)
    assert_no_leaks(llm)


def test_llama3_rope_scaling_matches_transformers(tmp_path):
    from helpers import hf_greedy, hf_model, make_tiny_checkpoint

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64, "rope_theta": 500000.0}
    path = make_tiny_checkpoint("llama", tmp_path, rope_parameters=scaling, tie_word_embeddings=True)
    model = hf_model(path)
    prompts = [[(7 * i + j) % 500 for j in range(n)] for i, n in enumerate([100, 30, 70])]
    llm = LLM(str(path), max_model_len=512)
    assert_same_tokens(run(llm, prompts), hf_greedy(model, prompts, 32))
    assert_no_leaks(llm)


def test_layers_share_one_rotary_table_looked_up_once_per_step(tiny_qwen3):
    """One cos/sin table for the model, and one lookup per forward pass, left in the step's scratch."""
    from nanoinfer.attention.base import AttentionMetadata

    # on the CPU: every step runs the model's forward in Python (a GPU replays captured decode graphs)
    llm = LLM(str(tiny_qwen3), device="cpu", max_model_len=64, kv_cache_memory_bytes=1 << 22)
    model = llm.model_runner.model
    tables = {id(layer.self_attn.rotary_emb.cos_sin) for layer in model.model.layers}
    assert len(model.model.layers) > 1 and len(tables) == 1
    seen = []
    original = AttentionMetadata.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self)

    AttentionMetadata.__init__ = spy
    try:
        llm.generate([[1, 2, 3, 4]], SamplingParams(max_tokens=2, temperature=0.0), use_tqdm=False)
    finally:
        AttentionMetadata.__init__ = original
    assert seen and all(sum(k[0] == "rotary" for k in m.scratch if isinstance(k, tuple)) == 1 for m in seen)
