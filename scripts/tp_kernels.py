"""The longest kernels of a decode step at each tensor-parallel size (rank 0's profile, 256 sequences of
1,024 tokens, qwen3-8b random weights): what each category of scripts/tp_scaling.py holds.

    python scripts/tp_kernels.py OUT.jsonl 2 1
"""

import json

from per_size import run_per_size

MODEL = "qwen3-8b"


def one(out_path: str, tp: int) -> None:
    from nanoinfer import LLM
    from nanoinfer.profiling import profile_decode

    with LLM(MODEL, tensor_parallel_size=tp, max_model_len=2048, max_num_seqs=256) as llm:
        table = profile_decode(llm, num_seqs=256, context_len=1024, steps=5, top_kernels=40)
    record = {"tp": tp, "model": MODEL, "wall_ms_per_step": table.attrs["wall_ms_per_step"],
              "categories_ms": table["ms_per_step"].round(4).to_dict(), "top_kernels": table.attrs["top_kernels"]}
    with open(out_path, "a") as f:
        f.write(json.dumps(record) + "\n")
    for k in record["top_kernels"]:
        print(f"TP={tp} {k['ms_per_step']:8.4f} ms  {k['category']:28s} {k['name'][:110]}")


if __name__ == "__main__":
    run_per_size(__file__, lambda out_path, size: one(out_path, int(size)))
