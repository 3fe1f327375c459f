"""The peer the benchmark compares with: transformers on the same weights and workload, in the same process.

``generate`` pads each batch to its longest request and runs it to the longest output; ``generate_batch``
(transformers' paged continuous batching, GPU) runs every request to the longest output of one config. Both
count the tokens they decoded (``generated``) beside the tokens the requests asked for (``requested``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from nanoinfer.tools.roofline import sync as _sync
from nanoinfer.tools.shapes import shape_config
from nanoinfer.tools.workloads import Workload


@dataclass
class Result:
    engine: str
    seconds: float
    requested_tokens: int  # tokens the requests asked for
    generated_tokens: int  # tokens the engine decoded (padding to the longest request included)
    num_requests: int

    @property
    def requested_per_s(self) -> float:
        return self.requested_tokens / self.seconds

    @property
    def generated_per_s(self) -> float:
        return self.generated_tokens / self.seconds


def hf_model(model_dir: str | None, shape: str | None, dtype: torch.dtype, device: torch.device, attn: str):
    from transformers import AutoModelForCausalLM

    if model_dir is not None:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=attn)
    else:  # a named shape: transformers' own random initialisation, same architecture and size
        config = shape_config(shape)
        config._attn_implementation = attn
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    return model.to(device).eval()


def run_transformers_generate(model, workload: Workload, batch_size: int, device: torch.device) -> Result:
    """transformers' padded ``generate``: ``batch_size`` requests at a time, left-padded, to the longest output."""

    def run_batch(prompts, max_new):
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)  # 0: padding
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        kwargs = dict(do_sample=workload.temperature > 0, pad_token_id=0)
        if workload.temperature > 0:
            kwargs.update(temperature=workload.temperature, top_k=0, top_p=1.0)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new, min_new_tokens=max_new, **kwargs)
        return out.shape[1] - width

    run_batch([[1, 2, 3]], 2)  # warm-up
    generated = 0
    _sync(device)
    t0 = time.perf_counter()
    for start in range(0, len(workload.prompts), batch_size):
        prompts = workload.prompts[start : start + batch_size]
        generated += run_batch(prompts, max(workload.output_lens[start : start + batch_size])) * len(prompts)
    _sync(device)
    return Result(f"transformers generate (batch {batch_size})", time.perf_counter() - t0,
                  workload.num_output_tokens, generated, len(workload.prompts))


def run_transformers_generate_batch(model, workload: Workload, device: torch.device) -> Result:
    """transformers' paged continuous batching (``generate_batch``): one config, so all run to the longest."""
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=max(workload.output_lens), min_new_tokens=max(workload.output_lens),
                              do_sample=workload.temperature > 0, temperature=workload.temperature or None,
                              top_k=0, top_p=1.0, eos_token_id=-1, pad_token_id=0)
    warm_up = GenerationConfig(max_new_tokens=2, eos_token_id=-1, pad_token_id=0)
    model.generate_batch(inputs=[[1, 2, 3]], generation_config=warm_up, progress_bar=False)
    _sync(device)
    t0 = time.perf_counter()
    outputs = model.generate_batch(inputs=workload.prompts, generation_config=config, progress_bar=False)
    _sync(device)
    seconds = time.perf_counter() - t0
    return Result("transformers generate_batch (paged)", seconds, workload.num_output_tokens,
                  sum(len(o.generated_tokens) for o in outputs.values()), len(workload.prompts))
