"""The GPU's Gumbel-max kernels (fast/sampler_triton.py) against the math they replace, on fresh random
inputs. Without a GPU they run in Triton's interpreter (conftest), so the vocabularies stay small."""

import pytest
import torch

from nanoinfer.fast.sampler_triton import (CHUNK, gumbel_max_sample_triton, seeded_exponential_noise,
                                           seeded_gumbel_max_triton)
from nanoinfer.layers.sampler import gumbel_max_sample

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def reference(logits, temperatures, noise):
    """float64: argmax(logits / T - log E), and the plain argmax where T == 0."""
    x = logits.double()
    t = temperatures.double().unsqueeze(1)
    sampled = (x / torch.where(t > 0, t, 1.0) - noise.double().log()).argmax(dim=-1)
    return torch.where(temperatures > 0, sampled, x.argmax(dim=-1))


@pytest.mark.parametrize("rows,vocab", [(1, 7), (5, CHUNK), (6, 2 * CHUNK + 333)])
def test_kernel_matches_float64_and_the_reference(rows, vocab):
    g = torch.Generator().manual_seed(rows * 1000 + vocab)
    logits = (torch.randn(rows, vocab, generator=g) * 4).to(DEVICE)
    noise = torch.empty(rows, vocab).exponential_(generator=g).to(DEVICE)
    temperatures = torch.tensor([0.0, 0.6, 1.0, 1.7, 0.0, 0.3][:rows]).to(DEVICE)
    tokens = gumbel_max_sample_triton(logits, temperatures, noise)
    assert tokens.dtype == torch.int64 and tokens.shape == (rows,)
    assert torch.equal(tokens.cpu(), reference(logits, temperatures, noise).cpu())
    # the engine's reference (layers/sampler.py) draws the same tokens from the same noise
    assert torch.equal(tokens.cpu(), gumbel_max_sample(logits, temperatures, noise).cpu())


def test_kernel_reads_16_bit_logits_as_they_are():
    g = torch.Generator().manual_seed(3)
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float16  # the interpreter has no bfloat16 loads
    logits = (torch.randn(4, CHUNK + 100, generator=g) * 3).to(dtype).to(DEVICE)
    noise = torch.empty(logits.shape).exponential_(generator=g).to(DEVICE)
    temperatures = torch.tensor([0.7, 0.0, 1.0, 0.5], device=DEVICE)
    expected = reference(logits.float(), temperatures, noise)
    assert torch.equal(gumbel_max_sample_triton(logits, temperatures, noise).cpu(), expected.cpu())


def test_ties_go_to_the_first_index_and_masked_rows_pick_a_valid_token():
    vocab = CHUNK + 50
    logits = torch.full((3, vocab), -1.0)
    logits[0, [5, CHUNK + 7]] = 2.0  # a tie across chunks: the first wins
    logits[1, [CHUNK + 9, CHUNK + 30]] = 2.0  # a tie inside the last chunk
    logits[2] = float("-inf")  # everything masked (top-k / top-p leave at least one token; this is the limit)
    noise = torch.ones(3, vocab)
    tokens = gumbel_max_sample_triton(logits.to(DEVICE), torch.zeros(3, device=DEVICE), noise.to(DEVICE))
    assert tokens.tolist() == [5, CHUNK + 9, 0]


def test_sampling_frequencies_follow_the_softmax():
    """The draw is a sample from softmax(logits / T): 3,000 draws of a 4-token distribution."""
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[1.0, 0.0, -1.0, 2.0]]).repeat(3000, 1)
    noise = torch.empty(logits.shape).exponential_(generator=g)
    t = torch.full((3000,), 0.8)
    tokens = gumbel_max_sample_triton(logits.to(DEVICE), t.to(DEVICE), noise.to(DEVICE)).cpu()
    freq = torch.bincount(tokens, minlength=4).double() / 3000
    expected = torch.softmax(torch.tensor([1.0, 0.0, -1.0, 2.0], dtype=torch.float64) / 0.8, dim=0)
    assert torch.allclose(freq, expected, atol=0.03), (freq, expected)


def _seeds(rows, seed):
    return torch.randint(0, 2**63 - 1, (rows,), generator=torch.Generator().manual_seed(seed)).to(DEVICE)


@pytest.mark.parametrize("rows,vocab", [(1, 7), (6, 2 * CHUNK + 333)])
def test_seeded_draw_is_the_reference_on_its_own_noise(rows, vocab):
    """The noise made inside the kernel, written out by seeded_exponential_noise, gives the reference
    sampler (and the float64 math) the same tokens."""
    g = torch.Generator().manual_seed(vocab)
    logits = (torch.randn(rows, vocab, generator=g) * 4).to(DEVICE)
    temperatures = torch.tensor([0.8, 0.0, 1.0, 1.7, 0.3, 0.6][:rows]).to(DEVICE)
    seeds = _seeds(rows, vocab)
    tokens, scores = seeded_gumbel_max_triton(logits, temperatures, seeds)
    noise = seeded_exponential_noise(seeds, vocab)
    assert torch.equal(tokens.cpu(), reference(logits, temperatures, noise).cpu())
    assert torch.equal(tokens.cpu(), gumbel_max_sample(logits, temperatures, noise).cpu())
    assert torch.equal(tokens, gumbel_max_sample_triton(logits, temperatures, noise))
    # the winner's score: logits / T - log E (the logit itself where T == 0)
    rows_ = torch.arange(rows, device=DEVICE)
    t = torch.where(temperatures > 0, temperatures, 1.0)
    expected = torch.where(temperatures > 0, logits[rows_, tokens] / t - noise[rows_, tokens].log(),
                           logits[rows_, tokens])
    assert torch.allclose(scores, expected, rtol=1e-6, atol=1e-6)


