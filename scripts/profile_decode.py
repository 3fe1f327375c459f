"""Profile decode steps of Qwen3-0.6B (random weights) at a few batch sizes, with and without CUDA graphs."""

import sys

from nanoinfer import LLM
from nanoinfer.profiling import profile_decode

out = open(sys.argv[1], "w") if len(sys.argv) > 1 else sys.stdout
for eager in (False, True):
    llm = LLM("qwen3-0.6b", max_model_len=2048, max_num_seqs=256, enforce_eager=eager, gpu_memory_utilization=0.45)
    for num_seqs in (1, 256):
        table = profile_decode(llm, num_seqs=num_seqs, context_len=1024, steps=5)
        print(f"\n## enforce_eager={eager} num_seqs={num_seqs} context=1024: "
              f"{table.attrs['wall_ms_per_step']:.2f} ms/step wall", file=out)
        print(table.round(3).to_string(), file=out)
        print("host ms per step:", {k: round(v, 3) for k, v in table.attrs["host_ms_per_step"].items()}, file=out)
        out.flush()
    del llm
