"""Turn the last position's logits into one token per sequence: temperature, top-k, top-p, then a
Gumbel-max draw whose noise comes from each request's own random stream when it has a seed."""

from __future__ import annotations

import torch

from nanoinfer.sampling_params import SamplingParams
from nanoinfer.workbook.registry import learner_code


def gumbel_max_sample(logits: torch.Tensor, temperatures: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One token per row of logits [B, V], at temperatures [B] (0: greedy), given noise [B, V] from Exp(1)
    (Exercise 3.2). argmax(p_i / E_i) picks token i with probability p_i, with no sort and no cumulative sum:
    one fused pass over the row."""
    greedy = temperatures == 0
    probs = torch.softmax(logits / torch.where(greedy, 1.0, temperatures).unsqueeze(1), dim=-1)
    return torch.where(greedy, logits.argmax(dim=-1), (probs / noise).argmax(dim=-1))


def apply_top_k_top_p(logits: torch.Tensor, temperatures: torch.Tensor, top_k: torch.Tensor,
                      top_p: torch.Tensor) -> torch.Tensor:
    """Set to -inf every logit outside its row's top-k and its top-p nucleus (measured after temperature).
    top_k: [B] int (the vocabulary size where off); top_p: [B] float (1.0 where off)."""
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


class Sampler:
    """Samples on rank 0 from the whole logits. A plan lets every tensor-parallel rank sample its own
    shard of the vocabulary instead (``plan``: None here; nanoinfer/fast/sampler_triton.py makes one)."""

    def __init__(self, device: torch.device, seed: int = 0) -> None:
        self.device = device
        self.sample = learner_code("3.2", gumbel_max_sample)
        self.generator = torch.Generator(device=device).manual_seed(seed)  # for rows without a seed

    def plan(self, params: list[SamplingParams], positions: list[int]):
        return None

    def __call__(self, logits: torch.Tensor, params: list[SamplingParams],
                 generators: list[torch.Generator | None], plan=None) -> torch.Tensor:
        if all(p.greedy for p in params):
            return logits.max(dim=-1).indices  # argmax's first-maximum rule, 2.5x faster on a CPU
        temperatures = self.per_row([p.temperature for p in params], torch.float32)
        logits = logits.float()
        if any(p.top_k > 0 or p.top_p < 1.0 for p in params):
            logits = self.cut(logits, temperatures, [p.top_k for p in params], [p.top_p for p in params])
        noise = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
        noise.exponential_(generator=self.generator)
        for i, g in enumerate(generators):
            if g is not None:  # a seeded request's own stream: its tokens do not depend on its batch
                noise[i].exponential_(generator=g)
        return self.sample(logits, temperatures, noise)

    def warm_up(self, model, hidden: torch.Tensor) -> None:
        """Sample ``hidden``'s rows with and without a top-p cut (the GPU's memory plan measures this)."""
        logits = model.compute_logits(hidden)
        for params in (SamplingParams(temperature=1.0, top_p=0.9), SamplingParams(temperature=1.0)):
            self(logits, [params] * len(hidden), [None] * len(hidden))

    def cut(self, logits: torch.Tensor, temperatures: torch.Tensor, top_k: list[int], top_p: list[float]):
        k = self.per_row([n if n > 0 else logits.shape[1] for n in top_k], torch.int64)
        return apply_top_k_top_p(logits, temperatures, k, self.per_row(top_p, torch.float32))

    def per_row(self, values: list, dtype: torch.dtype) -> torch.Tensor:
        """A small host list on the device without waiting for the GPU (through pinned memory): a copy
        from pageable memory would stall async scheduling until the running step ends."""
        t = torch.tensor(values, dtype=dtype)
        return t.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else t
