"""The Prefect flow as a user runs it: `python flows/adapt.py` with Hydra overrides, in real
subprocesses: an ephemeral or a real server, a damaged feature file under a cache hit, two flows
starting at once on one fresh cache."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from conftest import PYTHON, ROOT, topic_frame
from tiny_encoder import overrides as tiny

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def adapt(*overrides: str, ephemeral: bool = False, wait: bool = True):
    """ephemeral: no PREFECT_API_URL, so Prefect starts its own temporary server, as on a fresh machine."""
    env = {k: v for k, v in os.environ.items() if not (ephemeral and k == "PREFECT_API_URL")}
    command = [PYTHON, "flows/adapt.py", *overrides]
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture
def data_overrides(tmp_path):
    topic_frame().to_csv(tmp_path / "topics.csv", index=False)
    return ["data=csv", f"data.path={tmp_path / 'topics.csv'}", "data.label_column=topic",
            f"paths.cache_dir={tmp_path / 'cache'}"]


def test_run_dir_override_on_an_ephemeral_server(tmp_path, data_overrides):
    """The real MiniLM through the real flow on a fresh Prefect. Multirun and the cache shared by its
    jobs: tests/test_sweeps.py."""
    first = adapt(*data_overrides, "backbone.max_length=32", "strategy=linear_probe", "strategy.max_epochs=20",
                  f"hydra.run.dir={tmp_path / 'single'}", ephemeral=True)
    assert first.returncode == 0, first.stderr[-3000:]
    metrics = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert metrics["strategy"] == "linear_probe" and metrics["trainable_params"] == 384 * 3 + 3
    assert f"results: {tmp_path / 'single' / 'metrics.json'}" in first.stdout
    assert len(list((tmp_path / "cache" / "features").glob("*/*.safetensors"))) == 3  # train, val, test


def completed_adapt_runs(api: str, under: Path) -> int:
    """Completed `adapt` flow runs on the server (shared with other test processes) whose run folder
    lies under `under`."""
    body = {"flows": {"name": {"any_": ["adapt"]}}, "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
            "sort": "EXPECTED_START_TIME_DESC", "limit": 200}
    request = urllib.request.Request(f"{api}/flow_runs/filter", method="POST", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    runs = json.loads(urllib.request.urlopen(request, timeout=10).read())
    return sum(str(run["parameters"].get("run_dir", "")).startswith(str(under)) for run in runs)


def feature_files(cache):
    return sorted((cache / "features").glob("*/*.safetensors"))


def assert_same_cache_as_one_process_alone(cache: Path, run_config: Path, alone: Path) -> None:
    """The shared cache holds what one process alone makes of the run's config: the same splits and
    features, every text embedded once (by one of the two), and no temporary files left behind."""
    from transferlab import pipeline
    from transferlab.data.splits import SPLITS
    from transferlab.features import FeatureCache

    c = OmegaConf.to_container(OmegaConf.load(run_config), resolve=True)
    alone_data = pipeline.prepare_step(c["data"], c["seed"], str(alone))
    alone_entry = Path(pipeline.extract_step(c["backbone"], c["extract"], alone_data, str(alone)))
    (shared_data,) = (p for p in (cache / "prepared").iterdir() if p.is_dir())
    (entry,) = {p.parent for p in feature_files(cache)}
    for split in SPLITS:
        assert pd.read_parquet(shared_data / f"{split}.parquet").equals(
            pd.read_parquet(Path(alone_data) / f"{split}.parquet"))
        shared = FeatureCache(cache / "features").load(entry.name, split)
        assert shared is not None, f"{split}: unreadable or failing its checksum"
        assert torch.allclose(shared, load_file(alone_entry / f"{split}.safetensors")["features"], atol=1e-6)
    leftovers = [p for p in cache.rglob(".*") if not p.name.endswith(".lock")]
    assert leftovers == [], leftovers
    store = json.loads((entry / "meta.json").read_text())["store"]
    assert json.loads((cache / "features" / "items" / store / "meta.json").read_text())["items_embedded"] == \
        len(topic_frame())


def test_two_flows_at_once_share_one_prepared_copy_and_a_damaged_feature_file_under_a_cache_hit_is_rebuilt(
        tmp_path, data_overrides, prefect_api):
    """Two `flows/adapt.py` processes started together on one fresh cache: the file locks make one of
    them prepare and embed while the other waits, and both train on the same single copy.
    Then a third run, whose extract task would be a Prefect cache hit: a feature file damaged since
    is detected (sha256) and rebuilt, not trusted."""
    from transferlab.features import verified

    common = [*data_overrides, *tiny(), "strategy.max_epochs=3"]
    runs = [adapt(*common, f"hydra.run.dir={tmp_path / name}", wait=False) for name in ("a", "b")]
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
    prepared = [p for p in (tmp_path / "cache" / "prepared").iterdir() if p.is_dir()]
    assert len(prepared) == 1 and (prepared[0] / "data_card.json").is_file()
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("a", "b"))
    assert a["test_accuracy"] == b["test_accuracy"] and a["train_size"] == b["train_size"]
    assert_same_cache_as_one_process_alone(tmp_path / "cache", tmp_path / "a" / "config.yaml", tmp_path / "alone")

    damaged = feature_files(tmp_path / "cache")[0]
    intact, features = damaged.read_bytes(), verified(damaged)["features"].clone()
    damaged.write_bytes(intact[:-1] + bytes([intact[-1] ^ 0xFF]))
    assert verified(damaged) is None
    again = adapt(*common, f"hydra.run.dir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr[-3000:]
    rebuilt = verified(damaged)  # sound again, and the same features (the header's key order may differ)
    assert rebuilt is not None and torch.equal(rebuilt["features"], features)
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["test_accuracy"] == a["test_accuracy"]
    assert completed_adapt_runs(prefect_api, tmp_path) == 3
