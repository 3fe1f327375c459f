"""Tensor parallelism's plumbing: collectives and their counters (comm.py), the peer-memory all-reduce
(peer_memory.py), worker processes with their watchdog (workers.py) and the rank-0 runner that forwards
each step to them (runner.py). The parallel layers themselves are in nanoinfer/layers/."""
