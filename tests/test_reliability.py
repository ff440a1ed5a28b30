"""Reliability with real processes, on the tiny encoder through the real pipeline: a fine-tuning run
killed with SIGKILL and resumed, bit-identical reruns, and checkpoints that cannot run code.
Concurrent runs on one cache: tests/test_flow.py."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import PYTHON, ROOT, run_cell, topic_config, topic_frame, QUICK_BUDGET
from omegaconf import OmegaConf
from safetensors.torch import load_file
from tiny_encoder import overrides as tiny_encoder

from transferlab.checkpoints import LEFT_OUT, FileCheckpointIO, digest, load_checkpoint
from transferlab.errors import DataError
from transferlab.models import build_finetune_module
from transferlab.stages import prepare, train
from transferlab.strategy import resolve
from transferlab.trainer import build_trainer

# the only metrics allowed to differ between identical runs: measured times (the cost ledger) and memory
TIMING = ("train_seconds", "peak_memory_mb", "backbone_load_seconds", "extraction_seconds", "cost_to_train_seconds", "inference_seconds_per_1k")


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


def as_json(cfg) -> str:
    """A config as a subprocess receives it (the flows pass their tasks plain containers too)."""
    return json.dumps(OmegaConf.to_container(cfg, resolve=True))


# --- a fine-tuning run killed with SIGKILL, then rerun ---------------------------------------------

MAX_EPOCHS = 3
FINETUNE = ("strategy=finetune_last_n", f"strategy.max_epochs={MAX_EPOCHS}", *QUICK_BUDGET, "strategy.patience=5")

# The cell through transferlab.pipeline in a process of its own, which holds still after the first
# batch of epoch 1 (epoch 0 checkpointed, epoch 1 under way) and says so: the tiny model trains an
# epoch in milliseconds, so a kill timed from outside could land after the last epoch.
RUN = """
import json, sys, time
from pathlib import Path
from omegaconf import OmegaConf
from transferlab import pipeline
from transferlab.config import checked
from transferlab.trainer import EpochSeed
cfg, run, stalled = json.loads(sys.argv[1])
step = EpochSeed.on_train_batch_start
def hold_in_epoch_1(self, trainer, module, batch, batch_idx):
    if trainer.current_epoch == 1 and batch_idx == 1:
        Path(stalled).touch()
        time.sleep(600)
    step(self, trainer, module, batch, batch_idx)
EpochSeed.on_train_batch_start = hold_in_epoch_1
pipeline.run_cell(checked(OmegaConf.create(cfg), "test"), run)
"""


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """An uninterrupted fine-tuning run: its root, config and metrics."""
    root = tmp_path_factory.mktemp("finetune")
    cfg = topic_config(root, *FINETUNE, "strategy.batch_size=8")  # a few batches an epoch
    return root, cfg, run_cell(cfg, root / "uninterrupted")


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.mark.slow
def test_killed_finetune_resumes_from_its_last_checkpoint_to_the_same_result(finetuned, tmp_path):
    root, cfg, expected = finetuned
    run = root / "killed"
    last = run / "checkpoints" / "last.ckpt"
    stalled = tmp_path / "stalled"
    proc = subprocess.Popen([PYTHON, "-c", RUN, json.dumps([json.loads(as_json(cfg)), str(run), str(stalled)])],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(stalled, proc)  # epoch 0 is over and checkpointed; the next one is under way
    assert last.is_file()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model.safetensors").exists() and not (run / "metrics.json").exists()
    killed = load_checkpoint(last)
    stopped_after = killed["epoch"]
    assert killed[LEFT_OUT]  # the frozen blocks are not in it: resuming fills them back in
    assert stopped_after < MAX_EPOCHS - 1  # killed before the last epoch ended

    metrics = run_cell(cfg, run)  # the same command again
    assert json.loads((run / "model.json").read_text())["resumed_after_epoch"] == stopped_after
    assert (run / f"logs.until-epoch-{stopped_after}" / "metrics.csv").is_file()  # the killed run's curves
    assert metrics["epochs"] == expected["epochs"]
    assert without_timing(metrics) == without_timing(expected)
    assert (run / "predictions.csv").read_bytes() == (root / "uninterrupted" / "predictions.csv").read_bytes()
    resumed, uninterrupted = (load_file(r / "model.safetensors") for r in (run, root / "uninterrupted"))
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)



def test_a_run_folder_reused_with_another_config_trains_from_scratch(finetuned, tmp_path, caplog):
    """A finished run's folder rerun with another learning rate: its last.ckpt is another fit's, so
    the run starts over (nothing resumed, no earlier attempts counted) and ends as a run of that
    config in a new folder does, not as the old model scored again."""
    root, cfg, _ = finetuned
    other = topic_config(root, *FINETUNE, "strategy.batch_size=8", f"strategy.lr={cfg.strategy.lr * 10}")
    reused = tmp_path / "reused"
    shutil.copytree(root / "uninterrupted", reused)
    metrics = run_cell(other, reused)
    card = json.loads((reused / "model.json").read_text())
    assert "resumed_after_epoch" not in card and "earlier_attempts_seconds" not in card
    assert "another config, data or code: training from scratch" in caplog.text
    assert without_timing(metrics) == without_timing(run_cell(other, tmp_path / "fresh"))
    weights = {name: load_file(tmp_path / name / "model.safetensors") for name in ("reused", "fresh")}
    old = load_file(root / "uninterrupted" / "model.safetensors")
    assert all(torch.equal(weights["reused"][k], weights["fresh"][k]) for k in old)
    assert not all(torch.equal(weights["reused"][k], old[k]) for k in old)


def interrupted(tmp_path: Path, *overrides: str, group: bool, env: dict | None = None) -> tuple[str, str, Path]:
    """A flow fine-tuning for ever (max_epochs far more than the 120 s allowed: only the interrupt
    can end it in time), sent SIGINT once its first checkpoint is written: to its main process, or to
    its whole process group as a terminal's Ctrl-C is. It must end in one line, code 130:
    (stdout, stderr, run folder)."""
    topic_frame().to_csv(tmp_path / "topics.csv", index=False)
    run = tmp_path / "run"
    proc = subprocess.Popen([PYTHON, "flows/adapt.py", *overrides, "data=csv", f"data.path={tmp_path / 'topics.csv'}",
                             "data.label_column=topic", *tiny_encoder(), *FINETUNE[:1], "strategy.max_epochs=100000",
                             *QUICK_BUDGET, "strategy.patience=100000", "trainer.enable_progress_bar=false",
                             f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_for(run / "checkpoints" / "last.ckpt", proc)
        if group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group may have ended whole
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("interrupted: "), err[-3000:]
    return out, err, run


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_ctrl_c_stops_a_flows_fine_tune_at_its_next_batch(tmp_path):
    """SIGINT reaches only the main thread, where the flow waits, while the fit runs in a task
    thread: it used to train on to its end before the process could exit. Now the fit stops at its
    next batch, its last checkpoint left to resume from, and the command ends in one line, code 130,
    without Prefect's lines about the runs it ended."""
    out, err, run = interrupted(tmp_path, group=False)
    assert "Crash detected" not in out + err and "NotReady" not in out + err, out[-3000:]
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] < 100000 - 1
    assert not (run / "model.safetensors").exists() and (run / "clock.json").is_file()  # its time counts on resume


