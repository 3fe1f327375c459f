"""Paged KV cache bookkeeping: which physical block holds which tokens of which sequence.

The KV cache is a pool of fixed-size blocks. A sequence's *block table* lists the blocks that hold its
tokens, in order, so its keys and values need not be contiguous (PagedAttention).

Prefix caching: once a block is full, it is published under a hash of its tokens chained with the hash
of the block before it, so equal hashes mean equal prefixes. A new sequence whose leading blocks hash to
published blocks shares them (reference counts) and skips computing those tokens. A freed block keeps
its contents and hash until it is handed out again, so a prompt seen a while ago can still hit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence as TokenIds
from dataclasses import dataclass

import numpy as np
import xxhash

from nanoinfer.engine.events import EventBus
from nanoinfer.engine.sequence import Sequence
from nanoinfer.fast.host import chained_block_hashes, int64_bytes
from nanoinfer.workbook.registry import learner_code


def compute_block_hash(token_ids: TokenIds[int], parent_hash: int | None) -> int:
    """The prefix-cache key of a full block (Exercise 6.1): its tokens chained with the hash of the block
    before it, so equal hashes mean equal prefixes, whose keys and values are equal too."""
    h = xxhash.xxh64()
    if parent_hash is not None:
        h.update(parent_hash.to_bytes(8, "little"))
    h.update(np.asarray(token_ids, dtype=np.int64).tobytes())
    return h.intdigest()


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None  # set when the block is full and published to the prefix cache
    tokens: bytes = b""  # its tokens (int64 bytes) once published: checked on a hit, since hashes can collide
    token_ids = property(lambda self: tuple(np.frombuffer(self.tokens, dtype=np.int64).tolist()))  # (to read)


@dataclass
class CacheCounters:
    """Raw counts since the engine started; ``get_cache_stats`` turns them into rates."""

    hit_blocks: int = 0  # full prompt blocks found in the prefix cache at admission
    miss_blocks: int = 0  # full prompt blocks that had to be computed
    hit_tokens: int = 0
    miss_tokens: int = 0  # every token computed at admission, the partial last block included
    evictions: int = 0  # cached blocks handed out again for new tokens
    preemptions: int = 0


@dataclass
class BlockEvent:
    step: int
    kind: str  # "allocate", "hit", "publish", "free", "evict"
    seq_id: int | None
    block_id: int
    ref_count: int


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True,
                 record_events: bool = False, events: EventBus | None = None) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        # Free blocks in eviction order: the front is handed out first. Blocks that hold a published
        # prefix go to the back when freed, empty ones to the front, so cached prefixes live longest.
        self.free_block_ids: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.cached_block_ids: dict[int, int] = {}  # hash -> block id
        self.counters = CacheCounters()
        self.events: list[BlockEvent] | None = [] if record_events else None
        self.step = 0  # set by the engine, for the event log
        self.bus = events if events is not None else EventBus()
        self._hash = learner_code("6.1", compute_block_hash)
        self._cache_stats = learner_code("2.3", get_cache_stats)

    # ---- queries -------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self.free_block_ids)

    @property
    def num_cached_blocks(self) -> int:
        """Blocks published in the prefix cache (held by sequences, or free with their contents kept)."""
        return len(self.cached_block_ids)

    def get_cache_stats(self) -> dict:
        """Hit rates and block usage (``get_cache_stats`` below)."""
        return self._cache_stats(self)

    # ---- allocation ----------------------------------------------------------------------------
    def try_allocate(self, seq: Sequence) -> bool:
        """Give a waiting sequence blocks for all its tokens, reusing cached prefix blocks.

        Returns False, changing nothing, if the free blocks are too few. On success the cached tokens
        count as computed. The cache never covers the last token: its logits are needed to sample.
        """
        assert not seq.block_table, f"sequence {seq.seq_id} already holds blocks"
        assert not seq.num_pending_tokens, f"sequence {seq.seq_id} still waits for a token value"
        bs, width = self.block_size, self.block_size * 8  # (a block's tokens as int64 bytes)
        hits: list[int] = []
        num_eligible = (seq.num_tokens - 1) // bs if self.enable_prefix_caching else 0
        for i, h in enumerate(self._block_hashes(seq, num_eligible)):
            block_id = self.cached_block_ids.get(h)
            if block_id is None or self.blocks[block_id].tokens != seq.block_token_bytes[i * width : (i + 1) * width]:
                break
            hits.append(block_id)

        num_new = seq.num_blocks_needed(bs) - len(hits)
        num_revived = sum(1 for b in hits if self.blocks[b].ref_count == 0)  # cached but free: leave the pool
        if num_new + num_revived > len(self.free_block_ids):
            return False

        for block_id in hits:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.free_block_ids[block_id]
            block.ref_count += 1
            self._log("hit", seq, block)
        new_blocks = self._take_free_blocks(seq, num_new)
        seq.block_table = hits + new_blocks
        seq.num_published_blocks = len(hits)
        seq.num_computed_tokens = len(hits) * bs

        c = self.counters
        c.hit_blocks += len(hits)
        c.miss_blocks += num_eligible - len(hits)
        c.hit_tokens += len(hits) * bs
        c.miss_tokens += seq.num_tokens - len(hits) * bs
        self.bus.emit("blocks_allocated", "BlockManager", seq.seq_id, block_ids=list(seq.block_table),
                      num_cached_blocks=len(hits))
        return True

    def try_reserve(self, seq: Sequence, num_tokens: int) -> bool:
        """Grow a running sequence's block table to hold ``num_tokens`` tokens (decode needs <= 1 block)."""
        missing = seq.num_blocks_needed(self.block_size, num_tokens) - len(seq.block_table)
        if missing > len(self.free_block_ids):
            return False
        if missing > 0:
            seq.block_table += self._take_free_blocks(seq, missing)
        return True

    def publish_full_blocks(self, seq: Sequence, num_computed_tokens: int) -> None:
        """Offer the blocks that ``num_computed_tokens`` fills to the prefix cache.

        Called when a step is scheduled, before it runs: every layer writes the step's keys and values
        before it reads attention, so a later sequence in the same step can already share these blocks.
        """
        if not self.enable_prefix_caching:
            return
        # A block is hashed by its tokens: one that ends in a still-pending token waits for a later step.
        num_full = min(num_computed_tokens, seq.num_known_tokens) // self.block_size
        if num_full <= seq.num_published_blocks:
            return
        hashes, width = self._block_hashes(seq, num_full), self.block_size * 8
        for i in range(seq.num_published_blocks, num_full):
            block = self.blocks[seq.block_table[i]]
            if block.hash is None and hashes[i] not in self.cached_block_ids:
                block.hash, block.tokens = hashes[i], seq.block_token_bytes[i * width : (i + 1) * width]
                self.cached_block_ids[block.hash] = block.block_id
                self._log("publish", seq, block)
            # else: an identical block computed by another sequence is already published; this copy
            # stays private and is freed like any unpublished block.
        seq.num_published_blocks = num_full

    def free(self, seq: Sequence) -> None:
        """Drop a sequence's references; blocks that reach zero go back to the pool, contents intact."""
        self.bus.emit("blocks_freed", "BlockManager", seq.seq_id, block_ids=list(seq.block_table))
        self.trim(seq, 0)
        seq.num_published_blocks = 0
        seq.num_computed_tokens = 0

    def trim(self, seq: Sequence, num_tokens: int) -> None:
        """Drop the references to the blocks past the first ``num_tokens`` tokens (all of them: ``free``;
        speculative decoding: the blocks that only rejected draft tokens reached)."""
        keep = seq.num_blocks_needed(self.block_size, num_tokens)
        for block_id in reversed(seq.block_table[keep:]):  # tail blocks first: they are the least shared
            block = self.blocks[block_id]
            block.ref_count -= 1
            assert block.ref_count >= 0, f"block {block_id} freed twice"
            if block.ref_count == 0:
                self.free_block_ids[block_id] = None
                if block.hash is None:
                    self.free_block_ids.move_to_end(block_id, last=False)  # nothing worth keeping: reuse first
            self._log("free", seq, block)
        del seq.block_table[keep:]

    # ---- internals -----------------------------------------------------------------------------
    def _take_free_blocks(self, seq: Sequence, n: int) -> list[int]:
        block_ids = [self.free_block_ids.popitem(last=False)[0] for _ in range(n)]
        for block in map(self.blocks.__getitem__, block_ids):
            if block.hash is not None:  # evict the cached prefix this block still held
                if self.cached_block_ids.get(block.hash) == block.block_id:
                    del self.cached_block_ids[block.hash]
                self.counters.evictions += 1
                self._log("evict", seq, block)
                block.hash, block.tokens = None, b""
            block.ref_count = 1
            self._log("allocate", seq, block)
        return block_ids

    def _block_hashes(self, seq: Sequence, num_full_blocks: int) -> list[int]:
        """Chained hashes of the sequence's first full blocks, computed once, kept on the sequence with their tokens."""
        hashes, bs = seq.block_hashes, self.block_size
        new_tokens = int64_bytes(seq.token_ids[len(hashes) * bs : num_full_blocks * bs])  # (fast/host.py)
        if self._hash is compute_block_hash:  # the reference: all new blocks in one pass (fast/host.py)
            hashes += chained_block_hashes(new_tokens, bs, hashes[-1] if hashes else None)
        while len(hashes) < num_full_blocks:  # a learner's hash (Exercise 6.1): called per block, as written
            i = len(hashes)
            hashes.append(self._hash(seq.block_token_ids(i, bs), hashes[-1] if hashes else None))
        seq.block_token_bytes += new_tokens  # (after the hashes: a hash that raised adds no tokens to check)
        return hashes[:num_full_blocks]

    def _log(self, kind: str, seq: Sequence | None, block: Block) -> None:
        if self.events is not None:
            self.events.append(
                BlockEvent(self.step, kind, seq.seq_id if seq else None, block.block_id, block.ref_count)
            )

    def events_frame(self):
        """The event log as a pandas DataFrame (needs ``record_block_events=True``)."""
        import pandas as pd

        if self.events is None:
            raise RuntimeError("block events are not recorded: build the engine with record_block_events=True")
        return pd.DataFrame([e.__dict__ for e in self.events], columns=list(BlockEvent.__dataclass_fields__))


def get_cache_stats(block_manager: BlockManager) -> dict:
    """Block usage now and prefix-cache effectiveness since the start, as one flat dict (Exercise 2.3).
    ``hit_rate``: the share of admitted prompt tokens served by the cache; ``block_hit_rate``: the share of
    cacheable full prompt blocks that hit."""
    c = block_manager.counters
    tokens, blocks = c.hit_tokens + c.miss_tokens, c.hit_blocks + c.miss_blocks
    return {
        "total_blocks": block_manager.num_blocks, "used_blocks": block_manager.num_used_blocks,
        "free_blocks": block_manager.num_free_blocks, "cached_blocks": block_manager.num_cached_blocks,
        "hit_blocks": c.hit_blocks, "miss_blocks": c.miss_blocks, "hit_tokens": c.hit_tokens,
        "miss_tokens": c.miss_tokens, "hit_rate": c.hit_tokens / tokens if tokens else 0.0,
        "block_hit_rate": c.hit_blocks / blocks if blocks else 0.0, "evictions": c.evictions,
        "preemptions": c.preemptions,
    }
