"""Scale-out and logs: 2-process DDP fine-tuning on CPU through the real flow (the real MiniLM: it
checks the trained model too), the GPU trainer config, the Lightning loggers (each a real short
cell through transferlab.pipeline, on the tiny encoder), and a console without library banners."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from transferlab.config import LOGGERS, checked, compose
from transferlab.errors import ConfigError

from conftest import PYTHON, ROOT, run_cell, topic_config, QUICK_BUDGET, topic_frame

# Lines a quiet run must not print: Lightning's device banners, DDP set-up, tips, MLflow's DB set-up.
BANNERS = ("GPU available", "TPU available", "LOCAL_RANK", "Initializing distributed", "distributed_backend",
           "distributed processes registered", "Tip", "litlogger", "Warning", "INFO", "Creating it")


def banner_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if any(b.lower() in line.lower() for b in BANNERS)]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_ddp_fine_tuning_trains_in_two_processes_each_on_half_the_batches(tmp_path):
    """flows/adapt.py trainer=ddp: fit in 2 spawned gloo processes, evaluation back in the flow."""
    topic_frame().to_csv(tmp_path / "topics.csv", index=False)
    run_dir, batch_size, epochs = tmp_path / "run", 7, 2
    run = subprocess.run([PYTHON, "flows/adapt.py", "trainer=ddp", "strategy=finetune_last_n", "data=csv",
                          f"data.path={tmp_path / 'topics.csv'}", "data.label_column=topic", "backbone.max_length=32",
                          f"strategy.batch_size={batch_size}", f"strategy.max_epochs={epochs}", *QUICK_BUDGET, "strategy.patience=5",
                          f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    fit = json.loads((run_dir / "fit.json").read_text())
    assert json.loads((run_dir / "model.json").read_text())["world_size"] == 2
    # DistributedSampler under the length-bucketing batch sampler: each rank batches its own half
    # (one process would take ceil(n / batch_size) steps an epoch)
    per_rank = math.ceil(metrics["train_size"] / 2)
    assert fit["epochs"] == epochs and fit["global_step"] == epochs * math.ceil(per_rank / batch_size)
    assert metrics["test_accuracy"] >= 0.6  # three separable topics; chance is 1/3
    # checkpoints written once (by rank 0); the evaluated weights are the best checkpoint's
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    weights = load_file(run_dir / "model.safetensors")
    assert all(torch.equal(weights[k], best[k]) for k in best)
    logged = pd.read_csv(run_dir / "logs" / "metrics.csv")
    assert logged["val_acc"].notna().sum() == epochs  # val metrics synced over ranks, logged once an epoch
    assert not banner_lines(run.stdout + run.stderr), run.stdout + run.stderr


@pytest.fixture(scope="module")
def cached_features(tmp_path_factory):
    """A cache (prepared topic splits, tiny-encoder features) shared by the head-training cells below."""
    return tmp_path_factory.mktemp("features")


def train_head(cached_features, run_dir, *overrides: str) -> dict:
    """A linear-probe cell through the pipeline on the module's cache: its model card."""
    cfg = topic_config(cached_features, "strategy=linear_probe", "strategy.max_epochs=5", *overrides)
    run_cell(cfg, run_dir)
    return json.loads((run_dir / "model.json").read_text())


def test_head_training_under_trainer_ddp_stays_in_one_process(cached_features, tmp_path):
    """A linear head on cached features is full-batch L-BFGS: processes would only add start-up."""
    card = train_head(cached_features, tmp_path / "run", "trainer=ddp")
    assert card["world_size"] == 1 and card["epochs"] >= 1


def test_tensorboard_logger_writes_event_files(cached_features, tmp_path, capfd):
    train_head(cached_features, tmp_path / "run", "logger=tensorboard")
    assert not banner_lines("".join(capfd.readouterr()))
    events = list((tmp_path / "run" / "logs").glob("events.out.tfevents.*"))
    assert len(events) == 1 and b"val_loss" in events[0].read_bytes()


