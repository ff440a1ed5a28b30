"""Measuring what a stage costs: wall time and peak memory; training time across retried attempts."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import lightning.pytorch as pl
import psutil
import torch
from lightning.pytorch.callbacks import Callback

from transferlab.atomic import write_json
from transferlab.heap import release_freed_memory


class ResourceMeter:
    """Wall time and peak resident memory (MB) over a block; GPU peak allocation when on CUDA.

    RSS is sampled in a thread because the CPU allocator has no high-water mark to read. Memory
    freed before the block is released first (`release_freed_memory`), so a cell's peak depends on
    the cell, not on what ran before it in the process.
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
        release_freed_memory()
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


class TrainClock(Callback):
    """Training wall time of one fit, summed over all its attempts (killed, failed, retried, resumed).

    Counts, per attempt, the seconds from the Trainer's `setup` for fit to the fit's end (normal end
    or exception): checkpoint loading, sanity check, training and validation epochs, checkpoint
    saving; not building the Trainer or the data before `fit` is called. Earlier attempts count so:

    - every checkpoint stores the cumulative seconds (`state_dict`), so an attempt killed outright
      (SIGKILL, out of memory) and resumed from last.ckpt counts up to that checkpoint;
    - an in-process exception writes the cumulative seconds to `path` (atomically), so an attempt
      that failed after its last checkpoint, or before any, counts in full;
    - on resume the earlier seconds are max(checkpoint's, file's): the file, when there is one, is
      the later of the two (it includes the checkpoint's time); it is removed when a fit ends
      normally, so a later fit from scratch starts from zero.

    Hook order in Lightning 2.6 (`Trainer._run`): `setup` -> `load_state_dict` (restore before
    strategy setup, the default) -> `on_fit_start` -> `load_state_dict` (FSDP, DeepSpeed,
    ModelParallel restore after setup) -> training -> `on_fit_end` -> `teardown`; an exception
    instead calls `on_exception` and no further hook. So the clock starts and reads the file in
    `setup`, which precedes the restore either way, and the two earlier values are kept apart and
    combined only when read, so their order does not matter. Only global rank 0 writes the file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._from_ckpt = 0.0  # cumulative seconds stored in the checkpoint resumed from
        self._from_file = 0.0  # cumulative seconds an earlier failed attempt left in `path`
        self._elapsed = 0.0  # this attempt, once it has ended
        self._start: float | None = None  # perf_counter at this attempt's setup, while running

    @property
    def seconds(self) -> float:
        """Total training seconds so far: earlier attempts plus this one (still running or ended)."""
        running = time.perf_counter() - self._start if self._start is not None else self._elapsed
        return max(self._from_ckpt, self._from_file) + running

    @property
    def earlier(self) -> float:
        """The seconds of earlier attempts (0 for a fit that ran once)."""
        return max(self._from_ckpt, self._from_file)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._from_ckpt, self._elapsed = 0.0, 0.0
        self._from_file = float(json.loads(self.path.read_text())["seconds"]) if self.path.exists() else 0.0
        self._start = time.perf_counter()

    def _stop(self) -> float:
        if self._start is not None:
            self._elapsed, self._start = time.perf_counter() - self._start, None
        return self.seconds

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._from_ckpt = float(state_dict["seconds"])

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        if self._start is None:  # failed before this clock's setup: keep an earlier file as it is
            return
        seconds = self._stop()
        if trainer.is_global_zero:
            write_json(self.path, {"seconds": seconds})

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop()
        if trainer.is_global_zero:
            self.path.unlink(missing_ok=True)
