"""The GPU's Gumbel-max kernels (layers/sampler_triton.py) against the math they replace, on fresh random
inputs. Without a GPU they run in Triton's interpreter (conftest), so the vocabularies stay small."""

import pytest
import torch

from nanoinfer.extensions import solution
from nanoinfer.layers.sampler_triton import CHUNK, gumbel_max_sample_triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def reference(logits, temperatures, noise):
    """float64: argmax(logits / T - log E), and the plain argmax where T == 0."""
    x = logits.double()
    t = temperatures.double().unsqueeze(1)
    sampled = (x / torch.where(t > 0, t, 1.0) - noise.double().log()).argmax(dim=-1)
    return torch.where(temperatures > 0, sampled, x.argmax(dim=-1))


@pytest.mark.parametrize("rows,vocab", [(1, 7), (5, CHUNK), (6, 2 * CHUNK + 333)])
def test_kernel_matches_float64_and_the_reference_solution(rows, vocab):
    g = torch.Generator().manual_seed(rows * 1000 + vocab)
    logits = (torch.randn(rows, vocab, generator=g) * 4).to(DEVICE)
    noise = torch.empty(rows, vocab).exponential_(generator=g).to(DEVICE)
    temperatures = torch.tensor([0.0, 0.6, 1.0, 1.7, 0.0, 0.3][:rows]).to(DEVICE)
    tokens = gumbel_max_sample_triton(logits, temperatures, noise)
    assert tokens.dtype == torch.int64 and tokens.shape == (rows,)
    assert torch.equal(tokens.cpu(), reference(logits, temperatures, noise).cpu())
    # the engine's CPU path (Exercise 3.2's reference) draws the same tokens from the same noise
    assert torch.equal(tokens.cpu(), solution("3.2")(logits, temperatures, noise).cpu())


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
