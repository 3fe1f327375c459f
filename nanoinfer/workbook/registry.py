"""The workbook's exercises, and the hooks where the engine runs a learner's code instead of its own. The engine
never imports ``solutions/``: at each hook it asks ``learner_code("6.1", compute_block_hash)`` and gets its own
function back, unless Exercise 6.1 is selected, then the learner's from ``exercises/phase6_optimizations.py``.

Select exercises in a notebook cell with ``with use_exercises("6.1"): llm = LLM(...)`` (components look
their code up when they are built, so build inside the block; the engine keeps that code afterwards), or
for a whole script with ``NANOINFER_EXERCISES="2.2,6.1"`` (or ``all``). ``select_exercises()`` pins the
selection for the process whatever that variable says: each notebook calls it once at the top, so that
its reference cells run the reference and only the cells after a check run the learner's code. The
selection is the process's, not a thread's: a notebook's cells, whichever thread runs them, share it.
"""

from __future__ import annotations

import importlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

SELECTION_ENV = "NANOINFER_EXERCISES"


@dataclass(frozen=True)
class Exercise:
    id: str
    module: str  # the same file name under exercises/ and solutions/
    names: tuple[str, ...]  # what the module must define
    title: str
    hook: str = ""  # the engine file that runs the learner's code when selected ("" for analysis exercises)


EXERCISES: dict[str, Exercise] = {e.id: e for e in [
    Exercise("1.1", "phase1_lifecycle", ("TraceRecorder",), "a trace hook that records lifecycle events"),
    Exercise("1.2", "phase1_lifecycle", ("component_path",), "the ordered component path of a request"),
    Exercise("2.1", "phase2_scheduling", ("kv_blocks_needed", "kv_cache_bytes"), "KV blocks and bytes needed"),
    Exercise("2.2", "phase2_scheduling", ("ShortestJobFirst", "LongestJobFirst"), "scheduling policies",
             "nanoinfer/engine/policies.py"),
    Exercise("2.3", "phase2_scheduling", ("get_cache_stats",), "block-manager cache statistics",
             "nanoinfer/engine/block_manager.py"),
    Exercise("2.4", "phase2_scheduling", ("choose_preemption_victim",), "which running sequence to preempt",
             "nanoinfer/engine/scheduler.py"),
    Exercise("3.1", "phase3_gpu", ("naive_attention",), "attention that materialises the score matrix",
             "nanoinfer/attention/torch_backend.py"),
    Exercise("3.2", "phase3_gpu", ("gumbel_max_sample",), "Gumbel-max sampling with temperatures",
             "nanoinfer/layers/sampler.py"),
    Exercise("3.3", "phase3_gpu", ("pick_cuda_graph",), "the captured graph for a batch size",
             "nanoinfer/fast/cuda_graphs.py"),
    Exercise("3.4", "phase3_gpu", ("online_softmax_attention",), "attention with an online softmax over KV tiles"),
    Exercise("3.5", "phase3_gpu", ("performance_report",), "the performance-report table from a step timeline"),
    Exercise("4.1", "phase4_parallel", ("shard_weight",), "shard a weight for column and row parallelism",
             "nanoinfer/layers/linear.py"),
    Exercise("4.2", "phase4_parallel", ("row_parallel_linear", "CustomParallelLinear"),
             "a column-parallel then row-parallel pair with one all-reduce", "nanoinfer/layers/linear.py"),
    Exercise("4.3", "phase4_parallel", ("comm_bytes_per_token",), "bytes all-reduced and gathered per token"),
    Exercise("5.1", "phase5_models", ("rms_norm",), "fused RMSNorm with residual", "nanoinfer/layers/layernorm.py"),
    Exercise("5.2", "phase5_models", ("apply_rotary",), "rotary position embedding",
             "nanoinfer/layers/rotary_embedding.py"),
    Exercise("5.3", "phase5_models", ("GemmaForCausalLM",), "a new model family: Gemma (first generation)",
             "nanoinfer/models/__init__.py"),
    Exercise("5.4", "phase5_models", ("fused_bias_gelu", "bias_gelu_bytes"),
             "a fused bias + GELU op, and its memory traffic"),
    Exercise("5.5", "phase5_models", ("unpermute_qk",), "undo GGUF's q/k row permutation",
             "nanoinfer/tools/convert.py"),
    Exercise("6.1", "phase6_optimizations", ("compute_block_hash",), "the chained block hash",
             "nanoinfer/engine/block_manager.py"),
    Exercise("6.2", "phase6_optimizations", ("calculate_kv_cache_memory", "max_sequences_for_gpu"),
             "the KV-cache memory calculator"),
    Exercise("6.3", "phase6_optimizations", ("predicted_hit_rate",), "a workload's prefix-cache hit rate, predicted"),
    Exercise("7.1", "phase7_benchmarking", ("run_suite",), "the benchmark-suite runner returning a DataFrame",
             "nanoinfer/tools/bench.py"),
    Exercise("7.2", "phase7_benchmarking", ("classify_profile",),
             "a profile classified: host- or device-bound, memory- or compute-bound, top operation"),
    Exercise("7.3", "phase7_benchmarking", ("pick_settings",), "settings picked from a sweep for a goal"),
    Exercise("8.1", "phase8_speculative", ("rejection_sample",),
             "speculative sampling's accept/reject step for a batch", "nanoinfer/speculative/speculator.py"),
    Exercise("8.2", "phase8_quantization", ("quantize_per_channel", "dequantize"),
             "per-channel int8 quantize and dequantize of a weight, within half a step", "nanoinfer/quantization.py"),
    Exercise("8.3", "phase8_serving", ("arrival_times", "simulate_arrivals"),
             "Poisson arrivals driving the engine's step loop, and the latencies they see",
             "nanoinfer/serving/loadgen.py"),
]}

