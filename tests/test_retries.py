"""The compare flow's failure policy, on real Prefect task runs: a crash is retried once, bad input
is not (it would fail the same way), and either way the other runs of the flow complete."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from conftest import topic_frame

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def test_a_crashed_run_is_retried_bad_input_is_not_and_neither_stops_the_others(tmp_path):
    from transferlab.orchestration import configure_prefect
    from conftest import ROOT

    configure_prefect(ROOT)
    from prefect import flow
    from prefect.client.orchestration import get_client

    from transferlab.config import checked, compose
    from transferlab.stages import prepare
    from transferlab.tasks import train_task

    topic_frame().to_csv(tmp_path / "topics.csv", index=False)
    cfg = checked(compose(["data=csv", f"data.path={tmp_path / 'topics.csv'}", "data.label_column=topic",
                           "strategy=lora", "strategy.max_epochs=1", "backbone.max_length=16"]), "test")
    data_dir = str(prepare.run(cfg.data, cfg.seed, tmp_path / "data"))
    good = OmegaConf.to_container(cfg, resolve=True)
    bad_input = OmegaConf.to_container(OmegaConf.merge(cfg, {"strategy": {"lora": {"target_modules": ["nope"]}}}))
    (tmp_path / "a_file").write_text("not a directory")

    @flow
    def three_runs() -> dict:
        futures = {"crash": train_task.submit(good, data_dir, None, str(tmp_path / "a_file" / "run")),
                   "bad_input": train_task.submit(bad_input, data_dir, None, str(tmp_path / "bad")),
                   "ok": train_task.submit(good, data_dir, None, str(tmp_path / "ok"))}
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
