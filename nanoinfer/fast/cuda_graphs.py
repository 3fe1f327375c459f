"""CUDA graphs for decode steps: record the model's kernel launches once per batch size, replay them.

A decode step of a small model is hundreds of short kernels; launching them from Python costs more than running
them. A CUDA graph records the launches once (at warm-up, for a ladder of batch sizes) and replays them with one
call. Replays need fixed shapes and addresses: every input lives in a static buffer, and a batch is padded up to
the nearest captured size (``pick_cuda_graph``), padding rows writing to slot -1 (skipped) with context length 0.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch

from nanoinfer.attention.base import AttentionMetadata
from nanoinfer.parallel.comm import comm_stats
from nanoinfer.workbook.registry import learner_code


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

    def as_dict(self) -> dict:
        replayed = self.replayed_steps / self.decode_steps if self.decode_steps else 0.0
        padding = self.padded_slots / (self.padded_slots + self.replayed_rows) if self.replayed_rows else 0.0
        return {**self.__dict__, "replayed_share": replayed, "padding_share": padding}


class CudaGraphRunner:
    def __init__(self, model, backend, kv_heads: int, hidden_size: int, max_batch_size: int, max_model_len: int,
                 block_size: int, device: torch.device, dtype: torch.dtype) -> None:
        self.model, self.backend, self.kv_heads = model, backend, kv_heads
        self.sizes = graph_batch_sizes(max_batch_size)
        self.max_batch_size = self.sizes[-1]
        self.max_model_len, self.block_size = max_model_len, block_size
        self.pick = learner_code("3.3", pick_cuda_graph)
        self.coverage = GraphCoverage()
        n, width = self.max_batch_size, -(-max_model_len // block_size)
        with torch.device(device):
            self.input_ids, self.positions = torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.int64)
            self.slot_mapping = torch.full((n,), -1, dtype=torch.int64)
            self.seq_lens = torch.zeros(n, dtype=torch.int32)
            self.block_tables = torch.zeros(n, width, dtype=torch.int32)
            self.query_start_loc = torch.arange(n + 1, dtype=torch.int32)
            self.outputs = torch.zeros(n, hidden_size, dtype=dtype)
        self.rows_written = 0  # rows [rows_written:] hold padding (slot -1, length 0): only those below are reset
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.metas: dict[int, AttentionMetadata] = {}  # kept alive: their scratch buffers belong to the graphs
        self.comm_volume: dict[int, tuple[int, int, int, int]] = {}  # collectives in each graph (comm_stats)

    def _metadata(self, size: int) -> AttentionMetadata:
        """Views of the static buffers for a graph of ``size`` rows. The context bound is max_model_len:
        a captured kernel must serve any length, so host-side sizes are the worst case."""
        return AttentionMetadata(is_decode=True, slot_mapping=self.slot_mapping[:size],
                                 query_start_loc=self.query_start_loc[: size + 1], seq_lens=self.seq_lens[:size],
                                 block_tables=self.block_tables[:size], max_query_len=1,
                                 max_seq_len=self.max_model_len, block_size=self.block_size)

    @torch.inference_mode()
    def capture(self) -> None:
        pool = None
        for size in reversed(self.sizes):  # largest first: smaller graphs reuse its memory pool
            args = (self.input_ids[:size], self.positions[:size])
            with self.backend.capturing(size, self.max_model_len, self.kv_heads):
                self.outputs[:size] = self.model(*args, self._metadata(size))  # warm-up: compile, autotune
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                self.metas[size] = self._metadata(size)
                before = comm_stats.volume()
                with torch.cuda.graph(graph, pool):
                    self.outputs[:size] = self.model(*args, self.metas[size])
            # The collectives recorded in the graph, counted again at each replay (their time is not).
            self.comm_volume[size] = tuple(b - a for a, b in zip(before, comm_stats.volume()))
            pool = graph.pool()
            self.graphs[size] = graph
        torch.cuda.synchronize()

    def release(self) -> None:
        """Destroy the graphs now, even if a notebook still holds this runner (``coverage`` stays readable): a
        graph that captured NCCL calls keeps its communicator alive, and the group's teardown would hang."""
        for graph in self.graphs.values():
            graph.reset()
        self.graphs.clear()
        self.metas.clear()

    def serves(self, meta: AttentionMetadata) -> bool:
        """Whether a graph replays this step (a decode batch no larger than the largest graph)."""
        if not meta.is_decode:
            return False
        self.coverage.decode_steps += 1
        return meta.num_seqs <= self.max_batch_size

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """Replay the smallest graph that holds this decode batch; return the hidden states of its rows."""
        batch = input_ids.shape[0]
        size, padding = self.pick(batch, self.sizes)
        self.input_ids[:batch] = input_ids
        self.positions[:batch] = positions
        self.slot_mapping[:batch] = meta.slot_mapping
        self.seq_lens[:batch] = meta.seq_lens
        if self.rows_written > batch:  # rows of an earlier, larger batch become padding again
            self.slot_mapping[batch : self.rows_written] = -1
            self.seq_lens[batch : self.rows_written] = 0
        self.rows_written = batch
        self.block_tables[:batch, : meta.block_tables.shape[1]] = meta.block_tables
        self.graphs[size].replay()
        comm_stats.add_volume(self.comm_volume[size])
        self.coverage.replayed_steps += 1
        self.coverage.replayed_rows += batch
        self.coverage.padded_slots += padding
        return self.outputs[:batch]
