"""Measuring what a stage costs: wall time and peak memory."""

from __future__ import annotations

import threading
import time
from types import TracebackType

import psutil
import torch


class ResourceMeter:
    """Wall time and peak resident memory (MB) over a block; GPU peak allocation when on CUDA.

    RSS is sampled in a thread because the CPU allocator has no high-water mark to read.
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.seconds = 0.0
        self.peak_mb = 0.0
        self.gpu_peak_mb = 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, proc.memory_info().rss / 2**20)
            self._stop.wait(self.interval)

    def __enter__(self) -> "ResourceMeter":
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.seconds = time.perf_counter() - self._start
        self._stop.set()
        self._thread.join()
        if torch.cuda.is_available():
            self.gpu_peak_mb = torch.cuda.max_memory_allocated() / 2**20
