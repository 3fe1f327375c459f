"""Bad input is refused before any work, with an error that names the value or knob at fault."""

import json
import re

import pytest

from nanoinfer import LLM, SamplingParams
from nanoinfer.config import EngineConfig


@pytest.fixture(scope="module")
def llm(tiny_llama):
    return LLM(str(tiny_llama), max_model_len=128)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(max_tokens=0), "max_tokens"),
    (dict(temperature=-0.1), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=0), "top_k"),
    (dict(top_k=-2), "top_k"),
    (dict(temperature="0.7"), "temperature must be a finite number, got '0.7'"),
    (dict(temperature=None), "temperature must be a finite number"),
    (dict(temperature=float("nan")), "temperature must be a finite number, got nan"),
    (dict(top_p=float("inf")), "top_p must be a finite number"),
    (dict(max_tokens=True), "max_tokens must be an integer"),
    (dict(seed=1.5), "seed must be an integer"),
    (dict(ignore_eos="yes"), "ignore_eos must be True or False"),
    (dict(stop_token_ids=5), "stop_token_ids must be a list of integer token ids, got 5"),
    (dict(stop_token_ids="abc"), "stop_token_ids must be a list"),
])
def test_sampling_params_refused(kwargs, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        SamplingParams(**kwargs)


def test_stop_token_ids_taken_from_any_iterable_of_integers():
    import numpy as np

    assert SamplingParams(stop_token_ids=(t for t in (3, np.int64(4)))).stop_token_ids == [3, 4]


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(kvcache_block_size=24), "power of two"),
    (dict(kvcache_block_size=0), "kvcache_block_size"),
    (dict(max_num_seqs=0), "max_num_seqs"),
    (dict(gpu_memory_utilization=1.5), "gpu_memory_utilization"),
    (dict(attention_backend="magic"), "attention_backend"),
    (dict(sampler="numpy"), "sampler"),
    (dict(dtype="int3"), "dtype"),
    (dict(enable_chunked_prefill=False, max_model_len=256, max_num_batched_tokens=128), "max_num_batched_tokens"),
    (dict(scheduling_policy="lifo"), "scheduling_policy must be one of ('fifo', 'sjf', 'ljf')"),
    (dict(scheduling_policy=3), "scheduling_policy must be one of"),
    (dict(enforce_eager="yes"), "enforce_eager must be True or False"),
    (dict(compile="no"), "compile must be True, False or None"),
    (dict(gpu_memory_utilization="0.9"), "gpu_memory_utilization"),
    (dict(seed="0"), "seed must be an integer"),
])
def test_config_refused(kwargs, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        EngineConfig(**kwargs)


def test_unknown_option_named():
    with pytest.raises(TypeError, match="max_batch"):
        EngineConfig.from_kwargs(None, max_batch=3)


def test_missing_path_and_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LLM(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        LLM(str(tmp_path))


def test_unknown_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    known = "supported: ['GemmaForCausalLM', 'LlamaForCausalLM', 'Qwen3ForCausalLM']"
    with pytest.raises(ValueError, match=f"unknown architecture 'GPT2LMHeadModel'; {re.escape(known)}"):
        LLM(str(tmp_path))


def test_kv_budget_too_small_names_the_knob(tiny_llama):
    with pytest.raises(ValueError, match="num_kvcache_blocks=3"):
        LLM(str(tiny_llama), max_model_len=128, num_kvcache_blocks=3)
    with pytest.raises(ValueError, match="kv_cache_memory_bytes=1000"):
        LLM(str(tiny_llama), max_model_len=128, kv_cache_memory_bytes=1000)


TRITON_ON_A_CPU = """
import sys
import torch
from nanoinfer import LLM, SamplingParams
params = SamplingParams(temperature=0.9, seed=3, max_tokens=4)
if sys.argv[2] == "compiled-first":  # a kernel module imported before the engine chose the interpreter
    import nanoinfer.fast.sampler_triton
try:
    with LLM(sys.argv[1], device="cpu", sampler="triton", max_model_len=64) as llm:
        print(llm.generate([[1, 2, 3]], params, use_tqdm=False)[0].token_ids)
except ValueError as error:
    print("ValueError:", error)
"""


@pytest.mark.parametrize("order", ["engine-first", "compiled-first"])
def test_triton_on_a_cpu_runs_in_the_interpreter(tiny_llama, order):
    """sampler='triton' on a CPU turns Triton's interpreter on by itself (a fresh process, without
    TRITON_INTERPRET); where a kernel module was already compiled for a GPU it says so, naming the knob, before
    any weight is loaded."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", TRITON_ON_A_CPU, str(tiny_llama), order], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    if order == "engine-first":
        assert done.stdout.startswith("[") and len(eval(done.stdout)) == 4, done.stdout
    else:
        assert "ValueError: sampler='triton' with device='cpu'" in done.stdout, done.stdout
        assert "TRITON_INTERPRET=1" in done.stdout, done.stdout


def test_max_model_len_beyond_model(tiny_llama):
    with pytest.raises(ValueError, match="max_model_len"):
        LLM(str(tiny_llama), max_model_len=100_000)


def test_bad_prompts_refused_before_any_work(llm):
    good = [1, 2, 3]
    cases = [
        ([good, []], "prompt 1 is empty"),
        ([good, list(range(128))], "prompt 1 has 128 tokens but max_model_len is 128"),
        ([good, [5, 100_000]], "outside the vocabulary"),
        (["text prompt"], "no tokenizer"),
        ([], "no prompts"),
    ]
    for prompts, fragment in cases:
        with pytest.raises(ValueError, match=fragment):
            llm.generate(prompts, use_tqdm=False)
        assert not llm.scheduler.has_unfinished(), "a request was queued before the error"
    with pytest.raises(ValueError, match="2 prompts but 3 SamplingParams"):
        llm.generate([good, good], [SamplingParams()] * 3, use_tqdm=False)
    bad_params = [
        ([SamplingParams(), {"temperature": 0}], r"sampling_params\[1\] must be a SamplingParams, got dict"),
        ({"temperature": 0}, "sampling_params must be a SamplingParams or a list of them"),
    ]
    for params, fragment in bad_params:
        with pytest.raises(TypeError, match=fragment):
            llm.generate([good, good], params, use_tqdm=False)
        assert not llm.scheduler.has_unfinished(), "a request was queued before the error"


def test_interrupted_generate_frees_every_block(llm):
    """An exception inside the loop (here from a hook) aborts all requests and releases their blocks."""
    def explode(event):
        if event.kind == "decode_step":
            raise KeyboardInterrupt

    unsubscribe = llm.events.subscribe(explode)
    try:
        with pytest.raises(KeyboardInterrupt):
            llm.generate([[1, 2, 3]] * 4, SamplingParams(max_tokens=20), use_tqdm=False)
    finally:
        unsubscribe()
    bm = llm.block_manager
    assert bm.num_free_blocks == bm.num_blocks and not llm.scheduler.has_unfinished()
    assert len(llm.generate([[1, 2, 3]], SamplingParams(max_tokens=4), use_tqdm=False)[0].token_ids) == 4


def test_an_error_inside_the_model_step_leaves_the_engine_usable(tiny_llama, monkeypatch):
    """A learner's op that raises inside a step's forward pass (one rank): generate raises that error, every
    KV block is freed, and the same engine generates again, reaching the reference tokens."""
    import exercises.phase5_models as learner

    from nanoinfer import use_exercises
    from nanoinfer.layers.layernorm import rms_norm

    calls = {"n": 0}

    def flaky_rms_norm(x, weight, eps, residual=None):
        calls["n"] += 1
        if calls["n"] == 20:  # a few steps in (five norms a step)
            raise RuntimeError("a learner's bug")
        return rms_norm(x, weight, eps, residual)

    monkeypatch.setattr(learner, "rms_norm", flaky_rms_norm)
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    expected = LLM(str(tiny_llama), num_kvcache_blocks=32).generate([[1, 2, 3]] * 2, params, use_tqdm=False)
    with use_exercises("5.1"):
        llm = LLM(str(tiny_llama), num_kvcache_blocks=32)
    with pytest.raises(RuntimeError, match="a learner's bug"):
        llm.generate([[1, 2, 3]] * 2, params, use_tqdm=False)
    bm = llm.block_manager
    assert bm.num_free_blocks == bm.num_blocks and not llm.scheduler.has_unfinished()
    again = llm.generate([[1, 2, 3]] * 2, params, use_tqdm=False)
    assert [o.token_ids for o in again] == [o.token_ids for o in expected]
