"""Every engine hook is live: with a deliberately wrong learner implementation selected, the engine's output
changes; unselected, the engine gives its reference output. (The learner's module is patched here; the
check command and the notebooks select the learner's real file the same way.)"""

from __future__ import annotations

import importlib
import random

import pytest
import torch

from helpers import assert_no_leaks
from nanoinfer import LLM, SamplingParams, use_exercises
from nanoinfer.engine.policies import SchedulingPolicy
from nanoinfer.workbook.registry import EXERCISES

GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)


@pytest.fixture
def wrong(monkeypatch):
    """``wrong("5.1", bad_rms_norm)`` makes the learner's module define that object under its name."""

    def install(ex_id: str, obj, name: str | None = None) -> None:
        module = importlib.import_module(f"exercises.{EXERCISES[ex_id].module}")
        monkeypatch.setattr(module, name or obj.__name__, obj)

    monkeypatch.delenv("NANOINFER_EXERCISES", raising=False)
    return install


def build(path, ex_id: str | None = None, **knobs) -> LLM:
    knobs = {"max_model_len": 128, "num_kvcache_blocks": 64, **knobs}
    if ex_id is None:
        return LLM(str(path), **knobs)
    with use_exercises(ex_id):
        return LLM(str(path), **knobs)


def greedy_tokens(llm, prompts, params=GREEDY) -> list[list[int]]:
    tokens = [o.token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    assert_no_leaks(llm)
    return tokens


def test_hooks_are_covered():
    """This file tests every exercise that has an engine hook."""
    tested = {"2.2", "2.3", "2.4", "3.1", "3.2", "3.3", "4.1", "4.2", "5.1", "5.2", "5.3", "5.5", "6.1", "7.1",
              "8.1", "8.2", "8.3"}
    assert tested == {e.id for e in EXERCISES.values() if e.hook}


@pytest.mark.parametrize("ex_id", ["3.1", "5.1", "5.2"])
def test_model_ops(ex_id, wrong, reference):
    """Naive attention (3.1), RMSNorm (5.1), rotary (5.2): the greedy tokens are transformers' with the
    reference, and change with a wrong op."""
    from nanoinfer.attention.torch_backend import naive_attention
    from nanoinfer.layers.layernorm import rms_norm
    from nanoinfer.layers.rotary_embedding import apply_rotary

    bad = {"3.1": lambda q, k, v, mask, scale: naive_attention(q, k, v, mask, 3 * scale),
           "5.1": lambda x, weight, eps, residual=None: rms_norm(x, 1.5 * weight, eps, residual),
           "5.2": lambda x, cos, sin: apply_rotary(x, sin, cos)}[ex_id]
    name = {"3.1": "naive_attention", "5.1": "rms_norm", "5.2": "apply_rotary"}[ex_id]
    wrong(ex_id, bad, name)
    ref = reference("qwen3")
    prompts, expected = ref.prompts[:4], [t[:8] for t in ref.greedy[:4]]
    knobs = {"attention_backend": "naive"} if ex_id == "3.1" else {}
    assert greedy_tokens(build(ref.path, **knobs), prompts) == expected
    assert greedy_tokens(build(ref.path, ex_id, **knobs), prompts) != expected


@pytest.mark.parametrize("ex_id", ["4.1", "4.2"])
def test_parallel_linears(ex_id, wrong, tiny_llama):
    """4.1 (every linear loads its weight through shard_weight), 4.2 (o_proj and down_proj run
    row_parallel_linear): live at one rank too, so a wrong learner's version changes the tokens."""
    from nanoinfer.layers.linear import row_parallel_linear, shard_weight

    if ex_id == "4.1":
        wrong(ex_id, lambda tensor, rank, world_size, parallel: 1.5 * shard_weight(tensor, rank, world_size, parallel),
              "shard_weight")
    else:
        wrong(ex_id, lambda x, weight, bias, all_reduce, linear=None: row_parallel_linear(x, -weight, bias, all_reduce),
              "row_parallel_linear")
    prompts = [[1, 2, 3, 4], [9, 8, 7]]
    assert greedy_tokens(build(tiny_llama), prompts) != greedy_tokens(build(tiny_llama, ex_id), prompts)


def test_sampler(wrong, tiny_llama):
    """3.2: the Gumbel-max draw; a learner's draw that always picks token 7 is what the engine samples."""
    def gumbel_max_sample(logits, temperatures, noise):
        return torch.full((logits.shape[0],), 7, dtype=torch.int64)

    wrong("3.2", gumbel_max_sample)
    params = SamplingParams(temperature=1.0, max_tokens=8, seed=1, ignore_eos=True)
    reference = greedy_tokens(build(tiny_llama), [[1, 2, 3]], params)[0]
    assert reference != [7] * 8 and len(set(reference)) > 1
    assert greedy_tokens(build(tiny_llama, "3.2"), [[1, 2, 3]], params)[0] == [7] * 8


def admission_order(llm, prompts, params) -> list[int]:
    with llm.trace() as events:
        outputs = llm.generate(prompts, params, use_tqdm=False)
    first = outputs[0].request_id
    return [e.seq_id - first for e in events if e.kind == "admitted"]


def test_scheduling_policy(wrong, tiny_llama):
    """2.2: one sequence at a time, shortest job first admits by work; a learner's reversed key, by the most."""
    class ShortestJobFirst(SchedulingPolicy):
        name = "sjf"

        def priority(self, seq):
            return (-(seq.num_prompt_tokens + seq.sampling_params.max_tokens), seq.seq_id)

    wrong("2.2", ShortestJobFirst)
    prompts = [[5] * n for n in (30, 10, 50, 20)]
    order = admission_order(build(tiny_llama, scheduling_policy="sjf", max_num_seqs=1), prompts, GREEDY)
    assert order == [1, 3, 0, 2]
    assert admission_order(build(tiny_llama, "2.2", scheduling_policy="sjf", max_num_seqs=1),
                           prompts, GREEDY) == [2, 0, 3, 1]


def test_cache_stats(wrong, tiny_llama):
    """2.3: llm.cache_stats() is the learner's function when selected."""
    def get_cache_stats(block_manager):
        return {"hit_rate": -1.0}

    wrong("2.3", get_cache_stats)
    shared = [[9] * 40 + [i] for i in range(3)]
    llm = build(tiny_llama)
    greedy_tokens(llm, shared)
    stats = llm.cache_stats()
    assert stats["hit_blocks"] == 4 and stats["hit_rate"] == pytest.approx(64 / 123)
    learner = build(tiny_llama, "2.3")
    greedy_tokens(learner, shared)
    assert learner.cache_stats() == {"hit_rate": -1.0}


def test_preemption_victim(wrong, tiny_llama):
    """2.4: out of blocks, FIFO preempts the newest arrival; a learner's choice of the oldest is obeyed."""
    def choose_preemption_victim(candidates, policy):
        return min(candidates, key=policy.priority)

    wrong("2.4", choose_preemption_victim)
    prompts, params = [[3] * 14] * 3, SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)

    def first_victim(llm):
        with llm.trace() as events:
            outputs = llm.generate(prompts, params, use_tqdm=False)
        return next(e.seq_id for e in events if e.kind == "preempted") - outputs[0].request_id

    tight = dict(max_model_len=64, num_kvcache_blocks=5)  # three sequences need six blocks by the end
    assert first_victim(build(tiny_llama, **tight)) == 2
    assert first_victim(build(tiny_llama, "2.4", **tight)) == 0


