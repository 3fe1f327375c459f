"""Does a tensor-parallel engine start, generate, shut down and let the interpreter exit promptly?
Prints where each phase ends; after 60 s without finishing, dumps every thread's stack."""

import faulthandler
import sys
import time

from nanoinfer import LLM, SamplingParams

if __name__ == "__main__":
    faulthandler.dump_traceback_later(90, exit=True)
    t0 = time.perf_counter()
    for path in sys.argv[1:] or ["peer"]:
        import os

        os.environ["NANOINFER_ALL_REDUCE"] = path
        llm = LLM("qwen3-0.6b", tensor_parallel_size=2, max_model_len=512, gpu_memory_utilization=0.3)
        print(f"[{path}] started {time.perf_counter() - t0:.1f} s", flush=True)
        llm.generate([[1, 2, 3]] * 4, SamplingParams(max_tokens=8, temperature=0.6), use_tqdm=False)
        print(f"[{path}] generated {time.perf_counter() - t0:.1f} s", flush=True)
        llm.shutdown()
        print(f"[{path}] shut down {time.perf_counter() - t0:.1f} s", flush=True)
    print("exiting", flush=True)
