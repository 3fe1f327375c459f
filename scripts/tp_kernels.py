"""The longest kernels of a decode step at each tensor-parallel size: what each category of
scripts/tp_scaling.py's profile holds.

What it measures: rank 0's torch.profiler trace of 5 decode steps at 256 sequences of 1,024 tokens
(greedy, CUDA graphs) on random weights of the Qwen3-8B shape; per size, the wall time per step, the
kernel time per category (attention, GEMM, communication, ...) and the 40 longest kernels, each with
its category and milliseconds per step. One JSON line per size is appended to OUT.jsonl, and the kernel
list is printed.

    python scripts/tp_kernels.py OUT.jsonl 2 1     # on a machine with 2 GPUs; each size in its own process

Run from the repository root. Record made with it: notebooks/reference_results/h200x2_tp_decode_kernels.json.
"""

import json

from per_size import run_per_size

MODEL = "qwen3-8b"


def one(out_path: str, tp: int) -> None:
    from nanoinfer import LLM
    from nanoinfer.tools.profiling import profile_decode

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
