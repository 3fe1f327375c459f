"""Where a decode step's time goes on a GPU: nanoinfer.tools.profiling.profile_decode (torch.profiler over
5 decode steps) on random weights of the Qwen3-0.6B shape, at 1 and at 256 sequences of 1,024 tokens, with
CUDA graphs and then with enforce_eager. Per case: the wall time per step, kernel time by category
(attention, GEMM, norm / rotary / activation, sampling, copies, communication, other) and the time the
device sat idle ("CPU overhead"), then the engine's host ranges per step.

    python scripts/profile_decode.py OUT.txt      # writes the tables to OUT.txt (to stdout without it)

Run from the repository root on a machine with one GPU. Records made with it:
notebooks/reference_results/h100_decode_profile.txt and h200_decode_profile_async.txt.
"""

import sys

from nanoinfer import LLM
from nanoinfer.tools.profiling import profile_decode

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