def test_block_hash(wrong, tiny_llama, reference):
    """6.1: a hash that forgets the parent block lets a block's tokens hit at another place of another prompt,
    whose keys and values were computed after other tokens: the engine then reuses the wrong KV."""
    from nanoinfer.engine.block_manager import compute_block_hash

    wrong("6.1", lambda token_ids, parent_hash: compute_block_hash(token_ids, None), "compute_block_hash")
    rng = random.Random(0)
    a, b = [rng.randrange(512) for _ in range(16)], [rng.randrange(512) for _ in range(16)]
    prompts = [a + b + [1, 2], b + b + [3]]  # the second starts with the first's second block

    def run(llm):
        first = greedy_tokens(llm, prompts[:1])
        return first + greedy_tokens(llm, prompts[1:]), llm.cache_stats()["hit_blocks"]

    (tokens, hits), (learner_tokens, learner_hits) = run(build(tiny_llama)), run(build(tiny_llama, "6.1"))
    assert hits == 0 and learner_hits == 2  # both of its blocks hash like the first prompt's second
    assert tokens[1] != learner_tokens[1]
    separate = greedy_tokens(build(tiny_llama, enable_prefix_caching=False), prompts)
    assert tokens == separate  # the reference changes nothing but the hit count


def test_gguf_permutation(wrong):
    """5.5: the conversion of the default model un-permutes q/k rows with the learner's function."""
    import gguf

    from nanoinfer.tools.convert import _hf_config, _metadata, find_smollm2_gguf, gguf_state_dict

    wrong("5.5", lambda weight, num_heads: weight, "unpermute_qk")
    reader = gguf.GGUFReader(str(find_smollm2_gguf()))
    reader.tensors = [t for t in reader.tensors if t.name.startswith("blk.0.attn_")]  # one layer: fast
    config = _hf_config(_metadata(reader))
    reference = gguf_state_dict(reader, config)
    with use_exercises("5.5"):
        learner = gguf_state_dict(reader, config)
    for name in reference:
        same = torch.equal(reference[name], learner[name])
        assert same != name.endswith(("q_proj.weight", "k_proj.weight")), name


