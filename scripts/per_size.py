"""Helper of scripts/tp_scaling.py and scripts/tp_kernels.py (not run on its own): run a measurement
script once per tensor-parallel size, each size in a process of its own, because a second peer-memory
engine in one process falls back to NCCL."""

import subprocess
import sys


def run_per_size(script: str, measure_one) -> None:
    """``script OUT SIZE`` calls ``measure_one(OUT, SIZE)``; ``script OUT SIZE SIZE...`` runs itself once per
    size, going on past a size that fails."""
    out_path, sizes = sys.argv[1], sys.argv[2:]
    if len(sizes) == 1:
        measure_one(out_path, sizes[0])
        return
    for size in sizes:
        done = subprocess.run([sys.executable, script, out_path, size], check=False)
        if done.returncode:
            print(f"size {size} failed (exit code {done.returncode}); going on with the other sizes", flush=True)
