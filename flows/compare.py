"""Compare strategies on the user's data: every strategy x train size x seed, then the report.

    python flows/compare.py data=bbc_news compare.strategies=[linear_probe,finetune_full] \
        compare.train_sizes=[50,200,all] compare.seeds=[0,1,2]
    python flows/compare.py compare.task_runner=dask compare.workers=2   # runs in 2 Dask processes
"""

from __future__ import annotations

from pathlib import Path

from transferlab.orchestration import (check_group_options, configure_prefect, exit_on_bad_input, quiet_logs,
                                       task_runner)

configure_prefect(Path(__file__).resolve().parents[1])
if __name__ == "__main__":
    check_group_options()  # a misspelt option or key fails before torch and Prefect load

import hydra  # noqa: E402
from hydra import compose  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from prefect import flow  # noqa: E402

from transferlab.config import check_group_choices, checked  # noqa: E402
from transferlab.report.render import build_report, load_runs  # noqa: E402
from transferlab.stages import extract, prepare  # noqa: E402
from transferlab.stages.compare import run_name, sized  # noqa: E402
from transferlab.strategies import needs_features  # noqa: E402
from transferlab.tasks import (evaluate_task, extract_task, for_run, prepare_task, train_task,  # noqa: E402
                               trusted_while)


def run_configs(base: DictConfig, overrides: list[str]) -> dict[str, dict]:
    """Each compared strategy composed from conf/strategy/ with the user's other overrides applied."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith("strategy=")]
    check_group_choices([f"strategy={name}" for name in base.compare.strategies])
    configs = {}
    for name in base.compare.strategies:
        configs[name] = OmegaConf.to_container(checked(compose(config_name="config", overrides=[*kept, f"strategy={name}"]),
                                                       "config"), resolve=True)
    return configs


@flow(name="compare", log_prints=True)
def compare(configs: dict[str, dict], out_dir: str) -> dict:
    """Identical splits for every strategy at a size and seed; features extracted once, reused."""
    any_cfg = next(iter(configs.values()))
    c = OmegaConf.create(any_cfg)
    cache_root = Path(c.paths.cache_dir)
    use_features = any(needs_features(OmegaConf.create(cfg["strategy"])) for cfg in configs.values())
    jobs, data_dirs = [], []
    for seed in c.compare.seeds:
        for size in c.compare.train_sizes:
            data = sized(any_cfg["data"], size)
            prepared = str(prepare.cache_dir(OmegaConf.create(data), seed, cache_root))
            data_dir = trusted_while(prepare_task, prepared)(data, seed, prepared)
            data_dirs.append(Path(data_dir))
            features = None
            if use_features:
                features = trusted_while(extract_task, cache_root / "features")(
                    any_cfg["backbone"], any_cfg["extract"], data_dir, str(cache_root / "features"))
            for name, cfg in configs.items():
                run_cfg = {**cfg, "seed": seed, "data": data}
                run_dir = str(Path(out_dir) / "runs" / run_name(name, size, seed))
                feats = features if needs_features(OmegaConf.create(cfg["strategy"])) else None
                trained = for_run(train_task, run_dir).submit(run_cfg, data_dir, feats, run_dir)
                jobs.append((run_dir, for_run(evaluate_task, run_dir).submit(run_cfg, data_dir, feats, run_dir,
                                                                             wait_for=[trained])))
    failed = []
    for run_dir, future in jobs:  # a failed run (after its retry) is reported, not fatal
        future.wait()
        if not future.state.is_completed():
            failed.append(run_dir)
    extraction = (extract.amortised_seconds(c.backbone, c.extract, data_dirs, cache_root / "features")
                  if use_features else 0.0)
    runs = load_runs([Path(d) / "metrics.json" for d, _ in jobs if d not in failed])
    summary = build_report(runs, Path(out_dir), f"transferlab: {c.data.name} on {c.backbone.name}",
                           extraction, c.compare.tie_margin)
    return {**summary, "failed_runs": failed, "extraction_seconds": extraction}


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    quiet_logs()
    run_dir = HydraConfig.get().runtime.output_dir
    with exit_on_bad_input(Path(run_dir)):
        configs = run_configs(checked(cfg, "config"), list(HydraConfig.get().overrides.task))
        result = compare.with_options(task_runner=task_runner(cfg.compare))(configs, run_dir)
    print(result["recommendation"])
    if result["failed_runs"]:
        print(f"failed runs (left out of the report): {result['failed_runs']}")
    print(f"report: {Path(run_dir) / 'report.html'} and report.md")


if __name__ == "__main__":
    main()
