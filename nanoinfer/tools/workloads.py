"""The benchmark's workloads: random token ids of set prompt and output lengths, reproducible from a seed.

The curriculum's four categories (chatbot, RAG/QA, code generation, summarisation) plus variable lengths and
repeated prompts, at the sizes the seed gives them; ``scale`` shrinks the request count and every length by one
factor (a 2-core CPU runs ``scale=1/16`` in seconds), so the in/out shape of each workload stays the same.
Requests use ``ignore_eos``: each produces exactly its output length.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Workload:
    name: str
    prompts: list[list[int]]
    output_lens: list[int]
    temperature: float = 0.0

    @property
    def num_output_tokens(self) -> int:
        return sum(self.output_lens)

    @property
    def num_prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)

    @property
    def max_len(self) -> int:
        """The longest prompt plus output: what ``max_model_len`` must hold."""
        return max(len(p) + n for p, n in zip(self.prompts, self.output_lens))

    def kv_blocks_needed(self, block_size: int) -> int:
        """KV blocks for every request at its full length at once: no preemption below this many (fewer with
        prefix hits)."""
        return sum(-(-(len(p) + n) // block_size) for p, n in zip(self.prompts, self.output_lens))

    def head(self, n: int) -> "Workload":
        return Workload(f"{self.name}[:{n}]", self.prompts[:n], self.output_lens[:n], self.temperature)


@dataclass(frozen=True)
class WorkloadSpec:
    requests: int
    prompt: tuple[int, int]  # prompt length range, inclusive (a fixed length is (n, n))
    output: tuple[int, int]
    temperature: float = 0.6
    shared_prefix: int = 0  # leading tokens every prompt shares (the prefix cache's case)
    what: str = ""


WORKLOADS = {
    "chatbot": WorkloadSpec(256, (128, 128), (256, 256), what="short prompts, long answers"),
    "rag_qa": WorkloadSpec(128, (2048, 2048), (64, 64), what="long retrieved context, short answer"),
    "code_gen": WorkloadSpec(256, (512, 512), (512, 512), what="medium prompt, long output"),
    "summarization": WorkloadSpec(64, (4096, 4096), (256, 256), what="very long input, medium output"),
    "variable": WorkloadSpec(256, (32, 2048), (16, 512), what="lengths drawn uniformly: mixed traffic"),
    "repeated_prefix": WorkloadSpec(256, (1024, 1024), (128, 128), shared_prefix=960,
                                    what="one system prompt of 960 tokens before every request"),
    "nano-vllm": WorkloadSpec(256, (100, 1024), (100, 1024), what="nano-vllm's bench.py"),
    "cpu-mixed": WorkloadSpec(32, (16, 256), (32, 128), temperature=0.0, what="the CPU comparison with transformers"),
}
SEED_CATEGORIES = ("chatbot", "rag_qa", "code_gen", "summarization", "variable", "repeated_prefix")


def random_workload(num_requests: int, prompt_range: tuple[int, int], output_range: tuple[int, int],
                    vocab_size: int, seed: int = 0, temperature: float = 0.0, name: str = "random",
                    shared_prefix: int = 0) -> Workload:
    rng = random.Random(seed)
    prefix = [rng.randrange(vocab_size) for _ in range(shared_prefix)]
    prompts = []
    for _ in range(num_requests):
        n = rng.randint(*prompt_range)
        prompts.append(prefix[:n] + [rng.randrange(vocab_size) for _ in range(n - min(n, shared_prefix))])
    return Workload(name, prompts, [rng.randint(*output_range) for _ in range(num_requests)], temperature)


def named_workload(name: str, vocab_size: int, seed: int = 0, num_requests: int | None = None,
                   scale: float = 1.0) -> Workload:
    """One of ``WORKLOADS``, its request count and lengths multiplied by ``scale`` (at least 2 requests of at
    least 4 prompt and 2 output tokens); ``num_requests`` overrides the scaled count."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose from {sorted(WORKLOADS)}")
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    spec = WORKLOADS[name]

    def scaled(n: int, least: int) -> int:
        return max(least, round(n * scale))

    requests = num_requests or scaled(spec.requests, 2)
    prompt = (scaled(spec.prompt[0], 4), scaled(spec.prompt[1], 4))
    output = (scaled(spec.output[0], 2), scaled(spec.output[1], 2))
    return random_workload(requests, prompt, output, vocab_size, seed, spec.temperature, name,
                           scaled(spec.shared_prefix, 0))


# An input-grounded workload for prompt-lookup drafting (speculative decoding): real text, so it needs the
# model's tokenizer. Rewriting or summarising a given passage repeats long spans of it.
PASSAGE = (
    "The printing press was developed around 1440 by Johannes Gutenberg, a goldsmith from Mainz. He combined "
    "movable metal type, an oil-based ink and a wooden screw press adapted from those used to make wine. Before "
    "the press, books were copied by hand, which made them rare and expensive; a single Bible could take a scribe "
    "several years. Within fifty years of Gutenberg's first books, printing shops had spread to more than two "
    "hundred cities across Europe, and millions of volumes had been produced. Cheaper books meant that more "
    "people learned to read, that scholars could compare the same text in different cities, and that new ideas "
    "travelled faster than ever before. Historians often link the press to the Reformation, the Scientific "
    "Revolution and the rise of newspapers, although each of these had many other causes as well."
)
INSTRUCTIONS = ["Rewrite the following passage, correcting its spelling and grammar:",
                "Summarise the following passage, keeping its key sentences:",
                "Rewrite the following passage in your own words, keeping every fact:",
                "Rewrite the following passage for a school textbook:"]


def rewrite_prompts(llm, num_requests: int) -> list[list[int]]:
    """Chat prompts (token ids) asking ``llm``'s model to rewrite or summarise PASSAGE, INSTRUCTIONS in turn."""
    tok = llm.tokenizer
    asks = [f"{INSTRUCTIONS[i % len(INSTRUCTIONS)]}\n\n{PASSAGE}" for i in range(num_requests)]
    texts = [tok.apply_chat_template([{"role": "user", "content": ask}],
                                     tokenize=False, add_generation_prompt=True) for ask in asks]
    return [tok.encode(text, add_special_tokens=False) for text in texts]