@pytest.mark.slow
def test_a_terminals_ctrl_c_ends_in_one_line_with_prefects_ephemeral_server_too(tmp_path):
    """A terminal's Ctrl-C reaches the whole process group: Prefect's ephemeral server ends too, and
    the flow's crash handler then failed to reach it in a long traceback (and its event client
    logged errors). With no PREFECT_API_URL, as a user without a server runs it."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    out, err, _ = interrupted(tmp_path, group=True, env=env)
    assert "Traceback" not in out + err and "EventsWorker" not in out + err, (out + err)[-3000:]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")  # a server of its own: a group's SIGINT would end an ephemeral one too
@pytest.mark.parametrize("group", [False, True], ids=["the main process", "the process group"])
def test_ctrl_c_stops_a_ddp_fine_tune_too(tmp_path, group):
    """trainer=ddp fits in spawned workers, each with its own interrupt flag. A SIGINT to the main
    process alone reached no worker: the fit trained on to its end. A terminal's Ctrl-C (the whole
    group) raised KeyboardInterrupt in the workers, which then exited 0 with no result, and the
    command waited for it forever; then a worker stopping a batch before its peer left that peer in a
    collective, in gloo's traceback or, now and then, for good. Both now end in one line, code 130,
    with last.ckpt to resume from."""
    out, err, run = interrupted(tmp_path, "trainer=ddp", group=group)
    assert "Crash detected" not in out + err, err[-3000:]
    # the workers stop at the same batch: none is left in a collective its peer quit (gloo's traceback, a hang)
    assert "Traceback" not in out + err, err[-3000:]
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] < 100000 - 1
    assert not (run / "model.safetensors").exists()


# --- determinism ----------------------------------------------------------------------------------

def test_same_config_and_seed_give_identical_metrics(finetuned):
    """A second fine-tuning run from scratch: metrics.json identical but for wall time and memory."""
    root, cfg, expected = finetuned
    again = run_cell(cfg, root / "again")
    saved = json.loads((root / "again" / "metrics.json").read_text())
    assert saved == again
    assert without_timing(again) == without_timing(expected)
    assert (root / "again" / "predictions.csv").read_bytes() == \
        (root / "uninterrupted" / "predictions.csv").read_bytes()


def test_a_head_strategy_with_dropout_is_deterministic_too(tmp_path):
    cfg = topic_config(tmp_path, "strategy=mlp_head", "strategy.head.dropout=0.3", "strategy.max_epochs=20")
    first, second = (run_cell(cfg, tmp_path / name) for name in ("first", "second"))
    assert without_timing(first) == without_timing(second)
    assert (tmp_path / "first" / "predictions.csv").read_bytes() == \
        (tmp_path / "second" / "predictions.csv").read_bytes()


# --- safe loading ---------------------------------------------------------------------------------

class WritesAFile:
    """What a malicious checkpoint carries: unpickling it calls open(path, "w")."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_a_checkpoint_carrying_pickled_code_is_refused_not_run(tmp_path):
    cfg = topic_config(tmp_path, *FINETUNE)
    data = prepare.run(cfg.data, cfg.seed, tmp_path / "data")
    probe = tmp_path / "the_payload_works"
    torch.save({"x": WritesAFile(probe)}, tmp_path / "probe.ckpt")
    torch.load(tmp_path / "probe.ckpt", weights_only=False)  # what an unsafe load would do
    assert probe.exists()

    marker = tmp_path / "written_by_the_checkpoint"
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    torch.save({"epoch": 0, "state_dict": {"head.weight": WritesAFile(marker)}}, last)
    with pytest.raises(DataError) as raised:
        train.run(cfg, data, None, tmp_path / "run")
    message = str(raised.value)
    assert "\n" not in message and str(last) in message and "refused" in message and "would call io.open" in message
    assert not marker.exists()


