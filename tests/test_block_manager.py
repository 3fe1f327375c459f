"""The block manager under random allocate / append / free / preempt sequences (hypothesis), plus a few
direct cases. Invariants are checked after every operation."""

from collections import Counter

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from nanoinfer.engine.block_manager import BlockManager
from nanoinfer.engine.sequence import Sequence
from nanoinfer.sampling_params import SamplingParams

BLOCK = 4


def new_seq(seq_id: int, tokens: list[int]) -> Sequence:
    return Sequence(seq_id, tokens, SamplingParams(max_tokens=100))


def check_invariants(bm: BlockManager, running: list[Sequence]) -> None:
    refs = Counter(b for s in running for b in s.block_table)
    for block in bm.blocks:
        assert block.ref_count == refs.get(block.block_id, 0), f"block {block.block_id} ref count is wrong"
    assert set(bm.free_block_ids) == {b.block_id for b in bm.blocks if b.ref_count == 0}
    for h, block_id in bm.cached_block_ids.items():
        assert bm.blocks[block_id].hash == h
    for s in running:
        assert len(set(s.block_table)) == len(s.block_table), "a block appears twice in one table"
        assert len(s.block_table) * BLOCK >= s.num_computed_tokens
        # Every shared (published) block holds exactly the tokens this sequence has at that place.
        for i, block_id in enumerate(s.block_table):
            block = bm.blocks[block_id]
            if block.hash is not None:
                assert list(block.token_ids) == s.block_token_ids(i, BLOCK)


class BlockManagerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.bm = BlockManager(num_blocks=24, block_size=BLOCK)
        self.running: list[Sequence] = []
        self.waiting: list[Sequence] = []
        self.next_id = 0

    # Prompts come from a tiny alphabet with a shared stem, so prefixes collide often.
    @rule(stem=st.integers(0, 2), length=st.integers(1, 20), tail=st.lists(st.integers(0, 3), max_size=20))
    def add(self, stem, length, tail):
        tokens = ([stem] * 8 + tail)[:length] or [stem]
        self.waiting.append(new_seq(self.next_id, tokens))
        self.next_id += 1

    @precondition(lambda self: self.waiting)
    @rule(data=st.data())
    def admit(self, data):
        seq = data.draw(st.sampled_from(self.waiting))
        free_before = self.bm.num_free_blocks
        if self.bm.try_allocate(seq):
            self.waiting.remove(seq)
            self.running.append(seq)
            assert seq.num_computed_tokens % BLOCK == 0 and seq.num_computed_tokens < seq.num_tokens
            # Simulate the prefill: everything gets computed and full blocks are published.
            self.bm.publish_full_blocks(seq, seq.num_tokens)
            seq.num_computed_tokens = seq.num_tokens
        else:
            assert self.bm.num_free_blocks == free_before and not seq.block_table

    @precondition(lambda self: self.running)
    @rule(data=st.data(), token=st.integers(0, 3))
    def append(self, data, token):
        seq = data.draw(st.sampled_from(self.running))
        seq.token_ids.append(token)
        if self.bm.try_reserve(seq, seq.num_tokens):
            self.bm.publish_full_blocks(seq, seq.num_tokens)
            seq.num_computed_tokens = seq.num_tokens
        else:
            seq.token_ids.pop()
            assert self.bm.num_free_blocks == 0

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def finish(self, data):
        seq = data.draw(st.sampled_from(self.running))
        self.bm.free(seq)
        self.running.remove(seq)

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def preempt(self, data):
        seq = data.draw(st.sampled_from(self.running))
        self.bm.free(seq)
        self.running.remove(seq)
        self.waiting.append(seq)  # comes back later with all its tokens as the "prompt"

    @invariant()
    def invariants(self):
        check_invariants(self.bm, self.running)

    def teardown(self):
        for seq in self.running:
            self.bm.free(seq)
        assert self.bm.num_free_blocks == self.bm.num_blocks


TestBlockManagerMachine = BlockManagerMachine.TestCase
TestBlockManagerMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_prefix_hit_reuses_blocks_and_counts():
    bm = BlockManager(num_blocks=10, block_size=BLOCK)
    a = new_seq(0, list(range(10)))  # 2 full blocks + 2 tokens
    assert bm.try_allocate(a)
    bm.publish_full_blocks(a, a.num_tokens)
    b = new_seq(1, list(range(9)) + [99])
    assert bm.try_allocate(b)
    assert b.block_table[:2] == a.block_table[:2] and b.num_computed_tokens == 8
    assert bm.blocks[a.block_table[0]].ref_count == 2
    stats = bm.get_cache_stats()
    assert (stats["hit_blocks"], stats["miss_blocks"], stats["hit_tokens"]) == (2, 2, 8)


def test_freed_cached_blocks_survive_until_reused():
    bm = BlockManager(num_blocks=4, block_size=BLOCK)
    a = new_seq(0, list(range(9)))
    assert bm.try_allocate(a)
    bm.publish_full_blocks(a, a.num_tokens)
    bm.free(a)
    assert bm.num_free_blocks == 4 and bm.num_cached_blocks == 2
    again = new_seq(1, list(range(9)))
    assert bm.try_allocate(again) and again.num_computed_tokens == 8
    bm.free(again)
    other = new_seq(2, [7] * 16)  # needs all 4 blocks: evicts the cached prefix
    assert bm.try_allocate(other)
    assert bm.num_cached_blocks == 0 and bm.counters.evictions == 2


def test_chained_hash_distinguishes_history():
    bm = BlockManager(num_blocks=8, block_size=BLOCK)
    a = new_seq(0, [1, 1, 1, 1, 5, 5, 5, 5, 0])
    assert bm.try_allocate(a)
    bm.publish_full_blocks(a, a.num_tokens)
    b = new_seq(1, [2, 2, 2, 2, 5, 5, 5, 5, 0])  # same second block, different first block
    assert bm.try_allocate(b)
    assert b.num_computed_tokens == 0 and not set(b.block_table) & set(a.block_table)


def test_event_log_records_every_transition():
    bm = BlockManager(num_blocks=6, block_size=BLOCK, record_events=True)
    a = new_seq(0, list(range(6)))
    bm.try_allocate(a)
    bm.publish_full_blocks(a, 6)
    bm.free(a)
    frame = bm.events_frame()
    assert list(frame["kind"]) == ["allocate", "allocate", "publish", "free", "free"]
    assert set(frame.columns) == {"step", "kind", "seq_id", "block_id", "ref_count"}
