"""Sampling: greedy, seeds, top-k / top-p, and the Gumbel-max draw's distribution."""

import torch

from helpers import assert_no_leaks
from nanoinfer import LLM, SamplingParams
from nanoinfer.layers.sampler import apply_top_k_top_p


def test_seeded_requests_reproduce_whatever_the_batch(tiny_qwen3):
    llm = LLM(str(tiny_qwen3), max_model_len=128)
    params = SamplingParams(temperature=0.9, top_p=0.95, top_k=50, seed=1234, max_tokens=24, ignore_eos=True)
    alone = llm.generate([[3, 4, 5]], params, use_tqdm=False)[0].token_ids
    others = [SamplingParams(temperature=1.0, max_tokens=n, ignore_eos=True) for n in (5, 30, 12)]
    mixed = llm.generate([[9, 9], [3, 4, 5], [1] * 40, [7]], [others[0], params, others[1], others[2]],
                         use_tqdm=False)
    assert mixed[1].token_ids == alone
    different = llm.generate([[3, 4, 5]], SamplingParams(temperature=0.9, seed=99, max_tokens=24, ignore_eos=True),
                             use_tqdm=False)[0].token_ids
    assert different != alone
    assert_no_leaks(llm)


def test_temperature_zero_is_greedy_in_a_mixed_batch(tiny_llama):
    llm = LLM(str(tiny_llama), max_model_len=128)
    greedy = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    alone = llm.generate([[10, 11, 12]], greedy, use_tqdm=False)[0].token_ids
    hot = SamplingParams(temperature=2.0, max_tokens=16, ignore_eos=True)
    mixed = llm.generate([[1, 2], [10, 11, 12], [5]], [hot, greedy, hot], use_tqdm=False)
    assert mixed[1].token_ids == alone


def test_top_k_top_p_mask():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]]))
    temps = torch.ones(2)
    masked = apply_top_k_top_p(logits, temps, top_k=torch.tensor([4, 2]), top_p=torch.tensor([0.7, 1.0]))
    kept = torch.isfinite(masked)
    # Row 0: 0.5 + 0.3 reaches 0.7, so the nucleus is the first two. Row 1: top-2 of a tie keeps two.
    assert kept[0].tolist() == [True, True, False, False]
    assert kept[1].sum() == 2


