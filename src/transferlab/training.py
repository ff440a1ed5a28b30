"""Fitting a strategy's model with Lightning: a head on cached features, or backbone + head.

The train stage calls `fit`; LP-FT's probe is `fit_head` on its own head strategy, so the probe
a fine-tune starts from is trained exactly as that head strategy is when a user runs it."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import lightning.pytorch as L
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig
from safetensors.torch import load_file

from transferlab.checkpoints import FileCheckpointIO
from transferlab.data.datamodules import FeatureDataModule, InputDataModule, labels_of
from transferlab.features import load_features
from transferlab.heap import RetainedHeap
from transferlab.interrupt import fit_interrupted
from transferlab.model_card import write_model_card
from transferlab.models import build_finetune_module, build_head_module
from transferlab.resources import ResourceMeter, TrainClock
from transferlab.strategy import Strategy, count_parameters, resolve
from transferlab.trainer import (CLOCK_FILE, TrainedOn, build_logger, build_trainer, checked_resume, fit_fingerprint,
                                 fit_summary, keep_earlier_logs, quiet_lightning, restore_best, save_weights)


def fit(cfg: DictConfig, data_dir: Path, features_dir: Path | None, model_dir: Path) -> Path:
    strategy = resolve(cfg)
    if strategy.kind == "head":
        return fit_head(cfg, strategy, data_dir, features_dir, model_dir)
    return fit_finetune(cfg, strategy, data_dir, features_dir, model_dir)


def fit_head(cfg: DictConfig, strategy: Strategy, data_dir: Path, features_dir: Path, model_dir: Path) -> Path:
    """A head on the frozen features: full batch for L-BFGS (each of its C values to convergence,
    the best on validation kept), mini-batches for AdamW. Its training time covers every C tried."""
    meta = json.loads((features_dir / "meta.json").read_text())
    labels = json.loads((data_dir / "labels.json").read_text())
    splits = ("train", "val")
    targets = {s: labels_of(data_dir, s) for s in splits}
    datamodule = FeatureDataModule({s: load_features(features_dir, s) for s in splits}, targets,
                                   None if strategy.full_batch else strategy.budget.batch_size)
    rows = len(targets["train"])
    # the logger's set-up is not training: MLflow's import and its new store's migrations took 4-6 s,
    # 40x an MLP head's fit; built here (quietly), before the meter starts, and handed to the fit
    quiet_lightning()
    logger = build_logger(cfg.logger, model_dir)
    with ResourceMeter() as meter:
        if strategy.full_batch:
            module, fit, chosen = fit_each_c(cfg, strategy, datamodule, meta["feature_dim"], len(labels), rows,
                                             model_dir, logger)
        else:
            L.seed_everything(cfg.seed, verbose=False)
            module = build_head_module(strategy, meta["feature_dim"], len(labels))
            trainer = build_trainer(cfg, strategy, model_dir, resumable=False, train_rows=rows, logger=logger,
                                    single_process=True)
            trainer.fit(module, datamodule)
            fit, chosen = fit_summary(module, model_dir), {}
            restore_best(trainer, module)
    save_weights(module, model_dir)
    trainable, head_total = count_parameters(module)
    return write_model_card(model_dir, cfg, strategy, labels, meta["feature_dim"], meter, meter.seconds, fit, [],
                            trainable_params=trainable, total_params=head_total + meta["backbone_params"], **chosen)


def fit_each_c(cfg: DictConfig, strategy: Strategy, datamodule, feature_dim: int, n_classes: int, rows: int,
               model_dir: Path, logger: Logger | bool) -> tuple:
    """scikit-learn's C, searched on the validation split: one converged L-BFGS fit per C (in
    `model_dir/C/<value>/`, unlogged), the best val accuracy, then val loss, kept and refitted (the
    same seed: the same weights) in `model_dir` with the run's `logger`, as a single-C run is.

    C multiplies the summed loss; the module's penalty is on the mean loss, so weight_decay = 1/(C rows)."""

    def converged(c: float, run_dir: Path, logged: bool):
        L.seed_everything(cfg.seed, verbose=False)
        module = build_head_module(strategy, feature_dim, n_classes, weight_decay=1.0 / (c * rows))
        trainer = build_trainer(cfg, strategy, run_dir, resumable=False, train_rows=rows,
                                logger=logger if logged else False, single_process=True)
        trainer.fit(module, datamodule)
        metrics = trainer.callback_metrics
        return module, {"val_accuracy": round(float(metrics["val_acc"]), 6), "val_loss": round(float(metrics["val_loss"]), 6)}

    scores = {}
    if len(strategy.C) > 1:
        for c in strategy.C:
            scores[f"{c:g}"] = converged(c, model_dir / "C" / f"{c:g}", logged=False)[1]
    chosen = max(strategy.C, key=lambda c: (scores[f"{c:g}"]["val_accuracy"], -scores[f"{c:g}"]["val_loss"])) \
        if scores else strategy.C[0]
    module, _ = converged(chosen, model_dir, logged=True)
    return module, fit_summary(module, model_dir), {"C": chosen, **({"C_scores": scores} if scores else {})}


def start_from_probe(cfg: DictConfig, probe: Strategy, module, data_dir: Path, features_dir: Path,
                     model_dir: Path) -> None:
    """LP-FT: the probe (a head strategy) trained on the cached features; fine-tuning starts from its head."""
    fit_head(cfg, probe, data_dir, features_dir, model_dir / "probe")
    weights = load_file(model_dir / "probe" / "model.safetensors")
    module.head.load_state_dict({k.removeprefix("head."): v for k, v in weights.items()})


