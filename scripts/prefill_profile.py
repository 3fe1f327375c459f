"""Where a prefill step of nano-vllm's workload goes on a GPU: the workload's 256 prompts (random weights of
the Qwen3-0.6B shape, steps of 16,384 tokens) queued at once, the first prefill step run unprofiled, then
torch.profiler over the next 4 prefill steps: their wall time, the 25 kernels with the most GPU time, and
the 25 operators and engine host ranges with the most CPU time.

    python scripts/prefill_profile.py OUT.txt      # writes the tables to OUT.txt

Run from the repository root on a machine with one GPU. Records made with it:
notebooks/reference_results/h200_prefill_profile_fused.txt (the fused attention prologue, on by default)
and h200_prefill_profile_separate.txt (made before the prologue existed; ``fused_attention_prologue=False``
in the LLM(...) call below gives the separate ops again).
"""

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from nanoinfer import LLM, SamplingParams
from nanoinfer.tools.bench import named_workload

llm = LLM("qwen3-0.6b", max_num_seqs=512, max_num_batched_tokens=16384)
work = named_workload("nano-vllm", llm.engine.hf_config.vocab_size)
for prompt, n in zip(work.prompts, work.output_lens):
    llm.engine.add_request(prompt, SamplingParams(temperature=work.temperature, max_tokens=n, ignore_eos=True))
out = open(sys.argv[1], "w")
llm.engine.step()  # the first prefill step, unprofiled
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    t0 = time.perf_counter()
    for _ in range(4):
        llm.engine.step()
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
print(f"4 prefill steps: {wall * 1e3:.1f} ms wall", file=out)
print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=80), file=out)
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25, max_name_column_width=80), file=out)
llm.engine.abort_all()
llm.shutdown()
