"""The feature matrix of notebook 08: nanoinfer's column found by asking the engine (a knob it accepts or
refuses, a run that shows the behaviour), the other engines' columns as their documentation states them.

    probe(llm)      {feature: what this engine does}, every entry from a probe run now
    matrix(llm)     a DataFrame: one row per feature, nanoinfer's probed column beside PEERS
"""

from __future__ import annotations

import importlib.util
import json
import urllib.request

from nanoinfer.config import ATTENTION_BACKENDS, EngineConfig
from nanoinfer.sampling_params import SamplingParams

FEATURES = ("continuous batching", "paged KV cache", "prefix caching", "chunked prefill", "CUDA graphs",
            "FlashAttention", "tensor parallelism", "pipeline parallelism", "quantization", "speculative decoding",
            "multi-LoRA", "structured output", "streaming", "OpenAI-compatible server")

# What each engine's own documentation says (the row order of FEATURES); "no" where it has no such feature.
PEERS = {
    "nano-vllm": ("yes", "yes", "yes (block hashes)", "no (a prompt in one step)", "yes", "yes (flash-attn)", "yes",
                  "no", "no", "no", "no", "no", "no (offline generate)", "no"),
    "vLLM": ("yes", "yes (PagedAttention)", "yes (automatic prefix caching)", "yes", "yes",
             "yes (FlashAttention, FlashInfer backends)", "yes", "yes", "yes (FP8, INT8, AWQ, GPTQ, ...)",
             "yes (n-gram, draft model, EAGLE, MTP)", "yes", "yes (xgrammar, guidance)", "yes", "yes"),
    "SGLang": ("yes", "yes", "yes (RadixAttention)", "yes", "yes", "yes (FlashInfer, FlashAttention 3 backends)",
               "yes", "yes", "yes (FP8, INT4 AWQ/GPTQ, ...)", "yes (EAGLE, MTP, draft model)", "yes",
               "yes (xgrammar, outlines)", "yes", "yes"),
    "TGI": ("yes", "yes (PagedAttention)", "yes (v3)", "yes (v3)", "yes", "yes", "yes", "no",
            "yes (bitsandbytes, GPTQ, AWQ, FP8, ...)", "yes (Medusa, n-gram)", "yes", "yes (grammars)", "yes",
            "yes (Messages API)"),
    "TensorRT-LLM": ("yes (in-flight batching)", "yes", "yes (KV cache reuse)", "yes", "yes",
                     "own fused attention kernels", "yes", "yes", "yes (FP8, INT8, INT4 AWQ, ...)",
                     "yes (draft model, Medusa, EAGLE, lookahead)", "yes", "yes (xgrammar)", "yes",
                     "yes (trtllm-serve)"),
}
SOURCES = {
    "nano-vllm": "github.com/GeeeekExplorer/nano-vllm (README and code; the version the curriculum studies)",
    "vLLM": "docs.vllm.ai (Features; Engine arguments)",
    "SGLang": "docs.sglang.ai (Server arguments; Advanced features)",
    "TGI": "huggingface.co/docs/text-generation-inference (Conceptual guides)",
    "TensorRT-LLM": "nvidia.github.io/TensorRT-LLM (Features; trtllm-serve)",
}


def accepts(**knobs) -> tuple[bool, str]:
    """Whether the engine's config takes these knobs (checked before any work): (True, "") or the error."""
    try:
        EngineConfig.from_kwargs(None, **knobs)
        return True, ""
    except (TypeError, ValueError) as e:
        return False, str(e).split(";")[0]


def _continuous_batching(llm) -> str:
    """Add a request, step, add another: does the second join the first's batch at the next step?"""
    engine, params = llm.engine, SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    llm.reset_metrics()
    first = engine.add_request([1, 2, 3, 4], params)
    engine.step()  # the first request's prefill: it is running now
    engine.step()
    second = engine.add_request([5, 6, 7], params)
    while engine.has_unfinished_requests():
        engine.step()
    steps = llm.step_timeline()
    joined = bool((steps.num_seqs == 2).any()) and first.num_output_tokens == second.num_output_tokens == 6
    return "yes: a request added mid-run shared the running request's steps" if joined else "no"