def test_rows_without_a_cut_keep_every_token():
    """A top_p of 1.0 cuts nothing, even where float32 softmax sums pass 1.0 (a row of 151,936 logits):
    a request without a cut must not depend on whether another row in its batch has one."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 151936, generator=g) * torch.tensor([[2.0], [4.0], [6.0], [3.0]])
    kept = apply_top_k_top_p(logits, torch.ones(4), top_k=torch.full((4,), 151936),
                             top_p=torch.tensor([1.0, 1.0, 1.0, 0.9]))
    assert torch.isfinite(kept[:3]).all()
    assert not torch.isfinite(kept[3]).all()


def test_sampled_tokens_follow_the_distribution(tiny_llama):
    """Thousands of one-token draws from one prompt: frequencies match softmax(logits / T)."""
    llm = LLM(str(tiny_llama), max_model_len=128)
    prompt = [42, 7, 300]
    temperature = 1.5
    with llm.trace(logits=True) as trace:
        llm.generate([prompt], SamplingParams(temperature=0, max_tokens=1), use_tqdm=False)
    logits = next(e for e in trace if e.kind == "sampled").data["logits"][0]
    probs = torch.softmax(logits / temperature, dim=-1)
    n = 3000
    outs = llm.generate([prompt] * n, SamplingParams(temperature=temperature, max_tokens=1), use_tqdm=False)
    counts = torch.bincount(torch.tensor([o.token_ids[0] for o in outs]), minlength=probs.numel()).double()
    top = probs.argsort(descending=True)[:5]
    for t in top:  # within 5 standard deviations of the binomial count
        expected, sd = n * probs[t].item(), (n * probs[t].item() * (1 - probs[t].item())) ** 0.5
        assert abs(counts[t].item() - expected) < 5 * sd + 1, (int(t), counts[t].item(), expected)
    assert_no_leaks(llm)


def test_stop_token_ids_and_eos(tiny_llama):
    llm = LLM(str(tiny_llama), max_model_len=128)
    greedy = llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=20, ignore_eos=True),
                          use_tqdm=False)[0]
    stop_at = greedy.token_ids[5]
    first = greedy.token_ids.index(stop_at)
    out = llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=20, stop_token_ids=[stop_at],
                                                   ignore_eos=True), use_tqdm=False)[0]
    assert out.token_ids == greedy.token_ids[: first + 1] and out.finish_reason == "stop"
    assert greedy.finish_reason == "length"


def test_seeded_triton_draw_in_the_engine(tiny_qwen3):
    """The GPU's sampler (here in Triton's interpreter): each rank samples the logits it made, or, when a
    trace records them, the whole rows: the same tokens. A seeded request keeps its tokens whatever else
    is in the batch, a top-p request among them included."""
    with LLM(str(tiny_qwen3), max_model_len=128, sampler="triton") as llm:
        assert llm.fast_paths().set_index("name").loc["Triton sampler", "applied"]
        prompts = [[3, 4, 5], [9, 9], [1] * 20]
        hot = SamplingParams(temperature=0.8, max_tokens=12, ignore_eos=True)
        seeded = SamplingParams(temperature=0.8, seed=7, max_tokens=12, ignore_eos=True)
        plain = [o.token_ids for o in llm.generate(prompts, [hot, seeded, hot], use_tqdm=False)]
        with llm.trace(logits=True) as trace:  # the trace asks for the logits: whole rows are sampled
            traced = [o.token_ids for o in llm.generate(prompts, [hot, seeded, hot], use_tqdm=False)]
        assert any(e.kind == "sampled" and e.data["logits"] is not None for e in trace)
        assert traced[1] == plain[1]
        alone = llm.generate([[9, 9]], seeded, use_tqdm=False)[0].token_ids
        cut = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=12, ignore_eos=True)
        with_cut = llm.generate([[5, 6], [9, 9]], [cut, seeded], use_tqdm=False)[1].token_ids
        assert plain[1] == alone == with_cut
        assert len({tuple(t) for t in plain}) == 3
        assert_no_leaks(llm)


def test_seeded_triton_draw_matches_the_reference_on_the_same_noise(tiny_llama):
    """Step by step, the engine's Triton tokens are those the reference ``gumbel_max_sample`` draws from
    the noise the kernel makes (written out by seeded_exponential_noise)."""
    from nanoinfer.fast.sampler_triton import seeded_exponential_noise
    from nanoinfer.layers.sampler import gumbel_max_sample

    class Recording:  # the engine's sampler, keeping what it was given and what it drew
        def __init__(self, inner):
            self.inner, self.seen = inner, []

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, logits, params, generators, draw=None):
            tokens = self.inner(logits, params, generators, draw)
            self.seen.append((logits, draw, tokens))
            return tokens

    with LLM(str(tiny_llama), max_model_len=128, sampler="triton") as llm:
        recording = llm.model_runner.sampler = Recording(llm.model_runner.sampler)
        with llm.trace(logits=True):  # the whole rows, through TritonSampler.__call__
            llm.generate([[1, 2, 3], [4] * 9], SamplingParams(temperature=1.3, max_tokens=5, ignore_eos=True),
                         use_tqdm=False)
    assert len(recording.seen) >= 5
    for logits, draw, tokens in recording.seen:
        t, seeds = (torch.tensor(x, device=logits.device) for x in (draw.temperatures, draw.seeds))
        noise = seeded_exponential_noise(seeds, logits.shape[1])
        assert torch.equal(tokens, gumbel_max_sample(logits.float(), t, noise))


def test_seeds_of_the_triton_draw():
    """Unseeded rows get seeds of their own; a seeded request's seed depends on its seed and position
    only (not on the step or the batch), and changes from one position to the next."""
    from nanoinfer.fast.sampler_triton import TritonSampler, request_seed

    sampler = TritonSampler(torch.device("cpu"), seed=0)
    free, seeded = SamplingParams(temperature=1.0), SamplingParams(temperature=1.0, seed=42)
    draw = sampler.plan([free] * 64 + [seeded], list(range(100, 165)))
    assert len(set(draw.seeds[:64])) == 64
    assert draw.seeds[64] == request_seed(42, 164)
    later = sampler.plan([seeded, free], [164, 3])
    assert later.seeds[0] == draw.seeds[64] and later.seeds[1] not in draw.seeds
    assert len({request_seed(42, p) for p in range(1000)}) == 1000
    assert request_seed(42, 7) != request_seed(43, 7)
    assert all(0 <= request_seed(s, p) < 2**63 for s in (-5, 0, 2**70) for p in (0, 10**6))
