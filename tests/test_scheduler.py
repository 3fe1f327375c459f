"""The scheduler alone, driven with fake sampled tokens: budgets, chunking, policies, preemption."""

import hypothesis.strategies as st
from hypothesis import given, settings

from nanoinfer.config import EngineConfig
from nanoinfer.engine.block_manager import BlockManager
from nanoinfer.engine.scheduler import Scheduler
from nanoinfer.engine.sequence import Sequence
from nanoinfer.sampling_params import SamplingParams


def make(num_blocks=64, block_size=4, **cfg):
    config = EngineConfig(max_model_len=cfg.pop("max_model_len", 64), kvcache_block_size=block_size, **cfg)
    bm = BlockManager(num_blocks, block_size)
    return Scheduler(config, bm, eos_token_ids={0}), bm


def add(sched, seq_id, length, max_tokens=4, arrival=None):
    seq = Sequence(seq_id, [1 + (seq_id * 7 + i) % 50 for i in range(length)],
                   SamplingParams(max_tokens=max_tokens, ignore_eos=True), arrival_time=arrival or float(seq_id))
    sched.add(seq)
    return seq


def step(sched):
    batch = sched.schedule()
    sampled = [5 if s else None for s in batch.samples()]
    finished = sched.complete(batch, sched.advance(batch), sampled)
    return batch, finished


def run_all(sched, limit=1000):
    batches = []
    while sched.has_unfinished():
        batches.append(step(sched)[0])
        assert len(batches) < limit
    return batches


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=12), budget=st.integers(4, 64),
       max_seqs=st.integers(1, 6), blocks=st.integers(12, 40))
def test_budgets_hold_and_everything_finishes(lengths, budget, max_seqs, blocks):
    sched, bm = make(num_blocks=blocks, max_num_batched_tokens=budget, max_num_seqs=max_seqs)
    seqs = [add(sched, i, n, max_tokens=1 + i % 5) for i, n in enumerate(lengths)]
    for batch in run_all(sched):
        assert batch.num_tokens <= budget and len(batch.seqs) <= max_seqs
        assert batch.phase == "decode" or all(n >= 1 for n in batch.num_new_tokens)
        if batch.phase == "decode":
            assert batch.num_new_tokens == [1] * len(batch.seqs)
    assert all(s.is_finished and s.num_output_tokens == s.sampling_params.max_tokens for s in seqs)
    assert bm.num_free_blocks == bm.num_blocks


def test_long_prompt_is_chunked_and_decode_waits_for_prefill():
    sched, _ = make(max_num_batched_tokens=8)
    seq = add(sched, 0, 20)
    phases = [(b.phase, b.num_new_tokens) for b in run_all(sched)]
    assert phases[:3] == [("prefill", [8]), ("prefill", [8]), ("prefill", [4])]
    assert all(p == "decode" for p, _ in phases[3:]) and seq.num_output_tokens == 4


def order_of_admission(policy):
    sched, _ = make(max_num_batched_tokens=64, max_num_seqs=1, scheduling_policy=policy)
    for i, length in enumerate([10, 3, 30, 6]):
        add(sched, i, length, max_tokens=2)
    admitted = []
    while sched.has_unfinished():
        batch, _ = step(sched)
        if batch.phase == "prefill":
            admitted += [s.seq_id for s in batch.seqs]
    return admitted


def test_policies_order_admission():
    assert order_of_admission("fifo") == [0, 1, 2, 3]
    assert order_of_admission("sjf") == [1, 3, 0, 2]
    assert order_of_admission("ljf") == [2, 0, 3, 1]


def test_preemption_takes_the_latest_arrival_first_and_recomputes():
    # 3 sequences of 8 tokens in 7 blocks of 4: all admitted (2 blocks each), the first decode needs a
    # third block for each, so the latest arrivals are preempted until the rest fit.
    sched, bm = make(num_blocks=7, max_model_len=16)
    seqs = [add(sched, i, 8, max_tokens=6) for i in range(3)]
    first, _ = step(sched)
    assert first.phase == "prefill" and len(first.seqs) == 3
    decode, _ = step(sched)
    assert [s.seq_id for s in decode.preempted] == [2]
    assert seqs[2].status.value == "waiting" and seqs[2].num_computed_tokens == 0
    run_all(sched)
    assert all(s.num_output_tokens == 6 for s in seqs) and seqs[2].metrics.num_preemptions >= 1
    assert bm.num_free_blocks == bm.num_blocks


def test_custom_policy_object():
    from nanoinfer.engine.policies import SchedulingPolicy

    class NewestFirst(SchedulingPolicy):
        name = "newest"

        def priority(self, seq):
            return (-seq.metrics.arrival_time,)

    assert order_of_admission(NewestFirst()) == [3, 2, 1, 0]


def test_decode_batches_put_the_longest_context_first():
    """Attention kernels start their programs in batch order: long contexts first keeps them from
    running alone at the end of a launch. The order is the batch's only; the running list keeps its own."""
    sched, _ = make(num_blocks=128)
    seqs = [add(sched, i, n, max_tokens=3) for i, n in enumerate([5, 30, 12, 30, 1])]
    batch, _ = step(sched)
    assert batch.phase == "prefill"
    batch, _ = step(sched)
    assert batch.phase == "decode"
    assert [s.seq_id for s in batch.seqs] == [1, 3, 2, 0, 4]  # ties keep their admission order
    assert sched.running == seqs