def _prefix_caching(llm) -> str:
    prompt = list(range(10, 10 + 2 * llm.engine.config.kvcache_block_size + 3))
    params = SamplingParams(temperature=0.0, max_tokens=1)
    before = llm.cache_stats()["hit_tokens"]
    llm.generate([prompt, prompt], params, use_tqdm=False)
    llm.generate([prompt], params, use_tqdm=False)
    hits = llm.cache_stats()["hit_tokens"] - before
    return f"yes: a repeated prompt hit {hits} cached tokens" if hits else "no"


def _server(llm) -> str:
    from nanoinfer.serving.server import BackgroundServer

    with BackgroundServer(llm, "probe") as server:
        with urllib.request.urlopen(f"{server.url}/v1/models", timeout=10) as reply:
            models = [m["id"] for m in json.load(reply)["data"]]
        routes = {getattr(r, "path", "") for r in server.app.routes}
    wanted = ["/v1/completions", "/v1/chat/completions", "/v1/models", "/metrics"]
    return f"yes: {', '.join(p for p in wanted if p in routes)} (served {models})"


def probe(llm) -> dict[str, str]:
    """nanoinfer's column: each entry from a probe of the engine now (``llm``: a running LLM, left idle)."""
    out: dict[str, str] = {"continuous batching": _continuous_batching(llm)}
    bs = llm.engine.config.kvcache_block_size
    out["paged KV cache"] = f"yes: {llm.block_manager.num_blocks} blocks of {bs} tokens, one block table per request"
    out["prefix caching"] = _prefix_caching(llm)
    out["chunked prefill"] = "yes: enable_chunked_prefill" if accepts(enable_chunked_prefill=True)[0] else "no"
    graphs = llm.fast_paths().set_index("name").loc["CUDA graphs"]
    out["CUDA graphs"] = f"yes, on CUDA (here: {graphs.applied or graphs.reason})"
    flash = importlib.util.find_spec("flash_attn") is not None
    out["FlashAttention"] = ("yes: attention_backend='flash_attn' (flash-attn " +
                             ("installed here)" if flash else "not installed here; Triton and C kernels instead)")
                             if "flash_attn" in ATTENTION_BACKENDS else "no")
    out["tensor parallelism"] = "yes: tensor_parallel_size (gloo, NCCL)" if accepts(tensor_parallel_size=2)[0] \
        else "no"
    ok, why = accepts(pipeline_parallel_size=2)
    out["pipeline parallelism"] = "yes" if ok else f"no ({why})"
    methods = [q for q in ("int8", "fp8", "awq", "gptq") if accepts(quantization=q)[0]]
    out["quantization"] = f"{', '.join(methods)} weight-only" if methods else "no"
    spec = [m for m in ("ngram", "draft_model", "eagle", "medusa")
            if accepts(speculative_config={"method": m, **({"model": "self", "num_draft_layers": 1}
                                                          if m == "draft_model" else {})})[0]]
    out["speculative decoding"] = f"yes: {', '.join(spec)}" if spec else "no"
    ok, why = accepts(enable_lora=True)
    out["multi-LoRA"] = "yes" if ok else f"no ({why})"
    try:
        SamplingParams(guided_json={"type": "object"})
        out["structured output"] = "yes"
    except TypeError as e:
        out["structured output"] = f"no ({str(e).split(';')[0]})"
    out["streaming"] = "yes: LLM.stream, AsyncLLM.generate" if hasattr(llm, "stream") else "no"
    out["OpenAI-compatible server"] = _server(llm)
    return out


def matrix(llm):
    """One row per feature: nanoinfer (probed now) and the PEERS columns (from their SOURCES)."""
    import pandas as pd

    found = probe(llm)
    frame = pd.DataFrame({"nanoinfer (probed)": [found[f] for f in FEATURES],
                          **{name: list(column) for name, column in PEERS.items()}}, index=list(FEATURES))
    frame.index.name = "feature"
    return frame
