"""Runs the model for one scheduled step: pack the batch's new tokens into flat tensors, describe the batch
to the attention layers, run the forward pass, sample the sequences that reached their last token.

It also owns the KV cache: one tensor [2, layers, num_blocks, block_size, kv_heads, head_dim] whose views
every attention layer writes and reads through the sequences' block tables.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.profiler import record_function

from nanoinfer.attention.backends import make_attention_backend
from nanoinfer.attention.base import AttentionMetadata
from nanoinfer.config import EngineConfig
from nanoinfer.engine.events import EventBus
from nanoinfer.engine.scheduler import ScheduledBatch
from nanoinfer.engine.sequence import Sequence
from nanoinfer.fast import apply_fast_paths, capture_cuda_graphs
from nanoinfer.fast.host import PinnedStaging, put_ints
from nanoinfer.layers.attention import Attention
from nanoinfer.layers.sampler import Sampler
from nanoinfer.models import model_class
from nanoinfer.models.llama import head_dim_of
from nanoinfer.models.loader import init_random_weights, load_weights
from nanoinfer.parallel.comm import broadcast_from_rank0
from nanoinfer.quantization import quantize_model, watch_row_maxima
from nanoinfer.sampling_params import SamplingParams
from nanoinfer.workbook.registry import selected


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """KV-cache bytes of one token: a key and a value vector per KV head, in every layer. The one formula
    that the engine's budget, its memory report and the exercises' checks use."""
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes


def kv_bytes_per_block(hf_config, block_size: int, dtype: torch.dtype, tp_size: int = 1) -> int:
    """Bytes one KV block takes on one rank (the rank holds its share of the KV heads, at least one)."""
    kv_heads = max(1, hf_config.num_key_value_heads // tp_size)
    elem = torch.empty((), dtype=dtype).element_size()
    return block_size * kv_bytes_per_token(hf_config.num_hidden_layers, kv_heads, head_dim_of(hf_config), elem)


@dataclass
class StepInputs:
    """One step's work on the host, arrays per token, lists per sequence (what rank 0 sends to the other ranks)."""

    phase: str
    input_ids: np.ndarray  # [tokens] int64
    positions: np.ndarray  # [tokens] int64
    slots: np.ndarray  # [tokens] int64: cache slot of each token, block_id * block_size + offset
    block_tables: np.ndarray  # [seqs, max blocks] int32
    query_start: list[int] = field(default_factory=lambda: [0])
    query_lens: list[int] = field(default_factory=list)
    seq_lens: list[int] = field(default_factory=list)
    logits_index: list[int] = field(default_factory=list)
    # Async scheduling: input_ids[pending_index[i]] is the previous step's sampled token pending_row[i].
    pending_index: list[int] = field(default_factory=list)
    pending_row: list[int] = field(default_factory=list)
    draw: object = None  # a sampler's plan for every rank to sample its vocabulary shard (None: return logits)


@dataclass
class StepHandle:
    """A launched step: its sampled tokens on the device, and a host copy that is ready at ``event``."""

    batch: ScheduledBatch
    rows: dict[int, int]  # seq_id -> row of ``tokens`` (the sequences that sample)
    tokens: torch.Tensor | None  # [rows] on the device
    host_tokens: torch.Tensor | None  # [rows] pinned host memory, filled asynchronously
    event: torch.cuda.Event | None
    logits: torch.Tensor | None  # kept only when asked for (``keep_logits``)
    host_s: tuple[float, float] = (0.0, 0.0)  # host seconds spent preparing the inputs, and sampling
    num_drafted: int = 0  # speculative decoding (nanoinfer/speculative): tokens drafted, and accepted
    num_accepted: int = 0


