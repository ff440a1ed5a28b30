"""One way to build a Lightning Trainer for every training stage: config in, callbacks wired."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import warnings
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file

from transferlab.atomic import atomic_path, write_json
from transferlab.checkpoints import FileCheckpointIO, check_fits, full_state, load_checkpoint
from transferlab.errors import Interrupted
from transferlab.heap import RetainedHeap
from transferlab.interrupt import REQUESTED, install_in_worker
from transferlab.progress import progress_callbacks
from transferlab.provenance import code_version
from transferlab.resources import TrainClock
from transferlab.strategy import Strategy


def quiet_lightning() -> None:
    """Lightning resets its loggers on import; silence tips and banners after it (and MLflow's
    database set-up lines, and Lightning's warning that it creates the MLflow experiment)."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # mlflow sets its level when imported
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.loggers.mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*number of training batches.*")
    warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")  # frozen groups, on purpose
    # a run folder is reused on purpose: resumed from its last.ckpt, its earlier logs kept aside
    warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", ".*Experiment logs directory .* exists and is not empty.*")


class StopOnInterrupt(L.Callback):
    """Ends a fit at its next batch once the process has been interrupted (transferlab.interrupt):
    a fit in a flow's task thread would not see the main thread's KeyboardInterrupt.

    DDP workers see the signal at different moments: one stopping alone left its peer inside a
    gradient all-reduce, which then failed in gloo's traceback or, its teardown's collectives
    mismatched, waited for good (QA: a Ctrl-C'd `trainer=ddp` flow that never ended). So they decide
    together at each training batch (any rank interrupted stops all), where DDP keeps them in step;
    validation, which DDP does not keep in step, is left to finish."""

    def on_train_batch_start(self, trainer: L.Trainer, *_args) -> None:
        stop = REQUESTED.is_set()
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            raise Interrupted()

    def on_validation_batch_start(self, trainer: L.Trainer, *_args) -> None:
        if trainer.world_size == 1 and REQUESTED.is_set():
            raise Interrupted()

    def __getstate__(self) -> dict:
        return {"worker": True}  # pickled only to reach ddp_spawn's workers

    def __setstate__(self, state: dict) -> None:
        install_in_worker()


class QuietWorkers(L.Callback):
    """Spawned DDP workers start with Lightning's default logging and no warning filters: this
    callback, unpickled in each worker before it joins the process group, quiets them as the main
    process is quiet (no "Initializing distributed" or "All distributed processes registered")."""

    def __getstate__(self) -> dict:
        return {"quiet": True}  # pickle calls __setstate__ only with a non-empty state

    def __setstate__(self, state: dict) -> None:
        quiet_lightning()


class FitSummary(L.Callback):
    """What `fit` leaves behind that the main process needs, written by global rank 0 to
    `run_dir/fit.json`: under ddp_spawn the training runs in child processes, and only the weights
    and the best checkpoint path come back to this one, not the epoch count, nor the parameters
    gradual unfreezing made trainable. One code path for one process and for several."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "fit.json"

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            clocks = [c for c in trainer.callbacks if isinstance(c, TrainClock)]
            write_json(self.path, {
                "epochs": trainer.current_epoch, "global_step": trainer.global_step,
                "world_size": trainer.world_size,
                "stopped_by_max_time": cut_short_by_time(trainer),
                "trainable": [n for n, p in pl_module.named_parameters() if p.requires_grad],
                # the clock runs where the fit runs (ddp_spawn: rank 0's child process)
                **({"train_seconds": clocks[0].seconds, "earlier_attempts_seconds": clocks[0].earlier}
                   if clocks else {})})


def cut_short_by_time(trainer: L.Trainer) -> bool:
    """Whether max_time ended the fit before its schedule (epochs, early stopping) did. A depleted
    Timer alone is not that: a finished fit resumed from its last.ckpt under a shorter max_time (a
    budgeted compare rerun in its folder: the limit follows the time left) gets back the time it
    took, is past the new limit at once and stops with nothing left to train."""
    if not any(isinstance(c, Timer) and c.time_remaining() is not None and c.time_remaining() <= 0
               for c in trainer.callbacks):
        return False
    early = any(isinstance(c, EarlyStopping) and c.wait_count >= c.patience for c in trainer.callbacks)
    batches = trainer.num_training_batches
    steps = trainer.max_epochs * math.ceil(batches / trainer.accumulate_grad_batches) if math.isfinite(batches) \
        else math.inf
    return not (early or trainer.global_step >= steps or 0 < trainer.max_steps <= trainer.global_step)


def fit_summary(module: L.LightningModule, run_dir: Path) -> dict:
    """FitSummary's record of the fit, with its trainable flags restored onto `module`, so that
    counting what trained reads the same whether the fit ran here or in spawned workers."""
    summary = json.loads((Path(run_dir) / "fit.json").read_text())
    trainable = set(summary.pop("trainable"))
    for name, param in module.named_parameters():
        param.requires_grad_(name in trainable)
    return summary


class AfterMinSteps:
    """A validation callback that acts only at or after `min_steps`: before the minimum budget a
    model is neither kept nor counted against patience."""

    min_steps: int = 0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step >= self.min_steps:
            super().on_validation_end(trainer, pl_module)


class BestAfterMinSteps(AfterMinSteps, ModelCheckpoint):
    """The best val_loss checkpoint among validations at or after `min_steps`: weights only (a third
    of a full one for AdamW: only restore_best reads it; resuming reads last.ckpt)."""

    def __init__(self, min_steps: int, **kwargs):
        super().__init__(monitor="val_loss", mode="min", save_top_k=1, filename="best",
                         save_on_train_epoch_end=False, save_weights_only=True, **kwargs)
        self.min_steps = min_steps


class EarlyStoppingAfterMinSteps(AfterMinSteps, EarlyStopping):
    """Early stopping on val_loss whose patience counts only validations at or after `min_steps`."""

    def __init__(self, min_steps: int, patience: int):
        super().__init__(monitor="val_loss", mode="min", patience=patience, check_on_train_epoch_end=False)
        self.min_steps = min_steps


def processes(trainer: DictConfig) -> int:
    """How many processes share each epoch's batches (trainer=ddp: devices); 'auto'/-1 on CPU: 1."""
    devices = trainer.devices
    if isinstance(devices, int) and devices > 0:
        return devices
    if trainer.accelerator in ("gpu", "cuda"):
        return max(1, torch.cuda.device_count())
    return 1


def build_trainer(cfg: DictConfig, strategy: Strategy, run_dir: Path, resumable: bool, train_rows: int,
                  logger: Logger | bool, extra_callbacks: list | None = None,
                  single_process: bool = False) -> L.Trainer:
    """The strategy's budget on `train_rows` rows (min_steps, validation interval: Budget), early
    stopping on val_loss after min_steps, the best checkpoint from then on kept, and (`resumable`)
    `last.ckpt` at every validation to resume from.

    `logger`: build_logger's, or False (unlogged); the caller builds it, so that its set-up (MLflow:
    seconds of store migrations) can be kept out of the time it measures a fit in.

    `single_process`: a head on cached features trains in this process, in fp32, whatever
    trainer.devices and trainer.precision say: it is a few thousand parameters full-batch, where
    processes would only add start-up and bf16 only blur L-BFGS's convergence (HEAD)."""
    quiet_lightning()
    budget = strategy.budget
    schedule = budget.trainer_args(train_rows, 1 if single_process else processes(cfg.trainer), strategy.full_batch)
    if cfg.trainer.max_time is not None:  # Lightning's min_steps would keep a fit past max_time; the
        schedule["min_steps"] = None       # callbacks below still keep nothing and stop nothing before it
    best = BestAfterMinSteps(budget.min_steps, dirpath=run_dir / "checkpoints")
    # the latest validated epoch as last.ckpt (Lightning's save_last writes only beside a top-k save)
    last = [ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                            save_on_train_epoch_end=False, enable_version_counter=False)] if resumable else []
    stopping = EarlyStoppingAfterMinSteps(budget.min_steps, budget.patience)
    seeded = [EpochSeed(cfg.seed)] if resumable else []  # resumed = uninterrupted
    callbacks = [best, *last, stopping, *seeded, *progress_callbacks(cfg.trainer.enable_progress_bar),
                 StopOnInterrupt(), QuietWorkers(), FitSummary(run_dir), RetainedHeap(), *(extra_callbacks or [])]
    return instantiate(cfg.trainer, **(HEAD if single_process else {}), **schedule,
                       gradient_clip_val=strategy.gradient_clip_val,
                       callbacks=callbacks, plugins=[FileCheckpointIO()], logger=logger,
                       default_root_dir=str(run_dir))


