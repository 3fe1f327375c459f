"""Phase 7 — benchmarking and profiling. Your code for Exercises 7.1 to 7.3.

Check your work with ``make check EX=7.1`` (or ``python -m nanoinfer.check 7.1``).
The notebook: notebooks/07_benchmarking.ipynb.
"""

from __future__ import annotations

import pandas as pd  # noqa: F401


def run_suite(workloads: list, settings: list[dict], build, measure, progress: bool = True) -> pd.DataFrame:
    """Exercise 7.1: run every workload under every setting of the engine's knobs, as one table.

    For each ``setting`` (a dict of knobs, in order) build one engine with ``build(**setting)``, run every
    workload through it (in order) with ``measure(workload, llm)``, which returns a one-row DataFrame, and
    shut the engine down with ``llm.shutdown()`` when its workloads are done, also when a run raises (its KV
    cache and, with tensor parallelism, its worker processes must not outlive it). Return one DataFrame with a
    row per (setting, workload), settings outermost, the index 0..n-1, and each of the setting's knobs added as
    a column holding its value. ``progress``: show a progress bar over the runs (tqdm) when True.
    When selected, ``nanoinfer.bench.suite`` runs your function (nanoinfer/tools/bench.py).
    """
    raise NotImplementedError("Exercise 7.1: write run_suite(workloads, settings, build, measure)")


def classify_profile(profile: pd.DataFrame) -> dict:
    """Exercise 7.2: what bounds a profiled engine step.

    ``profile`` is a table from ``nanoinfer.tools.profiling.profile_workload``: index = operator category
    ("GEMM", "attention", ...) plus one host row named ``profile.attrs["host_row"]`` (the wall time that no
    kernel covered: Python, scheduling, launches); column ``ms_per_step``. ``profile.attrs`` also holds
    ``flops_per_step``, ``bytes_per_step`` (the step's work), ``bandwidth`` (bytes/s) and ``matmul_flops``
    (FLOP/s) measured on the machine. Return a dict:
    - "bound": "host" if the host row's time is greater than that of all operator categories together, else
      "device";
    - "resource": "memory" if bytes_per_step / bandwidth >= flops_per_step / matmul_flops, else "compute";
    - "top_operation": the operator category (never the host row) with the most ms_per_step; on a tie the
      one that comes first in the table.
    """
    raise NotImplementedError("Exercise 7.2: write classify_profile(profile)")


def pick_settings(sweep: pd.DataFrame, objective: str, maximize: bool = True, at_most: dict | None = None,
                  at_least: dict | None = None) -> pd.Series:
    """Exercise 7.3: pick the row of a sweep that best serves a goal.

    Among the rows where every bound holds (``row[column] <= at_most[column]`` and ``row[column] >=
    at_least[column]``; a NaN value meets no bound) and whose ``objective`` is not NaN, return the row
    (a Series, as ``sweep.loc[label]``) with the largest ``objective`` (the smallest if not ``maximize``),
    the first such row on a tie. Raise ValueError naming the bounds when no row qualifies, and ValueError
    naming the column when ``objective`` or a bounded column is not in the sweep.
    Example: the most tokens/s with p99 TTFT at most 500 ms:
    ``pick_settings(sweep, "generated_tok_s", at_most={"ttft_ms_p99": 500})``.
    """
    raise NotImplementedError("Exercise 7.3: write pick_settings(sweep, objective, ...)")