class ModelRunner:
    """One rank's model and KV cache. With tensor parallelism, parallel/runner.py's subclass is rank 0: it
    overrides the calls that every rank must make together (measure_kv_budget, setup_kv_cache, run_on_ranks)
    and what a dead rank changes (synchronize, step_failed, shutdown)."""

    def __init__(self, config: EngineConfig, hf_config, model_dir: Path | None, device: torch.device,
                 dtype: torch.dtype, events: EventBus | None = None) -> None:
        self.config, self.hf_config, self.device, self.dtype = config, hf_config, device, dtype
        self.block_size = config.kvcache_block_size
        self.bus = events if events is not None else EventBus()
        self.backend = make_attention_backend(config.attention_backend, device, self.block_size, dtype)
        t0 = time.perf_counter()
        # What this process already holds on the card (another engine, say) is not this engine's.
        self._allocated_before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        previous_dtype = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                self.model = model_class(hf_config.architectures[0])(hf_config).eval()
        finally:
            torch.set_default_dtype(previous_dtype)
        watch_row_maxima(self.model, config.quantization)  # (int8 with several ranks: nanoinfer/quantization.py)
        if model_dir is not None:
            load_weights(self.model, model_dir)
        else:
            init_random_weights(self.model, seed=config.seed)
        quantized = quantize_model(self.model, config.quantization)  # nanoinfer/quantization.py (each rank its shard)
        self.load_seconds = time.perf_counter() - t0
        self.attention_layers = [m for m in self.model.modules() if isinstance(m, Attention)]
        self.sampler = Sampler(device, config.seed)
        self.exercises = sorted(selected())  # whose learner code this rank's components were built with
        self.kv_cache: torch.Tensor | None = None
        self.num_blocks = 0
        self.activation_peak_bytes = 0  # measured on a GPU before the KV cache is sized
        self.keep_logits = False  # set by LLM.trace(logits=True): sample whole logits and keep them
        self.graphs = None  # a CudaGraphRunner once captured
        self.staging = PinnedStaging(device) if device.type == "cuda" else None  # each step's host-to-device copy
        self.fast_paths = apply_fast_paths(self)  # nanoinfer/fast: what it replaced, and why
        self.fast_paths.add("int8 weights", *quantized)

    def learner_exercises(self) -> list[str]:  # (what a worker reports to rank 0)
        return self.exercises

    # ---- KV cache ------------------------------------------------------------------------------
    def setup_kv_cache(self, num_blocks: int) -> None:
        """Allocate the KV cache, then record CUDA graphs over it (where they apply)."""
        self.allocate_kv_cache(num_blocks)
        self.graphs = capture_cuda_graphs(self)

    def allocate_kv_cache(self, num_blocks: int) -> None:
        """One tensor [2, layers, blocks, block_size, kv_heads, head_dim]; each layer gets its two views and
        the attention backend. Zero-filled, so that masked-out slots never hold NaN (0 * NaN would leak
        through a matmul); the fill also touches every page: on Linux, reading pages that ``torch.zeros``
        left unmapped faults on each one, which made gathers from the cache ~20x slower on a CPU."""
        layer = self.attention_layers[0]
        shape = (2, len(self.attention_layers), num_blocks, self.block_size, layer.num_kv_heads, layer.head_dim)
        self.kv_cache = torch.empty(shape, dtype=self.dtype, device=self.device).fill_(0)
        for i, layer in enumerate(self.attention_layers):
            layer.k_cache, layer.v_cache, layer.backend = self.kv_cache[0, i], self.kv_cache[1, i], self.backend
        self.num_blocks = num_blocks

    def release(self) -> None:
        """Drop the KV cache and the CUDA graphs so that their memory can be used again."""
        if self.graphs is not None:
            self.graphs.release()  # (destroyed, not only dropped: see CudaGraphRunner.release)
        self.graphs = self.kv_cache = None
        for layer in self.attention_layers:
            layer.k_cache = layer.v_cache = None
        if self.device.type == "cuda":
            import gc

            gc.collect()
            torch.cuda.empty_cache()

    def shutdown(self) -> None:
        if self.kv_cache is not None:
            self.release()

    def step_failed(self) -> None:  # (with one rank, nothing to tidy up; parallel/runner.py stops its workers)
        pass

    @torch.inference_mode()
    def measure_kv_budget(self) -> int:
        """GPU: the KV blocks that fit in ``gpu_memory_utilization`` of the card beside the weights and the
        peak activations of the largest step, which this measures: a full-budget prefill (with a scratch
        KV cache just big enough), then logits and sampling for ``max_num_seqs`` rows."""
        c = self.config
        seq_len = min(c.max_model_len, c.max_num_batched_tokens)
        num_seqs = max(1, min(c.max_num_seqs, c.max_num_batched_tokens // seq_len))
        blocks_per_seq = -(-seq_len // self.block_size)
        self.allocate_kv_cache(num_seqs * blocks_per_seq)
        torch.cuda.synchronize(self.device)
        baseline = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        seqs = [Sequence(-1 - i, [0] * seq_len, SamplingParams()) for i in range(num_seqs)]
        for i, seq in enumerate(seqs):  # (each its own blocks of the scratch cache)
            seq.block_table = list(range(i * blocks_per_seq, (i + 1) * blocks_per_seq))
        self.execute(self.host_inputs(ScheduledBatch("prefill", seqs, [seq_len] * num_seqs)))
        self.sampler.warm_up(self.model, torch.zeros(c.max_num_seqs, self.hf_config.hidden_size,
                                                     dtype=self.dtype, device=self.device))
        torch.cuda.synchronize(self.device)
        self.activation_peak_bytes = torch.cuda.max_memory_allocated(self.device) - baseline
        self.release()
        free, total = torch.cuda.mem_get_info(self.device)
        per_block = kv_bytes_per_block(self.hf_config, self.block_size, self.dtype, c.tensor_parallel_size)
        # gpu_memory_utilization is this engine's share of the card: its weights, its peak activations and
        # its KV cache. It cannot take more than is free (other engines, the CUDA context, a margin).
        own = torch.cuda.memory_allocated(self.device) - self._allocated_before
        requested = total * c.gpu_memory_utilization - own - self.activation_peak_bytes
        available = free - self.activation_peak_bytes - (512 << 20)
        return max(0, int(min(requested, available) // per_block))

    # ---- one step ------------------------------------------------------------------------------
    def host_inputs(self, batch: ScheduledBatch, pending_rows: dict[int, int] | None = None) -> StepInputs:
        """Flatten the batch on the host: token ids, positions, cache slots, where each sequence starts.
        A token still pending (its value on the device) is marked to be filled from ``pending_rows``."""
        seqs, counts, bs = batch.seqs, batch.num_new_tokens, self.block_size
        token_ids, query_start, seq_lens, logits_index, pending_index, pending_row = [], [0], [], [], [], []
        tables = np.zeros((len(seqs), max(len(s.block_table) for s in seqs)), dtype=np.int32)  # (0: never read)
        for seq, n, table in zip(seqs, counts, tables):  # per sequence: the per-token work is in C (lists, NumPy)
            end = seq.num_computed_tokens + n
            if end > seq.num_known_tokens:  # only a sequence's last token can still be pending
                pending_index.append(len(token_ids) + n - 1)
                pending_row.append(pending_rows[seq.seq_id])
            token_ids += seq.token_ids[end - n : end]
            put_ints(table, seq.block_table)
            query_start.append(len(token_ids))
            seq_lens.append(end)
            if end == seq.num_tokens:  # reached the last token: its logits give the next one
                logits_index.append(len(token_ids) - 1)
        if len(token_ids) == len(seqs):  # one token per sequence (decode): per sequence beats NumPy's overhead
            positions = np.array([end - 1 for end in seq_lens], np.int64)
            slots = np.array([s.block_table[p // bs] * bs + p % bs for s, p in zip(seqs, positions.tolist())], np.int64)
        else:  # per token, in NumPy: its row (sequence), position, and slot: block_table[pos // bs] * bs + pos % bs
            rows = np.repeat(np.arange(len(seqs)), counts)
            positions = np.arange(len(token_ids)) + (np.array(seq_lens) - query_start[1:])[rows]
            slots = tables[rows, positions // bs].astype(np.int64) * bs + positions % bs
        return StepInputs(batch.phase, put_ints(np.empty(len(token_ids), np.int64), token_ids), positions, slots,
                          tables, query_start, list(counts), seq_lens, logits_index, pending_index, pending_row)

    def to_device(self, *arrays: np.ndarray) -> list[torch.Tensor]:
        """Host arrays on this rank's device. On a CPU the arrays themselves (no copy); on a GPU packed into one
        pinned buffer and sent in one copy that does not wait for the work already queued (fast/host.py)."""
        return self.staging.copy(arrays) if self.staging else [torch.from_numpy(a) for a in arrays]

    def device_inputs(self, inputs: StepInputs):
        """The model's inputs on this rank's device, the attention metadata shared by every layer, and the rows
        that ``execute`` indexes: (logits_index, pending_index, pending_row)."""
        int64 = [np.ascontiguousarray(a, np.int64) for a in (inputs.input_ids, inputs.positions, inputs.slots,
                 inputs.logits_index, inputs.pending_index, inputs.pending_row)]
        int32 = [np.ascontiguousarray(a, np.int32) for a in (inputs.query_start, inputs.seq_lens, inputs.block_tables)]
        input_ids, positions, slots, *rows, query_start, seq_lens, tables = self.to_device(*int64, *int32)
        meta = AttentionMetadata(
            is_decode=inputs.phase == "decode", slot_mapping=slots, query_start_loc=query_start, seq_lens=seq_lens,
            block_tables=tables, max_query_len=max(inputs.query_lens), max_seq_len=max(inputs.seq_lens),
            block_size=self.block_size, query_lens_cpu=inputs.query_lens, seq_lens_cpu=inputs.seq_lens)
        return input_ids, positions, meta, rows

    @torch.inference_mode()
    def execute(self, inputs: StepInputs, previous_tokens: torch.Tensor | None = None) -> torch.Tensor | None:
        """The forward pass, then the logits of the positions that sample (or, with ``inputs.draw``, their
        tokens). Every tensor-parallel rank runs this: its collectives must line up with the others'."""
        if self.kv_cache is None:
            raise RuntimeError("this engine was shut down; create a new LLM")
        if self.graphs is not None and self.graphs.samples(inputs, previous_tokens):  # replayed whole, draw too
            return self.graphs.sample_step(inputs, previous_tokens)
        with record_function("nanoinfer.device_inputs"):
            input_ids, positions, meta, (logits_index, pending_index, pending_row) = self.device_inputs(inputs)
            if inputs.pending_index:  # tokens sampled by the previous step, taken straight from the device
                if previous_tokens is not None:
                    values = previous_tokens[pending_row]
                else:  # a tensor-parallel worker: rank 0 sends the values
                    values = torch.empty(len(inputs.pending_index), dtype=torch.int64, device=self.device)
                input_ids[pending_index] = broadcast_from_rank0(values)
        if self.graphs is not None and self.graphs.serves(meta):  # replay a recorded decode step (fast/)
            hidden = self.graphs.run(input_ids, positions, meta)
        else:
            hidden = self.model(input_ids, positions, meta)
        if not inputs.logits_index:
            return None
        if len(inputs.logits_index) < len(hidden):  # (a decode step samples every row, in order: no gather)
            hidden = hidden[logits_index]
        if inputs.draw is not None:  # every rank samples its own vocabulary shard; only winners travel
            return self.sampler.sample_shards(self.model.lm_head, hidden, inputs.draw)
        return self.model.compute_logits(hidden)

    def run_on_ranks(self, inputs: StepInputs, previous_tokens: torch.Tensor | None) -> torch.Tensor | None:
        """``execute`` on every rank of the group: here, the only one (parallel/runner.py has the others)."""
        return self.execute(inputs, previous_tokens)

    @torch.inference_mode()
    def launch(self, batch: ScheduledBatch, previous: StepHandle | None = None) -> StepHandle:
        """Start one step and return at once (on a GPU): the sampled tokens stay on the device for the
        next step's inputs, and a copy to the host is queued behind them."""
        t0 = time.perf_counter()
        with record_function("nanoinfer.prepare"):
            inputs = self.host_inputs(batch, previous.rows if previous else None)
        prepare_s = time.perf_counter() - t0
        if self.bus:
            self.bus.emit("forward", "ModelRunner", phase=batch.phase, num_tokens=len(inputs.input_ids),
                          seq_ids=[s.seq_id for s in batch.seqs])
        sampling = [s for s, samples in zip(batch.seqs, batch.samples()) if samples]
        params = [s.sampling_params for s in sampling]
        plan = self.sampler.plan(params, [s.num_tokens for s in sampling])  # None: sample the logits here
        if plan is not None and plan.on_ranks and not self.keep_logits:
            inputs.draw = plan
        result = self.run_on_ranks(inputs, previous.tokens if previous else None)
        if result is None:
            return StepHandle(batch, {}, None, None, None, None, (prepare_s, 0.0))
        t1 = time.perf_counter()
        with record_function("nanoinfer.sample"):
            if inputs.draw is not None:  # already sampled, on the ranks' shards
                tokens, logits = result, None
            else:
                tokens = self.sampler(result, params, [s.generator for s in sampling], plan)
                logits = result if self.keep_logits else None
        host_s = (prepare_s, time.perf_counter() - t1)  # (on a GPU: the time to queue the sampling kernels)
        rows = {s.seq_id: i for i, s in enumerate(sampling)}
        if self.device.type != "cuda":
            return StepHandle(batch, rows, tokens, tokens, None, logits, host_s)
        host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
        host.copy_(tokens, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return StepHandle(batch, rows, tokens, host, event, logits, host_s)

    def wait(self, handle: StepHandle) -> list[int | None]:
        """The step's sampled token per sequence of its batch (None where a prefill chunk stops short)."""
        if handle.tokens is None:
            return [None] * len(handle.batch.seqs)
        if handle.event is not None:
            self.synchronize(handle.event)
        values = handle.host_tokens.tolist()
        if self.bus:
            self.bus.emit("sampled", "ModelRunner", seq_ids=list(handle.rows), token_ids=values,
                          logits=handle.logits)
        return [values[handle.rows[s.seq_id]] if s.seq_id in handle.rows else None for s in handle.batch.seqs]

    def synchronize(self, event: torch.cuda.Event) -> None:
        event.synchronize()  # only this step's copy: a later step may already be running
