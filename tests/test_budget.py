"""A fair fine-tuning budget: at least `strategy.min_steps` optimiser steps whatever max_epochs says,
validation about every `val_every_n_steps` steps, and no checkpoint from before the minimum kept."""

from __future__ import annotations

import json

import torch

from transferlab.checkpoints import load_checkpoint
from transferlab.strategy import Budget

from conftest import run_cell, topic_config


def test_min_steps_wins_over_max_epochs_and_validation_is_spaced_in_whole_epochs():
    budget = Budget(max_epochs=5, patience=2, batch_size=16, min_steps=100, val_every_n_steps=50)
    # 50 labels: 4 steps an epoch -> 25 epochs for 100 steps, validated every 13 epochs
    assert budget.trainer_args(50) == {"max_epochs": 26, "check_val_every_n_epoch": 13, "min_steps": 100}
    # 1,000 labels: 63 steps an epoch -> max_epochs rules, validated every epoch
    assert budget.trainer_args(1000) == {"max_epochs": 5, "check_val_every_n_epoch": 1, "min_steps": 100}
    assert budget.trainer_args(50, processes=2)["max_epochs"] == 50  # 2 steps an epoch in each process
    assert Budget(5, 2, 16).trainer_args(50) == {"max_epochs": 5, "check_val_every_n_epoch": 1, "min_steps": None}


def test_max_epochs_is_kept_when_it_rules_whatever_the_validation_interval():
    """Validations split the epochs asked for; the epochs are not rounded up to whole intervals
    (a 1-epoch fit on 50 labels, 4 steps an epoch, once became 13 epochs to reach step 50)."""
    def budget(max_epochs: int) -> Budget:
        return Budget(max_epochs=max_epochs, patience=2, batch_size=16, min_steps=0, val_every_n_steps=50)

    assert budget(1).trainer_args(50) == {"max_epochs": 1, "check_val_every_n_epoch": 1, "min_steps": None}
    assert budget(20).trainer_args(50) == {"max_epochs": 20, "check_val_every_n_epoch": 10, "min_steps": None}
    assert budget(14).trainer_args(50)["max_epochs"] == 14  # 56 steps: one validation, at the end


def test_no_checkpoint_before_min_steps_is_kept_and_early_stopping_waits(tmp_path):
    """A learning rate that makes validation loss worse epoch after epoch: without the rule, the first
    epoch's checkpoint would be the best one and patience 1 would stop the fit after two epochs."""
    cfg = topic_config(tmp_path, "strategy=finetune_full", "strategy.lr=0.3", "strategy.head_lr=0.3",
                       "strategy.batch_size=8", "strategy.max_epochs=1", "strategy.patience=1",
                       "strategy.min_steps=24", "strategy.val_every_n_steps=1", "strategy.warmup_ratio=0")
    run_cell(cfg, tmp_path / "run")
    fit = json.loads((tmp_path / "run" / "fit.json").read_text())
    assert fit["global_step"] >= 24
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert best["global_step"] >= 24
    logs = tmp_path / "run" / "logs"
    vals = [line.split(",") for line in next(logs.rglob("metrics.csv")).read_text().splitlines()]
    header = vals[0]
    val_steps = [int(row[header.index("step")]) + 1 for row in vals[1:] if row[header.index("val_loss")]]
    assert min(val_steps) < 24 <= max(val_steps)  # validated before the minimum too, but never kept from there
    assert torch.is_tensor(next(iter(best["state_dict"].values())))
    assert "optimizer_states" not in best  # weights only; resuming reads last.ckpt


def run_features(cfg, split: str) -> torch.Tensor:
    from omegaconf import OmegaConf

    from transferlab.features import load_features
    from transferlab.pipeline import features_entry

    from conftest import prepared_dir

    entry = features_entry(OmegaConf.to_container(cfg.backbone), OmegaConf.to_container(cfg.extract),
                           prepared_dir(cfg), cfg.paths.cache_dir)
    return load_features(entry, split)


def test_linear_probe_is_scikit_learns_logistic_regression_with_c_chosen_on_validation(tmp_path):
    """strategy.C and strategy.tol mean what C and tol mean in scikit-learn: one C, solved tight,
    trains to the same weights as LogisticRegression(C) on the same features; at the default tol the
    largest entry of the objective's gradient is below tol; a list of C is searched on validation
    accuracy."""
    import numpy as np
    from safetensors.torch import load_file
    from sklearn.linear_model import LogisticRegression

    from transferlab.data.datamodules import labels_of

    from conftest import prepared_dir

    cfg = topic_config(tmp_path, "strategy=linear_probe", "strategy.C=0.5", "strategy.tol=1e-7")
    run_cell(cfg, tmp_path / "one")
    x, y = run_features(cfg, "train").numpy().astype(np.float64), labels_of(prepared_dir(cfg), "train").numpy()
    reference = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(x, y)
    weights = load_file(tmp_path / "one" / "model.safetensors")
    assert np.allclose(weights["head.weight"].numpy(), reference.coef_, atol=2e-3)
    bias = weights["head.bias"].numpy()  # softmax is blind to a constant added to every bias
    assert np.allclose(bias - bias.mean(), reference.intercept_ - reference.intercept_.mean(), atol=2e-3)

    loose = topic_config(tmp_path, "strategy=linear_probe", "strategy.C=0.5")
    assert loose.strategy.tol == 1e-4  # scikit-learn's default
    run_cell(loose, tmp_path / "loose")
    w, b = (load_file(tmp_path / "loose" / "model.safetensors")[k].numpy().astype(np.float64)
            for k in ("head.weight", "head.bias"))
    logits = x @ w.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1  # d(mean cross-entropy)/d(logits) x rows
    gradient = np.concatenate([(p.T @ x / len(y) + w / (0.5 * len(y))).ravel(), p.mean(0)])
    assert 1e-7 < np.abs(gradient).max() <= 1e-4  # converged to tol, not to torch's default 1e-7

    grid = topic_config(tmp_path, "strategy=linear_probe", "strategy.C=[0.001,1,1000]")
    run_cell(grid, tmp_path / "grid")
    card = json.loads((tmp_path / "grid" / "model.json").read_text())
    scores = card["C_scores"]
    assert set(scores) == {"0.001", "1", "1000"}
    best = max(scores, key=lambda c: (scores[c]["val_accuracy"], -scores[c]["val_loss"]))
    assert card["C"] == float(best)
    chosen = load_checkpoint(tmp_path / "grid" / "C" / best / "checkpoints" / "best.ckpt")["state_dict"]
    assert torch.equal(chosen["head.weight"], load_file(tmp_path / "grid" / "model.safetensors")["head.weight"])
    assert not list((tmp_path / "grid" / "C").rglob("logs"))  # the search is not logged; the refit is
