"""Load Hugging Face safetensors weights into a model, packing q/k/v and gate/up through weight loaders."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn


def _default_loader(param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
    param.data.copy_(loaded)


def load_weights(model: nn.Module, path: str | Path) -> None:
    path = Path(path)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {str(path)!r}")
    params = dict(model.named_parameters())  # tied weights appear once, under the embedding's name
    tied = getattr(model.config, "tie_word_embeddings", False)
    packed = getattr(model, "packed_modules_mapping", {})
    loaded: set[str] = set()
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for name in f.keys():
                if "rotary_emb.inv_freq" in name or (tied and name == "lm_head.weight"):
                    continue
                target, shard_id = name, None
                for ckpt_name, (our_name, sid) in packed.items():
                    if f".{ckpt_name}." in name:
                        target, shard_id = name.replace(f".{ckpt_name}.", f".{our_name}."), sid
                        break
                if target not in params:
                    raise KeyError(f"checkpoint weight {name!r} has no place in {type(model).__name__}")
                param = params[target]
                getattr(param, "weight_loader", _default_loader)(param, f.get_tensor(name), shard_id)
                loaded.add(target)
    missing = sorted(set(params) - loaded)
    if missing:
        raise KeyError(f"checkpoint in {str(path)!r} lacks weights for {missing[:5]}{' ...' if len(missing) > 5 else ''}")


@torch.no_grad()
def init_random_weights(model: nn.Module, seed: int = 0, std: float = 0.02) -> None:
    """Random weights of realistic scale, for benchmarking a model shape with nothing to download.
    Norm weights are set to one, as a trained model's roughly are."""
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        else:
            p.normal_(0.0, std, generator=g)