def test_seeded_noise_is_exponential_and_depends_on_seed_and_column_only():
    seeds = _seeds(4, 1)
    noise = seeded_exponential_noise(seeds, 3 * CHUNK)
    assert (noise >= 0).all() and abs(noise.mean().item() - 1.0) < 0.02  # Exp(1): mean 1 (12k draws a row)
    assert abs(noise.var().item() - 1.0) < 0.05
    # a shard's noise is the matching columns of the whole row's
    assert torch.equal(seeded_exponential_noise(seeds, 1000, first_col=CHUNK + 5), noise[:, CHUNK + 5: CHUNK + 1005])
    assert not torch.equal(noise[0], noise[1])  # rows with other seeds draw other noise


def test_shards_of_the_vocabulary_draw_the_whole_rows_tokens():
    """What tensor-parallel ranks do (TritonSampler.sample_shards): each draws the winner of its columns, the
    best score wins, ties go to the lower shard, i.e. the lower token id."""
    rows, vocab = 7, 2 * CHUNK + 100
    g = torch.Generator().manual_seed(5)
    logits = (torch.randn(rows, vocab, generator=g) * 3).to(DEVICE)
    logits[5] = 1.0  # a greedy row that ties everywhere: token 0, as torch.argmax picks
    logits[6, [3, CHUNK + 40]] = 50.0  # a greedy tie across shards: the first
    temperatures = torch.tensor([0.7, 1.0, 0.0, 2.0, 0.4, 0.0, 0.0]).to(DEVICE)
    seeds = _seeds(rows, 6)
    whole, _ = seeded_gumbel_max_triton(logits, temperatures, seeds)
    assert whole[5].item() == 0 and whole[6].item() == 3
    for cuts in ([0, 1000, vocab], [0, CHUNK, CHUNK + 41, vocab], [0, 1, vocab]):
        offers = [seeded_gumbel_max_triton(logits[:, a:b].contiguous(), temperatures, seeds, first_col=a)
                  for a, b in zip(cuts, cuts[1:])]
        tokens = torch.stack([t for t, _ in offers])
        best = torch.stack([s for _, s in offers]).argmax(dim=0)
        assert torch.equal(tokens.gather(0, best.unsqueeze(0)).squeeze(0), whole), cuts


def test_seeded_frequencies_follow_the_softmax():
    """1,000 rows with seeds of their own (fewer than above: the interpreter makes the noise slowly)."""
    logits = torch.tensor([[1.0, 0.0, -1.0, 2.0]]).repeat(1000, 1).to(DEVICE)
    t = torch.full((1000,), 0.8, device=DEVICE)
    tokens, _ = seeded_gumbel_max_triton(logits, t, _seeds(1000, 11))
    freq = torch.bincount(tokens.cpu(), minlength=4).double() / 1000
    expected = torch.softmax(torch.tensor([1.0, 0.0, -1.0, 2.0], dtype=torch.float64) / 0.8, dim=0)
    assert torch.allclose(freq, expected, atol=0.04), (freq, expected)  # 2.5 standard errors at most


@pytest.mark.parametrize("vocab,ranks", [(509, 2), (2 * CHUNK + 3, 2), (7, 4), (5, 4)])
def test_lm_head_ranks_offer_the_whole_rows_token(vocab, ranks):
    """ParallelLMHead as each rank builds it (vocabularies that do not divide: the last shard is padded
    with zero rows, and with 5 entries on 4 ranks the last holds padding only): the best of the ranks'
    offers is the token drawn from the whole rows, greedy ties across ranks included."""
    from nanoinfer.fast.sampler_triton import best_offer, offer
    from nanoinfer.layers.embed_head import ParallelLMHead
    from nanoinfer.parallel.comm import set_tensor_parallel

    hidden_size, rows = 16, 6
    g = torch.Generator().manual_seed(vocab)
    weight = torch.randn(vocab, hidden_size, generator=g) + 3
    weight[[0, vocab - 1]] = 10.0  # a greedy tie between the first and the last token (other ranks)
    hidden = torch.randn(rows, hidden_size, generator=g) * 3
    hidden[0] = -10.0  # row 0: every real logit far below 0, the padding rows' logit: they must not win
    hidden[5] = 1.0  # row 5: tokens 0 and vocab - 1 tie (160) far above the rest (about 48)
    temperatures = torch.tensor([0.0, 0.7, 1.0, 5.0, 100.0, 0.0])  # 100: near uniform, padding would win
    seeds = _seeds(rows, vocab).cpu()
    heads = []
    try:
        for rank in range(ranks):
            set_tensor_parallel(rank, ranks)
            head = ParallelLMHead(vocab, hidden_size)
            head.weight_loader(head.weight, weight)
            heads.append(head.to(DEVICE))
    finally:
        set_tensor_parallel(0, 1)
    hidden, temperatures, seeds = hidden.to(DEVICE), temperatures.to(DEVICE), seeds.to(DEVICE)
    offers = torch.stack([offer(h, hidden, temperatures, seeds) for h in heads]).cpu()
    # the whole rows as the ranks' logits joined (what the LM head's all-gather gives, to the bit)
    joined = torch.cat([torch.nn.functional.linear(hidden, h.weight) for h in heads], dim=1)[:, :vocab]
    whole = seeded_gumbel_max_triton(joined, temperatures, seeds)[0]
    tokens = best_offer(offers)
    assert torch.equal(tokens, whole.cpu()), (tokens, whole)
    assert tokens[5].item() == 0 and (tokens < vocab).all()
    if vocab == 5:
        assert heads[-1].shard_size * (ranks - 1) >= vocab and (offers[-1, 0] == float("-inf")).all()
