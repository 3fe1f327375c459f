"""Phase 3 — GPU execution. Your code for Exercises 3.1 to 3.5 (plain torch and pandas: it runs on a CPU too).

Check your work with ``make check EX=3.1`` (or ``python -m nanoinfer.check 3.1``). The notebook
``notebooks/03_gpu_execution.ipynb`` walks through each exercise and runs your code after its check passes.
"""

from __future__ import annotations

import bisect  # noqa: F401

import pandas as pd
import torch


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                    scale: float) -> torch.Tensor:
    """Exercise 3.1: attention written out, with the whole score matrix in memory.

    q: [B, H, Lq, D]; k, v: [B, Hkv, Lk, D], where H is a multiple of Hkv (grouped-query attention: query
    head h reads key/value head h // (H // Hkv)); mask: [B, 1, Lq, Lk] bool, True where a query may look.
    Return softmax(q k^T * scale, masked) v as [B, H, Lq, D] in q's dtype. Every query row has at least
    one True in the mask. Take the softmax in float32 whatever the input dtype.
    """
    raise NotImplementedError("Exercise 3.1: write naive_attention(q, k, v, mask, scale)")


def gumbel_max_sample(logits: torch.Tensor, temperatures: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Exercise 3.2: one token per row, drawn with the Gumbel-max trick from the noise you are given.

    logits: [B, V] float32; temperatures: [B] (0 means greedy); noise: [B, V], i.i.d. Exp(1).
    With p = softmax(logits / T), argmax(p / noise) is token i with probability p_i: no sort, no cumulative
    sum, one pass over the row. Rows with temperature 0 return argmax(logits) whatever the noise.
    Return a [B] integer tensor. The result is a function of the inputs only (no randomness of your own).
    """
    raise NotImplementedError("Exercise 3.2: write gumbel_max_sample(logits, temperatures, noise)")


def pick_cuda_graph(batch_size: int, captured_sizes: list[int]) -> tuple[int, int]:
    """Exercise 3.3: the captured decode graph to replay for ``batch_size`` sequences, and its waste.

    ``captured_sizes`` is sorted ascending without repeats. Return ``(size, padding)``: the smallest captured
    size that holds the batch and the number of padded slots it computes for nothing (size - batch_size).
    Raise ValueError when the batch is larger than every captured graph.
    """
    raise NotImplementedError("Exercise 3.3: write pick_cuda_graph(batch_size, captured_sizes)")


def online_softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                             scale: float, tile_size: int = 64) -> torch.Tensor:
    """Exercise 3.4: what ``naive_attention`` returns, but visiting the keys one tile at a time.

    Same shapes and mask as naive_attention. Never build a [.., Lq, Lk] score matrix: loop over tiles of
    ``tile_size`` keys and keep, per query row, the running maximum score m, the running sum
    l = sum(exp(s - m)) and the running output acc = sum(exp(s - m) v). When a tile raises the maximum,
    rescale l and acc by exp(m_old - m_new). Return acc / l in q's dtype. Careful with rows whose keys so
    far are all masked (m = -inf): exp(-inf - (-inf)) is NaN.
    """
    raise NotImplementedError("Exercise 3.4: write online_softmax_attention(q, k, v, mask, scale, tile_size)")


def performance_report(timeline: pd.DataFrame, by: str = "config") -> pd.DataFrame:
    """Exercise 3.5: the performance-report table (tokens/s, ms per token p50 and p99) from a step timeline.

    ``timeline`` is a pandas DataFrame with one row per engine step, as ``llm.step_timeline()`` returns it, for
    one or more runs stacked together; its column ``by`` names each row's configuration ("eager, batch 8", ...).
    Read three other columns: ``phase`` ("prefill" or "decode"), ``num_sampled`` (tokens the step produced) and
    ``seconds`` (the step's duration). Only decode steps count: a request's first token comes from its prefill.

    Return a DataFrame with one row per configuration, indexed by it (index name ``by``, in the order the
    configurations first appear), with the columns
      ``decode_steps``      the number of decode steps,
      ``tokens``            the tokens they produced (sum of num_sampled),
      ``tokens_per_s``      tokens / the sum of their seconds,
      ``ms_per_token_p50``, ``ms_per_token_p99``: percentiles of the time each token waited, in milliseconds. A
                            decode step gives each of its num_sampled sequences one token after ``seconds``, so
                            each step contributes its seconds num_sampled times. Interpolate linearly between
                            values (numpy.percentile's default).
    Raise ValueError naming the configuration if one has no decode step.
    """
    raise NotImplementedError("Exercise 3.5: write performance_report(timeline, by)")
