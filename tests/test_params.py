"""The two front ends cannot drift: params.yaml is conf/'s default, dvc.yaml is the stage list."""

from __future__ import annotations

import importlib.util

import pytest
import yaml
from omegaconf import OmegaConf

from transferlab import repro
from transferlab.config import checked, compose, load_params
from transferlab.errors import ConfigError
from transferlab.repro import STAGE_MODULES, STAGES, artifact_dirs

from conftest import ROOT


def test_params_yaml_equals_composed_defaults():
    composed = OmegaConf.to_container(compose())
    on_disk = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert on_disk == composed, "params.yaml is stale: run `python -m transferlab.config`"


def test_dvc_yaml_runs_every_stage_through_the_cli():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert tuple(stages) == STAGES
    for name, stage in stages.items():
        assert stage["cmd"].split()[:2] == ["transferlab", name]
        assert name in STAGES and callable(getattr(repro, name, None)), name  # what `transferlab <name>` calls
        # the stage's code (its deps are checked against this module's import closure by test_provenance)
        assert importlib.util.find_spec(STAGE_MODULES[name]) is not None, STAGE_MODULES[name]


def test_dvc_outputs_match_the_artifact_layout():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    dirs = {k: str(v) for k, v in artifact_dirs(load_params(ROOT / "params.yaml")).items()}
    assert stages["prepare"]["outs"] == [dirs["data"]]
    assert stages["extract"]["outs"] == [dirs["features"]]
    assert stages["train"]["outs"] == [dirs["model"]]
    assert list(stages["evaluate"]["metrics"][0]) == [f"{dirs['eval']}/metrics.json"]
    assert stages["compare"]["outs"] == [f"{dirs['compare']}/${{item.strategy}}-n${{item.size}}-s${{item.seed}}"]
    assert stages["report"]["deps"][0] == dirs["compare"]
    assert list(stages["report"]["metrics"][0]) == [f"{dirs['report']}/summary.json"]


def test_head_only_parameters_are_not_deps_of_upstream_stages():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("prepare", "extract"):
        assert "strategy" not in stages[name]["params"]


@pytest.mark.parametrize("override, message", [
    ({"strategy": {"lrr": 0.1}}, "strategy.lrr"),
    ({"strategy": {"lr": "fast"}}, "strategy.lr"),
    ({"strategy": {"lr": -1.0}}, "strategy.lr=-1.0: must be > 0"),
    ({"strategy": {"max_epochs": 0}}, "strategy.max_epochs=0"),
    ({"strategy": {"tol": 0.0}}, "strategy.tol=0.0: must be > 0"),
])
def test_bad_config_is_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        checked(OmegaConf.merge(OmegaConf.to_container(compose()), override), "params.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_overrides_compose_like_the_flow():
    cfg = checked(compose(["strategy=finetune_full", "data.train_size=50"]), "config")
    assert cfg.strategy.kind == "finetune" and cfg.strategy.trainable == "all"
    assert cfg.data.train_size == 50