def test_mlflow_logger_records_the_run_in_a_local_store(cached_features, tmp_path, capfd):
    from mlflow.tracking import MlflowClient

    card = train_head(cached_features, tmp_path / "run", "logger=mlflow")
    assert not banner_lines("".join(capfd.readouterr()))  # no MLflow database set-up lines
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'run' / 'logs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("transferlab").experiment_id])
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == card["epochs"]


def test_mlflow_store_set_up_is_not_training_time(cached_features, tmp_path):
    """A head's training time is its fits: a new MLflow store's migrations (seconds, timed here on a
    store of its own, once MLflow's modules are loaded) are not counted in it, nor in the cost to
    train it feeds."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'imports.db'}")  # MLflow loads its store modules
    started = time.perf_counter()
    MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'migrations.db'}")
    migrations = time.perf_counter() - started
    head = ("strategy=mlp_head", "strategy.max_epochs=2")
    csv = train_head(cached_features, tmp_path / "csv", *head)["train_seconds"]
    mlflow = train_head(cached_features, tmp_path / "mlflow", *head, "logger=mlflow")["train_seconds"]
    assert mlflow - csv < migrations / 2, (csv, mlflow, migrations)


@pytest.mark.parametrize("head", [("strategy=mlp_head", "strategy.max_epochs=2"), ("strategy.C=[0.1,1]",)])
def test_a_head_fit_logs_to_the_one_logger_built_before_its_timing(cached_features, tmp_path, monkeypatch, head):
    """The logger set up outside a head's training time is the one its fit logs to (mini-batch, or
    the C grid's refit; the grid's per-C fits log nothing): no second logger set up inside the
    timing whose cost only MLflow's store cache would hide."""
    from lightning.pytorch.loggers import CSVLogger

    built = []
    real = CSVLogger.__init__
    monkeypatch.setattr(CSVLogger, "__init__", lambda self, *a, **k: (built.append(self), real(self, *a, **k))[1])
    card = train_head(cached_features, tmp_path / "run", *head)
    assert len(built) == 1 and Path(built[0].log_dir) == tmp_path / "run" / "logs"
    logged = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")
    assert logged["val_loss"].notna().sum() == card["epochs"]
    assert not list((tmp_path / "run").glob("C/*/logs"))


def test_logger_keys_are_the_lightning_classes_own():
    """config.LOGGERS names each class's keyword arguments (save_dir is the stage's) without importing it."""
    import lightning.pytorch.loggers as loggers

    for target, (_, keys) in LOGGERS.items():
        params = inspect.signature(getattr(loggers, target.rpartition(".")[2])).parameters
        assert set(keys) == set(params) - {"save_dir", "kwargs"}, target


def test_gpu_and_multi_gpu_trainer_configs_compose_and_validate():
    """No GPU here: only that the configs compose and pass the schema (no run is faked)."""
    gpu = checked(compose(["trainer=gpu"]), "test").trainer
    assert (gpu.accelerator, gpu.devices, gpu.strategy, gpu.precision) == ("gpu", 1, "auto", "bf16-mixed")
    multi = checked(compose(["trainer=gpu", "trainer.devices=4", "trainer.strategy=ddp_spawn"]), "test").trainer
    assert (multi.devices, multi.strategy) == (4, "ddp_spawn")


@pytest.mark.parametrize("overrides, names", [
    (["logger=nope"], "logger=nope: unknown logger"),
    (["trainer.devices=0"], "trainer.devices=0"),
    (["trainer.devices=2"], "trainer.strategy=ddp_spawn"),
    (["trainer=ddp", "trainer.strategy=ddp"], "re-runs the whole command"),
    (["logger=mlflow", "+logger.save_dir=x"], "logger.save_dir='x': unknown key for MLFlowLogger"),
    (["trainer=ddp", "compare.workers=2"], "compare.workers=2"),
])
def test_bad_scale_out_and_logger_options_fail_in_one_line(overrides, names):
    with pytest.raises(ConfigError) as error:
        checked(compose(overrides), "config")
    assert names in str(error.value) and "\n" not in str(error.value)
