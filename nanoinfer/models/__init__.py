"""Model registry: the ``architectures`` entry of a checkpoint's config.json picks the class."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from torch import nn

from nanoinfer.workbook.registry import learner_code

# architecture name (config.json's "architectures") -> "module:Class", imported when first used
REGISTRY: dict[str, str] = {
    "GemmaForCausalLM": "nanoinfer.models.gemma:GemmaForCausalLM",
    "LlamaForCausalLM": "nanoinfer.models.llama:LlamaForCausalLM",
    "Qwen3ForCausalLM": "nanoinfer.models.qwen3:Qwen3ForCausalLM",
}


def model_class(architecture: str) -> type[nn.Module]:
    if architecture not in REGISTRY:
        raise ValueError(f"unknown architecture {architecture!r}; supported: {sorted(REGISTRY)}")
    module, name = REGISTRY[architecture].split(":")
    cls = getattr(importlib.import_module(module), name)
    return learner_code("5.3", cls) if architecture == "GemmaForCausalLM" else cls  # (the learner's, if selected)


def load_model_config(path: str | Path):
    """Read and check a Hugging Face model directory's config.json (no weights are touched)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model path {str(path)!r} does not exist")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"model path {str(path)!r} has no config.json: expected a Hugging Face model directory")
    raw = json.loads(config_file.read_text())
    architectures = raw.get("architectures") or []
    if not architectures:
        raise ValueError(f"{config_file} names no architecture ('architectures' is empty)")
    model_class(architectures[0])  # raises for an unknown architecture before transformers is asked
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(path))
