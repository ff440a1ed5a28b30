"""Head training on cached features: transferlab's linear probe (full-batch L-BFGS in Lightning, its C
searched on validation) vs scikit-learn's LogisticRegression searching the same C values on the same
features and validation split, each timed to its own chosen, converged model."""

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
    from transferlab.strategy import resolve
    from transferlab.training import fit

    cfg, data_dir, features = prepared("data=tweet_sentiment", "data.train_size=null", f"data.limit={limit}",
                                       "trainer.enable_progress_bar=false")
    x = {s: load_features(features, s).numpy() for s in ("train", "val", "test")}
    y = {s: labels_of(data_dir, s).numpy() for s in ("train", "val", "test")}
    grid = list(resolve(cfg).C)

    def sklearn_search() -> LogisticRegression:
        fitted = [LogisticRegression(C=c, max_iter=1000).fit(x["train"], y["train"]) for c in grid]
        return max(fitted, key=lambda m: m.score(x["val"], y["val"]))

    with tempfile.TemporaryDirectory() as run_dir:
        (base_s, sklearn), (ours_s, _) = best_of([
            sklearn_search, lambda: fit(cfg, data_dir, features, Path(run_dir))], repeats=3)  # the train stage's fit
        ours_acc = evaluate.run(data_dir, features, run_dir, run_dir)["test_accuracy"]
    base_acc = float(np.mean(sklearn.predict(x["test"]) == y["test"]))
    note = (f"{len(y['train'])} tweets x 384 features, C searched over {grid} on {len(y['val'])} validation "
            f"tweets by both; test accuracy ours {100 * ours_acc:.1f} vs scikit-learn {100 * base_acc:.1f} "
            f"({100 * (ours_acc - base_acc):+.1f} points)")
    return [Figure("head training time to the same accuracy (s)", ours_s, base_s, "s", ours_s / base_s,
                   "<= 1.0x", note)]