@pytest.mark.gpu
def test_cuda_graph_choice(wrong, tiny_llama):
    """3.3: a learner's choice of the largest graph for every batch pads every replay to it."""
    def pick_cuda_graph(batch_size, captured_sizes):
        return captured_sizes[-1], captured_sizes[-1] - batch_size

    wrong("3.3", pick_cuda_graph)
    knobs = dict(max_num_seqs=32, gpu_memory_utilization=0.2, num_kvcache_blocks=None)
    prompts = [[1, 2, 3]] * 3

    def padding_per_replay(llm):  # in this generate call only (the warm-up replayed graphs too)
        with llm:  # (shut down after: its graphs and KV cache hold GPU memory)
            coverage = llm.model_runner.graphs.coverage
            before = coverage.padded_slots, coverage.replayed_steps
            tokens = greedy_tokens(llm, prompts)
        return tokens, (coverage.padded_slots - before[0]) / (coverage.replayed_steps - before[1])

    (tokens, padding), (learner_tokens, learner_padding) = (
        padding_per_replay(build(tiny_llama, **knobs)), padding_per_replay(build(tiny_llama, "3.3", **knobs)))
    assert tokens == learner_tokens
    assert (padding, learner_padding) == (1.0, 29.0)  # 3 rows in the graph of 4, or in the graph of 32


def test_model_family(wrong, reference):
    """A selected 5.3 builds the learner's Gemma class: one without the embedding scale changes the tokens;
    unselected, the engine's Gemma gives transformers' tokens."""
    from nanoinfer.models.gemma import GemmaForCausalLM, GemmaModel
    from nanoinfer.models.llama import LlamaModel

    class UnscaledModel(GemmaModel):
        embed = LlamaModel.embed

    class GemmaForCausalLM(GemmaForCausalLM):  # noqa: F811  (the learner's module defines this name)
        model_cls = UnscaledModel

    ref = reference("gemma")
    wrong("5.3", GemmaForCausalLM)
    prompts = ref.prompts[:3]
    assert greedy_tokens(build(ref.path), prompts) == [t[:8] for t in ref.greedy[:3]]
    assert greedy_tokens(build(ref.path, "5.3"), prompts) != [t[:8] for t in ref.greedy[:3]]


