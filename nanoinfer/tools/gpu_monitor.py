"""GPU utilisation and memory sampled through NVML (the ``nvidia-ml-py`` package) while a run goes on.

    with GpuMonitor(torch.device("cuda")) as monitor:
        llm.generate(...)
    monitor.summary()   # {"gpu_util_mean": ..., "gpu_util_max": ..., "gpu_mem_peak_gb": ..., "gpu_samples": ...}

NVML's utilisation is the share of the last sample period in which any kernel ran: 100% means the card was
never idle, not that its units were full. On a machine without NVML (a CPU) the monitor records nothing and
the summary is empty.
"""

from __future__ import annotations

import threading
import time

import torch


class GpuMonitor:
    def __init__(self, device: torch.device, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, int, int]] = []  # (time, utilisation %, memory used bytes)
        self._handle = _nvml_handle(device) if device.type == "cuda" else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "GpuMonitor":
        if self._handle is not None:
            self._thread = threading.Thread(target=self._sample, name="nanoinfer-gpu-monitor", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._sample_once()  # a run shorter than one interval still gets a sample

    def _sample_once(self) -> None:
        import pynvml

        util = pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
        used = pynvml.nvmlDeviceGetMemoryInfo(self._handle).used
        self.samples.append((time.perf_counter(), util, used))

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample_once()

    def summary(self) -> dict:
        if not self.samples:
            return {}
        utils = [u for _, u, _ in self.samples]
        return {"gpu_util_mean": sum(utils) / len(utils), "gpu_util_max": max(utils),
                "gpu_mem_peak_gb": max(m for _, _, m in self.samples) / 1e9, "gpu_samples": len(self.samples)}


def _nvml_handle(device: torch.device):
    """The NVML handle of torch's device, found by UUID (NVML numbers the cards without CUDA_VISIBLE_DEVICES)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no nvidia-ml-py or no driver: nothing to sample
        return None
    uuid = str(torch.cuda.get_device_properties(device).uuid)
    try:
        return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    except pynvml.NVMLError:
        return pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
