"""Engine configuration: every knob the curriculum turns, checked before any work starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

ATTENTION_BACKENDS = ("auto", "cpu", "torch", "naive", "triton", "flash_attn")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")
SAMPLERS = ("auto", "torch", "triton")
SCHEDULING_POLICIES = ("fifo", "sjf", "ljf")  # engine/policies.py; an object of its own class also works


@dataclass
class EngineConfig:
    """Knobs of one engine. Names follow nano-vllm and vLLM so that learners can move between them.

    KV-cache budget: on a GPU it comes from ``gpu_memory_utilization`` after a warm-up that measures
    the model's peak memory; on a CPU from ``kv_cache_memory_bytes`` (1 GiB by default). Either is
    overridden by ``num_kvcache_blocks``.
    """

    model: str | None = None  # a Hugging Face style directory; None means the embedded SmolLM2-135M-Instruct
    max_num_batched_tokens: int = 16384  # tokens one step may process (prefill chunks included)
    max_num_seqs: int = 512  # sequences one step may hold
    max_model_len: int | None = None  # prompt + output; default: the model's limit, capped at 4096
    gpu_memory_utilization: float = 0.9  # share of GPU memory the engine may fill (weights + activations + KV)
    tensor_parallel_size: int = 1
    enforce_eager: bool = False  # True turns CUDA graphs off
    async_scheduling: bool | None = None  # schedule step N+1 while step N runs; default: on for CUDA
    kvcache_block_size: int = 16  # tokens per KV block; a power of two
    num_kvcache_blocks: int | None = None  # fix the KV budget in blocks
    kv_cache_memory_bytes: int | None = None  # fix the KV budget in bytes
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    scheduling_policy: Any = "fifo"  # "fifo", "sjf", "ljf" or a SchedulingPolicy object
    attention_backend: str = "auto"
    compile: bool | None = None  # torch.compile the small hot ops; default: on for CUDA, off for CPU
    fused_attention_prologue: bool = True  # CUDA + triton backend: q/k norms, rotary and the KV write as one kernel per layer
    cpu_small_ops: bool = True  # CPU float32: RMSNorm, rotary, SiLU-and-mul as C loops (layers/small_ops_cpu.c) when a C compiler is found
    pack_cpu_weights: bool = True  # CPU float32: multiply by oneDNN-packed weight copies (layers/cpu_packed.py); doubles weight memory
    # "triton": the seeded Triton draw (layers/sampler_triton.py; on a CPU through Triton's interpreter, for
    # tests: needs TRITON_INTERPRET=1); "torch": Exercise 3.2's reference on a noise tensor; "auto": triton
    # on a GPU, torch on a CPU
    sampler: str = "auto"
    dtype: str = "auto"  # float32 on a CPU, bfloat16 on a GPU
    device: str = "auto"
    seed: int = 0  # seeds requests that have no seed of their own
    record_block_events: bool = False  # keep a log of every block allocation, hit and free
    measure_communication: bool = False  # time each collective (synchronises the GPU around it)
    cuda_graph_max_batch_size: int | None = None  # largest captured decode batch; default: max_num_seqs capped at 512

    def __post_init__(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        for name in ("max_num_batched_tokens", "max_num_seqs", "tensor_parallel_size", "kvcache_block_size"):
            positive_int(name)
        for name in ("max_model_len", "num_kvcache_blocks", "kv_cache_memory_bytes", "cuda_graph_max_batch_size"):
            if getattr(self, name) is not None:
                positive_int(name)
        bs = self.kvcache_block_size
        if bs & (bs - 1):
            raise ValueError(f"kvcache_block_size must be a power of two (such as 16, or 256 for flash_attn), got {bs}")
        for name in ("enforce_eager", "enable_prefix_caching", "enable_chunked_prefill", "fused_attention_prologue",
                     "cpu_small_ops", "pack_cpu_weights", "record_block_events", "measure_communication"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("async_scheduling", "compile"):
            if not (getattr(self, name) is None or isinstance(getattr(self, name), bool)):
                raise ValueError(f"{name} must be True, False or None (the device's default), "
                                 f"got {getattr(self, name)!r}")
        policy = self.scheduling_policy
        is_policy_object = not isinstance(policy, str) and callable(getattr(policy, "priority", None))
        if policy not in SCHEDULING_POLICIES and not is_policy_object:
            raise ValueError(f"scheduling_policy must be one of {SCHEDULING_POLICIES} or a SchedulingPolicy "
                             f"instance, got {self.scheduling_policy!r}")
        if not _is_number(self.gpu_memory_utilization) or not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization!r}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend must be one of {ATTENTION_BACKENDS}, got {self.attention_backend!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if (
            not self.enable_chunked_prefill
            and self.max_model_len is not None
            and self.max_num_batched_tokens < self.max_model_len
        ):
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_model_len "
                f"({self.max_model_len}) when enable_chunked_prefill=False: a whole prompt must fit in one step"
            )

    @classmethod
    def from_kwargs(cls, model: str | None, **kwargs: Any) -> "EngineConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown engine option(s) {unknown}; known options: {sorted(known)}")
        return cls(model=model, **kwargs)

    def to_dict(self) -> dict:
        return asdict(self)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