def fit_finetune(cfg: DictConfig, strategy: Strategy, data_dir: Path, features_dir: Path | None,
                 model_dir: Path) -> Path:
    """Backbone + head; a killed or failed run resumes from its last epoch checkpoint, and its
    training time counts every attempt (TrainClock)."""
    labels = json.loads((data_dir / "labels.json").read_text())
    L.seed_everything(cfg.seed, verbose=False)
    started = time.perf_counter()
    module = build_finetune_module(cfg, strategy, len(labels))
    load_seconds = time.perf_counter() - started  # the backbone from disk: the cost ledger's load
    fingerprint = fit_fingerprint(cfg, data_dir)
    resume = checked_resume(model_dir, module, fingerprint)  # a killed run's last.ckpt, of this very fit
    if strategy.probe is not None and resume is None:  # a resumed run's checkpoint holds the head already
        start_from_probe(cfg, strategy.probe, module, data_dir, features_dir, model_dir)
    if resume:
        keep_earlier_logs(model_dir, resume[1])
    datamodule = InputDataModule(data_dir, module.backbone, strategy.budget.batch_size, cfg.extract.batch_size)
    clock = TrainClock(model_dir / CLOCK_FILE)
    trainer = build_trainer(cfg, strategy, model_dir, resumable=True, train_rows=len(labels_of(data_dir, "train")),
                            logger=build_logger(cfg.logger, model_dir),
                            extra_callbacks=[clock, TrainedOn(fingerprint), *strategy.callbacks()])
    with ResourceMeter() as meter, fit_interrupted():  # trainer=ddp: the workers' failure after Ctrl-C
        trainer.fit(module, datamodule, ckpt_path=resume and resume[0], weights_only=True)
    fit = fit_summary(module, model_dir)
    restore_best(trainer, module)
    save_weights(module, model_dir)
    trainable, total = count_parameters(module)  # after fit: gradual unfreezing's final count
    trained = [n for n, g in module.backbone.layer_groups() if any(p.requires_grad for p in g.parameters())]
    resumed = {"resumed_after_epoch": resume[1]} if resume else {}
    earlier = fit.pop("earlier_attempts_seconds")
    resumed |= {"earlier_attempts_seconds": round(earlier, 3)} if earlier else {}
    probe = {}
    if strategy.probe is not None:  # LP-FT's training time is its probe's and its fine-tuning's
        probe = {"probe_train_seconds": json.loads((model_dir / "probe" / "model.json").read_text())["train_seconds"]}
    return write_model_card(model_dir, cfg, strategy, labels, module.backbone.feature_dim, meter,
                            fit.pop("train_seconds") + probe.get("probe_train_seconds", 0.0), fit, trained,
                            trainable_params=trainable, total_params=total,
                            backbone_load_seconds=round(load_seconds, 3), fit_fingerprint=fingerprint, **probe,
                            **resumed)


class BatchTimer(L.Callback):
    """Seconds and items of each training step and validation batch."""

    def __init__(self) -> None:
        self.train: list[tuple[float, int]] = []
        self.val: list[tuple[float, int]] = []
        self._started = 0.0

    def _start(self, *_args) -> None:
        self._started = time.perf_counter()

    def _stop(self, into: list, batch, batch_idx: int) -> None:
        into.append((time.perf_counter() - self._started, int(batch["labels"].shape[0])))

    on_train_batch_start = on_validation_batch_start = _start

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._stop(self.train, batch, batch_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._stop(self.val, batch, batch_idx)


def per_item(timed: list[tuple[float, int]]) -> float:
    """Seconds per item, the first batch left out when there are others (it pays one-off set-up)."""
    timed = timed[1:] if len(timed) > 1 else timed
    return sum(s for s, _ in timed) / max(1, sum(n for _, n in timed))


def probe_rate(cfg: DictConfig, data_dir: Path, steps: int = 4) -> dict:
    """A fine-tuning strategy's cost on this machine and data, for the budget planner: a few
    optimiser steps and validation batches at the data's own lengths, in one process, unlogged."""
    quiet_lightning()
    strategy = resolve(cfg)
    labels = json.loads((data_dir / "labels.json").read_text())
    L.seed_everything(cfg.seed, verbose=False)
    started = time.perf_counter()
    module = build_finetune_module(cfg, strategy, len(labels))
    load_seconds = time.perf_counter() - started
    timer = BatchTimer()
    started = time.perf_counter()
    trainer = L.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision,
                        max_steps=steps + 1, limit_val_batches=steps + 1, num_sanity_val_steps=0,
                        val_check_interval=steps + 1, check_val_every_n_epoch=None, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer, RetainedHeap()],  # its steps as a fit runs them
                        plugins=[FileCheckpointIO()])
    trainer.fit(module, InputDataModule(data_dir, module.backbone, strategy.budget.batch_size, cfg.extract.batch_size))
    batches = sum(s for s, _ in timer.train + timer.val)
    overhead = max(0.0, time.perf_counter() - started - batches)
    return {"seconds_per_sample_step": per_item(timer.train), "seconds_per_eval_item": per_item(timer.val),
            "load_seconds": load_seconds, "overhead_seconds": overhead,
            "checkpoint_seconds": checkpoint_seconds(trainer)}


def checkpoint_seconds(trainer: L.Trainer) -> float:
    """Writing what a fit writes after a validation: last.ckpt (optimizer state too, to resume) and
    a weights-only best.ckpt (BestAfterMinSteps), here to a throwaway folder."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        trainer.save_checkpoint(Path(folder) / "last.ckpt")
        trainer.save_checkpoint(Path(folder) / "best.ckpt", weights_only=True)
        return time.perf_counter() - started
