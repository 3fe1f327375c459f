"""How the GPU copy bandwidth behind the roofline is timed: a 1 GiB copy timed by the host clock around a synchronised
call (what nanoinfer/tools/roofline.py did before), against CUDA events around the copy (its ``copy_bandwidth``
now), 1 and 4 GiB, host timing again at the end. Bytes read plus written per second, each repeat. Writes a record with card,
date, command and commit.

    python scripts/copy_bandwidth_timing.py --out notebooks/reference_results/h200_copy_bandwidth_timing.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from nanoinfer.tools.roofline import copy_bandwidth


def buffers(nbytes: int):
    a = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda").fill_(1)
    return a, torch.empty_like(a)


def host_timed(nbytes: int, repeats: int = 5) -> list[float]:
    a, b = buffers(nbytes)
    b.copy_(a)
    runs = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        b.copy_(a)
        torch.cuda.synchronize()
        runs.append(nbytes / (time.perf_counter() - t0))
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cuda = torch.device("cuda")
    runs = {"host_timed_cold": host_timed(1 << 30), "events_1GiB": copy_bandwidth(cuda, 1 << 30, repeats=20),
            "events_4GiB": copy_bandwidth(cuda, 4 << 30, repeats=20), "host_timed_warm": host_timed(1 << 30)}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or "unknown"
    record = {"card": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
              "command": "python scripts/copy_bandwidth_timing.py " + " ".join(sys.argv[1:]), "commit": commit,
              "bytes_per_s": runs}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    for name, values in runs.items():
        print(f"{name:16s} best {max(values) / 1e12:.3f}  median {sorted(values)[len(values) // 2] / 1e12:.3f} TB/s")


if __name__ == "__main__":
    main()
