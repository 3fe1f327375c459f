"""Turn the last position's logits into one token per sequence: temperature, top-k, top-p, then a
Gumbel-max draw (Exercise 3.2) whose noise comes from each request's own random stream when it has a seed.
On a GPU the reference draw runs as Triton kernels (``sampler_triton.py``) that make their noise from one
seed per row (``SeededDraw``); a learner's own code, and top-k / top-p, run on a noise tensor as written."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nanoinfer.extensions import implementation, solution
from nanoinfer.sampling_params import SamplingParams


def apply_top_k_top_p(logits: torch.Tensor, temperatures: torch.Tensor, top_k: torch.Tensor,
                      top_p: torch.Tensor) -> torch.Tensor:
    """Set to -inf every logit outside its row's top-k and its top-p nucleus (measured after temperature).

    top_k: [B] int (vocabulary size where disabled); top_p: [B] float (1.0 where disabled).
    """
    scaled = logits / temperatures.clamp_min(1e-5).unsqueeze(1)
    sorted_logits, order = scaled.sort(dim=-1, descending=True)
    rank = torch.arange(logits.shape[1], device=logits.device).unsqueeze(0)
    drop = rank >= top_k.unsqueeze(1)
    probs = sorted_logits.softmax(dim=-1)
    # Drop a token when the tokens ranked before it already cover top_p (the first token always stays).
    # Only in rows that ask for it: a float32 cumsum can pass 1.0 and cut a top_p=1.0 row's tail.
    drop |= ((probs.cumsum(dim=-1) - probs) >= top_p.unsqueeze(1)) & (top_p < 1.0).unsqueeze(1)
    drop = drop.scatter(1, order, drop)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


@dataclass
class SeededDraw:
    """One step's plan for the seeded Triton draw: each sampling row's temperature and noise seed, and
    whether any row cuts its distribution (top-k / top-p: those need whole rows). Plain lists, so that
    rank 0 can send them to the other tensor-parallel ranks with the step's inputs."""

    temperatures: list[float]
    seeds: list[int]
    top_k: list[int]  # -1: no cut
    top_p: list[float]  # 1.0: no cut

    @property
    def cuts(self) -> bool:
        return any(k > 0 for k in self.top_k) or any(p < 1.0 for p in self.top_p)


def request_seed(seed: int, position: int) -> int:
    """A seeded request's noise seed for the token at ``position``: the same whatever else is in the batch
    (splitmix64 of the pair, kept to 63 bits)."""
    z = (seed * 0x9E3779B97F4A7C15 + position + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) >> 1


class Sampler:
    def __init__(self, device: torch.device, seed: int = 0, backend: str = "auto") -> None:
        self.device = device
        self.sample = implementation("3.2")
        # The reference's math in one pass over each row, split over many programs, its noise made in the
        # kernel (see sampler_triton.py). "auto" keeps it to GPUs: on a CPU it would run in an interpreter.
        wanted = backend == "triton" or (backend == "auto" and device.type == "cuda")
        self.fast_path = wanted and self.sample is solution("3.2")
        self.generator = torch.Generator(device=device)  # the noise tensor's, for rows without a seed
        self.generator.manual_seed(seed)
        self.seed_generator = torch.Generator().manual_seed(seed)  # the fast path's row seeds, on the host

    def plan(self, params: list[SamplingParams], positions: list[int]) -> SeededDraw | None:
        """On the fast path, the seeded draw for rows with these settings whose next tokens go at
        ``positions`` (a seeded request's rows get seeds of their own); None on the noise-tensor path."""
        if not self.fast_path:
            return None
        seeds = torch.randint(0, 2**63 - 1, (len(params),), generator=self.seed_generator).tolist()
        for row, (p, position) in enumerate(zip(params, positions)):
            if p.seed is not None:
                seeds[row] = request_seed(p.seed, position)
        return SeededDraw([p.temperature for p in params], seeds, [p.top_k for p in params],
                          [p.top_p for p in params])

    def draw_tensors(self, draw: SeededDraw) -> tuple[torch.Tensor, torch.Tensor]:
        """The plan's temperatures and seeds on the device."""
        return self._per_row(draw.temperatures, torch.float32), self._per_row(draw.seeds, torch.int64)

    def __call__(self, logits: torch.Tensor, params: list[SamplingParams],
                 generators: list[torch.Generator | None], draw: SeededDraw | None = None) -> torch.Tensor:
        """One token per row of ``logits``: by the seeded draw ``draw`` (the fast path), or from a noise
        tensor drawn from the engine's generator and the seeded requests' ``generators``."""
        if draw is not None:
            return self._sample_seeded(logits, draw)
        if all(p.greedy for p in params):
            # same first-maximum rule as argmax (2.5x faster on a CPU), exact in any float dtype
            return logits.max(dim=-1).indices
        temperatures = self._per_row([p.temperature for p in params], torch.float32)
        logits = logits.float()
        if any(p.top_k > 0 or p.top_p < 1.0 for p in params):
            logits = self._cut(logits, temperatures, [p.top_k for p in params], [p.top_p for p in params])
        noise = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
        noise.exponential_(generator=self.generator)
        for i, g in enumerate(generators):
            if g is not None:
                noise[i].exponential_(generator=g)
        return self.sample(logits, temperatures, noise)

    def _sample_seeded(self, logits: torch.Tensor, draw: SeededDraw) -> torch.Tensor:
        from nanoinfer.layers.sampler_triton import (gumbel_max_sample_triton, seeded_exponential_noise,
                                                     seeded_gumbel_max_triton)

        temperatures, seeds = self.draw_tensors(draw)
        if not draw.cuts:  # (the kernel reads 16-bit logits as they are)
            return seeded_gumbel_max_triton(logits, temperatures, seeds)[0]
        # The cut needs whole rows; the noise written out is what the kernel would make, so a row without
        # a cut gets the token the shards would give it.
        logits = self._cut(logits.float(), temperatures, draw.top_k, draw.top_p)
        return gumbel_max_sample_triton(logits, temperatures, seeded_exponential_noise(seeds, logits.shape[1]))

    def _cut(self, logits: torch.Tensor, temperatures: torch.Tensor, top_k: list[int], top_p: list[float]):
        vocab = logits.shape[1]
        k = self._per_row([n if n > 0 else vocab for n in top_k], torch.int64)
        return apply_top_k_top_p(logits, temperatures, k, self._per_row(top_p, torch.float32))

    def _per_row(self, values: list, dtype: torch.dtype) -> torch.Tensor:
        """A small host list on the device without waiting for the GPU: a plain copy from pageable
        memory would synchronise, and stall async scheduling until the current step finishes."""
        t = torch.tensor(values, dtype=dtype)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t
