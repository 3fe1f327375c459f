"""Gemma (first generation): a Llama with four differences, each a line or two below.

- RMSNorm scales by ``1 + weight`` (checkpoints store the offset from one): the loader adds the one, so
  every norm, reference or fused kernel, multiplies by the stored scale as for Llama.
- The MLP gate is activated with GELU (tanh approximation), not SiLU.
- Embeddings are multiplied by sqrt(hidden_size), rounded to the model's dtype as transformers does.
- The head size is its own setting (256 for Gemma-2B and 7B); the LM head is tied to the embedding.
"""

from __future__ import annotations

import torch

from nanoinfer.layers.activation import GeluTanhAndMul
from nanoinfer.layers.layernorm import RMSNorm
from nanoinfer.models.llama import LlamaDecoderLayer, LlamaForCausalLM, LlamaMLP, LlamaModel


class GemmaMLP(LlamaMLP):
    activation_cls = GeluTanhAndMul


class GemmaDecoderLayer(LlamaDecoderLayer):
    mlp_cls = GemmaMLP


class GemmaModel(LlamaModel):
    layer_cls = GemmaDecoderLayer

    def __init__(self, config) -> None:
        super().__init__(config)
        self.register_buffer("embed_scale", torch.tensor(config.hidden_size**0.5), persistent=False)
        for norm in self.modules():  # stored: w; used: 1 + w
            if isinstance(norm, RMSNorm):
                norm.weight.weight_loader = lambda param, loaded, shard_id=None: param.data.copy_(loaded.float() + 1)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embed_tokens(input_ids)
        return hidden * self.embed_scale.to(hidden.dtype)


class GemmaForCausalLM(LlamaForCausalLM):
    model_cls = GemmaModel

    def __init__(self, config) -> None:
        if config.hidden_act != "gelu_pytorch_tanh":
            raise ValueError(f"Gemma with hidden_act={config.hidden_act!r}: only 'gelu_pytorch_tanh' is supported")
        super().__init__(config)
