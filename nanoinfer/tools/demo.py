"""The main job (``python -m nanoinfer``): generate a few answers with the default model and report speed."""

from __future__ import annotations

import time

from nanoinfer import LLM, SamplingParams

QUESTIONS = ["What is the capital of France?", "Explain in two sentences why the sky is blue.",
             "Write a haiku about a cup of tea.", "Give three tips for writing clear code.",
             "What does a GPU do that a CPU does not?", "Name the planets of the solar system.",
             "How do I boil an egg?", "What is a prime number?"]


def main() -> None:
    t0 = time.perf_counter()
    llm = LLM()
    print(f"{llm}\nloaded in {time.perf_counter() - t0:.1f} s\n")
    conversations = [[{"role": "user", "content": q}] for q in QUESTIONS]
    t0 = time.perf_counter()
    outputs = llm.chat(conversations, SamplingParams(temperature=0.0, max_tokens=96), use_tqdm=True)
    seconds = time.perf_counter() - t0
    for q, out in zip(QUESTIONS, outputs):
        print(f"\n> {q}\n{out.text.strip()}")
    tokens = sum(len(o.token_ids) for o in outputs)
    summary = llm.engine.metrics.summary()
    print(f"\n{len(outputs)} requests, {tokens} tokens generated in {seconds:.2f} s: "
          f"{tokens / seconds:.1f} output tok/s "
          f"(prefill {summary['prefill']['tokens_per_s']:.0f} tok/s, decode {summary['decode']['tokens_per_s']:.0f} tok/s)")


if __name__ == "__main__":
    main()
