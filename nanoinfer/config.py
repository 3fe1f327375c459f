"""Engine configuration: every knob, and every check on it, made before any work starts."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, fields
from typing import Any

import torch

from nanoinfer.parallel.comm import tp_size
from nanoinfer.speculative.config import check_draft_fits, check_speculative_config

ATTENTION_BACKENDS = ("auto", "cpu", "torch", "naive", "triton", "flash_attn")
SAMPLERS = ("auto", "torch", "triton")
SCHEDULING_POLICIES = ("fifo", "sjf", "ljf")  # engine/policies.py; a SchedulingPolicy object also works
ALL_REDUCES = ("auto", "nccl", "peer-copy", "peer-oneshot")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")
QUANTIZATIONS = (None, "int8")  # weight-only int8 (nanoinfer/quantization.py)
CPU_KV_CACHE_BYTES = 1 << 30  # the KV budget on a CPU unless a knob sets one


@dataclass
class EngineConfig:
    """Knobs of one engine, named as in nano-vllm and vLLM. ``LLM(model, **knobs)`` takes them all."""

    model: str | None = None  # a Hugging Face directory or a named shape (tools/shapes.py); None: SmolLM2-135M
    max_num_batched_tokens: int = 16384  # tokens one step may feed (prefill chunks included)
    max_num_seqs: int = 512  # sequences one step may hold
    max_model_len: int | None = None  # prompt + output; default: the model's limit, capped at 4096
    kvcache_block_size: int = 16  # tokens per KV block, a power of two (flash_attn: a multiple of 256)
    num_kvcache_blocks: int | None = None  # fix the KV budget in blocks
    kv_cache_memory_bytes: int | None = None  # fix the KV budget in bytes (on a CPU the default is 1 GiB)
    gpu_memory_utilization: float = 0.9  # GPU: share of the card for weights + peak activations + KV cache
    enable_prefix_caching: bool = True  # reuse the KV blocks of prompt prefixes seen before
    enable_chunked_prefill: bool = True  # cut prompts longer than the step's token budget into chunks
    scheduling_policy: Any = "fifo"  # admission order: "fifo", "sjf", "ljf" or a SchedulingPolicy object
    attention_backend: str = "auto"  # see ATTENTION_BACKENDS; auto: cpu (C) or torch on CPUs, flash_attn or triton on GPUs
    async_scheduling: bool | None = None  # schedule step N+1 while step N runs; default: on for CUDA
    enforce_eager: bool = False  # True: no CUDA graphs
    cuda_graph_max_batch_size: int | None = None  # largest captured decode batch; default: max_num_seqs (x (1+k) with drafts), <=512
    compile: bool | None = None  # torch.compile RMSNorm, rotary, SiLU-and-mul, sampling; default: on for CUDA
    fused_attention_prologue: bool = True  # CUDA + triton: q/k norms, rotary, KV write as one kernel per layer
    skinny_matmuls: bool = True  # CUDA, one rank: batch-1 decode steps' linears through Triton kernels
    cpu_small_ops: bool = True  # CPU float32: RMSNorm, rotary, SiLU-and-mul as C loops (fast/small_ops_cpu.c)
    pack_cpu_weights: bool = True  # CPU float32: matmuls on oneDNN-packed weight copies (twice the weight memory)
    quantization: str | None = None  # "int8": linear weights as int8 rows with a scale each (nanoinfer/quantization.py)
    sampler: str = "auto"  # "torch": Gumbel-max on a noise tensor; "triton": seeded kernel; auto: triton on CUDA
    tensor_parallel_size: int = 1  # processes that split every layer (gloo on CPUs, NCCL on GPUs)
    all_reduce: str = "auto"  # GPU TP: small sums through peer memory where it works (auto), or "nccl"
    measure_communication: bool = False  # time each collective (synchronises the GPU around it)
    dtype: str = "auto"  # float32 on a CPU, bfloat16 on a GPU
    device: str = "auto"  # cuda when available
    seed: int = 0  # seeds the requests that have no seed of their own
    record_block_events: bool = False  # keep a log of every block allocation, hit and free
    speculative_config: dict | None = None  # speculative decoding, as vLLM's (nanoinfer/speculative/config.py)

    def __post_init__(self) -> None:
        for name in ("max_num_batched_tokens", "max_num_seqs", "tensor_parallel_size", "kvcache_block_size"):
            _positive_int(self, name)
        for name in ("max_model_len", "num_kvcache_blocks", "kv_cache_memory_bytes", "cuda_graph_max_batch_size"):
            if getattr(self, name) is not None:
                _positive_int(self, name)
        bs = self.kvcache_block_size
        if bs & (bs - 1):
            raise ValueError(f"kvcache_block_size must be a power of two (such as 16, or 256 for flash_attn), got {bs}")
        for name in ("enforce_eager", "enable_prefix_caching", "enable_chunked_prefill", "fused_attention_prologue",
                     "skinny_matmuls", "cpu_small_ops", "pack_cpu_weights", "record_block_events", "measure_communication"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("async_scheduling", "compile"):
            if getattr(self, name) not in (None, True, False):
                raise ValueError(f"{name} must be True, False or None (the device's default), got {getattr(self, name)!r}")
        for name, choices in (("attention_backend", ATTENTION_BACKENDS), ("sampler", SAMPLERS),
                              ("all_reduce", ALL_REDUCES), ("dtype", DTYPES), ("device", DEVICES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}")
        policy = self.scheduling_policy
        if policy not in SCHEDULING_POLICIES and (isinstance(policy, str) or not callable(getattr(policy, "priority", None))):
            raise ValueError(f"scheduling_policy must be one of {SCHEDULING_POLICIES} or a SchedulingPolicy "
                             f"instance, got {policy!r}")
        u = self.gpu_memory_utilization
        if isinstance(u, bool) or not isinstance(u, (int, float)) or not 0.0 < u <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {u!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        self._check_chunking()
        if self.speculative_config is not None:
            self.speculative_config = check_speculative_config(self.speculative_config)
            if self.async_scheduling:  # drafting reads the accepted tokens on the host
                raise ValueError("speculative_config does not work with async_scheduling=True")
            if self.tensor_parallel_size > 1 and self.speculative_config["method"] != "ngram":
                raise ValueError(f"speculative_config['method']='draft_model' does not work with tensor_parallel_size="
                                 f"{self.tensor_parallel_size} (a draft model runs on one rank); prompt lookup "
                                 "({'method': 'ngram'}) does")

    @classmethod
    def from_kwargs(cls, model: str | None, **kwargs: Any) -> "EngineConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown engine option(s) {unknown}; known options: {sorted(known)}")
        return cls(model=model, **kwargs)

    def _check_chunking(self) -> None:
        if not self.enable_chunked_prefill and self.max_model_len and self.max_num_batched_tokens < self.max_model_len:
            raise ValueError(f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_model_len "
                             f"({self.max_model_len}) when enable_chunked_prefill=False: a whole prompt must fit in "
                             "one step")

    # ---- checks against the model and the machine ---------------------------------------------
    def fit_to_model(self, hf_config) -> None:
        """Fill in max_model_len and refuse what this model cannot take."""
        limit = hf_config.max_position_embeddings
        if self.max_model_len is None:
            self.max_model_len = min(limit, 4096)
        elif self.max_model_len > limit:
            raise ValueError(f"max_model_len={self.max_model_len} exceeds the model's max_position_embeddings ({limit})")
        self._check_chunking()
        if self.speculative_config is not None:
            check_draft_fits(self.speculative_config, hf_config, self.max_model_len)
        tp = self.tensor_parallel_size
        if tp > 1 and tensor_parallel_misfit(hf_config, tp):
            fits = [t for t in range(1, hf_config.num_attention_heads + 1) if not tensor_parallel_misfit(hf_config, t)]
            raise ValueError(f"{tensor_parallel_misfit(hf_config, tp)}; sizes that fit this model: "
                             f"{', '.join(map(str, fits))}")

    def fit_to_device(self, device: torch.device) -> None:
        """Refuse knobs this device cannot honour."""
        tp, cuda = self.tensor_parallel_size, device.type == "cuda"
        if tp_size() > 1:  # its layers and collectives would read the live group's process-wide state
            raise RuntimeError("a tensor-parallel engine is running in this process: shutdown() it first")
        if cuda and tp > 1 and tp > torch.cuda.device_count():
            raise ValueError(f"tensor_parallel_size={tp} exceeds the {torch.cuda.device_count()} CUDA devices here")
        if not cuda and tp > (os.cpu_count() or 1) * 4:
            raise ValueError(f"tensor_parallel_size={tp} is far more processes than this machine's "
                             f"{os.cpu_count()} CPU cores")
        backend = self.attention_backend
        if backend == "cpu" and cuda:
            raise ValueError("attention_backend='cpu' runs on a CPU only; on a GPU use 'triton', 'flash_attn' or 'torch'")
        if backend == "flash_attn" and not cuda:
            raise ValueError("attention_backend='flash_attn' needs a CUDA device; on a CPU use 'cpu', 'torch' or 'naive'")
        if backend == "flash_attn" and self.kvcache_block_size % 256:
            raise ValueError("attention_backend='flash_attn' reads the paged KV cache in blocks of a multiple of 256 "
                             f"tokens: set kvcache_block_size=256 (got {self.kvcache_block_size})")
        if backend == "flash_attn" and self.dtype == "float32":
            raise ValueError("attention_backend='flash_attn' takes 16-bit inputs only: use dtype='bfloat16' or "
                             "attention_backend='triton' for float32")
        for knob, name in (("attention_backend", backend), ("sampler", self.sampler)):
            if name in ("flash_attn", "triton") and importlib.util.find_spec(name) is None:
                raise ValueError(f"{knob}={name!r} needs the {name} package, which is not installed")
            if name == "triton" and not cuda:
                from nanoinfer.fast.triton_interpreter import interpreter_problem

                if problem := interpreter_problem(device):
                    raise ValueError(f"{knob}='triton' with device='cpu': {problem}")

    @property
    def blocks_per_seq(self) -> int:
        """KV blocks one sequence of max_model_len tokens takes."""
        return -(-self.max_model_len // self.kvcache_block_size)

    def check_kv_blocks(self, num_blocks: int, bytes_per_block: int, knob: str) -> int:
        """Refuse a KV cache that cannot hold one sequence of max_model_len tokens; return num_blocks."""
        blocks_per_seq = self.blocks_per_seq
        if num_blocks < blocks_per_seq:
            raise ValueError(f"the KV cache budget ({knob}) gives {num_blocks} blocks of {self.kvcache_block_size} "
                             f"tokens ({bytes_per_block} bytes each), but one sequence of max_model_len="
                             f"{self.max_model_len} needs {blocks_per_seq}: raise the budget or lower max_model_len")
        return num_blocks


def tensor_parallel_misfit(hf, tp: int) -> str | None:
    """Why ``tp`` ranks cannot split this model's layers evenly, or None if they can."""
    heads, kv_heads = hf.num_attention_heads, hf.num_key_value_heads
    if heads % tp:
        return f"tensor_parallel_size={tp} does not divide the model's {heads} attention heads"
    if kv_heads % tp and tp % kv_heads:
        return (f"tensor_parallel_size={tp} and the model's {kv_heads} key/value heads: one must divide the "
                "other (KV heads are split, or replicated when there are fewer than ranks)")
    for name in ("intermediate_size", "hidden_size"):
        if getattr(hf, name) % tp:
            return f"tensor_parallel_size={tp} does not divide the model's {name} ({getattr(hf, name)})"
    return None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    return getattr(torch, name)


def _positive_int(config: EngineConfig, name: str) -> None:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
