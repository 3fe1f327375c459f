"""Phase 8 — serving. Your code for Exercise 8.3: requests that arrive while the engine runs.

Check your work with ``make check EX=8.3`` (or ``python -m nanoinfer.check 8.3``).
The engine's version, which the load generator runs: nanoinfer/serving/loadgen.py.
"""

from __future__ import annotations

import time  # noqa: F401

import numpy as np  # noqa: F401

PERCENTILES = (50, 90, 99)


def arrival_times(rate: float, num_requests: int, rng: np.random.Generator) -> np.ndarray:
    """Exercise 8.3: when each request arrives, in seconds from the start, for a Poisson process of ``rate``
    requests per second.

    In a Poisson process the gaps between arrivals (and before the first) are independent and exponential
    with mean 1/rate. Draw them from ``rng`` (a numpy Generator: the same seed gives the same times) and
    return their running sum, an increasing array of ``num_requests`` floats. Raise ValueError unless rate > 0.
    """
    raise NotImplementedError("Exercise 8.3: write arrival_times(rate, num_requests, rng)")


def simulate_arrivals(llm, prompts: list[list[int]], sampling_params, times) -> dict:
    """Exercise 8.3: drive the engine's step loop while requests arrive; return their latency percentiles.

    Request i (token ids ``prompts[i]``, ``sampling_params`` one SamplingParams or one per prompt) arrives
    ``times[i]`` seconds after the start. Loop: add every request that is due with
    ``seq = llm.engine.add_request(prompt, params, prompt)``, never before its time, and set
    ``seq.metrics.arrival_time`` to the moment it was due (start + times[i], on time.perf_counter's clock):
    a request that arrived during a step waited for that step, and its time to first token counts the
    wait. Then ``llm.engine.step()`` if anything is unfinished, or sleep until the next arrival. Stop when
    every request has arrived and finished.

    Return a dict: for name in ttft, tpot, e2e and q in PERCENTILES, ``f"{name}_p{q}"`` = np.percentile of
    the requests' ``metrics.time_to_first_token`` / ``time_per_output_token`` / ``e2e_latency`` (leave out
    the None ones: a one-token request has no TPOT); ``"requests"``: how many ran; ``"output_tokens"``: their
    output tokens in all; ``"seconds"``: from the start to the end of the loop; ``"throughput_tok_s"``:
    output_tokens / seconds.
    """
    raise NotImplementedError("Exercise 8.3: write simulate_arrivals(llm, prompts, sampling_params, times)")
