"""Int8 weight-only quantization (nanoinfer/quantization.py): the knob is checked before any work, the kernels
match the float32 product with the dequantized weight on fresh random inputs, the linear layers' weights take
at most 55% of bfloat16's bytes (30% of float32's), next-token logits stay close to the unquantized model's and
greedy decoding mostly agrees with it (numbers printed), two tensor-parallel ranks give one rank's result, and
no KV block leaks."""

from __future__ import annotations

import importlib
import importlib.util
import multiprocessing
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import assert_no_leaks, generate_with_logits, relative_error
from nanoinfer import LLM, SamplingParams, use_exercises
from nanoinfer.layers.linear import LinearBase
from nanoinfer.quantization import (compare_to_unquantized, dequantize, int8_linear, int8_linear_reference,
                                    linear_weight_bytes, quantize_per_channel)

GREEDY = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
KNOBS = dict(max_model_len=256, num_kvcache_blocks=64)
# tolerances: the next-token logits' relative error to the unquantized model (||a - b|| / ||b||), stated per model
LOGITS_TOLERANCE = {"qwen3": 0.05, "llama": 0.05, "smollm2": 0.08}


def test_unknown_quantization_refused_before_any_work():
    """A bad value is named before the model is even looked for (the path does not exist)."""
    for bad in ("int4", "INT8", True):
        with pytest.raises(ValueError, match=r"quantization must be one of \(None, 'int8'\), got"):
            LLM("/no/such/model", quantization=bad)


def test_wrong_quantizers_fail_the_exercise_check():
    """The rules Exercise 8.2 is checked against reject a per-tensor scale, the asymmetric 8-bit range and
    truncation, each with a message saying what was expected; the engine's quantizer passes them."""
    ex = importlib.import_module("exercise_checks.test_ex8_2")
    w = ex.random_weight(3, 16, 64, torch.float32)
    q, scale = quantize_per_channel(w)
    ex.check_quantization(w, q, scale, dequantize(q, scale))
    for wrong, message in ((ex.per_tensor, r"expected scale = max\|row\| / 127"),
                           (ex.asymmetric_range, r"must lie in \[-127, 127\]|expected scale ="),
                           (ex.truncating, "expected an error of at most scale / 2")):
        q, scale = wrong(w)
        with pytest.raises(AssertionError, match=message):
            ex.check_quantization(w, q, scale, q.float() * scale[:, None])


def float32_reference(x, q, scale, bias):
    """The product with the dequantized weight, in float64."""
    y = x.double() @ dequantize(q, scale).double().T
    return y if bias is None else y + bias.double()


@settings(max_examples=20, deadline=None, database=None)
@given(st.integers(0, 2**31), st.sampled_from([1, 2, 3, 7, 33]), st.integers(1, 96), st.integers(1, 200),
       st.booleans())
def test_cpu_kernels_match_the_float32_reference(seed, rows, out_features, in_features, bias):
    """On a CPU: int8_linear (the C kernel up to 32 rows, then the fallback), the C kernel itself, the fallback
    itself and torch's int8 kernel for one row (used where no C compiler is found)."""
    from nanoinfer.fast.int8_matmul_cpu import int8_matmul_cpu, load_int8_kernel

    g = torch.Generator().manual_seed(seed)
    q, scale = quantize_per_channel(torch.randn(out_features, in_features, generator=g))
    x = torch.randn(rows, in_features, generator=g)
    b = torch.randn(out_features, generator=g) if bias else None
    want = float32_reference(x, q, scale, b)
    results = [int8_linear(x, q, b, scale=scale), int8_linear_reference(x, q, b, scale)]
    if load_int8_kernel() is not None:
        results.append(int8_matmul_cpu(x, q, scale, b))
    if rows == 1:
        results.append(torch._weight_int8pack_mm(x, q, scale) + (0 if b is None else b))
    for got in results:
        assert got.dtype == torch.float32 and got.shape == want.shape
        assert relative_error(got, want) < 1e-5, (rows, out_features, in_features)


