"""Running a model over inputs through Lightning's predict loop: frozen features, logits.

One place for inference, so extraction, evaluation and `transferlab predict` batch, bucket and
order their outputs alike."""

from __future__ import annotations

import time

import lightning.pytorch as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader, TensorDataset

from transferlab.backbones import Backbone, build_backbone
from transferlab.data.datamodules import EncodedInputs, by_length, in_row_order
from transferlab.heap import RetainedHeap
from transferlab.modules import FeatureExtractor
from transferlab.progress import progress_callbacks
from transferlab.strategy import count_parameters, freeze
from transferlab.trainer import HEAD, ONE_PROCESS, quiet_lightning


def features_of(model: Backbone, items: list, batch_size: int, progress: bool = True) -> torch.Tensor:
    """Encoded once up front, then length-bucketed batches padded to their longest item, under
    inference mode, in the model's own dtype; fp32 rows in the order of `items`."""
    dataset = EncodedInputs(items, torch.zeros(len(items), dtype=torch.long), model)
    loader = by_length(dataset, batch_size)
    quiet_lightning()
    shown = progress and len(loader) > 1
    trainer = L.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=shown,
                        callbacks=[*progress_callbacks(shown), RetainedHeap()])
    return in_row_order(torch.cat(trainer.predict(FeatureExtractor(model), loader)), loader)


def frozen_backbone(backbone: DictConfig, precision: str) -> Backbone:
    """The backbone for extraction: frozen, its weights in bf16 when extract.precision is bf16
    (pure bf16 weights ran 1.3-1.7x faster than fp32 weights under autocast, at cosine >= 0.9999)."""
    model = build_backbone(backbone)
    freeze(model)
    return model.to(torch.bfloat16) if precision == "bf16" else model


def embed(backbone: DictConfig, extract: DictConfig, items: list, progress: bool = True) -> tuple[torch.Tensor, dict]:
    """Features of `items` with the frozen backbone, and its facts: the seconds loading it and
    embedding took, apart (a cost ledger charges them separately). `progress`: a bar, as
    trainer.enable_progress_bar says."""
    started = time.perf_counter()
    model = frozen_backbone(backbone, extract.precision)
    loaded = time.perf_counter()
    features = features_of(model, items, extract.batch_size, progress)
    return features, {"feature_dim": model.feature_dim, "backbone_params": count_parameters(model)[1],
                      "load_seconds": round(loaded - started, 3), "embed_seconds": time.perf_counter() - loaded}


def predict_logits(module: L.LightningModule, loader: DataLoader, trainer_cfg: DictConfig,
                   one_process: dict = ONE_PROCESS) -> torch.Tensor:
    """Inference through Lightning (inference mode, the configured precision unless `one_process`
    names one), no logs or checkpoints, in this process: the outputs are needed here, in order."""
    quiet_lightning()
    trainer = instantiate(trainer_cfg, **one_process, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, callbacks=[RetainedHeap()])
    return torch.cat(trainer.predict(module, loader))


def feature_logits(module: L.LightningModule, features: torch.Tensor, trainer_cfg: DictConfig) -> torch.Tensor:
    """A head's logits over a feature matrix."""
    loader = DataLoader(TensorDataset(features, torch.zeros(len(features), dtype=torch.long)), batch_size=4096)
    return predict_logits(module, loader, trainer_cfg, HEAD)


def input_logits(module: L.LightningModule, items: list, batch_size: int, trainer_cfg: DictConfig) -> torch.Tensor:
    """Backbone + head logits over raw inputs, length-bucketed, in the order of `items`."""
    dataset = EncodedInputs(items, torch.zeros(len(items), dtype=torch.long), module.backbone)
    loader = by_length(dataset, batch_size)
    return in_row_order(predict_logits(module, loader, trainer_cfg), loader)
