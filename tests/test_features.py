"""The feature matrix's nanoinfer column (tools/features.py) comes from probes: each entry follows what the
engine does, so turning a feature off changes its entry."""

from nanoinfer import LLM
from nanoinfer.tools.features import FEATURES, PEERS, SOURCES, accepts, matrix, probe


def test_matrix_rows_and_sources(tiny_llama):
    with LLM(str(tiny_llama), max_model_len=128, num_kvcache_blocks=32) as llm:
        frame = matrix(llm)
        assert llm.block_manager.num_free_blocks == llm.block_manager.num_blocks  # the probes leak nothing
    assert list(frame.index) == list(FEATURES) and set(PEERS) == set(SOURCES)
    assert all(len(column) == len(FEATURES) for column in PEERS.values())
    ours = frame["nanoinfer (probed)"]
    for feature in ("continuous batching", "prefix caching", "tensor parallelism", "streaming",
                    "OpenAI-compatible server"):
        assert ours[feature].startswith("yes"), (feature, ours[feature])
    for feature, knob in (("pipeline parallelism", "pipeline_parallel_size"), ("multi-LoRA", "enable_lora"),
                          ("structured output", "guided_json")):
        assert ours[feature].startswith("no") and knob in ours[feature], (feature, ours[feature])
    assert ours["quantization"] == "int8 weight-only" and ours["speculative decoding"] == "yes: ngram, draft_model"


def test_probes_follow_the_engine(tiny_llama):
    """With prefix caching off, the prefix-caching probe finds no hit; with one sequence per step, the second
    request cannot join the first."""
    with LLM(str(tiny_llama), max_model_len=128, num_kvcache_blocks=32, enable_prefix_caching=False,
             max_num_seqs=1) as llm:
        found = probe(llm)
    assert found["prefix caching"] == "no" and found["continuous batching"] == "no"
    assert accepts(quantization="int8") == (True, "")
    ok, why = accepts(quantization="fp8")
    assert not ok and "quantization" in why
