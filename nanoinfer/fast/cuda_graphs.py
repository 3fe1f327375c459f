"""CUDA graphs for decode steps: record the model's kernel launches once per batch size, replay them.

A decode step of a small model is hundreds of short kernels; launching them from Python costs more than running
them. A CUDA graph records the launches once (at warm-up, for a ladder of batch sizes) and replays them with one
call. Replays need fixed shapes and addresses: every input lives in a static buffer, and a batch is padded up to
the nearest captured size (``pick_cuda_graph``), padding rows writing to slot -1 (skipped) with context length 0.

With one rank and the Triton sampler, each size also gets a sampling graph (the LM head and the seeded draw), and a
decode step that samples every row runs whole from here (``sample_step``): its host arrays, sampling plan included,
reach the static buffers in one copy, the tokens still pending on the device are taken inside the graph, and two
replays follow. A batch-1 step then spends 0.13 ms on the host launching its work instead of 0.58
(h200_latency_batch1.json).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl

from nanoinfer.attention.base import AttentionMetadata
from nanoinfer.fast.host import ALIGN
from nanoinfer.fast.pdl import launch_options
from nanoinfer.parallel.comm import comm_stats
from nanoinfer.workbook.registry import learner_code

# The graphs' static inputs, one device buffer, so that a sampled step's inputs arrive in one copy: every row of each
# field (padding included), then the block tables, whose rows past the graph's size are left out of the copy. Each
# field starts 16-byte aligned, as Triton specializes on it (fast/host.py's ALIGN).
FIELDS = (("input_ids", torch.int64), ("positions", torch.int64), ("slot_mapping", torch.int64),
          ("pending_row", torch.int64), ("seeds", torch.int64), ("temperatures", torch.float32),
          ("seq_lens", torch.int32), ("block_tables", torch.int32))
PADDING = {"slot_mapping": -1, "pending_row": -1}  # padding rows own no slot and take no pending token (else 0)


@triton.jit
def _take_pending_kernel(ids_ptr, pending_row_ptr, tokens_ptr, rows, BLOCK: tl.constexpr, USE_PDL: tl.constexpr):
    """ids[i] = tokens[pending_row[i]] where pending_row[i] >= 0: the tokens the step before sampled."""
    if USE_PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    row = tl.load(pending_row_ptr + i, mask=i < rows, other=-1)
    token = tl.load(tokens_ptr + tl.maximum(row, 0), mask=row >= 0)
    tl.store(ids_ptr + i, token, mask=row >= 0)


def pick_cuda_graph(batch_size: int, captured_sizes: list[int]) -> tuple[int, int]:
    """The captured decode graph to replay for ``batch_size`` sequences (Exercise 3.3): the smallest of the
    ascending ``captured_sizes`` that holds the batch, and the padding rows it wastes."""
    i = bisect.bisect_left(captured_sizes, batch_size)
    if i == len(captured_sizes):
        raise ValueError(f"batch of {batch_size} exceeds the largest captured graph ({captured_sizes[-1]})")
    return captured_sizes[i], captured_sizes[i] - batch_size


def graph_batch_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, 8, then every multiple of 16: padding stays under 16 slots, the number of graphs small."""
    sizes = {s for s in (1, 2, 4, 8, *range(16, max_batch_size + 1, 16)) if s <= max_batch_size}
    return sorted(sizes | {max_batch_size})


@dataclass
class GraphCoverage:
    decode_steps: int = 0  # all decode steps
    replayed_steps: int = 0  # decode steps served by a graph
    padded_slots: int = 0  # rows computed for padding in replayed steps
    replayed_rows: int = 0  # real rows in replayed steps
    sampled_steps: int = 0  # replayed steps that also sampled in a graph (sample_step)

    def as_dict(self) -> dict:
        replayed = self.replayed_steps / self.decode_steps if self.decode_steps else 0.0
        padding = self.padded_slots / (self.padded_slots + self.replayed_rows) if self.replayed_rows else 0.0
        return {**self.__dict__, "replayed_share": replayed, "padding_share": padding}


