"""A Rich progress bar that is safe when several Trainers run at once in one process.

The compare flow trains one cell in a Prefect worker thread while the flow's thread runs another
cell's feature extraction with a second Trainer. Lightning's RichProgressBar shares rich's one
global Console: a second bar's start calls `console.clear_live()`, which pops the first bar's Live,
and the second of the two stops then pops an empty stack: `IndexError('pop from empty list')`
after all epochs are trained, so the task fails and Prefect retries it. Here one bar at a time
displays; the others stay quiet for their whole fit/predict instead of fighting over the Console.
"""

from __future__ import annotations

import threading
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, RichProgressBar

# Module-level: a threading.Lock cannot be pickled, and Lightning's ddp_spawn pickles callbacks.
# One per process, like rich's Console it guards.
_LIVE = threading.Lock()


class ProgressBar(RichProgressBar):
    """RichProgressBar that displays only while no other ProgressBar in this process is live.

    At `setup` the bar tries (without waiting) to take the process-wide lock; a bar that gets it
    displays as usual, one that finds another bar live disables itself for this stage. The lock is
    released and the bar re-enabled at `teardown`, or at `on_exception`, since Lightning calls no
    teardown hook after an exception. Only the public `disable()`/`enable()` are used.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holds_lock = False  # this bar took _LIVE in this stage's setup
        self._yielded = False  # this bar disabled itself because another was live

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if not self.is_enabled:  # disabled from outside (tuner, refresh_rate=0): nothing to show
            return
        if _LIVE.acquire(blocking=False):
            self._holds_lock = True
        else:
            self._yielded = True
            self.disable()

    def _finish(self) -> None:
        """Release the lock and re-enable; called after super() stopped this bar's Live, so the next
        bar to start finds the Console free."""
        if self._holds_lock:
            self._holds_lock = False
            _LIVE.release()
        if self._yielded:
            self._yielded = False
            self.enable()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        try:
            super().teardown(trainer, pl_module, stage)
        finally:
            self._finish()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        try:
            super().on_exception(trainer, pl_module, exception)
        finally:
            self._finish()

    def __getstate__(self) -> dict:
        # A copy (ddp_spawn worker) holds no lock: its process has its own, untaken _LIVE.
        return {**super().__getstate__(), "_holds_lock": False}


def progress_callbacks(enabled: bool) -> list[Callback]:
    """The progress callback for a Trainer built with `enable_progress_bar=enabled`.

    Every Trainer must get this or `enable_progress_bar=False`: one with a progress bar enabled
    and no progress callback silently adds Lightning's own RichProgressBar, which knows no lock.
    """
    return [ProgressBar()] if enabled else []
