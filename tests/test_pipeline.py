"""The one rule for a cell's config, as the compare flow and dvc.yaml's matrix each resolve it; the one
rule for a report whose extraction cannot be priced here."""

from __future__ import annotations

import os

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import ROOT, quick_compare, topic_config, topic_frame

USER = ["data.label_column=topic", "data.train_size=7", "compare.strategies=[linear_probe,lp_ft,finetune_full]",
        "compare.train_sizes=[12,all]", "compare.seeds=[0,1]", quick_compare("strategy.max_epochs=2")]


def flow_cells(overrides: list[str]) -> dict[str, dict]:
    """As flows/compare.py resolves them: conf/ composed with the command line (Hydra), checked by
    the entry point, the grid of transferlab.pipeline."""
    from transferlab.config import compose
    from transferlab.entry import comparison
    from transferlab.pipeline import grid

    base = comparison(compose(overrides), overrides)
    return {cell.name: OmegaConf.to_container(cell.cfg) for cell in grid(base)}


def dvc_cells(overrides: list[str], tmp_path) -> dict[str, dict]:
    """As `dvc exp run -S ...` then dvc.yaml's compare matrix resolve them: params.yaml composed from
    conf/ with the overrides, one matrix item per strategy x size x seed of params.yaml, each cell
    from its command-line arguments (sizes as text, as DVC substitutes them) through transferlab.repro."""
    from transferlab import repro
    from transferlab.config import load_params, write_params

    write_params(tmp_path / "params.yaml", overrides=overrides)
    cfg = load_params(tmp_path / "params.yaml")
    matrix = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["compare"]["matrix"]
    values = {key: OmegaConf.select(cfg, ref.strip("${}")) for key, ref in matrix.items()}
    cwd = os.getcwd()
    os.chdir(ROOT)  # dvc runs stages in the repository: its conf/
    try:
        cells = [repro.matrix_cell(cfg, s, str(n), int(seed))
                 for s in values["strategy"] for n in values["size"] for seed in values["seed"]]
    finally:
        os.chdir(cwd)
    return {run_dir.name: OmegaConf.to_container(cell) for cell, run_dir in cells}


def test_the_compare_flow_and_the_dvc_matrix_resolve_identical_cells(tmp_path):
    topic_frame().to_csv(tmp_path / "topics.csv", index=False)
    overrides = ["data=csv", f"data.path={tmp_path / 'topics.csv'}", *USER]
    flow, dvc = flow_cells(overrides), dvc_cells(overrides, tmp_path)
    assert len(flow) == 12 and flow == dvc
    for name, cfg in flow.items():
        assert cfg["strategy"]["max_epochs"] == 2  # compare.overrides, in every cell of both
        assert cfg["data"]["train_size"] == (None if "-nall-" in name else 12)  # data.train_size=7: the grid's sizes win
    assert flow["lp_ft-n12-s1"]["strategy"]["probe"]["name"] == "linear_probe"
    assert flow["lp_ft-n12-s1"]["strategy"]["probe"]["max_epochs"] == 1  # overrides set the cell's strategy, not its probe


def test_a_report_whose_extraction_is_not_measured_here_is_refused(tmp_path):
    """A head's comparison reported again where paths.cache_dir is gone (a fresh clone, a queued
    experiment's copy): write_report, every front end's report, stops in one line naming the key,
    before writing a report that costs the head's extraction at 0 s."""
    import shutil

    from transferlab.errors import ConfigError
    from transferlab.pipeline import grid, run_cell, runs_dir, write_report

    base = topic_config(tmp_path, "compare.strategies=[linear_probe]", "compare.train_sizes=[all]")
    [cell] = grid(base)
    run_cell(cell.cfg, runs_dir(tmp_path) / cell.name)
    metrics = [runs_dir(tmp_path) / cell.name / "metrics.json"]
    assert write_report(base, metrics, tmp_path / "measured")["extraction_seconds"] > 0
    shutil.rmtree(base.paths.cache_dir)
    with pytest.raises(ConfigError, match=r"^paths.cache_dir=.*: the comparison's feature extraction was not measured"):
        write_report(base, metrics, tmp_path / "report")
    assert not (tmp_path / "report").exists()
