"""Drafting with a model (method "draft_model"): a smaller checkpoint with the target's vocabulary, or the
target's own first layers ("self"), proposes k tokens one at a time.

A separate draft has a KV cache of its own, with as many blocks as the target's and the same block tables
(a sequence's slots are the same in both), so it needs no bookkeeping beyond how many of each sequence's
tokens its cache holds: each step it first catches up on the tokens it has not seen (the whole prompt the
first time, then the tokens accepted since), then drafts. The self-draft shares the target's weights and,
for its layers, the target's KV cache: the target's pass writes the same keys and values there.
"""

from __future__ import annotations

import copy
import dataclasses
import weakref
from dataclasses import dataclass

import torch

from nanoinfer.engine.model_runner import ModelRunner, kv_bytes_per_block
from nanoinfer.engine.scheduler import ScheduledBatch
from nanoinfer.fast import FastPaths, capture_cuda_graphs
from nanoinfer.speculative.config import draft_checkpoint
from nanoinfer.speculative.rejection import probabilities


class FirstLayers:
    """The target's first ``n`` decoder layers, then its final norm and LM head (the "self" draft)."""

    def __init__(self, target, n: int) -> None:
        self.target, self.n = target, n

    def __call__(self, input_ids, positions, meta):
        model = self.target.model
        hidden, residual = model.embed(input_ids), None
        for layer in model.layers[: self.n]:
            hidden, residual = layer(positions, hidden, residual, meta)
        return model.norm(hidden, residual)[0]

    def compute_logits(self, hidden):
        return self.target.compute_logits(hidden)


@dataclass
class _View:
    """What ModelRunner.host_inputs reads of a sequence, for one draft pass: the tokens, how many of them the
    draft's cache holds, the blocks."""

    seq_id: int
    token_ids: list[int]
    num_computed_tokens: int
    block_table: list[int]
    num_tokens = property(lambda self: len(self.token_ids))
    num_known_tokens = num_tokens


class DraftModelProposer:
    def __init__(self, spec: dict, target: ModelRunner) -> None:
        self.model_name, self.target = spec["model"], target
        self.shares_kv = self.model_name == "self"
        if self.shares_kv:  # the target's runner, with the model cut short: same weights, same KV cache
            self.runner = copy.copy(target)
            self.runner.model = FirstLayers(target.model, spec["num_draft_layers"])
            self.runner.graphs, self.runner.fast_paths = None, FastPaths()
            self.bytes_per_block = 0
            self.num_layers = spec["num_draft_layers"]
        else:
            model_dir, hf_config = draft_checkpoint(self.model_name)
            # (sampler "torch": the draft samples its own way, so its CUDA graphs record no draw)
            config = dataclasses.replace(target.config, model=self.model_name, speculative_config=None, sampler="torch")
            self.runner = ModelRunner(config, hf_config, model_dir, target.device, target.dtype)
            self.bytes_per_block = kv_bytes_per_block(hf_config, config.kvcache_block_size, target.dtype)
            self.num_layers = hf_config.num_hidden_layers
        # sequence -> (its preemptions then, leading tokens whose keys and values the draft's cache holds)
        self.cached: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def describe(self) -> str:
        return (f"the target's first {self.num_layers} layers" if self.shares_kv else
                f"draft model {self.model_name} ({self.num_layers} layers)")

    def setup_kv_cache(self, num_blocks: int) -> None:
        """After the target's cache: the separate draft's own cache (and its CUDA graphs), or the self-draft's
        CUDA graphs over the target's cache."""
        if self.shares_kv:  # (the copy was made before the target's cache existed)
            self.runner.kv_cache = self.target.kv_cache
            self.runner.graphs = capture_cuda_graphs(self.runner)
        else:
            self.runner.setup_kv_cache(num_blocks)

    def shutdown(self) -> None:
        if not self.shares_kv:
            self.runner.shutdown()
        elif self.runner.graphs is not None:
            self.runner.graphs.release()

    def _start(self, seq) -> int:
        """The first token the draft has not computed for ``seq`` (0 again after a preemption)."""
        if self.shares_kv:
            return seq.num_computed_tokens
        preemptions, n = self.cached.get(seq, (-1, 0))
        return n if preemptions == seq.metrics.num_preemptions else 0

    @torch.inference_mode()
    def propose(self, seqs, rooms: list[int], noise) -> tuple[list[list[int]], list[list[torch.Tensor]]]:
        """Up to rooms[i] tokens for each sequence, drawn from the draft's distributions (greedy requests: its
        argmax), and those distributions. Pass 0 feeds the tokens the draft has not seen, pass j the j-th draft."""
        drafts: list[list[int]] = [[] for _ in seqs]
        probs: list[list[torch.Tensor]] = [[] for _ in seqs]
        active = [i for i, r in enumerate(rooms) if r > 0]
        views = [_View(seqs[i].seq_id, list(seqs[i].token_ids), self._start(seqs[i]), seqs[i].block_table)
                 for i in active]
        while active:
            counts = [v.num_tokens - v.num_computed_tokens for v in views]
            batch = ScheduledBatch("decode" if max(counts) == 1 else "prefill", views, counts)
            logits = self.runner.execute(self.runner.host_inputs(batch))
            params = [seqs[i].sampling_params for i in active]
            q = probabilities(logits, params)
            tokens = q.argmax(dim=1) if all(p.greedy for p in params) else (q / noise([seqs[i] for i in active],
                                                                                       q.shape[1])).argmax(dim=1)
            for row, (i, view, token) in enumerate(zip(active, views, tokens.tolist())):
                drafts[i].append(token)
                probs[i].append(q[row])
                view.num_computed_tokens = view.num_tokens
                view.token_ids.append(token)
            keep = [n for n, i in enumerate(active) if len(drafts[i]) < rooms[i]]
            active, views = [active[n] for n in keep], [views[n] for n in keep]
        return drafts, probs

    def accepted(self, seqs, lengths: list[int], drafts: list[list[int]], kept: list[int]) -> None:
        """The draft's cache holds its sequence's tokens up to the last kept draft it was fed (it never sees the
        last draft it proposed)."""
        if self.shares_kv:
            return
        for seq, length, d, a in zip(seqs, lengths, drafts, kept):
            if d:
                self.cached[seq] = (seq.metrics.num_preemptions, length + min(a, len(d) - 1))
