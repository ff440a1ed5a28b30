"""What a trained model directory says about itself: enough to rebuild it and to report its cost."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from transferlab.atomic import atomic_path, write_json
from transferlab.precision import cpu_model
from transferlab.resources import ResourceMeter
from transferlab.strategy import Strategy


def write_model_card(model_dir: Path, cfg: DictConfig, strategy: Strategy, labels: list[str], feature_dim: int,
                     meter: ResourceMeter, train_seconds: float, fit: dict, trained_groups: list[str],
                     **params: int | float | str) -> Path:
    """`fit`: transferlab.trainer.fit_summary's record (epochs, world_size), true under ddp_spawn too;
    `train_seconds`: every attempt's training time (a resumed run's earlier ones too); `params`: counts,
    a fine-tune's backbone load seconds and `fit_fingerprint` (what a budgeted rerun checks to know
    the fit already finished here: transferlab.pipeline.finished_earlier)."""
    write_json(model_dir / "model.json", {
        "strategy": strategy.name,
        "kind": strategy.kind,
        "seed": cfg.seed,
        "trained_groups": trained_groups,
        "labels": labels,
        "feature_dim": feature_dim,
        "backbone": OmegaConf.to_container(cfg.backbone),
        "train_seconds": round(train_seconds, 3),
        "peak_memory_mb": round(meter.peak_mb, 1),
        "gpu_peak_memory_mb": round(meter.gpu_peak_mb, 1),
        "epochs": fit["epochs"],
        "world_size": fit["world_size"],  # processes that trained (trainer=ddp: 2)
        "stopped_by_max_time": fit.get("stopped_by_max_time", False),  # trainer.max_time (compare.budget)
        # what `precision: auto` resolved to, and where (transferlab.precision)
        "precision": {"extract": cfg.extract.precision, "trainer": cfg.trainer.precision},
        "cpu": cpu_model(),
        **params,
    })
    with atomic_path(model_dir / "config.yaml") as tmp:  # what `transferlab predict` rebuilds it from
        tmp.write_text(OmegaConf.to_yaml(cfg))
    return model_dir
