"""One speculative decode step, in place of ModelRunner.launch for the engine's decode batches:

    1. room     how many tokens each sequence may draft: num_speculative_tokens, capped by its max_tokens, by
                max_model_len and by the free KV slots (reserved now; a draft never preempts anyone)
    2. propose  the proposer's drafts (ngram.py, draft_model.py), appended to the sequences' tokens
    3. verify   one target pass feeds each sequence's last token and its drafts and keeps the logits of every
                position. Each fed token is laid out as a decode row of its own (its sequence's block table, the
                context up to its own position: the step writes every token's keys and values before attention
                reads), so verification runs the backends' decode kernels, and replays CUDA graphs on a GPU
    4. accept   rejection.py's rule (Exercise 8.1): per sequence, the accepted drafts and one more token
    5. roll back  rejected drafts leave the tokens, the computed count and the KV blocks only they reached;
                the prefix cache never saw them (blocks are published up to the known tokens only)
The engine then appends the last token as for any decode step (Scheduler.advance and complete).
Async scheduling is off with speculation: drafting reads the accepted tokens on the host.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from nanoinfer.engine.model_runner import StepHandle
from nanoinfer.engine.scheduler import ScheduledBatch
from nanoinfer.speculative.rejection import probabilities, rejection_sample
from nanoinfer.workbook.registry import learner_code


class Speculator:
    def __init__(self, engine) -> None:
        spec = engine.config.speculative_config
        self.engine, self.runner = engine, engine.model_runner
        self.k = spec["num_speculative_tokens"]
        if spec["method"] == "ngram":
            from nanoinfer.speculative.ngram import NgramProposer

            self.proposer = NgramProposer(spec)
        else:
            from nanoinfer.speculative.draft_model import DraftModelProposer

            self.proposer = DraftModelProposer(spec, self.runner)
        self.accept = learner_code("8.1", rejection_sample)
        self.generator = torch.Generator(device=self.runner.device).manual_seed(engine.config.seed)
        self.runner.fast_paths.add("speculative decoding", f"{self.proposer.describe()}, k={self.k}",
                                   f"speculative_config={spec}; async scheduling off: drafting reads the "
                                   "accepted tokens on the host; verify steps: one decode row per token")

    # ---- set-up --------------------------------------------------------------------------------
    def share_kv_budget(self, num_blocks: int, knob: str) -> int:
        """A separate draft keeps a KV block for every target block: a byte budget pays for both."""
        draft = self.proposer.bytes_per_block
        if not draft or knob.startswith("num_kvcache_blocks"):
            return num_blocks
        target = self.engine.bytes_per_block
        return self.engine.config.check_kv_blocks(num_blocks * target // (target + draft), target + draft, knob)

    def setup_kv_cache(self, num_blocks: int) -> None:
        self.proposer.setup_kv_cache(num_blocks)

    def shutdown(self) -> None:
        self.proposer.shutdown()

    # ---- one step ------------------------------------------------------------------------------
    def launch(self, batch: ScheduledBatch, previous: StepHandle | None = None) -> StepHandle:
        t0 = time.perf_counter()
        seqs, bm = batch.seqs, self.engine.block_manager
        lengths = [s.num_tokens for s in seqs]
        drafts, draft_probs = self.proposer.propose(seqs, [self._room(s) for s in seqs], self._noise)
        for seq, d in zip(seqs, drafts):
            seq.token_ids.extend(d)
        batch.num_new_tokens = [1 + len(d) for d in drafts]
        inputs = self.runner.host_inputs(batch)
        inputs.logits_index = list(range(len(inputs.input_ids)))  # the drafts' logits too
        starts = inputs.query_start[:-1]  # each sequence's first row of logits
        if any(drafts):  # every fed token a decode row of its own, seeing the cache up to its own position
            inputs.block_tables = np.repeat(inputs.block_tables, inputs.query_lens, axis=0)
            inputs.seq_lens = [p + 1 for p in inputs.positions]
            inputs.query_lens = [1] * len(inputs.positions)
            inputs.query_start = list(range(len(inputs.positions) + 1))
        t1 = time.perf_counter()
        logits = self.runner.run_on_ranks(inputs, None)
        t2 = time.perf_counter()
        num_accepted, tokens = self.verify(seqs, drafts, draft_probs, logits, starts)
        kept = []
        for i, (seq, length, d, a) in enumerate(zip(seqs, lengths, drafts, num_accepted)):
            for j in range(a):  # an accepted stop token ends the request there
                if self.engine.scheduler._finish_reason(seq, length + j) is not None:
                    a, tokens[i] = j, d[j]
                    break
            kept.append(a)
            del seq.token_ids[length + a :]
            # advance() counts all 1 + len(d) tokens fed as computed: only the last token and the kept drafts are
            seq.num_computed_tokens -= len(d) - a
            bm.trim(seq, length + a)  # blocks that only rejected drafts reached go back to the pool
            m = seq.metrics
            m.num_spec_steps += bool(d)
            m.num_drafted_tokens += len(d)
            m.num_accepted_tokens += num_accepted[i]
        self.proposer.accepted(seqs, lengths, drafts, kept)
        host = torch.tensor(tokens)
        return StepHandle(batch, {s.seq_id: i for i, s in enumerate(seqs)}, host, host, None, None,
                          (t1 - t0, time.perf_counter() - t2), sum(len(d) for d in drafts), sum(kept))

    def _room(self, seq) -> int:
        """Drafts ``seq`` may take this step; their KV slots are reserved here (the scheduler reserved the
        last token's)."""
        bm, params = self.engine.block_manager, seq.sampling_params
        n = seq.num_tokens
        room = min(self.k, params.max_tokens - seq.num_output_tokens - 1, self.engine.config.max_model_len - n - 1,
                   (len(seq.block_table) + bm.num_free_blocks) * bm.block_size - n)
        if room <= 0:
            return 0
        assert bm.try_reserve(seq, n + room)
        return room

    def _noise(self, seqs, width: int) -> torch.Tensor:
        """Exp(1) noise [len(seqs), width]; a seeded request's row from its own stream."""
        noise = torch.empty(len(seqs), width, device=self.runner.device).exponential_(generator=self.generator)
        for row, seq in zip(noise, seqs):
            if seq.generator is not None:
                row.exponential_(generator=seq.generator)
        return noise

    def verify(self, seqs, drafts, draft_probs, logits, starts) -> tuple[list[int], list[int]]:
        """The accept/reject rule over the batch, the drafts padded to the longest."""
        device, V = logits.device, logits.shape[1]
        B, K = len(seqs), max(len(d) for d in drafts)
        rows = [[start + min(j, len(d)) for j in range(K + 1)] for start, d in zip(starts, drafts)]
        params = [s.sampling_params for s, d in zip(seqs, drafts) for _ in range(len(d) + 1)]
        target = probabilities(logits, params)[torch.tensor(rows, device=device)]  # [B, K + 1, V]
        tokens = torch.tensor([d + [0] * (K - len(d)) for d in drafts], dtype=torch.int64, device=device)
        if draft_probs is None:  # a point mass on each draft (ngram)
            draft = F.one_hot(tokens, V).float()
        else:
            pad = torch.zeros(V, device=device)
            draft = torch.stack([torch.stack(q + [pad] * (K - len(q))) if K else pad[:0].view(0, V)
                                 for q in draft_probs])
        uniforms = torch.zeros(B, K, device=device)
        noise = torch.ones(B, V, device=device)
        sampled = [i for i, s in enumerate(seqs) if not s.sampling_params.greedy]
        if sampled:  # (greedy rows are one-hot: they need no randomness)
            noise[sampled] = self._noise([seqs[i] for i in sampled], V)
            for i in sampled:
                g = seqs[i].generator or self.generator
                uniforms[i, : len(drafts[i])].uniform_(generator=g)
        num_drafts = torch.tensor([len(d) for d in drafts], dtype=torch.int64, device=device)
        accepted, next_tokens = self.accept(target, draft, tokens, num_drafts, uniforms, noise)
        return accepted.tolist(), next_tokens.tolist()