ONE_PROCESS = {"devices": 1, "strategy": "auto"}  # on trainer.accelerator, whatever devices it names
HEAD = {**ONE_PROCESS, "precision": "32-true"}  # a head on features: training and inference


def build_logger(logger: DictConfig, run_dir: Path) -> Logger | bool:
    """The configured Lightning logger, writing under `run_dir/logs` (MLflow with no tracking_uri:
    a SQLite store there, which works offline; MLflow 3 refuses its old file store). An empty
    logger config (an older run's config.yaml) logs nothing."""
    if not logger:
        return False
    logs = Path(run_dir) / "logs"
    if logger._target_.endswith("MLFlowLogger") and not logger.tracking_uri:
        logs.mkdir(parents=True, exist_ok=True)
        return instantiate(logger, tracking_uri=f"sqlite:///{logs.resolve() / 'mlflow.db'}",
                           artifact_location=str(logs.resolve() / "artifacts"))
    return instantiate(logger, save_dir=str(logs))


def resume_path(run_dir: Path) -> str | None:
    """A killed run picks up from its last epoch checkpoint."""
    last = run_dir / "checkpoints" / "last.ckpt"
    return str(last) if last.is_file() else None


CLOCK_FILE = "clock.json"  # TrainClock's record of a failed attempt's seconds, in the run folder
# trainer keys that do not change what a fit computes: a run resumes across them
NOT_TRAINING = ("enable_progress_bar", "enable_model_summary", "log_every_n_steps", "max_time")
log = logging.getLogger("transferlab")


