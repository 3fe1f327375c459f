"""GGUF conversion: the q/k row order llama.cpp uses, and the converted weights against transformers'
own GGUF reader on the same file."""

import hypothesis.strategies as st
import torch
from hypothesis import given, settings

from nanoinfer.tools.convert import find_smollm2_gguf
from solutions.phase5_models import unpermute_qk


def llama_cpp_permute(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """What llama.cpp's converter does to q and k: interleave the two halves of each head's rows."""
    rows, cols = w.shape
    return w.reshape(num_heads, 2, rows // num_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


@settings(max_examples=40, deadline=None)
@given(heads=st.integers(1, 8), half=st.integers(1, 16), cols=st.integers(1, 12))
def test_unpermute_inverts_llama_cpp_permute(heads, half, cols):
    w = torch.randn(heads * 2 * half, cols)
    assert torch.equal(unpermute_qk(llama_cpp_permute(w, heads), heads), w)


def test_converted_weights_equal_transformers_gguf_loader(smollm2):
    """transformers dequantizes the same GGUF file and undoes the permutation itself: bit-identical."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    gguf = find_smollm2_gguf()
    hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    theirs = hf.state_dict()
    with safe_open(str(smollm2 / "model.safetensors"), "pt") as f:
        names = [n for n in f.keys() if ".layers.0." in n or ".layers.29." in n or "layers" not in n]
        for name in names:
            assert torch.equal(f.get_tensor(name), theirs[name]), name
    assert len(names) >= 18
