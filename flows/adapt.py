"""Adapt one pre-trained backbone to one data set with one strategy, as a Prefect flow.

    python flows/adapt.py data=bbc_news strategy=linear_probe data.train_size=200
    python flows/adapt.py -m strategy=linear_probe,finetune_full
    python flows/adapt.py hparams_search=linear_probe_optuna   # an Optuna search (conf/hparams_search/)
"""

import hydra
from omegaconf import DictConfig

from transferlab import entry


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return entry.adapt(cfg)


if __name__ == "__main__":
    entry.start(main, __file__)
