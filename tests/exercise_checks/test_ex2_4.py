"""Exercise 2.4: choose_preemption_victim, as a choice and inside the scheduler."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoinfer import SamplingParams
from nanoinfer.engine.policies import SchedulingPolicy
from nanoinfer.engine.sequence import Sequence

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
candidates = st.lists(st.tuples(st.integers(1, 50), st.floats(0, 100, allow_nan=False)), min_size=1, max_size=10)


class FewestTokensLast(SchedulingPolicy):
    """A made-up policy: long sequences first, so the shortest one ranks last."""

    name = "test"

    def priority(self, seq) -> tuple:
        return (-seq.num_tokens, seq.seq_id)


def make_seqs(specs) -> list[Sequence]:
    return [Sequence(i, list(range(n)), SamplingParams(), arrival_time=t) for i, (n, t) in enumerate(specs)]


@SETTINGS
@given(candidates, st.sampled_from(["fifo", "test"]))
def test_victim_is_the_one_ranked_last(impl, specs, which):
    """the candidate with the largest policy.priority key (FIFO: the latest arrival); the list is left alone"""
    policy = SchedulingPolicy() if which == "fifo" else FewestTokensLast()
    seqs = make_seqs(specs)
    given_list = list(seqs)
    victim = impl.choose_preemption_victim(given_list, policy)
    assert given_list == seqs, "choose_preemption_victim must not change the candidate list"
    assert any(victim is s for s in seqs), f"return one of the candidates (the object itself), got {victim!r}"
    want = max(seqs, key=policy.priority)
    assert victim is want, (
        f"policy {policy.name}: picked seq {victim.seq_id} (priority {policy.priority(victim)}), expected seq "
        f"{want.seq_id}, whose priority key {policy.priority(want)} is the largest: the policy ranks it last")


@pytest.mark.engine
def test_in_the_scheduler(impl, tiny_llm):
    """a KV budget too small for the batch: sequences get preempted, and greedy outputs do not change"""
    rng = random.Random()
    prompts = [[rng.randrange(512) for _ in range(rng.randint(10, 30))] for _ in range(6)]
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    roomy = tiny_llm(max_model_len=64, num_kvcache_blocks=64)
    want = [o.token_ids for o in roomy.generate(prompts, params, use_tqdm=False)]
    tight = tiny_llm(max_model_len=64, num_kvcache_blocks=8)
    with tight.trace() as events:
        outs = tight.generate(prompts, params, use_tqdm=False)
    preempted = [e.seq_id for e in events if e.kind == "preempted"]
    assert preempted, "8 blocks for 6 sequences of up to 60 tokens: expected preemptions, saw none"
    counted = sum(o.metrics.num_preemptions for o in outs)
    assert counted == len(preempted), (f"the trace shows {len(preempted)} preemptions but the requests' metrics "
                                       f"count {counted}: preempt the sequence you return, once")
    got = [o.token_ids for o in outs]
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    assert not bad, f"with preemption, requests {bad} produced different greedy tokens than without"
    assert tight.block_manager.num_free_blocks == tight.block_manager.num_blocks, "KV blocks leaked"
