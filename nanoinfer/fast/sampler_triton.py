"""Gumbel-max sampling as two Triton kernels: the GPU's fast path for ``layers/sampler.py``.

The reference (``gumbel_max_sample``) computes ``argmax(softmax(logits / T) / E)`` with E ~ Exp(1). Dividing
by E and taking a softmax do not move the argmax once logs are taken, so the same token is
``argmax(logits / T - log E)``: no softmax, one pass over the row. Compiled from torch, the reference runs one
program per row that walks the 150k-entry vocabulary four times (max, sum, sample, greedy); here each row is
cut into chunks that run side by side, each finds its best entry, and a second kernel picks the best chunk per
row. On an H200 at 256 rows: 447 us for the compiled reference (with its float32 copy of the logits), 88 us
here, launches included (record h200_sampler_seeded_vs_noise.json).

The engine uses the seeded variant: the kernel makes each entry's noise from a per-row seed and the entry's column
(a counter-based generator, Philox), instead of reading a [B, V] float32 tensor that a separate kernel wrote. As
an entry's noise depends only on its seed and column, tensor-parallel ranks can each sample their own shard of the
vocabulary and compare one winner per row (``TritonSampler.sample_shards``). Making the noise is most of the
kernel's work, so each Philox call serves four columns (it makes four numbers). In CUDA graphs on an H200 the
draw took 87 us at 136 rows and 161 at 256, against 107 and 199 with one column per call; at one row 5.8 us
against 4.9, as fewer programs share the row (h200_small_kernels.json).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from nanoinfer.fast import triton_interpreter  # noqa: F401  (a fix for Triton's CPU interpreter)
from nanoinfer.layers.sampler import Sampler
from nanoinfer.parallel.comm import all_gather_stacked
from nanoinfer.sampling_params import SamplingParams

CHUNK = 2048  # vocabulary entries per program


@triton.jit
def _seeded_exponential4(seed, quads):
    """Exp(1) noise for vocabulary columns 4q, 4q + 1, 4q + 2 and 4q + 3 of every q in ``quads``, for a row with
    this seed: E = -log(U), the four U of one Philox call at counter q (a call makes four numbers: one per column
    would throw three away). The one definition that the sampling kernel and the written-out noise share
    (U = 0: E = inf, never picked)."""
    u0, u1, u2, u3 = tl.rand4x(seed, quads)
    return -tl.log(u0), -tl.log(u1), -tl.log(u2), -tl.log(u3)


@triton.jit
def _lane_logits(logits_ptr, quads, lane: tl.constexpr, first_col, vocab):
    """This rank's columns 4q + lane (whole-vocabulary numbering) as local columns, which of them it holds, and
    their logits (float32, -inf where not held)."""
    cols = 4 * quads + lane - first_col
    held = (cols >= 0) & (cols < vocab)
    return cols, held, tl.load(logits_ptr + cols, mask=held, other=float("-inf")).to(tl.float32)


@triton.jit
def _lane_scores(x, noise_ptr, cols, held, t, e, SEEDED: tl.constexpr):
    """logits / T - log E for one lane: E from the seed's Philox numbers, or read from the written-out noise."""
    if not SEEDED:
        e = tl.load(noise_ptr + cols, mask=held, other=1.0)
    return x / t - tl.log(e)


@triton.jit
def _lane_first(x, cols, held, best, vocab):
    """The smallest local column of this lane whose score is ``best`` (vocab where none is)."""
    return tl.min(tl.where((x == best) & held, cols, vocab), axis=0)


