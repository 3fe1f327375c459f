"""The ``speculative_config`` knob, checked before any work (called from nanoinfer/config.py).

    {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}
    {"method": "draft_model", "model": PATH_OR_SHAPE, "num_speculative_tokens": 4}
    {"method": "draft_model", "model": "self", "num_draft_layers": 4, "num_speculative_tokens": 4}
"""

from __future__ import annotations

from pathlib import Path

KEYS = {
    "ngram": {"method", "num_speculative_tokens", "prompt_lookup_max", "prompt_lookup_min"},
    "draft_model": {"method", "num_speculative_tokens", "model", "num_draft_layers"},
}
DEFAULTS = {"num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}


def decode_rows_per_seq(spec: dict | None) -> int:
    """Decode rows a step may feed one sequence: 1, or with speculation its last token and each draft (a verify
    step lays every fed token out as a decode row of its own: speculator.py)."""
    return 1 + spec["num_speculative_tokens"] if spec else 1


def _int_at_least(spec: dict, key: str, low: int) -> None:
    value = spec[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"speculative_config[{key!r}] must be an integer >= {low}, got {value!r}")


def check_speculative_config(spec) -> dict:
    """The config with its defaults filled in; a ValueError naming the key at fault otherwise."""
    if not isinstance(spec, dict):
        raise ValueError(f"speculative_config must be a dict such as {{'method': 'ngram'}}, got {spec!r}")
    method = spec.get("method")
    if method not in KEYS:
        raise ValueError(f"speculative_config['method'] must be one of {sorted(KEYS)}, got {method!r}")
    unknown = sorted(set(spec) - KEYS[method])
    if unknown:
        raise ValueError(f"speculative_config has key(s) {unknown} that method {method!r} does not take; "
                         f"it takes {sorted(KEYS[method])}")
    spec = {k: v for k, v in DEFAULTS.items() if k in KEYS[method]} | spec
    _int_at_least(spec, "num_speculative_tokens", 1)
    if method == "ngram":
        _int_at_least(spec, "prompt_lookup_min", 1)
        _int_at_least(spec, "prompt_lookup_max", 1)
        if spec["prompt_lookup_min"] > spec["prompt_lookup_max"]:
            raise ValueError(f"speculative_config['prompt_lookup_min'] ({spec['prompt_lookup_min']}) must be <= "
                             f"speculative_config['prompt_lookup_max'] ({spec['prompt_lookup_max']})")
        return spec
    if not isinstance(spec.get("model"), str):
        raise ValueError("speculative_config['model'] must name the draft: a checkpoint directory, a named shape, "
                         f"or 'self' (the target's first num_draft_layers layers); got {spec.get('model')!r}")
    if (spec["model"] == "self") != ("num_draft_layers" in spec):
        raise ValueError("speculative_config['num_draft_layers'] goes with model='self' (and only with it): "
                         "how many of the target's first layers make the draft")
    if spec["model"] == "self":
        _int_at_least(spec, "num_draft_layers", 1)
    return spec


def check_draft_fits(spec: dict, hf_config, max_model_len: int) -> None:
    """Refuse a draft that cannot serve this target: another vocabulary, too few layers, too short a context."""
    if spec["method"] != "draft_model":
        return
    if spec["model"] == "self":
        if spec["num_draft_layers"] >= hf_config.num_hidden_layers:
            raise ValueError(f"speculative_config['num_draft_layers']={spec['num_draft_layers']} must be fewer than "
                             f"the target's {hf_config.num_hidden_layers} layers")
        return
    draft = draft_checkpoint(spec["model"])[1]
    if draft.vocab_size != hf_config.vocab_size:
        raise ValueError(f"speculative_config['model']={spec['model']!r} has a vocabulary of {draft.vocab_size} "
                         f"tokens, the target {hf_config.vocab_size}: a draft must share the target's vocabulary")
    if draft.max_position_embeddings < max_model_len:
        raise ValueError(f"speculative_config['model']={spec['model']!r} takes {draft.max_position_embeddings} "
                         f"positions, fewer than max_model_len={max_model_len}")


def draft_checkpoint(model: str):
    """(directory or None, transformers config) of a separate draft: a checkpoint directory, or a named shape
    with random weights (as LLMEngine resolves a target)."""
    from nanoinfer.models import load_model_config
    from nanoinfer.tools.shapes import SHAPES, shape_config

    path = Path(model).expanduser()
    if path.is_dir():
        return path, load_model_config(path)
    if model in SHAPES:
        return None, shape_config(model)
    raise ValueError(f"speculative_config['model']={model!r} is neither a checkpoint directory nor a named shape "
                     f"({', '.join(SHAPES)})")
