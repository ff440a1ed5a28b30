"""One way to build a Lightning Trainer for every training stage: config in, callbacks wired."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning.pytorch as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig
from safetensors.torch import save_file

from transferlab.atomic import atomic_path


def quiet_lightning() -> None:
    """Lightning resets its loggers on import; silence tips and banners after it."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*number of training batches.*")
    warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")  # frozen groups, on purpose


def build_trainer(cfg: DictConfig, run_dir: Path, every_epoch_checkpoint: bool,
                  extra_callbacks: list | None = None) -> L.Trainer:
    """Early stopping on val_loss; the best checkpoint kept, and `last.ckpt` each epoch to resume."""
    quiet_lightning()
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor="val_loss", mode="min",
                                 save_top_k=1, save_last=every_epoch_checkpoint, filename="best")
    stopping = EarlyStopping(monitor="val_loss", mode="min", patience=cfg.strategy.patience)
    return instantiate(cfg.trainer, max_epochs=cfg.strategy.max_epochs,
                       gradient_clip_val=cfg.strategy.gradient_clip_val,
                       callbacks=[checkpoint, stopping, *(extra_callbacks or [])],
                       logger=CSVLogger(run_dir, name="logs", version=""),
                       default_root_dir=str(run_dir))


def resume_path(run_dir: Path) -> str | None:
    """A killed run picks up from its last epoch checkpoint."""
    last = run_dir / "checkpoints" / "last.ckpt"
    return str(last) if last.is_file() else None


def save_best_weights(trainer: L.Trainer, module: L.LightningModule, run_dir: Path) -> Path:
    """Restore the best epoch's weights into `module` and write them as safetensors."""
    best = trainer.checkpoint_callback.best_model_path
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    target = run_dir / "model.safetensors"
    with atomic_path(target) as tmp:
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp))
    return target


def predict_logits(module: L.LightningModule, loader, cfg: DictConfig) -> torch.Tensor:
    """Inference through Lightning (inference mode, the configured precision), no logs or checkpoints."""
    quiet_lightning()
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False)
    return torch.cat(trainer.predict(module, loader))
