"""Progress bars of Trainers running at once in threads, and training time across retried attempts.

Real Lightning fits of a one-layer module on random tensors, on CPU.
"""

from __future__ import annotations

import json
import pickle
import shutil
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar
from torch.utils.data import DataLoader, TensorDataset

from conftest import run_cell, topic_config

from transferlab.progress import ProgressBar, progress_callbacks
from transferlab.resources import TrainClock

STEP_SLEEP = 0.05


class Tiny(L.LightningModule):
    """One linear layer; optionally waits at a barrier in its first step so two fits overlap."""

    def __init__(self, barrier: threading.Barrier | None = None, sleep: float = 0.0):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.barrier, self.sleep = barrier, sleep
        self.bar_shown: bool | None = None

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.bar_shown is None:
            bar = self.trainer.progress_bar_callback
            self.bar_shown = bar is not None and bar.is_enabled
            if self.barrier is not None:
                self.barrier.wait()  # both Trainers are now past on_train_start: both bars started
        time.sleep(self.sleep)
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(8, 4), torch.randn(8, 1)), batch_size=2)


def trainer(callbacks: list[Callback], **kwargs: object) -> L.Trainer:
    kwargs = {"max_epochs": 1, "enable_checkpointing": False, **kwargs}
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_model_summary=False,
                     enable_progress_bar=any(isinstance(c, RichProgressBar) for c in callbacks),
                     callbacks=callbacks, **kwargs)


def fit_in_threads(bars: list[RichProgressBar]) -> tuple[list[Tiny], dict[int, BaseException]]:
    barrier = threading.Barrier(len(bars), timeout=60)
    modules = [Tiny(barrier) for _ in bars]
    errors: dict[int, BaseException] = {}

    def fit(i: int) -> None:
        try:
            trainer([bars[i]]).fit(modules[i])
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors[i] = exc

    threads = [threading.Thread(target=fit, args=(i,)) for i in range(len(bars))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return modules, errors


def test_plain_rich_bars_in_two_threads_break_each_other():
    """The bug: the second bar's start pops the first one's Live; the later stop pops an empty stack."""
    bars = [RichProgressBar(refresh_rate=10), RichProgressBar(refresh_rate=10)]
    try:
        _, errors = fit_in_threads(bars)
        assert len(errors) == 1
        assert [type(e) for e in errors.values()] == [IndexError]
        assert "pop from empty list" in str(next(iter(errors.values())))
    finally:  # the failed stop left its refresh thread running: stop it (test hygiene only)
        for bar in bars:
            if bar.progress is not None and bar.progress.live._refresh_thread is not None:
                bar.progress.live._refresh_thread.stop()


def test_our_bars_in_two_threads_one_shows_both_finish():
    bars = [ProgressBar(), ProgressBar()]
    modules, errors = fit_in_threads(bars)
    assert errors == {}
    assert sorted(m.bar_shown for m in modules) == [False, True]  # exactly one displayed
    assert all(bar.is_enabled for bar in bars)  # the quiet one is enabled again for its next stage

    again, bar = Tiny(), ProgressBar()
    trainer([bar]).fit(again)
    assert again.bar_shown  # the lock was released

    for b in (ProgressBar(), bar):  # ddp_spawn pickles callbacks (before fit; after one works too)
        copy = pickle.loads(pickle.dumps(b))
        assert isinstance(copy, ProgressBar) and copy.progress is None and not copy._holds_lock


def test_lock_released_when_a_fit_fails():
    class Boom(Callback):
        def on_train_batch_end(self, *args: object) -> None:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        trainer([ProgressBar(), Boom()]).fit(Tiny())
    after = Tiny()
    trainer([ProgressBar()]).fit(after)
    assert after.bar_shown


def test_progress_callbacks():
    assert [type(c) for c in progress_callbacks(True)] == [ProgressBar]
    assert progress_callbacks(False) == []


@pytest.mark.parametrize("shown", [True, False])
def test_extraction_shows_its_bar_as_the_trainer_setting_says(tmp_path, capfd, shown):
    """trainer.enable_progress_bar=false hides every bar of a run, frozen extraction's too (it
    printed 'Predicting' whatever the setting); a real cell on the tiny encoder, several batches."""
    cfg = topic_config(tmp_path, "strategy=linear_probe", "extract.batch_size=4",
                       f"trainer.enable_progress_bar={str(shown).lower()}")
    run_cell(cfg, tmp_path / "run")
    assert ("Predicting" in capfd.readouterr().out) == shown


class CrashInEpoch2(Callback):
    """Raises in the second epoch, after the first epoch's last.ckpt, as a crash late in a task would."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object,
                           batch: object, batch_idx: int) -> None:
        if trainer.current_epoch == 1 and batch_idx == 1:
            raise RuntimeError("crash in epoch 2")


class Span(Callback):
    """This attempt's time from on_fit_start to its end; listed before TrainClock, so inside its span."""

    def on_fit_start(self, *args: object) -> None:
        self.start = time.perf_counter()

    def on_fit_end(self, *args: object) -> None:
        self.seconds = time.perf_counter() - self.start

    def on_exception(self, *args: object) -> None:
        self.on_fit_end()


def timed_fit(clock: TrainClock, ckpt_dir: Path, ckpt_path: Path | None = None,
              fail: bool = False) -> tuple[float, float]:
    """Fit 3 epochs of 4 sleeping steps; return (inner, wall): this attempt's time from on_fit_start
    to its end (inside what TrainClock measures) and perf_counter around `fit` (outside it)."""
    span = Span()
    callbacks = [span, clock, *([CrashInEpoch2()] if fail else []), ModelCheckpoint(dirpath=ckpt_dir, save_last=True)]
    t = trainer(callbacks + progress_callbacks(False), max_epochs=3, enable_checkpointing=True)
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="crash in epoch 2") if fail else nullcontext():
        t.fit(Tiny(sleep=STEP_SLEEP), ckpt_path=ckpt_path)
    return span.seconds, time.perf_counter() - start


