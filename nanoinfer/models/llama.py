"""Llama (and SmolLM2, which is a Llama): pre-norm decoder layers of grouped-query attention with rotary
positions and a SwiGLU MLP. Every linear is tensor-parallel ready; with one rank they are plain linears."""

from __future__ import annotations

import torch
from torch import nn

from nanoinfer.attention.base import AttentionMetadata
from nanoinfer.layers.activation import SiluAndMul
from nanoinfer.layers.attention import Attention
from nanoinfer.layers.embed_head import ParallelLMHead, VocabParallelEmbedding
from nanoinfer.layers.layernorm import RMSNorm
from nanoinfer.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from nanoinfer.layers.rotary_embedding import RotaryEmbedding


def rope_settings(config) -> tuple[float, dict | None]:
    """(theta, scaling) from either transformers 5's ``rope_parameters`` or the older fields."""
    params = getattr(config, "rope_parameters", None) or {}
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    scaling = params if params.get("rope_type", "default") != "default" else getattr(config, "rope_scaling", None)
    return theta, scaling


def head_dim_of(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def rotary_embedding_of(config) -> RotaryEmbedding:
    theta, scaling = rope_settings(config)
    return RotaryEmbedding(head_dim_of(config), config.max_position_embeddings, theta, scaling)


class LlamaAttention(nn.Module):
    def __init__(self, config, rotary_emb: RotaryEmbedding | None = None) -> None:
        super().__init__()
        head_dim = head_dim_of(config)
        bias = getattr(config, "attention_bias", False)
        self.qkv_proj = QKVParallelLinear(config.hidden_size, head_dim, config.num_attention_heads,
                                          config.num_key_value_heads, bias=bias)
        self.num_heads, self.num_kv_heads = self.qkv_proj.num_heads, self.qkv_proj.num_kv_heads
        self.head_dim = head_dim
        self.o_proj = RowParallelLinear(config.num_attention_heads * head_dim, config.hidden_size, bias=bias)
        self.rotary_emb = rotary_emb or rotary_embedding_of(config)  # LlamaModel shares one with every layer
        self.attn = Attention(self.num_heads, head_dim, head_dim**-0.5, self.num_kv_heads)
        self.q_norm = self.k_norm = None  # Qwen3 normalises every query and key head (qwen3.py)
        # On GPUs nanoinfer/fast may set this to fast/qk_prologue_triton.py's qk_prologue: norms, rotary and
        # the KV-cache write in one kernel instead of six.
        self.fused_prologue = None

    def split_heads(self, qkv: torch.Tensor):
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
        return (q.view(-1, self.num_heads, self.head_dim), k.view(-1, self.num_kv_heads, self.head_dim),
                v.view(-1, self.num_kv_heads, self.head_dim))

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        return self.attend(positions, self.qkv_proj(hidden), meta)

    def attend(self, positions: torch.Tensor, qkv: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """Everything after the q/k/v projection: norms, rotary, the KV write, attention, the output projection."""
        if self.fused_prologue is not None:
            q, k, v = self.fused_prologue(self, qkv, positions, meta)
            out = self.attn(q, k, v, meta, kv_stored=True)
        else:
            q, k, v = self.split_heads(qkv)
            if self.q_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)
            q, k = self.rotary_emb(positions, q, k, meta.scratch)
            out = self.attn(q, k, v, meta)
        return self.o_proj(out.flatten(1))


class LlamaMLP(nn.Module):
    # On a CPU a long prefill runs the MLP this many rows at a time: the glibc allocator then reuses its heap
    # instead of mapping fresh pages for every layer's large gate/up output (page faults 520-960k -> 2-540k,
    # prefill 4.36 s -> 3.96 s on the cpu-mixed workload, 2 cores).
    cpu_chunk_rows = 1024
    activation_cls = SiluAndMul  # gate activation, multiplied by up (Gemma: GELU)

    def __init__(self, config) -> None:
        super().__init__()
        bias = getattr(config, "mlp_bias", False)
        self.gate_up_proj = MergedColumnParallelLinear(config.hidden_size, [config.intermediate_size] * 2, bias=bias)
        self.down_proj = RowParallelLinear(config.intermediate_size, config.hidden_size, bias=bias)
        self.act_fn = self.activation_cls()
        # On GPUs nanoinfer/fast may set this to fast/skinny_linear_triton.py's gate_up_silu: for a few rows,
        # the gate/up product and the activation in one kernel.
        self.fused_gate_up_act = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, chunk = x.shape[0], self.cpu_chunk_rows
        if self.fused_gate_up_act is not None:
            return self.down_proj(self.fused_gate_up_act(self, x))
        if x.device.type != "cpu" or rows <= chunk:
            return self.down_proj(self.act_fn(self.gate_up_proj(x)))
        out = x.new_empty(rows, self.down_proj.output_size)
        for start in range(0, rows, chunk):
            out[start : start + chunk] = self.down_proj(self.act_fn(self.gate_up_proj(x[start : start + chunk])))
        return out


class LlamaDecoderLayer(nn.Module):
    attention_cls, mlp_cls = LlamaAttention, LlamaMLP

    def __init__(self, config, rotary_emb: RotaryEmbedding | None = None) -> None:
        super().__init__()
        self.self_attn = self.attention_cls(config, rotary_emb)
        self.mlp = self.mlp_cls(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        # On GPUs nanoinfer/fast may set these (fast/skinny_linear_triton.py's decode_layer): steps of at most
        # fused_decode_rows rows then run each norm inside the matmul after it.
        self.fused_decode, self.fused_decode_rows = None, 0

    def forward(self, positions, hidden, residual, meta):
        if hidden.shape[0] <= self.fused_decode_rows:
            return self.fused_decode(self, positions, hidden, residual, meta)
        # The residual add of the previous sub-block is fused into the next norm.
        if residual is None:
            hidden, residual = self.input_layernorm(hidden), hidden
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(positions, hidden, meta)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual


class LlamaModel(nn.Module):
    layer_cls = LlamaDecoderLayer

    def __init__(self, config) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        # One cos/sin table for every layer (Qwen3's 40,960 positions take 21 MB per copy), looked up once
        # per step: the layers pass the step's metadata scratch, where the first one leaves the lookup.
        rotary_emb = rotary_embedding_of(config)
        self.layers = nn.ModuleList([self.layer_cls(config, rotary_emb) for _ in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def forward(self, input_ids, positions, meta):
        hidden, residual = self.embed(input_ids), None
        for layer in self.layers:
            hidden, residual = layer(positions, hidden, residual, meta)
        hidden, _ = self.norm(hidden, residual)
        return hidden


class LlamaForCausalLM(nn.Module):
    model_cls = LlamaModel
    # checkpoint name -> (our packed parameter, shard id)
    packed_modules_mapping = {
        "q_proj": ("qkv_proj", "q"),
        "k_proj": ("qkv_proj", "k"),
        "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.model = self.model_cls(config)
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size)
        if getattr(config, "tie_word_embeddings", False):
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids, positions, meta) -> torch.Tensor:
        return self.model(input_ids, positions, meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)
