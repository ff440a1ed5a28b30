"""Serve the compare flow on a Prefect server on a cron schedule (conf/schedule/): every run rewrites
one report in place, re-executing only the stages whose inputs changed (tasks are cached on them).

    export PREFECT_API_URL=http://127.0.0.1:4200/api   # a running `prefect server start`
    python flows/serve.py data=csv data.path=my.csv compare.strategies=[linear_probe,lp_ft] \
        schedule.cron="0 3 * * *"
    prefect deployment run compare/scheduled-compare     # a run now, besides the schedule

The overrides compose the compared configs exactly as flows/compare.py does; SIGTERM or Ctrl-C stops
serving (and pauses the schedule).
"""

from __future__ import annotations

from pathlib import Path

from transferlab.orchestration import (check_group_options, configure_prefect, cron_schedule, exit_on_bad_input,
                                       quiet_logs, task_runner)

configure_prefect(Path(__file__).resolve().parents[1])
if __name__ == "__main__":
    check_group_options()  # a misspelt option or key fails before torch and Prefect load

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from compare import compare, run_configs  # noqa: E402  (flows/compare.py, next to this file)
from transferlab.config import checked  # noqa: E402


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    quiet_logs()
    with exit_on_bad_input(Path(HydraConfig.get().runtime.output_dir)):
        cfg = checked(cfg, "config")
        schedule = cron_schedule(cfg.schedule)
        configs = run_configs(cfg, list(HydraConfig.get().overrides.task))
        runner = task_runner(cfg.compare)
    out_dir = str(Path(cfg.schedule.out_dir).resolve())
    print(f"serving compare/{cfg.schedule.name}: cron '{schedule.cron}' ({schedule.timezone}); "
          f"report: {Path(out_dir) / 'report.html'}")
    compare.with_options(task_runner=runner).serve(name=cfg.schedule.name, schedules=[schedule],
                                                   parameters={"configs": configs, "out_dir": out_dir},
                                                   print_starting_message=False)


if __name__ == "__main__":
    main()