def ckpt_seconds(path: Path) -> float:
    return torch.load(path, weights_only=False)["callbacks"]["TrainClock"]["seconds"]


@pytest.mark.filterwarnings("ignore:Checkpoint directory:UserWarning", "ignore:The dirpath has changed")
def test_train_clock_counts_failed_and_killed_attempts(tmp_path: Path):
    clock_file, ckpts = tmp_path / "clock.json", tmp_path / "ckpts"

    # attempt 1: epoch 1 checkpointed, then a crash in epoch 2 after two more sleeping steps
    first = TrainClock(clock_file)
    inner1, wall1 = timed_fit(first, ckpts, fail=True)
    saved = ckpt_seconds(ckpts / "last.ckpt")
    assert json.loads(clock_file.read_text())["seconds"] == pytest.approx(first.seconds)
    assert inner1 <= first.seconds <= wall1
    assert saved + 2 * STEP_SLEEP <= first.seconds  # the file has the time after the last checkpoint
    shutil.copy(ckpts / "last.ckpt", tmp_path / "killed.ckpt")

    # attempt 2, as a retried task: a fresh clock resumes from last.ckpt and finds the file
    second = TrainClock(clock_file)
    inner2, wall2 = timed_fit(second, ckpts, ckpt_path=ckpts / "last.ckpt")
    assert first.seconds + inner2 <= second.seconds <= first.seconds + wall2  # max(file, ckpt) = file
    assert inner1 + inner2 <= second.seconds <= wall1 + wall2
    assert not clock_file.exists()  # a normal end removes it: a later fit from scratch starts at 0
    assert ckpt_seconds(ckpts / "last.ckpt") <= second.seconds

    # attempt 1 had it been SIGKILLed (no file): resuming counts it up to its checkpoint
    after_kill = TrainClock(tmp_path / "none.json")
    inner3, wall3 = timed_fit(after_kill, tmp_path / "ckpts3", ckpt_path=tmp_path / "killed.ckpt")
    assert saved + inner3 <= after_kill.seconds <= saved + wall3

    assert pickle.loads(pickle.dumps(second)).path == clock_file
