"""Qwen3: a Llama with one difference that matters, an RMSNorm on each query and key head before the
rotary embedding (it keeps attention logits in range). Everything else is inherited."""

from __future__ import annotations

from nanoinfer.layers.layernorm import RMSNorm
from nanoinfer.models.llama import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM, LlamaModel


class Qwen3Attention(LlamaAttention):
    def __init__(self, config) -> None:
        super().__init__(config)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def forward(self, positions, hidden, meta):
        q, k, v = self.split_heads(self.qkv_proj(hidden))
        q, k = self.rotary_emb(positions, self.q_norm(q), self.k_norm(k))
        out = self.attn(q, k, v, meta)
        return self.o_proj(out.flatten(1))


class Qwen3DecoderLayer(LlamaDecoderLayer):
    attention_cls = Qwen3Attention


class Qwen3Model(LlamaModel):
    layer_cls = Qwen3DecoderLayer


class Qwen3ForCausalLM(LlamaForCausalLM):
    model_cls = Qwen3Model
