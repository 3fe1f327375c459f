"""Rank 0 of a tensor-parallel group: a ModelRunner for its own shard that sends every call which runs the
model (and so meets the other ranks in collectives) to the workers first, so that all ranks enter the
same collectives in the same order. A step travels as plain lists (``StepInputs``): a few KB."""

from __future__ import annotations

import time

import torch

from nanoinfer.engine.model_runner import ModelRunner, StepInputs
from nanoinfer.parallel.peer_memory import alternate_output_slots
from nanoinfer.parallel.workers import WorkerGroup, parameter_summary, rank_device


class ParallelModelRunner(ModelRunner):
    def __init__(self, config, hf_config, model_dir, device: torch.device, dtype: torch.dtype, events=None) -> None:
        device = rank_device(device.type, 0)
        self.workers = WorkerGroup(config, hf_config, model_dir, device, dtype)  # makes this process rank 0
        try:
            super().__init__(config, hf_config, model_dir, device, dtype, events)
            alternate_output_slots(self.model)
        except BaseException:
            self.workers.shutdown()
            raise

    def measure_kv_budget(self) -> int:
        """Every rank must hold the same number of blocks: the smallest that fits on every card."""
        self.workers.call("measure_kv_budget", reply=True)
        return min([super().measure_kv_budget(), *self.workers.replies()])

    def setup_kv_cache(self, num_blocks: int) -> None:
        self.workers.call("setup_kv_cache", num_blocks)
        super().setup_kv_cache(num_blocks)

    def parameter_summary(self) -> list[dict[str, tuple[tuple[int, ...], float]]]:
        """Every rank's parameters as {name: (shape, float64 sum)}, rank 0 first (notebook 04 shows the shards)."""
        self.workers.call("parameter_summary", reply=True)
        return [parameter_summary(self.model), *self.workers.replies()]

    def run_on_ranks(self, inputs: StepInputs, previous_tokens: torch.Tensor | None) -> torch.Tensor | None:
        self.workers.call("execute", inputs)  # the other ranks run the same step alongside
        try:
            return self.execute(inputs, previous_tokens)
        except Exception as error:  # a collective failed: was it a dead worker?
            raise self.workers.explain(error) from error

    def synchronize(self, event: torch.cuda.Event) -> None:
        """Poll the step's event and the watchdog: a dead rank leaves a peer-memory all-reduce waiting forever."""
        while not event.query():
            self.workers.check()
            time.sleep(2e-5)

    def step_failed(self) -> None:
        self.shutdown()  # the ranks may be out of step now: stop them rather than hang in the next collective

    def shutdown(self) -> None:
        """CUDA graphs go first: destroying an NCCL communicator that captured graphs still use hangs. Not
        after a worker died: this GPU may be stuck in a collective, and freeing memory would wait on it."""
        if self.workers.failure is None:
            super().shutdown()
        self.workers.shutdown()
