"""Per-step timeline of the engine, kept always (one small record per step), exportable as DataFrames."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class StepRecord:
    step: int
    phase: str  # "prefill" or "decode"
    num_seqs: int
    num_tokens: int  # tokens fed to the model
    num_sampled: int  # tokens produced
    num_preempted: int
    num_finished: int
    used_blocks: int  # KV blocks held after the step
    start: float  # time.perf_counter() at the start of the step
    schedule_s: float  # the scheduler picking the batch
    model_s: float  # the launch: inputs prepared, forward pass, sampling (on a GPU: queued, not finished)
    postprocess_s: float  # waiting for the sampled tokens, then appending them and retiring finished requests
    comm_bytes: int = 0  # bytes this rank sent through all-reduce / all-gather during the step
    comm_s: float = 0.0  # seconds inside those collectives (only with measure_communication=True; not
    # those a CUDA graph replays, which count in comm_bytes only: enforce_eager times every one)
    prepare_s: float = 0.0  # part of model_s: the batch flattened into the step's inputs on the host
    sample_s: float = 0.0  # part of model_s: sampling (on a GPU, the host time to queue its kernels)
    wait_s: float = 0.0  # part of postprocess_s: until the sampled tokens were on the host (async: the last step's)
    num_drafted: int = 0  # speculative decoding: tokens drafted for the step's sequences
    num_accepted: int = 0  # and accepted by the target (counted in num_sampled too)

    @property
    def seconds(self) -> float:
        return self.schedule_s + self.model_s + self.postprocess_s


class EngineMetrics:
    def __init__(self) -> None:
        self.steps: list[StepRecord] = []

    def record(self, step: StepRecord) -> None:
        self.steps.append(step)

    def reset(self) -> None:
        self.steps.clear()

    def timeline(self):
        """One row per step, with times relative to the first recorded step. ``forward_s`` is model_s less its
        two host parts: schedule_s + prepare_s + forward_s + sample_s + postprocess_s = seconds."""
        import pandas as pd

        columns = list(StepRecord.__dataclass_fields__) + ["forward_s", "seconds"]
        rows = [{**asdict(s), "forward_s": s.model_s - s.prepare_s - s.sample_s, "seconds": s.seconds}
                for s in self.steps]
        frame = pd.DataFrame(rows, columns=columns)
        if len(frame):
            frame["start"] -= frame["start"].iloc[0]
        return frame

    def summary(self) -> dict:
        """Throughput split by phase: tokens fed per second of model time."""
        out = {}
        for phase in ("prefill", "decode"):
            steps = [s for s in self.steps if s.phase == phase]
            seconds = sum(s.seconds for s in steps)
            tokens = sum(s.num_tokens for s in steps)
            out[phase] = {"steps": len(steps), "tokens": tokens, "seconds": seconds,
                          "tokens_per_s": tokens / seconds if seconds else 0.0}
        return out


def requests_frame(outputs) -> "pd.DataFrame":  # noqa: F821
    """Per-request latencies of a list of RequestOutput as a DataFrame."""
    import pandas as pd

    return pd.DataFrame([{"request_id": o.request_id, **o.metrics.as_dict()} for o in outputs])
