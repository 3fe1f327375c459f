"""``nanoinfer.bench``: the benchmark's Python API and command (``python -m nanoinfer.bench``), which live in
nanoinfer/tools/bench.py: ``run``, ``suite``, ``sweep``, the workloads, ``main``."""

from nanoinfer.tools.bench import *  # noqa: F401,F403
from nanoinfer.tools.bench import main

if __name__ == "__main__":
    main()
