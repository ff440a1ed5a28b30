"""Adapt one pre-trained backbone to one data set with one strategy, as a Prefect flow.

    python flows/adapt.py data=bbc_news strategy=linear_probe data.train_size=200
    python flows/adapt.py -m strategy=linear_probe,finetune_full
    python flows/adapt.py hparams_search=linear_probe_optuna   # an Optuna search (conf/hparams_search/)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transferlab.orchestration import check_group_options, configure_prefect, exit_on_bad_input, quiet_logs

configure_prefect(Path(__file__).resolve().parents[1])
if __name__ == "__main__":
    check_group_options()  # a misspelt option or key fails before torch and Prefect load

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from prefect import flow  # noqa: E402

from transferlab.config import checked  # noqa: E402
from transferlab.stages import prepare  # noqa: E402
from transferlab.strategies import needs_features  # noqa: E402
from transferlab.tasks import (evaluate_task, extract_task, for_run, prepare_task, train_task,  # noqa: E402
                               trusted_while)

# The Optuna sweeper imports optuna, which imports alembic; its "setup plugin ..." INFO lines would
# otherwise reach Hydra's console log before the first trial.
logging.getLogger("alembic").setLevel(logging.WARNING)


@flow(name="adapt", log_prints=True)
def adapt(cfg: dict, run_dir: str) -> dict:
    """prepare -> extract (when the strategy uses features) -> train -> evaluate -> run_dir/metrics.json."""
    c = OmegaConf.create(cfg)
    cache_root = Path(c.paths.cache_dir)
    prepared = str(prepare.cache_dir(c.data, c.seed, cache_root))
    data_dir = trusted_while(prepare_task, prepared)(cfg["data"], c.seed, prepared)
    features_dir = None
    if needs_features(c.strategy):
        features_dir = trusted_while(extract_task, cache_root / "features")(
            cfg["backbone"], cfg["extract"], data_dir, str(cache_root / "features"))
    for_run(train_task, run_dir)(cfg, data_dir, features_dir, run_dir)
    return for_run(evaluate_task, run_dir)(cfg, data_dir, features_dir, run_dir)


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """One flow run; returns metrics[optimized_metric], the objective a sweeper such as Optuna reads."""
    quiet_logs()
    run_dir = HydraConfig.get().runtime.output_dir
    with exit_on_bad_input(Path(run_dir)):
        cfg = checked(cfg, "config")
        metrics = adapt(OmegaConf.to_container(cfg, resolve=True), run_dir)
    print(json.dumps({k: metrics[k] for k in ("strategy", "train_size", "test_accuracy",
                                              "trainable_params", "train_seconds")}))
    print(f"results: {Path(run_dir) / 'metrics.json'}")
    return float(metrics[cfg.optimized_metric])


if __name__ == "__main__":
    main()