def test_checkpoints_leave_out_the_weights_no_optimizer_updates(finetuned):
    """A last-N run's checkpoints hold the trained blocks, the head and every buffer; each frozen
    weight is left out with a digest, which is that of the rebuilt model's weight and of the
    run's saved model's (the frozen blocks never changed)."""
    root, cfg, _ = finetuned
    module = build_finetune_module(cfg, resolve(cfg), 3)
    own = module.state_dict()
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    assert frozen and any(p.requires_grad for p in module.backbone.parameters())
    saved = load_file(root / "uninterrupted" / "model.safetensors")
    for name in ("last.ckpt", "best.ckpt"):
        ckpt = load_checkpoint(root / "uninterrupted" / "checkpoints" / name)
        assert set(ckpt["state_dict"]) == set(own) - frozen and set(ckpt[LEFT_OUT]) == frozen
        assert all(ckpt[LEFT_OUT][n] == digest(own[n]) == digest(saved[n]) for n in frozen)


def test_a_checkpoint_write_that_fails_leaves_the_last_one_whole(tmp_path):
    """Checkpoints stream into a temporary file renamed when complete: a save that fails half-way
    (here an object torch.save cannot pickle, after the tensors) keeps the earlier last.ckpt, and
    leaves nothing else behind."""
    io = FileCheckpointIO()
    last = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 0, "state_dict": {"w": torch.ones(1000)}}, last)
    with pytest.raises(Exception, match="pickle"):
        io.save_checkpoint({"epoch": 1, "state_dict": {"w": torch.zeros(1000)}, "hook": lambda: None}, last)
    kept = load_checkpoint(last)
    assert kept["epoch"] == 0 and torch.equal(kept["state_dict"]["w"], torch.ones(1000))
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]


def test_every_fit_and_the_cost_probe_write_checkpoints_through_it(tmp_path):
    """build_trainer's Trainer (every fit) and the planner's probe write with FileCheckpointIO."""
    cfg = topic_config(tmp_path, *FINETUNE)
    trainer = build_trainer(cfg, resolve(cfg), tmp_path / "run", resumable=True, train_rows=40, logger=False)
    assert isinstance(trainer.strategy.checkpoint_io, FileCheckpointIO)
    probe = ast.parse((ROOT / "src" / "transferlab" / "training.py").read_text())
    [fn] = [n for n in ast.walk(probe) if isinstance(n, ast.FunctionDef) and n.name == "probe_rate"]
    [plugins] = [k.value for c in ast.walk(fn) if isinstance(c, ast.Call) for k in c.keywords if k.arg == "plugins"]
    assert ast.unparse(plugins) == "[FileCheckpointIO()]"


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr == name]


def keyword_is_true(call: ast.Call, key: str) -> bool:
    return any(k.arg == key and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords)


def test_every_load_of_a_checkpoint_is_weights_only():
    """torch.load only with weights_only=True, Lightning's resume too, and no pickle anywhere."""
    sources = {path: ast.parse(path.read_text()) for folder in ("src", "flows")
               for path in (ROOT / folder).rglob("*.py")}
    for path, tree in sources.items():
        loads = [c for c in calls(tree, "load") if isinstance(c.func.value, ast.Name) and c.func.value.id == "torch"]
        assert all(keyword_is_true(c, "weights_only") for c in loads), f"{path}: torch.load without weights_only=True"
        resumes = [c for c in calls(tree, "fit") if any(k.arg == "ckpt_path" for k in c.keywords)]
        assert all(keyword_is_true(c, "weights_only") for c in resumes), f"{path}: fit(ckpt_path=...) not weights_only"
        imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not ({"pickle", "dill", "joblib"} & (imported | modules)) or path.name == "checkpoints.py", path
