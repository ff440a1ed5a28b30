"""Serve the compare flow on a Prefect server on a cron schedule (conf/schedule/): every run rewrites
one report in place, re-executing only the stages whose inputs or code changed (tasks are cached on them).

    export PREFECT_API_URL=http://127.0.0.1:4200/api   # a running `prefect server start`
    python flows/serve.py data=csv data.path=my.csv compare.strategies=[linear_probe,lp_ft] \
        schedule.cron="0 3 * * *"
    prefect deployment run compare/scheduled-compare     # a run now, besides the schedule

The overrides compose the comparison exactly as flows/compare.py does; SIGTERM or Ctrl-C stops
serving (and pauses the schedule).
"""

import hydra
from omegaconf import DictConfig

from transferlab import entry


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    entry.serve(cfg)


if __name__ == "__main__":
    entry.start(main, __file__)
