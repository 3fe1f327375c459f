"""Runs the model for one scheduled step: pack the batch's new tokens into flat tensors, build the
attention metadata, run the forward pass, sample the sequences that reached their last token.

The ModelRunner also owns the KV cache: one tensor per layer pair of keys and values, shaped
[num_blocks, block_size, kv_heads, head_dim], which the attention layers read through block tables.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.profiler import record_function

from nanoinfer.config import EngineConfig
from nanoinfer.engine.cuda_graphs import CudaGraphRunner
from nanoinfer.engine.events import EventBus
from nanoinfer.engine.scheduler import ScheduledBatch
from nanoinfer.distributed import broadcast_from_rank0
from nanoinfer.engine.sequence import Sequence
from nanoinfer.extensions import selected, solution
from nanoinfer.sampling_params import SamplingParams
from nanoinfer.layers.attention import Attention, AttentionMetadata, make_attention_backend
from nanoinfer.layers.cpu_packed import pack_model_weights
from nanoinfer.layers.linear import alternate_output_slots
from nanoinfer.layers.sampler import Sampler, SeededDraw
from nanoinfer.layers.small_ops_cpu import use_cpu_small_ops
from nanoinfer.models import model_class
from nanoinfer.models.llama import head_dim_of
from nanoinfer.models.loader import init_random_weights, load_weights


@dataclass
class StepInputs:
    """One step's work as plain lists (what rank 0 sends to the other tensor-parallel ranks)."""

    phase: str
    input_ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    query_start: list[int] = field(default_factory=lambda: [0])
    query_lens: list[int] = field(default_factory=list)
    seq_lens: list[int] = field(default_factory=list)
    block_tables: np.ndarray | None = None  # [seqs, max blocks] int32
    logits_index: list[int] = field(default_factory=list)
    # Async scheduling: input_ids[pending_index[i]] is the previous step's sampled token pending_row[i].
    pending_index: list[int] = field(default_factory=list)
    pending_row: list[int] = field(default_factory=list)
    # The seeded draw, when every rank samples its own shard of the vocabulary (None: return the logits).
    draw: SeededDraw | None = None


@dataclass
class StepHandle:
    """A launched step: its sampled tokens on the device, and a host copy that is ready at ``event``."""

    batch: ScheduledBatch
    rows: dict[int, int]  # seq_id -> row of ``tokens`` (the sequences that sample)
    tokens: torch.Tensor | None  # [rows] on the device
    host_tokens: torch.Tensor | None  # [rows] pinned host memory, filled asynchronously
    event: torch.cuda.Event | None
    logits: torch.Tensor | None


