"""The compare flow's failure policy, on real Prefect task runs: a crash is retried once and says
why (console and run folder), its training time counts every attempt; bad input is not retried;
neither stops the other runs; and a comparison whose cells overlap in time needs no retry at all."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import QUICK_BUDGET, compare_run, quick_compare, topic_config, topic_frame

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def test_a_crashed_run_is_retried_bad_input_is_not_and_neither_stops_the_others(tmp_path, flows):
    from prefect import flow
    from prefect.client.orchestration import get_client

    from transferlab.pipeline import prepare_step

    cfg = topic_config(tmp_path, "strategy=lora", "strategy.max_epochs=1", *QUICK_BUDGET)
    data_dir = prepare_step(OmegaConf.to_container(cfg.data), cfg.seed, str(cfg.paths.cache_dir))
    good = OmegaConf.to_container(cfg, resolve=True)
    bad_input = OmegaConf.to_container(OmegaConf.merge(cfg, {"strategy": {"lora": {"target_modules": ["nope"]}}}))
    (tmp_path / "a_file").write_text("not a directory")

    @flow
    def three_runs() -> dict:
        futures = {"crash": flows.train_task.submit(good, data_dir, None, str(tmp_path / "a_file" / "run")),
                   "bad_input": flows.train_task.submit(bad_input, data_dir, None, str(tmp_path / "bad")),
                   "ok": flows.train_task.submit(good, data_dir, None, str(tmp_path / "ok"))}
        for future in futures.values():
            future.wait()
        return {name: (future.state.type.value, future.task_run_id) for name, future in futures.items()}

    states = three_runs()
    with get_client(sync_client=True) as client:
        runs = {name: client.read_task_run(run_id).run_count for name, (_, run_id) in states.items()}
    assert {name: state for name, (state, _) in states.items()} == \
        {"crash": "FAILED", "bad_input": "FAILED", "ok": "COMPLETED"}
    assert runs == {"crash": 2, "bad_input": 1, "ok": 1}
    assert (tmp_path / "ok" / "model.safetensors").is_file()


def unblock_after_the_first_failure(run_dir: Path, blocker: Path, seen: dict) -> threading.Thread:
    """Once the first attempt has recorded its failure, note the time its clock kept and remove
    what made it fail, so the retry can succeed (as a passing fault would)."""
    def watch() -> None:
        deadline = time.monotonic() + 300
        while not (run_dir / "failures.jsonl").is_file() and time.monotonic() < deadline:
            time.sleep(0.02)
        clock = run_dir / "clock.json"
        seen["clock"] = json.loads(clock.read_text())["seconds"] if clock.is_file() else None
        blocker.unlink()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_cell_that_fails_once_says_why_and_counts_both_attempts(tmp_path, flows, caplog):
    """The first attempt trains an epoch, then cannot write its checkpoint (a file is in the way of
    the checkpoints folder); the retry succeeds. The failure's reason is in the console (a warning)
    and in the run folder, and train_seconds includes the failed attempt's training time."""
    topic_frame(copies=15).to_csv(tmp_path / "topics.csv", index=False)
    cfg = topic_config(tmp_path, "compare.strategies=[finetune_full]", "compare.train_sizes=[all]",
                       "compare.seeds=[0]", quick_compare("strategy.max_epochs=3"))
    cfg.data.path = str(tmp_path / "topics.csv")
    out = tmp_path / "compare"
    run_dir = out / "runs" / "finetune_full-nall-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoints").write_text("in the way")
    seen: dict = {}
    watcher = unblock_after_the_first_failure(run_dir, run_dir / "checkpoints", seen)
    result, runs = compare_run(flows, cfg, out)
    watcher.join(timeout=10)

    assert result["failed_runs"] == []
    [train] = [r for r in runs if r.name.startswith("train")]
    assert train.run_count == 2 and train.state.is_completed()
    [failure] = [json.loads(line) for line in (run_dir / "failures.jsonl").read_text().splitlines()]
    assert failure["error"].startswith("FileExistsError") and failure["seconds"] > 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(run_dir) in m and "training failed" in m and "FileExistsError" in m for m in warned), warned
    assert any("retrying" in m for m in warned), warned
    card = json.loads((run_dir / "model.json").read_text())
    assert seen["clock"] is not None and seen["clock"] > 0  # the first attempt trained before failing
    assert card["earlier_attempts_seconds"] == round(seen["clock"], 3)
    assert card["train_seconds"] > card["earlier_attempts_seconds"]
    assert not (run_dir / "clock.json").exists()


def test_two_strategies_two_seeds_overlapping_in_time_need_no_retry(tmp_path, flows):
    """Threads: a fine-tune trains (with its progress bar) while the flow's thread extracts the next
    seed's new inputs (with its own): the bars must not tear each other down (issue: IndexError
    'pop from empty list' after the last epoch, then a retry that trained nothing)."""
    topic_frame(copies=15).to_csv(tmp_path / "topics.csv", index=False)
    cfg = topic_config(tmp_path, "compare.strategies=[finetune_full,linear_probe]", "compare.train_sizes=[all]",
                       "compare.seeds=[0,1]", quick_compare("strategy.max_epochs=3"), "data.limit=120",
                       "extract.batch_size=1", "trainer.enable_progress_bar=true")
    cfg.data.path = str(tmp_path / "topics.csv")
    result, runs = compare_run(flows, cfg, tmp_path / "compare")
    assert result["failed_runs"] == []
    assert [r.run_count for r in runs] == [1] * len(runs) and all(r.state.is_completed() for r in runs)
    assert len([r for r in runs if r.name.startswith("train")]) == 4
    assert not list((tmp_path / "compare").rglob("failures.jsonl"))