def fit_fingerprint(cfg: DictConfig, data_dir: Path) -> str:
    """What a fine-tuning fit computes from: its seed, backbone, strategy, extract and trainer
    settings, the prepared train/val splits' bytes and the train stage's code version."""
    settings = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("backbone", "strategy", "extract")}
    settings["trainer"] = {key: value for key, value in OmegaConf.to_container(cfg.trainer, resolve=True).items()
                           if key not in NOT_TRAINING}
    digest = hashlib.sha256(json.dumps({"seed": cfg.seed, **settings}, sort_keys=True, default=str).encode())
    for path in sorted(data_dir.iterdir()):
        if path.name.startswith(("labels.", "train.", "val.")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(code_version("transferlab.stages.train").encode())
    return digest.hexdigest()[:20]


class TrainedOn(L.Callback):
    """Keeps `fit_fingerprint` in every full checkpoint (Lightning stores a callback's
    `state_dict`), so that a run folder reused with another config, other data or other code is
    not resumed from a model that this fit never trained."""

    def __init__(self, fingerprint: str):
        self.fingerprint = fingerprint

    def state_dict(self) -> dict:
        return {"fingerprint": self.fingerprint}


def checked_resume(run_dir: Path, module: L.LightningModule, fingerprint: str) -> tuple[str, int] | None:
    """(last.ckpt, the epoch it ended) when it can be trusted to resume `module`, else a DataError;
    None when there is none, or when another fit wrote it (the run starts over, see `start_over`).

    Left to itself, Lightning passes weights_only=None on to torch.load (safe only while torch's
    default, True since 2.6, is not overridden by TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD) and fails
    mid-restore, in many lines, on a checkpoint of another config. This opens it with
    weights_only=True and checks every weight name and shape first; `trainer.fit(...,
    weights_only=True)` then loads it again, just as safely."""
    path = resume_path(run_dir)
    if path is None:
        return None
    ckpt = load_checkpoint(path)
    if ckpt.get("callbacks", {}).get(TrainedOn.__qualname__, {}).get("fingerprint") != fingerprint:
        start_over(run_dir, path)
        return None
    check_fits(full_state(ckpt, module, path), module, path)
    return path, int(ckpt.get("epoch", 0))


def start_over(run_dir: Path, path: str) -> None:
    """The run folder held a fit of another config, data or code (or of a transferlab that kept no
    fingerprint): its checkpoints and failed-attempt clock go, and this fit trains from scratch."""
    log.warning("%s was written by a fit of another config, data or code: training from scratch", path)
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / CLOCK_FILE).unlink(missing_ok=True)