class CudaGraphRunner:
    def __init__(self, model, backend, kv_heads: int, hidden_size: int, max_batch_size: int, max_model_len: int,
                 block_size: int, device: torch.device, dtype: torch.dtype, sample=None, max_sampled_rows: int = 0):
        """``sample(hidden, temperatures, seeds) -> tokens``: the draw to record beside each graph (one rank, the
        Triton sampler), or None; ``max_sampled_rows``: the most rows any step samples (a pending token's row)."""
        self.model, self.backend, self.kv_heads, self.sample = model, backend, kv_heads, sample
        self.sizes = graph_batch_sizes(max_batch_size)
        self.max_batch_size = self.sizes[-1]
        self.max_model_len, self.block_size = max_model_len, block_size
        self.pick = learner_code("3.3", pick_cuda_graph)
        self.coverage = GraphCoverage()
        n, width = self.max_batch_size, -(-max_model_len // block_size)
        self.shapes = {name: (n, width) if name == "block_tables" else (n,) for name, _ in FIELDS}
        self.offsets, end = {}, 0
        for name, kind in FIELDS:
            self.offsets[name] = end
            end += -(-int(np.prod(self.shapes[name])) * kind.itemsize // ALIGN) * ALIGN
        self.static = torch.zeros(end, dtype=torch.uint8, device=device)
        for name, value in self._views(self.static).items():
            setattr(self, name, value.fill_(PADDING.get(name, 0)))
        self.query_start_loc = torch.arange(n + 1, dtype=torch.int32, device=device)
        self.outputs = torch.zeros(n, hidden_size, dtype=dtype, device=device)
        # The tokens of the step before, where a graph's step takes its pending tokens: a sampled step's draw,
        # or an eager step's tokens copied in (sample_step)
        self.tokens = torch.zeros(max(n, max_sampled_rows), dtype=torch.int64, device=device)
        self.pinned, self.copied = [], []  # a sampled step's host copies (two, alternating) and their events
        self.host_views: list[dict[str, np.ndarray]] = []  # the fields of each, as NumPy arrays
        self.pending_set = False  # whether pending_row holds a sampled step's rows
        self.rows_written = 0  # rows [rows_written:] hold padding (slot -1, length 0): only those below are reset
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.sample_graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.metas: dict[int, AttentionMetadata] = {}  # kept alive: their scratch buffers belong to the graphs
        self.comm_volume: dict[int, tuple[int, int, int, int]] = {}  # collectives in each graph (comm_stats)

    def _views(self, buffer) -> dict:
        """Each field's view of a (device or pinned host) buffer laid out as ``static``."""
        sizes = {name: int(np.prod(self.shapes[name])) * dtype.itemsize for name, dtype in FIELDS}
        return {name: buffer[self.offsets[name] : self.offsets[name] + sizes[name]].view(dtype).view(self.shapes[name])
                for name, dtype in FIELDS}

    def _metadata(self, size: int) -> AttentionMetadata:
        """Views of the static buffers for a graph of ``size`` rows. The context bound is max_model_len:
        a captured kernel must serve any length, so host-side sizes are the worst case."""
        return AttentionMetadata(is_decode=True, slot_mapping=self.slot_mapping[:size],
                                 query_start_loc=self.query_start_loc[: size + 1], seq_lens=self.seq_lens[:size],
                                 block_tables=self.block_tables[:size], max_query_len=1,
                                 max_seq_len=self.max_model_len, block_size=self.block_size)

    def _forward(self, size: int, meta: AttentionMetadata) -> None:
        if self.sample is not None:  # (rows that take no pending token have pending_row -1)
            pdl = launch_options(self.input_ids.device)
            _take_pending_kernel[(triton.cdiv(size, 128),)](self.input_ids, self.pending_row, self.tokens, size,
                                                           BLOCK=128, USE_PDL=bool(pdl), **pdl)
        self.outputs[:size] = self.model(self.input_ids[:size], self.positions[:size], meta)

    def _draw(self, size: int) -> None:
        self.tokens[:size] = self.sample(self.outputs[:size], self.temperatures[:size], self.seeds[:size])

    @torch.inference_mode()
    def capture(self) -> None:
        pool = None
        for size in reversed(self.sizes):  # largest first: smaller graphs reuse its memory pool
            with self.backend.capturing(size, self.max_model_len, self.kv_heads):
                self._forward(size, self._metadata(size))  # warm-up: compile, autotune
                if self.sample is not None:
                    self._draw(size)
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                self.metas[size] = self._metadata(size)
                before = comm_stats.volume()
                with torch.cuda.graph(graph, pool):
                    self._forward(size, self.metas[size])
            # The collectives recorded in the graph, counted again at each replay (their time is not).
            self.comm_volume[size] = tuple(b - a for a, b in zip(before, comm_stats.volume()))
            pool = graph.pool()
            self.graphs[size] = graph
            if self.sample is not None:
                self.sample_graphs[size] = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.sample_graphs[size], pool):
                    self._draw(size)
        if self.sample is not None:
            # (zeros: the block-table entries a step does not write still name a valid block, as on the run() path)
            self.pinned = [torch.zeros(self.static.numel(), dtype=torch.uint8, pin_memory=True) for _ in range(2)]
            self.copied = [torch.cuda.Event() for _ in self.pinned]
            self.host_views = [{name: v.numpy() for name, v in self._views(b).items()} for b in self.pinned]
        torch.cuda.synchronize()

    def release(self) -> None:
        """Destroy the graphs now, even if a notebook still holds this runner (``coverage`` stays readable): a
        graph that captured NCCL calls keeps its communicator alive, and the group's teardown would hang."""
        for graph in [*self.graphs.values(), *self.sample_graphs.values()]:
            graph.reset()
        self.graphs.clear()
        self.sample_graphs.clear()
        self.metas.clear()

    def serves(self, meta: AttentionMetadata) -> bool:
        """Whether a graph replays this step (a decode batch no larger than the largest graph)."""
        if not meta.is_decode:
            return False
        self.coverage.decode_steps += 1
        return meta.num_seqs <= self.max_batch_size

    def samples(self, inputs, previous_tokens: torch.Tensor | None) -> bool:
        """Whether ``sample_step`` runs this step: a decode step whose every row draws by a sampler plan, no larger
        than the largest graph, on a runner that records the draw."""
        rows = len(inputs.input_ids)
        return (bool(self.sample_graphs) and inputs.phase == "decode" and inputs.draw is not None
                and rows <= self.max_batch_size and len(inputs.logits_index) == rows == len(inputs.seq_lens)
                and (previous_tokens is None and not inputs.pending_index
                     or previous_tokens is not None and len(previous_tokens) <= len(self.tokens)))

    def sample_step(self, inputs, previous_tokens: torch.Tensor | None) -> torch.Tensor:
        """Run a decode step whole (``samples``): its host arrays into the static buffers in one copy, the forward
        graph (which first takes the pending tokens from ``self.tokens``, where ``previous_tokens`` already are or
        are copied), then the sampling graph. Returns the tokens, a view of ``self.tokens``."""
        batch, draw = len(inputs.input_ids), inputs.draw
        size, padding = self.pick(batch, self.sizes)
        self.coverage.decode_steps += 1
        i = self.coverage.sampled_steps % 2
        self.copied[i].synchronize()  # this host buffer's last copy may still be reading it (never recorded: no wait)
        host = self.host_views[i]
        for name, values in (("input_ids", inputs.input_ids), ("positions", inputs.positions),
                             ("slot_mapping", inputs.slots), ("seq_lens", inputs.seq_lens),
                             ("temperatures", draw.temperatures), ("seeds", draw.seeds)):
            host[name][:batch] = values
            host[name][batch:] = PADDING.get(name, 0)
        host["pending_row"][:] = -1
        host["pending_row"][inputs.pending_index] = inputs.pending_row
        tables = inputs.block_tables
        host["block_tables"][:batch, : tables.shape[1]] = tables
        end = self.offsets["block_tables"] + size * self.block_tables.stride(0) * self.block_tables.element_size()
        self.static[:end].copy_(self.pinned[i][:end], non_blocking=True)
        self.copied[i].record()
        if inputs.pending_index and previous_tokens.data_ptr() != self.tokens.data_ptr():  # (samples(): given)
            self.tokens[: len(previous_tokens)] = previous_tokens  # (a step that was not sampled here)
        self.rows_written, self.pending_set = batch, True  # (rows [batch:] were copied as padding)
        self.graphs[size].replay()
        self.sample_graphs[size].replay()
        self.coverage.replayed_steps += 1
        self.coverage.sampled_steps += 1
        self.coverage.replayed_rows += batch
        self.coverage.padded_slots += padding
        return self.tokens[:batch]

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """Replay the smallest graph that holds this decode batch; return the hidden states of its rows."""
        batch = input_ids.shape[0]
        size, padding = self.pick(batch, self.sizes)
        if self.pending_set:  # (a sampled step set them; here input_ids come complete)
            self.pending_row.fill_(-1)
            self.pending_set = False
        self.input_ids[:batch] = input_ids
        self.positions[:batch] = positions
        self.slot_mapping[:batch] = meta.slot_mapping
        self.seq_lens[:batch] = meta.seq_lens
        if self.rows_written > batch:  # rows of an earlier, larger batch become padding again
            self.slot_mapping[batch : self.rows_written] = PADDING["slot_mapping"]
            self.seq_lens[batch : self.rows_written] = 0
        self.rows_written = batch
        self.block_tables[:batch, : meta.block_tables.shape[1]] = meta.block_tables
        self.graphs[size].replay()
        comm_stats.add_volume(self.comm_volume[size])
        self.coverage.replayed_steps += 1
        self.coverage.replayed_rows += batch
        self.coverage.padded_slots += padding
        return self.outputs[:batch]
