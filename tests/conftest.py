import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Without a GPU, Triton kernels run in its interpreter (numpy on the CPU): set before triton is imported.
import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from helpers import hf_greedy, hf_model, make_tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> Path:
    return make_tiny_checkpoint("qwen3", tmp_path_factory.mktemp("tiny_qwen3"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_checkpoint("llama", tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory) -> Path:
    return make_tiny_checkpoint("gemma", tmp_path_factory.mktemp("tiny_gemma"))


@pytest.fixture(scope="session")
def smollm2() -> Path:
    from nanoinfer.tools.convert import default_model_dir

    return default_model_dir()


SMOLLM2_TEXTS = [
    "The capital of France is",
    "Here is a short story about a robot who learns to paint. Once upon a time,",
    "List three uses of a paperclip:",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Photosynthesis is the process by which plants turn sunlight, water and carbon dioxide into",
    "Q: What is 12 times 7?\nA:",
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
    "movable metal type, oil-based inks and a wooden press adapted from wine making. Within a few decades",
    "In machine learning, overfitting means",
]


class Reference:
    """Prompts and transformers' greedy continuations for one model, computed once per session."""

    def __init__(self, path: Path, prompts: list[list[int]], max_new_tokens: int = 32) -> None:
        self.path = path
        self.prompts = prompts
        self.max_new_tokens = max_new_tokens
        self.model = hf_model(path)
        self.greedy = hf_greedy(self.model, prompts, max_new_tokens)


def _random_prompts(vocab: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    lengths = [3, 17, 40, 64, 90, 5, 33, 120]  # mixed, crossing block boundaries (block size 16)
    return [[rng.randrange(vocab) for _ in range(n)] for n in lengths]


@pytest.fixture(scope="session")
def reference(request, tiny_qwen3, tiny_llama, tiny_gemma, smollm2):
    cache = {}

    def get(name: str) -> Reference:
        if name not in cache:
            if name == "smollm2":
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(str(smollm2))
                cache[name] = Reference(smollm2, [tok.encode(t) for t in SMOLLM2_TEXTS])
            else:
                path = {"qwen3": tiny_qwen3, "llama": tiny_llama, "gemma": tiny_gemma}[name]
                cache[name] = Reference(path, _random_prompts(512))
        return cache[name]

    return get


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skip them (with the reason) on machines without it."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run with -m gpu on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
