"""Qwen3: a Llama with one difference that matters, an RMSNorm on each query and key head before the
rotary embedding (it keeps attention logits in range). Everything else is inherited."""

from __future__ import annotations

from nanoinfer.layers.layernorm import RMSNorm
from nanoinfer.models.llama import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM, LlamaModel


class Qwen3Attention(LlamaAttention):
    def __init__(self, config, rotary_emb=None) -> None:
        super().__init__(config, rotary_emb)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)  # (LlamaAttention.forward applies them)


class Qwen3DecoderLayer(LlamaDecoderLayer):
    attention_cls = Qwen3Attention


class Qwen3Model(LlamaModel):
    layer_cls = Qwen3DecoderLayer


class Qwen3ForCausalLM(LlamaForCausalLM):
    model_cls = Qwen3Model
