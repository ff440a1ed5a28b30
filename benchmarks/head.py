"""Head training on cached features: transferlab's linear probe (full-batch L-BFGS in Lightning) vs
scikit-learn's LogisticRegression on the same features, each timed to its own converged model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from common import Figure, best_of, prepared


def measure(limit: int = 8000) -> list[Figure]:
    from transferlab.data.datamodules import labels_of
    from transferlab.features import load_features
    from transferlab.stages import evaluate
    from transferlab.training import fit

    cfg, data_dir, features = prepared("data=tweet_sentiment", "data.train_size=null", f"data.limit={limit}",
                                       "trainer.enable_progress_bar=false")
    x = {s: load_features(features, s).numpy() for s in ("train", "test")}
    y = {s: labels_of(data_dir, s).numpy() for s in ("train", "test")}
    with tempfile.TemporaryDirectory() as run_dir:
        (base_s, sklearn), (ours_s, _) = best_of([
            lambda: LogisticRegression(max_iter=1000).fit(x["train"], y["train"]),
            lambda: fit(cfg, data_dir, features, Path(run_dir))], repeats=3)  # the train stage's fit
        ours_acc = evaluate.run(data_dir, features, run_dir, run_dir)["test_accuracy"]
    base_acc = float(np.mean(sklearn.predict(x["test"]) == y["test"]))
    note = (f"{len(y['train'])} tweets x 384 features; test accuracy ours {100 * ours_acc:.1f} vs "
            f"scikit-learn {100 * base_acc:.1f} ({100 * (ours_acc - base_acc):+.1f} points)")
    return [Figure("head training time to the same accuracy (s)", ours_s, base_s, "s", ours_s / base_s,
                   "<= 1.0x", note)]
