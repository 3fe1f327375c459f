"""Named model shapes with random weights: measure speed on a GPU with nothing to download.

``LLM("qwen3-0.6b")`` builds that architecture at its real size and fills it with random weights (the
outputs are noise; the time per token is the real model's). Shapes follow the published configs.
"""

from __future__ import annotations

_QWEN3 = dict(architectures=["Qwen3ForCausalLM"], model_type="qwen3", num_key_value_heads=8, head_dim=128,
              vocab_size=151936, rope_theta=1_000_000.0, max_position_embeddings=40960, rms_norm_eps=1e-6)
SHAPES: dict[str, dict] = {
    "qwen3-0.6b": dict(_QWEN3, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, tie_word_embeddings=True),
    # not a published model: a small random draft with Qwen3's vocabulary (speculative decoding's benchmarks)
    "qwen3-draft-tiny": dict(_QWEN3, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=64, tie_word_embeddings=True),
    "qwen3-1.7b": dict(_QWEN3, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                       num_attention_heads=16, tie_word_embeddings=True),
    "qwen3-8b": dict(_QWEN3, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                     num_attention_heads=32, tie_word_embeddings=False),
    "llama-3.2-1b": dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=2048,
                         intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                         head_dim=64, vocab_size=128256, tie_word_embeddings=True, max_position_embeddings=131072,
                         rms_norm_eps=1e-5, rope_theta=500000.0,
                         rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                           original_max_position_embeddings=8192)),
    "smollm2-135m": dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=576,
                         intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         head_dim=64, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0,
                         max_position_embeddings=8192, rms_norm_eps=1e-5),
    "gemma-2b": dict(architectures=["GemmaForCausalLM"], model_type="gemma", hidden_size=2048,
                     intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1,
                     head_dim=256, vocab_size=256000, tie_word_embeddings=True, rope_theta=10000.0,
                     max_position_embeddings=8192, rms_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh"),
}


def shape_config(name: str):
    """A transformers config object for a named shape."""
    from transformers import AutoConfig

    spec = dict(SHAPES[name])
    model_type = spec.pop("model_type")
    return AutoConfig.for_model(model_type, **spec)
