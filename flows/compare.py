"""Compare strategies on the user's data: every strategy x train size x seed, then the report.

    python flows/compare.py data=bbc_news compare.strategies=[linear_probe,finetune_full] \
        compare.train_sizes=[50,200,all] compare.seeds=[0,1,2]
    python flows/compare.py "compare.overrides=['strategy.max_epochs=3']"   # for every cell
    python flows/compare.py compare.task_runner=dask compare.workers=2      # runs in 2 Dask processes
"""

import hydra
from omegaconf import DictConfig

from transferlab import entry


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    entry.compare(cfg)


if __name__ == "__main__":
    entry.start(main, __file__)