_pinned: frozenset[str] | None = None  # set by select_exercises / use_exercises; None: follow the variable


def sort_key(ex_id: str) -> tuple[int, int]:
    major, minor = ex_id.split(".")
    return int(major), int(minor)


def check_ids(ids) -> list[str]:
    """The ids, known and in order; raises ValueError naming an unknown one."""
    unknown = sorted(set(ids) - set(EXERCISES))
    if unknown:
        raise ValueError(f"unknown exercise id(s) {unknown}; known: {', '.join(sorted(EXERCISES, key=sort_key))}")
    return sorted(set(ids), key=sort_key)


def selected() -> frozenset[str]:
    """The exercises whose learner code the engine runs now."""
    if _pinned is not None:
        return _pinned
    raw = os.environ.get(SELECTION_ENV, "").replace(" ", "")
    if raw == "all":
        return frozenset(EXERCISES)
    return frozenset(check_ids(raw.split(","))) if raw else frozenset()


def select_exercises(*ids: str) -> None:
    """From now on run the learner's code for exactly these exercises (none: the reference everywhere),
    whatever NANOINFER_EXERCISES says. Tensor-parallel workers take rank 0's selection this way."""
    global _pinned
    _pinned = frozenset(check_ids(ids))


@contextmanager
def use_exercises(*ids: str) -> Iterator[None]:
    """Add these exercises to the selection inside the block: engines built there run the learner's code."""
    global _pinned
    previous = _pinned
    _pinned = selected() | frozenset(check_ids(ids))
    try:
        yield
    finally:
        _pinned = previous


def learner_code(ex_id: str, reference):
    """What the engine runs at exercise ``ex_id``'s hook: ``reference`` (the engine's own function or class),
    or, when the exercise is selected, the learner's object of the same name."""
    if ex_id not in selected():
        return reference
    name = reference.__name__
    assert name in EXERCISES[ex_id].names, f"exercise {ex_id} defines {EXERCISES[ex_id].names}, not {name}"
    return getattr(importlib.import_module(f"exercises.{EXERCISES[ex_id].module}"), name)