@pytest.mark.parametrize("rows", [1, 3, 5, 40])
def test_triton_kernel_matches_the_float32_reference(rows):
    """fast/int8_matmul_triton.py, both of its kernels (matrix-vector up to GEMV_MAX_ROWS rows, tiles above), on
    odd shapes; in Triton's interpreter without a GPU (float32 and float16; bfloat16 on a GPU)."""
    from nanoinfer.fast.int8_matmul_triton import int8_matmul

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtypes = (torch.float32, torch.bfloat16 if device == "cuda" else torch.float16)
    for seed, dtype in enumerate(dtypes):
        g = torch.Generator().manual_seed(seed + 10 * rows)
        out_features, in_features = (72, 200) if device == "cpu" else (1000, 1536)
        q, scale = quantize_per_channel(torch.randn(out_features, in_features, generator=g))
        x = torch.randn(rows, in_features, generator=g).to(dtype)
        b = torch.randn(out_features, generator=g).to(dtype)
        want = float32_reference(x, q, scale, b)
        got = int8_matmul(x.to(device), q.to(device), scale.to(device), b.to(device)).cpu()
        assert got.dtype == dtype
        # float32: exact products; 16-bit: the output rounded to 8 (bfloat16) or 11 (float16) bits, products of
        # 16-bit activations by small integers exact, sums in float32
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        assert relative_error(got, want) < tol, (rows, dtype)


def linear_layers(llm):
    return [m for m in llm.engine.model_runner.model.modules() if isinstance(m, LinearBase)]


@pytest.mark.parametrize("name", ["qwen3", "llama"])
def test_tiny_models(name, reference):
    """Weights at most 30% of float32's and 55% of bfloat16's (counted from the layers' tensors); next-token
    logits within the stated tolerance of the unquantized model; every linear layer int8, the embeddings
    and the LM head not; the report says so; no KV block leaks."""
    ref = reference(name)
    full, int8 = LLM(str(ref.path), **KNOBS), LLM(str(ref.path), quantization="int8", **KNOBS)
    bf16 = LLM(str(ref.path), dtype="bfloat16", **KNOBS)
    f32_bytes, bf16_bytes = (linear_weight_bytes(llm.engine.model_runner.model) for llm in (full, bf16))
    int8_bytes = linear_weight_bytes(int8.engine.model_runner.model)
    print(f"{name}: linear weights {int8_bytes} bytes int8, {bf16_bytes} bfloat16, {f32_bytes} float32 "
          f"({int8_bytes / bf16_bytes:.1%}, {int8_bytes / f32_bytes:.1%})")
    assert int8_bytes <= 0.55 * bf16_bytes and int8_bytes <= 0.30 * f32_bytes
    model = int8.engine.model_runner.model
    assert all(m.weight.dtype == torch.int8 for m in linear_layers(int8))
    assert model.lm_head.weight.dtype == torch.float32 and model.model.embed_tokens.weight.dtype == torch.float32
    report = int8.fast_paths().set_index("name")
    assert report.loc["int8 weights", "applied"] == f"F.linear in {len(linear_layers(int8))} linear layers"
    assert report.loc["packed CPU weights", "applied"] == "F.linear in 1 layers"  # the LM head only

    stats = compare_to_unquantized(full, int8, ref.prompts, max_tokens=16)
    print(f"{name}: {stats}")
    assert stats["logits_rel_error_max"] < LOGITS_TOLERANCE[name]
    assert stats["first_token_agreement"] >= 0.75
    for llm in (full, int8):
        assert_no_leaks(llm)


def test_default_model(smollm2):
    """SmolLM2-135M: next-token logits within 8% of float32's; the first token agrees on every prompt and the
    greedy continuations agree for at least 60% of their length on average (measured ~78% over 32 tokens)."""
    spec = importlib.util.spec_from_file_location("tests_conftest", Path(__file__).with_name("conftest.py"))
    conftest = importlib.util.module_from_spec(spec)  # (by path: tests/exercise_checks has a conftest too)
    spec.loader.exec_module(conftest)
    SMOLLM2_TEXTS = conftest.SMOLLM2_TEXTS
    full = LLM(str(smollm2), max_model_len=256)
    int8 = LLM(str(smollm2), max_model_len=256, quantization="int8")
    prompts = [full.tokenizer.encode(t) for t in SMOLLM2_TEXTS]
    full_bytes, int8_bytes = (linear_weight_bytes(llm.engine.model_runner.model) for llm in (full, int8))
    assert int8_bytes <= 0.30 * full_bytes and int8_bytes <= 0.55 * full_bytes / 2  # (bfloat16: half of float32)
    stats = compare_to_unquantized(full, int8, prompts, max_tokens=24)
    print(f"smollm2: {stats}")
    assert stats["logits_rel_error_max"] < LOGITS_TOLERANCE["smollm2"]
    assert stats["first_token_agreement"] == 1.0 and stats["greedy_agreement"] >= 0.6
    for llm in (full, int8):
        assert_no_leaks(llm)


