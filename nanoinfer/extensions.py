"""Extension points: the places where the engine runs a workbook exercise.

Each exercise has a reference implementation in ``solutions/`` and a learner's stub with the same module
and name in ``exercises/``. The engine never imports either directly: it asks ``implementation("6.1")``
and gets the solution, unless the learner has selected that exercise, in which case it gets their code.

Select exercises with the environment variable ``NANOINFER_EXERCISES="2.2,6.1"`` (or ``all``), or in a
notebook with ``with use_exercises("6.1"): llm = LLM(...)``. Components look their implementation up when
they are built, so build the engine inside the ``with`` block; it keeps that choice afterwards.
"""

from __future__ import annotations

import importlib
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator


@dataclass(frozen=True)
class Exercise:
    id: str
    module: str  # the same file name under solutions/ and exercises/
    names: tuple[str, ...]  # what the module must define
    title: str
    engine_hook: str = ""  # where the engine calls it, if it does

    @property
    def notebook(self) -> str:
        return f"notebooks/{int(self.id.split('.')[0]):02d}_*.ipynb"


EXERCISES: dict[str, Exercise] = {
    e.id: e
    for e in [
        Exercise("1.1", "phase1_lifecycle", ("TraceRecorder",), "a trace hook that records lifecycle events",
                 "LLMEngine.events.subscribe"),
        Exercise("1.2", "phase1_lifecycle", ("component_path",), "the ordered component path of a request"),
        Exercise("2.1", "phase2_scheduling", ("kv_blocks_needed", "kv_cache_bytes"), "KV blocks and bytes needed"),
        Exercise("2.2", "phase2_scheduling", ("ShortestJobFirst", "LongestJobFirst"), "scheduling policies",
                 "Scheduler (scheduling_policy='sjf' / 'ljf')"),
        Exercise("2.3", "phase2_scheduling", ("get_cache_stats",), "block-manager cache statistics",
                 "BlockManager.get_cache_stats"),
        Exercise("2.4", "phase2_scheduling", ("choose_preemption_victim",), "which running sequence to preempt",
                 "Scheduler._preempt_for"),
        Exercise("3.1", "phase3_gpu", ("naive_attention",), "attention that materialises the score matrix",
                 "attention_backend='naive'"),
        Exercise("3.2", "phase3_gpu", ("gumbel_max_sample",), "Gumbel-max sampling with temperatures",
                 "Sampler"),
        Exercise("3.3", "phase3_gpu", ("pick_cuda_graph",), "the captured graph for a batch size",
                 "CudaGraphRunner"),
        Exercise("3.4", "phase3_gpu", ("online_softmax_attention",), "attention with an online softmax over KV tiles"),
        Exercise("5.1", "phase5_models", ("rms_norm",), "fused RMSNorm with residual", "layers.layernorm.RMSNorm"),
        Exercise("5.2", "phase5_models", ("apply_rotary",), "rotary position embedding",
                 "layers.rotary_embedding.RotaryEmbedding"),
        Exercise("5.5", "phase5_models", ("unpermute_qk",), "undo GGUF's q/k row permutation", "convert"),
        Exercise("6.1", "phase6_optimizations", ("compute_block_hash",), "the chained block hash",
                 "BlockManager (prefix cache)"),
        Exercise("6.2", "phase6_optimizations", ("calculate_kv_cache_memory", "max_sequences_for_gpu"),
                 "the KV-cache memory calculator"),
    ]
}

_ENV_VAR = "NANOINFER_EXERCISES"
_local = threading.local()


def _from_env() -> frozenset[str]:
    raw = os.environ.get(_ENV_VAR, "").replace(" ", "")
    if not raw:
        return frozenset()
    if raw == "all":
        return frozenset(EXERCISES)
    ids = frozenset(raw.split(","))
    _check_ids(ids)
    return ids


def _check_ids(ids) -> None:
    unknown = sorted(set(ids) - set(EXERCISES))
    if unknown:
        raise ValueError(f"unknown exercise id(s) {unknown}; known: {sorted(EXERCISES, key=_sort_key)}")


def _sort_key(ex_id: str) -> tuple[int, int]:
    major, minor = ex_id.split(".")
    return int(major), int(minor)


def selected() -> frozenset[str]:
    """The exercises that currently run the learner's code instead of the solution."""
    override = getattr(_local, "override", None)
    return override if override is not None else _from_env()


@contextmanager
def use_exercises(*ids: str) -> Iterator[None]:
    """Run the learner's code for these exercises inside the block (on top of NANOINFER_EXERCISES)."""
    _check_ids(ids)
    previous = getattr(_local, "override", None)
    _local.override = frozenset(ids) | selected()
    try:
        yield
    finally:
        _local.override = previous


def select_exactly(ids) -> None:
    """Run the learner's code for exactly ``ids`` in this thread from now on, whatever NANOINFER_EXERCISES
    says: a tensor-parallel worker takes rank 0's selection this way."""
    _check_ids(ids)
    _local.override = frozenset(ids)


def implementation(ex_id: str, name: str | None = None) -> Any:
    """The object the engine should call for exercise ``ex_id`` (its first name unless ``name`` is given)."""
    exercise = EXERCISES[ex_id]
    name = name or exercise.names[0]
    if name not in exercise.names:
        raise KeyError(f"exercise {ex_id} defines {exercise.names}, not {name!r}")
    package = "exercises" if ex_id in selected() else "solutions"
    module = importlib.import_module(f"{package}.{exercise.module}")
    return getattr(module, name)


def solution(ex_id: str, name: str | None = None) -> Any:
    """The reference implementation of exercise ``ex_id``, whatever the learner has selected."""
    exercise = EXERCISES[ex_id]
    return getattr(importlib.import_module(f"solutions.{exercise.module}"), name or exercise.names[0])