@triton.jit
def _chunk_best_kernel(logits_ptr, noise_ptr, seed_ptr, temperature_ptr, best_ptr, index_ptr, vocab, first_col,
                       stride_logits, stride_noise, num_chunks, CHUNK: tl.constexpr, SEEDED: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # row * stride passes 2**31 for big batches of big vocabularies
    chunk = tl.program_id(1)
    # A chunk is CHUNK whole-vocabulary columns from a multiple of 4, taken as four lanes of strided columns:
    # lane k holds columns 4q + k, whose noise is the k-th number of the Philox call at counter q.
    quads = first_col // 4 + chunk * (CHUNK // 4) + tl.arange(0, CHUNK // 4)
    logits_ptr += row * stride_logits
    noise_ptr += row * stride_noise
    c0, h0, x0 = _lane_logits(logits_ptr, quads, 0, first_col, vocab)
    c1, h1, x1 = _lane_logits(logits_ptr, quads, 1, first_col, vocab)
    c2, h2, x2 = _lane_logits(logits_ptr, quads, 2, first_col, vocab)
    c3, h3, x3 = _lane_logits(logits_ptr, quads, 3, first_col, vocab)
    t = tl.load(temperature_ptr + row)
    if t > 0:  # temperature 0 is greedy: the plain argmax, no noise
        e0, e1, e2, e3 = x0, x1, x2, x3  # (placeholders where the noise is read from memory)
        if SEEDED:  # E = -log(U), U drawn from the row's seed and the column's place in the whole vocabulary
            e0, e1, e2, e3 = _seeded_exponential4(tl.load(seed_ptr + row), quads)
        x0 = _lane_scores(x0, noise_ptr, c0, h0, t, e0, SEEDED)
        x1 = _lane_scores(x1, noise_ptr, c1, h1, t, e1, SEEDED)
        x2 = _lane_scores(x2, noise_ptr, c2, h2, t, e2, SEEDED)
        x3 = _lane_scores(x3, noise_ptr, c3, h3, t, e3, SEEDED)
    best = tl.maximum(tl.maximum(tl.max(x0, axis=0), tl.max(x1, axis=0)),
                      tl.maximum(tl.max(x2, axis=0), tl.max(x3, axis=0)))
    # Ties go to the first index, as torch.argmax does; columns not held never win (index = vocab).
    index = tl.minimum(tl.minimum(_lane_first(x0, c0, h0, best, vocab), _lane_first(x1, c1, h1, best, vocab)),
                       tl.minimum(_lane_first(x2, c2, h2, best, vocab), _lane_first(x3, c3, h3, best, vocab)))
    tl.store(best_ptr + row * num_chunks + chunk, best)
    tl.store(index_ptr + row * num_chunks + chunk, index)


@triton.jit
def _pick_chunk_kernel(best_ptr, index_ptr, out_ptr, out_best_ptr, num_chunks, vocab, first_col,
                       BLOCK_C: tl.constexpr):
    row = tl.program_id(0)
    c = tl.arange(0, BLOCK_C)
    valid = c < num_chunks
    best = tl.load(best_ptr + row * num_chunks + c, mask=valid, other=float("-inf"))
    index = tl.load(index_ptr + row * num_chunks + c, mask=valid, other=vocab)
    top = tl.max(best, axis=0)
    # Chunks hold increasing columns, so the smallest index among the best chunks is the first maximum.
    first = tl.min(tl.where(valid & (best == top), index, vocab), axis=0)
    tl.store(out_ptr + row, first_col + tl.where(first < vocab, first, 0).to(tl.int64))  # a row of -inf picks 0
    tl.store(out_best_ptr + row, top)


def chunks_for(vocab: int, first_col: int) -> int:
    """Chunks over local columns [0, vocab) of a rank whose first column is ``first_col``: they start at the
    multiple of 4 at or below it, so that each holds whole Philox calls."""
    return triton.cdiv(vocab + first_col % 4, CHUNK)


def _sample(logits, temperatures, noise, seeds, first_col):
    rows, vocab = logits.shape
    assert logits.stride(1) == 1
    num_chunks = chunks_for(vocab, first_col)
    best = torch.empty(rows, num_chunks, dtype=torch.float32, device=logits.device)
    index = torch.empty(rows, num_chunks, dtype=torch.int32, device=logits.device)
    out = torch.empty(rows, dtype=torch.int64, device=logits.device)
    out_best = torch.empty(rows, dtype=torch.float32, device=logits.device)
    temperatures = temperatures.to(torch.float32).contiguous()
    seeded = seeds is not None
    _chunk_best_kernel[(rows, num_chunks)](
        logits, seeds if seeded else noise, seeds if seeded else noise, temperatures, best, index, vocab, first_col,
        logits.stride(0), 0 if seeded else noise.stride(0), num_chunks, CHUNK=CHUNK, SEEDED=seeded, num_warps=4)
    _pick_chunk_kernel[(rows,)](best, index, out, out_best, num_chunks, vocab, first_col,
                                BLOCK_C=triton.next_power_of_2(num_chunks))
    return out, out_best


def gumbel_max_sample_triton(logits: torch.Tensor, temperatures: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``gumbel_max_sample``'s contract: logits [B, V] (any float dtype), temperatures [B] (0 = greedy),
    noise [B, V] from Exp(1); returns [B] int64 token ids."""
    assert noise.stride(1) == 1 and noise.shape == logits.shape
    return _sample(logits, temperatures, noise, None, 0)[0]


def seeded_gumbel_max_triton(logits: torch.Tensor, temperatures: torch.Tensor, seeds: torch.Tensor,
                             first_col: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The same draw with the noise made in the kernel from ``seeds`` ([B] int64, one per row): a rank that
    holds vocabulary columns [first_col, first_col + V) draws its share of the same sample. Returns each row's
    winning token id (in the whole vocabulary) and its score, logits / T - log E (the logit where T == 0)."""
    return _sample(logits, temperatures, None, seeds.contiguous(), first_col)


@triton.jit
def _store_lane(out_ptr, quads, lane: tl.constexpr, e, first_col, vocab):
    cols = 4 * quads + lane - first_col
    tl.store(out_ptr + cols, e, mask=(cols >= 0) & (cols < vocab))


@triton.jit
def _seeded_noise_kernel(seed_ptr, out_ptr, vocab, first_col, CHUNK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    quads = first_col // 4 + tl.program_id(1) * (CHUNK // 4) + tl.arange(0, CHUNK // 4)
    e0, e1, e2, e3 = _seeded_exponential4(tl.load(seed_ptr + row), quads)
    out_ptr += row * vocab
    _store_lane(out_ptr, quads, 0, e0, first_col, vocab)
    _store_lane(out_ptr, quads, 1, e1, first_col, vocab)
    _store_lane(out_ptr, quads, 2, e2, first_col, vocab)
    _store_lane(out_ptr, quads, 3, e3, first_col, vocab)


def seeded_exponential_noise(seeds: torch.Tensor, vocab: int, first_col: int = 0) -> torch.Tensor:
    """The Exp(1) noise that ``seeded_gumbel_max_triton`` draws, written out ([B, vocab] float32): with it,
    the reference ``gumbel_max_sample`` picks the same tokens (the tests check this)."""
    out = torch.empty(seeds.shape[0], vocab, dtype=torch.float32, device=seeds.device)
    _seeded_noise_kernel[(seeds.shape[0], chunks_for(vocab, first_col))](seeds.contiguous(), out, vocab, first_col,
                                                                         CHUNK=CHUNK)
    return out


@dataclass
class SeededDraw:
    """One step's plan: each sampling row's temperature and noise seed, and its top-k / top-p cut. Plain
    lists, so that rank 0 can send them to the other tensor-parallel ranks with the step's inputs."""

    temperatures: list[float]
    seeds: list[int]
    top_k: list[int]  # -1: no cut
    top_p: list[float]  # 1.0: no cut

    @property
    def on_ranks(self) -> bool:
        """Each rank can draw from its own shard of the vocabulary: no row cuts (a cut needs whole rows)."""
        return all(k <= 0 for k in self.top_k) and all(p >= 1.0 for p in self.top_p)


def request_seed(seed: int, position: int) -> int:
    """The noise seed of a seeded request's token at ``position``, whatever the batch (splitmix64, 63 bits)."""
    z = (seed * 0x9E3779B97F4A7C15 + position + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) >> 1


class TritonSampler(Sampler):
    """The reference's draw with the noise made in the kernel from one seed per row (``SeededDraw``); with
    ``sample_shards``, 16 bytes a row travel between the ranks instead of a whole row of logits."""

    def __init__(self, device: torch.device, seed: int = 0) -> None:
        super().__init__(device, seed)
        self.seed_generator = torch.Generator().manual_seed(seed)  # the rows' seeds, drawn on the host

    def plan(self, params: list[SamplingParams], positions: list[int]) -> SeededDraw:
        """The draw for these rows, whose next tokens go at ``positions`` (seeded requests get their own seeds)."""
        seeds = torch.randint(0, 2**63 - 1, (len(params),), generator=self.seed_generator).tolist()
        seeds = [s if p.seed is None else request_seed(p.seed, pos) for s, p, pos in zip(seeds, params, positions)]
        return SeededDraw([p.temperature for p in params], seeds, [p.top_k for p in params],
                          [p.top_p for p in params])

    def draw_tensors(self, draw: SeededDraw) -> tuple[torch.Tensor, torch.Tensor]:
        return self.per_row(draw.temperatures, torch.float32), self.per_row(draw.seeds, torch.int64)

    def __call__(self, logits: torch.Tensor, params: list[SamplingParams], generators, plan=None) -> torch.Tensor:
        """Sample whole rows of logits by ``plan`` (rank 0: a step with a cut, or whose logits were kept)."""
        temperatures, seeds = self.draw_tensors(plan)
        if plan.on_ranks:  # (the kernel reads 16-bit logits as they are)
            return seeded_gumbel_max_triton(logits, temperatures, seeds)[0]
        # The cut needs whole rows; the noise written out is what the kernel would make, so a row without a
        # cut gets the token the shards would give it.
        logits = self.cut(logits.float(), temperatures, plan.top_k, plan.top_p)
        return gumbel_max_sample_triton(logits, temperatures, seeded_exponential_noise(seeds, logits.shape[1]))

    def sample_shards(self, lm_head, hidden: torch.Tensor, draw: SeededDraw) -> torch.Tensor:
        """Every rank: the token ids of ``hidden``'s rows, each rank drawing the winner of its own vocabulary
        rows of ``lm_head``. The same tokens on every rank, and the same as drawing from the joined logits."""
        temperatures, seeds = self.draw_tensors(draw)
        if lm_head.tp_size == 1:  # one rank: its winners are the tokens (four small kernels fewer per step)
            return draw_tokens(lm_head, hidden, temperatures, seeds)
        return best_offer(all_gather_stacked(offer(lm_head, hidden, temperatures, seeds)))

    def warm_up(self, model, hidden: torch.Tensor) -> None:
        logits = model.compute_logits(hidden)
        for params in (SamplingParams(temperature=1.0, top_p=0.9), SamplingParams(temperature=1.0)):
            plan = self.plan([params] * len(hidden), list(range(len(hidden))))
            self(logits, [params] * len(hidden), [None] * len(hidden), plan)
        self.sample_shards(model.lm_head, hidden, plan)


def draw_tokens(lm_head, hidden: torch.Tensor, temperatures: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """One rank's tokens for ``hidden``'s rows: the LM head's logits, then the seeded draw (also recorded in CUDA
    graphs: fast/cuda_graphs.py)."""
    return seeded_gumbel_max_triton(lm_head.op(hidden, lm_head.weight, None), temperatures, seeds)[0]


def offer(lm_head, hidden: torch.Tensor, temperatures: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """This rank's winner per row of ``hidden`` among its vocabulary rows of ``lm_head`` (a ParallelLMHead):
    float64 [2, rows] of (score, token id); token ids are exact in a float64, so one collective carries both."""
    own = max(0, min(lm_head.shard_size, lm_head.num_embeddings - lm_head.vocab_start))  # rows not padding
    if own == 0:  # a last shard of padding only offers nothing
        scores = torch.full((hidden.shape[0],), float("-inf"), dtype=torch.float64, device=hidden.device)
        return torch.stack([scores, torch.zeros_like(scores)])
    logits = lm_head.op(hidden, lm_head.weight, None)[:, :own]
    tokens, scores = seeded_gumbel_max_triton(logits, temperatures, seeds, first_col=lm_head.vocab_start)
    return torch.stack([scores.double(), tokens.double()])


def best_offer(offers: torch.Tensor) -> torch.Tensor:
    """The token of the best score among the ranks' offers ([ranks, 2, rows]); on a tie the lowest rank,
    which holds the lowest token id, as the draw over whole rows picks."""
    best_rank = offers[:, 0].argmax(dim=0)
    return offers[:, 1].gather(0, best_rank.unsqueeze(0)).squeeze(0).long()