def test_tensor_parallel_equals_one_rank(tiny_qwen3):
    """TP=2 (gloo) quantizes each rank's shard; a row-parallel shard takes its whole row's scale, so the two
    ranks hold exactly one rank's int8 weights: the same tokens, logits equal up to the sum's order."""
    prompts = [[1, 2, 3, 4], [9, 8, 7], list(range(40))]
    with LLM(str(tiny_qwen3), tensor_parallel_size=2, quantization="int8", **KNOBS) as llm:
        tokens, logits = generate_with_logits(llm, prompts, GREEDY)
        assert_no_leaks(llm)
    one = LLM(str(tiny_qwen3), quantization="int8", **KNOBS)
    tokens_one, logits_one = generate_with_logits(one, prompts, GREEDY)
    assert tokens == tokens_one
    for i, rows in logits_one.items():
        for a, b in zip(logits[i], rows):
            assert relative_error(a, b) < 1e-5
    deadline = time.time() + 10
    while multiprocessing.active_children() and time.time() < deadline:
        time.sleep(0.1)
    assert not multiprocessing.active_children(), "worker processes were left behind"


def test_with_exercise_4_2_selected(tiny_llama, monkeypatch):
    """The learner's row_parallel_linear multiplies with F.linear as written: the o and down projections keep
    their weights in the model's dtype, the others are int8, and the report says why."""
    from nanoinfer.layers.linear import row_parallel_linear

    monkeypatch.delenv("NANOINFER_EXERCISES", raising=False)
    monkeypatch.setattr(importlib.import_module("exercises.phase4_parallel"), "row_parallel_linear",
                        lambda x, weight, bias, all_reduce, linear=None: row_parallel_linear(x, weight, bias, all_reduce))
    with use_exercises("4.2"):
        llm = LLM(str(tiny_llama), quantization="int8", **KNOBS)
    kinds = {type(m).__name__: m.weight.dtype for m in linear_layers(llm)}
    assert kinds["RowParallelLinear"] == torch.float32 and kinds["QKVParallelLinear"] == torch.int8
    assert "Exercise 4.2 selected" in llm.fast_paths().set_index("name").loc["int8 weights", "reason"]
    llm.generate([[1, 2, 3]], GREEDY, use_tqdm=False)
    assert_no_leaks(llm)


@pytest.mark.gpu
def test_gpu_engine_with_cuda_graphs(tiny_qwen3):
    """On a GPU in bfloat16 with CUDA graphs: the int8 engine's layers run the Triton kernel (captured in the
    graphs), its next-token logits stay within the tiny model's tolerance of the bfloat16 engine's (in float32
    arithmetic, its error to the float32 CPU engine is the same quantization error), and no KV block leaks."""
    knobs = dict(KNOBS, device="cuda", dtype="bfloat16")
    full, int8 = LLM(str(tiny_qwen3), **knobs), LLM(str(tiny_qwen3), quantization="int8", **knobs)
    report = int8.fast_paths().set_index("name")
    assert report.loc["CUDA graphs", "applied"] and report.loc["int8 weights", "applied"]
    prompts = [[1, 2, 3, 4], [9, 8, 7], list(range(40)), [5] * 70]
    stats = compare_to_unquantized(full, int8, prompts, max_tokens=16)
    print(f"qwen3 on the GPU: {stats}")
    assert stats["logits_rel_error_max"] < LOGITS_TOLERANCE["qwen3"] + 0.02  # (+ bfloat16's own rounding)
    for llm in (full, int8):
        assert_no_leaks(llm)