def kv_cache_bytes_per_block(hf_config, block_size: int, dtype: torch.dtype, tp_size: int = 1) -> int:
    """Bytes one KV block takes on one rank: keys and values, every layer, this rank's KV heads."""
    kv_heads = max(1, hf_config.num_key_value_heads // tp_size)
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * hf_config.num_hidden_layers * block_size * kv_heads * head_dim_of(hf_config) * elem


class ModelRunner:
    def __init__(
        self,
        config: EngineConfig,
        hf_config,
        model_dir: Path | None,
        device: torch.device,
        dtype: torch.dtype,
        events: EventBus | None = None,
        workers=None,
    ) -> None:
        self.config = config
        self.workers = workers  # on rank 0 of a tensor-parallel group: the other ranks (a WorkerGroup)
        self.hf_config = hf_config
        self.device = device
        self.dtype = dtype
        self.block_size = config.kvcache_block_size
        self.bus = events if events is not None else EventBus()

        t0 = time.perf_counter()
        # What this process already holds on the card (another engine, say) is not this engine's.
        self._allocated_before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        previous_dtype = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                self.model = model_class(hf_config.architectures[0])(hf_config)
                alternate_output_slots(self.model)
        finally:
            torch.set_default_dtype(previous_dtype)
        if model_dir is not None:
            load_weights(self.model, model_dir)
        else:
            init_random_weights(self.model, seed=config.seed)
        self.model.eval()
        # Extra memory for a faster decode on CPUs: see layers/cpu_packed.py for the measurements.
        self.packed_weights = pack_model_weights(self.model) if config.pack_cpu_weights else 0
        self.load_seconds = time.perf_counter() - t0

        self.attention_layers = [m for m in self.model.modules() if isinstance(m, Attention)]
        self.backend = make_attention_backend(config.attention_backend, device, self.block_size)
        for layer in self.attention_layers:
            layer.backend = self.backend
        self.sampler = Sampler(device, config.seed, config.sampler)
        self.exercises = sorted(selected())  # (what its components picked their code from as they were built)
        self.fused_prologues = 0
        if device.type == "cuda" and config.fused_attention_prologue and self.backend.name == "triton":
            self.fused_prologues = self._fuse_attention_prologues()
        self.compile = config.compile if config.compile is not None else device.type == "cuda"
        if self.compile:
            self._compile_small_ops()
        elif device.type == "cpu" and dtype == torch.float32 and config.cpu_small_ops:
            use_cpu_small_ops(self.model)  # the same fusion, as C loops (torch.compile does not pay on a CPU)
        self.kv_cache: torch.Tensor | None = None
        self.num_blocks = 0
        self.activation_peak_bytes = 0  # measured on a GPU before the KV cache is sized
        self.graphs: CudaGraphRunner | None = None
        self.graph_capture_seconds = 0.0

    def _fuse_attention_prologues(self) -> int:
        """One Triton kernel per layer for the q/k norms, the rotary embedding and the KV-cache write
        (layers/qk_prologue_triton.py), in the layers that run the reference ops (a learner's own norm or
        rotary runs as written). Returns the number of layers fused."""
        from nanoinfer.layers.qk_prologue_triton import qk_prologue, supported
        from nanoinfer.models.llama import LlamaAttention

        norm, rotary = solution("5.1"), solution("5.2")

        def runs_reference_ops(attention) -> bool:
            norms = attention.q_norm is None or (attention.q_norm.op is norm and attention.k_norm.op is norm)
            return attention.rotary_emb.op is rotary and norms

        fused = 0
        for module in self.model.modules():
            if isinstance(module, LlamaAttention) and supported(module.head_dim) and runs_reference_ops(module):
                module.fused_prologue = qk_prologue
                fused += 1
        return fused

    def _compile_small_ops(self) -> None:
        """torch.compile the small element-wise ops (RMSNorm + residual, rotary, SiLU-and-mul, sampling).
        Each is a handful of memory-bound kernels in eager mode; compiled, each becomes one fused loop.
        Matmuls and attention stay as they are: they already call tuned kernels. Compilation happens
        lazily at the first calls (the engine's warm-up), once per op: all layers share the code."""
        compiled: dict = {}
        for module in self.model.modules():
            if hasattr(module, "op"):
                module.op = compiled.setdefault(module.op, torch.compile(module.op, dynamic=True))
        if not self.sampler.fast_path:  # (the fast path is already one fused Triton kernel)
            self.sampler.sample = torch.compile(self.sampler.sample, dynamic=True)

    # ---- KV cache ------------------------------------------------------------------------------
    def allocate_kv_cache(self, num_blocks: int) -> None:
        """One tensor [2, layers, blocks, block_size, kv_heads, head_dim]; each layer gets its two views.

        Filled with zeros so that masked-out slots never hold NaN (0 * NaN would leak through a matmul).
        The explicit fill also touches every page: on Linux, reading pages that ``torch.zeros`` left
        unmapped faults on each one, which made gathers from the cache ~20x slower on a CPU."""
        if self.workers is not None:
            self.workers.call("allocate_kv_cache", num_blocks)
        self._allocate_local(num_blocks)

    def learner_exercises(self) -> list[str]:
        """The exercises whose learner code this rank was built with (rank 0 hands its selection to every
        worker)."""
        return self.exercises

    def release(self) -> None:
        """Drop the KV cache and the CUDA graphs so that their memory can be used again."""
        if self.graphs is not None:
            self.graphs.release()  # (destroyed, not only dropped: see CudaGraphRunner.release)
        self.graphs = None
        self.kv_cache = None
        for layer in self.attention_layers:
            layer.k_cache = layer.v_cache = None
        if self.device.type == "cuda":
            import gc

            gc.collect()
            torch.cuda.empty_cache()

    def _allocate_local(self, num_blocks: int) -> None:
        layer = self.attention_layers[0]
        shape = (2, len(self.attention_layers), num_blocks, self.block_size, layer.num_kv_heads, layer.head_dim)
        self.kv_cache = torch.empty(shape, dtype=self.dtype, device=self.device).fill_(0)
        for i, layer in enumerate(self.attention_layers):
            layer.k_cache, layer.v_cache = self.kv_cache[0, i], self.kv_cache[1, i]
        self.num_blocks = num_blocks

    @torch.inference_mode()
    def kv_blocks_for_gpu_budget(self) -> int:
        """KV blocks that fit in ``gpu_memory_utilization`` of the card next to the weights and the peak
        activations of the largest step, which a warm-up measures: a full-budget prefill (with a scratch
        KV cache just big enough for it), then logits and sampling for ``max_num_seqs`` rows."""
        c = self.config
        if self.workers is not None:
            self.workers.call("kv_blocks_for_gpu_budget", reply=True)
        seq_len = min(c.max_model_len, c.max_num_batched_tokens)
        num_seqs = max(1, min(c.max_num_seqs, c.max_num_batched_tokens // seq_len))
        blocks_per_seq = -(-seq_len // self.block_size)
        workers, self.workers = self.workers, None  # each rank runs this same code: no forwarding inside
        self._allocate_local(num_seqs * blocks_per_seq)
        torch.cuda.synchronize(self.device)
        baseline = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        seqs = []
        for i in range(num_seqs):
            seq = Sequence(-1 - i, [0] * seq_len, SamplingParams(temperature=1.0, top_p=0.9))
            seq.block_table = list(range(i * blocks_per_seq, (i + 1) * blocks_per_seq))
            seqs.append(seq)
        self.execute(self.host_inputs(ScheduledBatch("prefill", seqs, [seq_len] * num_seqs), self.block_size))
        hidden = torch.zeros(c.max_num_seqs, self.hf_config.hidden_size, dtype=self.dtype, device=self.device)
        logits = self.model.compute_logits(hidden)
        # both sampling paths (with and without a top-p cut), so that each is compiled now, for any batch
        for params in (SamplingParams(temperature=1.0, top_p=0.9), SamplingParams(temperature=1.0)):
            draw = self.sampler.plan([params] * c.max_num_seqs, list(range(c.max_num_seqs)))  # None: noise path
            self.sampler(logits, [params] * c.max_num_seqs, [None] * c.max_num_seqs, draw)
        if draw is not None:  # and the seeded draw on this rank's shard of the vocabulary
            self.model.sample(hidden, *self.sampler.draw_tensors(draw))
        torch.cuda.synchronize(self.device)
        self.activation_peak_bytes = torch.cuda.max_memory_allocated(self.device) - baseline
        self.kv_cache = None
        for layer in self.attention_layers:
            layer.k_cache = layer.v_cache = None
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(self.device)
        per_block = kv_cache_bytes_per_block(self.hf_config, self.block_size, self.dtype, c.tensor_parallel_size)
        # gpu_memory_utilization is this engine's share of the card: its weights, its peak activations and
        # its KV cache. It cannot take more than is free (other engines, the CUDA context, a margin).
        own = torch.cuda.memory_allocated(self.device) - self._allocated_before
        requested = total * c.gpu_memory_utilization - own - self.activation_peak_bytes
        available = free - self.activation_peak_bytes - (512 << 20)
        blocks = max(0, int(min(requested, available) // per_block))
        self.workers = workers
        if workers is not None:  # every rank must hold the same number of blocks: take the smallest
            blocks = min([blocks, *workers.replies()])
        return blocks

    def capture_cuda_graphs(self) -> None:
        """Capture decode graphs unless ``enforce_eager``, on a CPU, or with a backend that cannot be
        captured (the torch backend plans its work on the host every step)."""
        c = self.config
        if self.device.type != "cuda" or c.enforce_eager or not getattr(self.backend, "supports_cuda_graphs", False):
            return
        if self.workers is not None:
            self.workers.call("capture_cuda_graphs")
        t0 = time.perf_counter()
        max_bs = min(c.cuda_graph_max_batch_size or 512, c.max_num_seqs)
        self.graphs = CudaGraphRunner(self.model, self.backend, self.attention_layers[0].num_kv_heads,
                                      self.hf_config.hidden_size, max_bs, c.max_model_len, self.block_size,
                                      self.device, self.dtype)
        self.graphs.capture()
        self.graph_capture_seconds = time.perf_counter() - t0

    # ---- one step ------------------------------------------------------------------------------
    @staticmethod
    def host_inputs(batch: ScheduledBatch, block_size: int, pending_rows: dict[int, int] | None = None) -> StepInputs:
        """Flatten the batch on the host: token ids, positions, cache slots, where each sequence starts.
        Plain lists: cheap to send to tensor-parallel workers, which build their own tensors from them.
        A token still pending (its value on the device) is marked to be filled from ``pending_rows``."""
        bs = block_size
        inputs = StepInputs(batch.phase)
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
            table = seq.block_table
            if end > seq.num_known_tokens:  # only a sequence's last token can still be pending
                inputs.pending_index.append(len(inputs.input_ids) + n - 1)
                inputs.pending_row.append(pending_rows[seq.seq_id])
            inputs.input_ids.extend(seq.token_ids[start:end])
            inputs.positions.extend(range(start, end))
            inputs.slots.extend(table[p // bs] * bs + p % bs for p in range(start, end))
            inputs.query_start.append(inputs.query_start[-1] + n)
            inputs.query_lens.append(n)
            inputs.seq_lens.append(end)
            if end == seq.num_tokens:  # reached the last token: its logits give the next one
                inputs.logits_index.append(inputs.query_start[-1] - 1)
        width = max(len(s.block_table) for s in batch.seqs)
        tables = np.zeros((len(batch.seqs), width), dtype=np.int32)  # padded with block 0, never read
        for row, seq in zip(tables, batch.seqs):
            row[: len(seq.block_table)] = seq.block_table
        inputs.block_tables = tables
        return inputs

    def _to_device(self, values, dtype) -> torch.Tensor:
        """A host list or array on this rank's device; through pinned memory on a GPU, so the copy
        does not wait for the work already queued."""
        if not isinstance(values, np.ndarray):  # through NumPy: 3-4x faster than torch.tensor on a long list
            values = np.array(values, dtype={torch.int64: np.int64, torch.int32: np.int32}[dtype])
        t = torch.from_numpy(values)
        if self.device.type == "cuda":
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def device_inputs(self, inputs: StepInputs):
        """The model's inputs on this rank's device, and the attention metadata shared by every layer."""
        to_device = self._to_device

        meta = AttentionMetadata(
            is_decode=inputs.phase == "decode",
            slot_mapping=to_device(inputs.slots, torch.int64),
            query_start_loc=to_device(inputs.query_start, torch.int32),
            seq_lens=to_device(inputs.seq_lens, torch.int32),
            block_tables=to_device(inputs.block_tables, torch.int32),
            max_query_len=max(inputs.query_lens),
            max_seq_len=max(inputs.seq_lens),
            block_size=self.block_size,
            query_lens_cpu=inputs.query_lens,
            seq_lens_cpu=inputs.seq_lens,
        )
        return to_device(inputs.input_ids, torch.int64), to_device(inputs.positions, torch.int64), meta

    @torch.inference_mode()
    def execute(self, inputs: StepInputs, previous_tokens: torch.Tensor | None = None) -> torch.Tensor | None:
        """The forward pass and the logits of the sampled positions. Every tensor-parallel rank runs this
        (its collectives must line up); the logits are complete on every rank after the LM head's gather."""
        if self.kv_cache is None:
            raise RuntimeError("this engine was shut down; create a new LLM")
        with record_function("nanoinfer.device_inputs"):
            input_ids, positions, meta = self.device_inputs(inputs)
            if inputs.pending_index:  # tokens sampled by the previous step, taken straight from the device
                index = self._to_device(inputs.pending_index, torch.int64)
                if previous_tokens is not None:
                    values = previous_tokens[self._to_device(inputs.pending_row, torch.int64)]
                else:  # a tensor-parallel worker: rank 0 sends the values
                    values = torch.empty(len(inputs.pending_index), dtype=torch.int64, device=self.device)
                input_ids[index] = broadcast_from_rank0(values)
        if inputs.phase == "decode" and self.graphs is not None:
            self.graphs.coverage.decode_steps += 1
            if len(inputs.seq_lens) <= self.graphs.max_batch_size:
                hidden = self.graphs.run(input_ids, positions, meta)
            else:
                hidden = self.model(input_ids, positions, meta)
        else:
            hidden = self.model(input_ids, positions, meta)
        if not inputs.logits_index:
            return None
        hidden = hidden[self._to_device(inputs.logits_index, torch.int64)]
        if inputs.draw is not None:  # sampled where the logits are made: only each rank's winners travel
            return self.model.sample(hidden, *self.sampler.draw_tensors(inputs.draw))
        return self.model.compute_logits(hidden)

    @torch.inference_mode()
    def launch(self, batch: ScheduledBatch, previous: StepHandle | None = None) -> StepHandle:
        """Start one step and return at once (on a GPU): the sampled tokens stay on the device for the
        next step's inputs, and a copy to the host is queued behind them."""
        with record_function("nanoinfer.prepare"):
            inputs = self.host_inputs(batch, self.block_size, previous.rows if previous else None)
        if self.bus:
            self.bus.emit("forward", "ModelRunner", phase=batch.phase, num_tokens=len(inputs.input_ids),
                          seq_ids=[s.seq_id for s in batch.seqs])
        previous_tokens = previous.tokens if previous else None
        sampling = [s for s, samples in zip(batch.seqs, batch.samples()) if samples]
        params = [s.sampling_params for s in sampling]
        draw = self.sampler.plan(params, [s.num_tokens for s in sampling])
        # Each rank samples its own logits unless the step needs them whole: for top-k / top-p, or for a
        # trace, which records them. The tokens are the same either way.
        if draw is not None and not draw.cuts and not self.bus:
            inputs.draw = draw
        if self.workers is None:
            result = self.execute(inputs, previous_tokens)
        else:
            self.workers.call("execute", inputs)  # the other ranks run the same step alongside
            try:
                result = self.execute(inputs, previous_tokens)
            except Exception as error:  # a collective failed: was it a dead worker?
                raise self.workers.explain(error) from error
        if result is None:
            return StepHandle(batch, {}, None, None, None, None)
        with record_function("nanoinfer.sample"):
            if inputs.draw is not None:  # already sampled, on the ranks' shards
                tokens, logits = result, None
            else:
                tokens, logits = self.sampler(result, params, [s.generator for s in sampling], draw), result
        rows = {s.seq_id: i for i, s in enumerate(sampling)}
        if self.device.type != "cuda":
            return StepHandle(batch, rows, tokens, tokens, None, logits)
        host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
        host.copy_(tokens, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return StepHandle(batch, rows, tokens, host, event, logits)

    def wait(self, handle: StepHandle) -> list[int | None]:
        """The step's sampled token per sequence of its batch (None where a prefill chunk stops short)."""
        if handle.tokens is None:
            return [None] * len(handle.batch.seqs)
        if handle.event is not None and self.workers is None:
            handle.event.synchronize()  # only this step's copy: a later step may already be running
        elif handle.event is not None:
            # With tensor parallelism a dead rank can leave this GPU waiting forever inside a peer-memory
            # all-reduce (it cannot be aborted like NCCL): poll, and ask the watchdog in between.
            while not handle.event.query():
                self.workers.check()
                time.sleep(2e-5)
        values = handle.host_tokens.tolist()
        if self.bus:
            self.bus.emit("sampled", "ModelRunner", seq_ids=list(handle.rows), token_ids=values,
                          logits=handle.logits)
        return [values[handle.rows[s.seq_id]] if s.seq_id in handle.rows else None for s in handle.batch.seqs]

    def run(self, batch: ScheduledBatch) -> list[int | None]:
        """One step, start to finish: launch, then wait for its tokens."""
        return self.wait(self.launch(batch))