def test_suite_runner(wrong, tiny_llama):
    """Exercise 7.1: nanoinfer.bench.suite runs the learner's run_suite when it is selected."""
    from nanoinfer import bench
    from nanoinfer.tools.bench import run_suite

    def first_setting_only(workloads, settings, build, measure, progress=True):
        return run_suite(workloads, settings[:1], build, measure, progress)

    wrong("7.1", first_setting_only, "run_suite")
    args = (["chatbot"], [{"max_num_seqs": 1}, {"max_num_seqs": 4}])
    knobs = dict(model=str(tiny_llama), scale=1 / 64, progress=False)
    assert list(bench.suite(*args, **knobs).max_num_seqs) == [1, 4]
    with use_exercises("7.1"):
        assert list(bench.suite(*args, **knobs).max_num_seqs) == [1]


def test_int8_quantizer(wrong, tiny_llama):
    """8.2: an int8 engine quantizes its linear layers with the learner's quantize_per_channel; one whose
    scales are twice too large doubles every product, and the tokens change."""
    from nanoinfer.quantization import quantize_per_channel

    def doubled(weight):
        q, scale = quantize_per_channel(weight)
        return q, 2 * scale

    wrong("8.2", doubled, "quantize_per_channel")
    prompts = [[1, 2, 3, 4], [9, 8, 7]]
    reference = greedy_tokens(build(tiny_llama, quantization="int8"), prompts)
    assert greedy_tokens(build(tiny_llama, "8.2", quantization="int8"), prompts) != reference
    wrong("8.2", quantize_per_channel)  # a right one: the reference's tokens
    assert greedy_tokens(build(tiny_llama, "8.2", quantization="int8"), prompts) == reference


def test_speculative_acceptance(wrong, tiny_llama):
    """A selected 8.1 runs at every speculative decode step: a rule that accepts every draft changes the greedy
    tokens; unselected, speculation gives plain decoding's tokens."""
    def accept_all(p, q, d, n, u, e):
        return n, (p[torch.arange(len(n)), n] / e).argmax(dim=1)

    wrong("8.1", accept_all, "rejection_sample")
    prompts = [[1, 2, 3, 4], [9, 8, 7]]
    spec = {"speculative_config": {"method": "draft_model", "model": "self", "num_draft_layers": 1}}
    plain = greedy_tokens(build(tiny_llama), prompts)
    assert greedy_tokens(build(tiny_llama, **spec), prompts) == plain
    assert greedy_tokens(build(tiny_llama, "8.1", **spec), prompts) != plain


def test_arrival_simulator(wrong, tiny_llama):
    """8.3: a selected 8.3 draws the load generator's arrivals and runs its continuous-batching rows (static
    batching stays the engine's): arrivals twice as dense offer more requests; a simulator that reports no
    request shows in the continuous row only."""
    from nanoinfer.serving import loadgen

    def denser(rate, num_requests, rng):
        return loadgen.arrival_times(2 * rate, num_requests, rng)

    def nothing(llm, prompts, sampling_params, times):
        return {"requests": 0}

    llm = build(tiny_llama)
    run = dict(rates=[40.0], duration=0.5, max_requests=60, output_len=2)
    reference = loadgen.compare_batching(llm, **run).set_index("mode")
    wrong("8.3", denser, "arrival_times")
    wrong("8.3", nothing, "simulate_arrivals")
    with use_exercises("8.3"):
        yours = loadgen.compare_batching(llm, **run).set_index("mode")
    assert yours.offered.static > 1.4 * reference.offered.static
    assert yours.requests.continuous == 0 and yours.requests.static == yours.offered.static
    assert reference.requests.continuous == reference.offered.continuous
    assert_no_leaks(llm)
