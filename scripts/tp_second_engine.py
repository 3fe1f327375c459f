"""Two tensor-parallel engines one after the other in the same process: how long each takes to start
and which all-reduce path it gets (the second one cannot set up peer memory again and must say so fast)."""

import time
import warnings

from nanoinfer import LLM, SamplingParams
from nanoinfer.distributed import all_reduce_path

if __name__ == "__main__":
    for attempt in (1, 2):
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            llm = LLM("qwen3-0.6b", tensor_parallel_size=2, max_model_len=512, gpu_memory_utilization=0.3)
        path = all_reduce_path()
        out = llm.generate([[1, 2, 3]] * 4, SamplingParams(max_tokens=8, temperature=0.6), use_tqdm=False)
        llm.shutdown()
        print(f"engine {attempt}: started in {time.perf_counter() - t0:.1f} s, all-reduce: {path}, "
              f"{sum(len(o.token_ids) for o in out)} tokens, warnings: {[str(w.message)[:90] for w in caught]}",
              flush=True)