def keep_earlier_logs(run_dir: Path, epoch: int) -> None:
    """Lightning's CSVLogger deletes the metrics.csv it finds when it starts: before a resumed run
    logs, the killed run's log folder moves aside to `logs.until-epoch-<k>` (its curves are kept)."""
    logs = run_dir / "logs"
    if logs.is_dir():
        aside = run_dir / f"logs.until-epoch-{epoch}"
        n = 1
        while aside.exists():
            aside, n = run_dir / f"logs.until-epoch-{epoch}.{n}", n + 1
        os.replace(logs, aside)


class EpochSeed(L.Callback):
    """Every random draw of epoch k (batch order, dropout) depends only on (seed, k).

    Lightning's checkpoints restore weights, optimizer, scheduler and loop state but not the
    random generators, so a run resumed from last.ckpt would shuffle and drop out differently from
    the run it continues. Here the global generators are seeded with (seed, k) when epoch k starts,
    just before its batch order is drawn, and with (seed, k, batch) before each batch (dropout),
    whether this process trained epochs 0..k-1 itself or restored them. Two details make that
    exact: the train loader's own draw for worker seeds, which Lightning makes only when it
    re-creates the iterator (not in a resumed process's first epoch), comes from a generator of its
    own; and the epoch to come is checkpointed, so that `on_fit_start` can seed with it should a
    Lightning version draw the first batch order before `on_train_epoch_start`."""

    def __init__(self, seed: int):
        self.seed = seed
        self.next_epoch = 0

    def reseed(self, *position: int) -> None:
        value = int(np.random.SeedSequence([self.seed, *position]).generate_state(1)[0])
        random.seed(value)
        np.random.seed(value)
        torch.manual_seed(value)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reseed(self.next_epoch)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loaders = trainer.train_dataloader
        for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
            if isinstance(loader, torch.utils.data.DataLoader) and loader.generator is None:
                loader.generator = torch.Generator().manual_seed(self.seed)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.next_epoch = trainer.current_epoch
        self.reseed(self.next_epoch)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.reseed(trainer.current_epoch, batch_idx + 1)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.next_epoch = trainer.current_epoch + 1  # what last.ckpt, saved next, resumes into

    def state_dict(self) -> dict:
        return {"next_epoch": self.next_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.next_epoch = int(state["next_epoch"])


def restore_best(trainer: L.Trainer, module: L.LightningModule) -> None:
    """The best checkpoint's weights back into `module` (none kept: the final weights stay)."""
    best = trainer.checkpoint_callback.best_model_path
    if best:
        module.load_state_dict(full_state(load_checkpoint(best), module, best))


def save_weights(module: L.LightningModule, run_dir: Path) -> Path:
    target = run_dir / "model.safetensors"
    with atomic_path(target) as tmp:
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp))
    return target
