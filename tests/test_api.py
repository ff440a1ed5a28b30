"""The Python API as a notebook user meets it: examples/quickstart.ipynb executed in a real Jupyter
kernel, its report shown inline, the same cells and numbers as flows/compare.py, one-line errors,
and the configs found from a plain (non-editable) install."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import PYTHON, QUICK_BUDGET, ROOT, topic_frame
from nbclient import NotebookClient
from tiny_encoder import overrides as tiny_encoder

import transferlab as tl
from transferlab.errors import ConfigError, DataError

NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"
SETTINGS = {"strategies": ["linear_probe", "finetune_full"], "train_sizes": [12, 24], "seeds": [0]}
OVERRIDES = [*tiny_encoder(), "strategy.max_epochs=2", *QUICK_BUDGET]

PARAMETERS = f"""import sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from conftest import QUICK_BUDGET, topic_frame
from tiny_encoder import overrides as tiny_encoder
df = topic_frame().rename(columns={{"text": "article"}})
TEXT, LABEL = "article", "topic"
STRATEGIES = {SETTINGS['strategies']!r}
TRAIN_SIZES = {SETTINGS['train_sizes']!r}
SEEDS = {SETTINGS['seeds']!r}
OVERRIDES = {OVERRIDES!r}"""

# appended after the notebook's own cells: one of cmp.plot()'s figures on its own, as a user looks at it
ONE_FIGURE = 'cmp.plot()["learning_curves"]'
# then what it produced, for the assertions
PRODUCED = """import json
own = pd.read_csv(model.path / "predictions.csv")
again = model.predict([own.text[0]])
print(json.dumps({"recommendation": cmp.recommendation, "runs_shape": list(cmp.runs.shape),
                  "path": str(cmp.path.resolve()), "best": str(model.path), "own": own.iloc[0].to_dict(),
                  "again": again.iloc[0].to_dict(), "adapt_accuracy": run.metrics["test_accuracy"],
                  "run": repr(run)}, default=str))"""


def outputs(cell) -> list[dict]:
    return cell.get("outputs", [])


def results(nb, code: str) -> list[str]:
    """The HTML a cell holding `code` showed as its value (not what it displayed on the way)."""
    return [o["data"]["text/html"] for c in nb.cells if code in c.source for o in outputs(c)
            if o["output_type"] == "execute_result" and "text/html" in o["data"]]


@pytest.fixture(scope="module")
def notebook(tmp_path_factory, prefect_api):
    """The quickstart executed top to bottom in a python3 kernel, on the topic data and the tiny
    encoder (its parameters cell replaced), in a fresh folder: (executed notebook, produced values)."""
    work = tmp_path_factory.mktemp("notebook")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    (parameters,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    parameters.source = PARAMETERS
    nb.cells.append(nbformat.v4.new_code_cell(ONE_FIGURE))
    nb.cells.append(nbformat.v4.new_code_cell(PRODUCED))
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    (line,) = [o["text"] for o in outputs(nb.cells[-1]) if o.get("name") == "stdout"]
    return nb, json.loads(line)


def test_the_quickstart_runs_in_a_kernel_and_the_reloaded_best_model_predicts_as_its_run(notebook):
    _, produced = notebook
    assert not any(c.get("outputs") or c.get("execution_count") for c in nbformat.read(NOTEBOOK, 4).cells), \
        "examples/quickstart.ipynb is committed with outputs stripped"
    assert produced["recommendation"].startswith("12-24 labels: use ")
    assert produced["runs_shape"][0] == 4  # 2 strategies x 2 sizes x 1 seed
    own, again = produced["own"], produced["again"]
    assert again["predicted"] == own["predicted"]
    labels = [k for k in own if k.startswith("p_")]
    assert labels and all(abs(float(own[k]) - float(again[k])) < 1e-5 for k in labels)
    assert 0.0 <= produced["adapt_accuracy"] <= 1.0
    assert produced["run"].startswith("Run(linear_probe, train_size=") and "{" not in produced["run"]  # not every metric


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.seen.append((tag, dict(attrs)))


def test_the_comparison_shows_itself_as_html_with_the_verdict_table_and_plots(notebook):
    nb, _ = notebook
    shown = results(nb, "tl.compare(")
    assert len(shown) == 1
    parser = Tags()
    parser.feed(shown[0])
    tags = parser.seen
    assert ("table", {"border": "1", "class": "dataframe", "id": "verdicts"}) in tags
    images = [a for t, a in tags if t == "img" and a.get("src", "").startswith("data:image/png;base64,")]
    assert {a["alt"] for a in images} == {"learning_curves", "accuracy_vs_compute"}
    (plots,) = results(nb, "figures = cmp.plot()")
    assert plots.count("data:image/png;base64,") == 2
    (figure,) = [o["data"] for c in nb.cells if c.source == ONE_FIGURE for o in outputs(c)
                 if o["output_type"] == "execute_result"]
    assert "image/png" in figure, figure  # a Figure of cmp.plot() shows as an image, not its repr


def test_training_progress_renders_as_a_widget_not_escape_codes(notebook):
    nb, _ = notebook
    texts = [o.get("text", "") for c in nb.cells for o in outputs(c)]
    assert not any("\x1b[" in t for t in texts)
    widgets = [o for c in nb.cells for o in outputs(c) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets, "no progress widget shown"


def test_the_api_and_the_compare_flow_give_the_same_cells_and_numbers(notebook, tmp_path):
    """flows/compare.py on a CSV of the same rows, with its own fresh cache: same cells, same
    accuracies and parameter counts (timings aside)."""
    _, produced = notebook
    csv = tmp_path / "topics.csv"
    topic_frame().rename(columns={"text": "article"}).to_csv(csv, index=False)
    listed = lambda xs: "[" + ",".join(map(str, xs)) + "]"  # noqa: E731
    per_cell = "compare.overrides=[" + ",".join(f"'{o}'" for o in OVERRIDES if o.startswith("strategy.")) + "]"
    flow = subprocess.run(
        [PYTHON, str(ROOT / "flows" / "compare.py"), "data=csv", f"data.path={csv}", "data.text_column=article",
         "data.label_column=topic", *[o for o in OVERRIDES if not o.startswith("strategy.")], per_cell,
         f"compare.strategies={listed(SETTINGS['strategies'])}", f"compare.train_sizes={listed(SETTINGS['train_sizes'])}",
         f"compare.seeds={listed(SETTINGS['seeds'])}", f"paths.cache_dir={tmp_path / 'cache'}",
         f"hydra.run.dir={tmp_path / 'flow'}"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert flow.returncode == 0, flow.stderr[-3000:]
    columns = ["strategy", "train_size", "seed", "test_accuracy", "val_accuracy", "train_accuracy",
               "trainable_params", "total_params", "test_size", "val_size"]
    order = ["strategy", "train_size", "seed"]
    api_runs = pd.read_csv(Path(produced["path"]) / "runs.csv")[columns].sort_values(order).reset_index(drop=True)
    flow_runs = pd.read_csv(tmp_path / "flow" / "runs.csv")[columns].sort_values(order).reset_index(drop=True)
    pd.testing.assert_frame_equal(api_runs, flow_runs)


def small(tmp_path: Path) -> list[str]:
    return [*tiny_encoder(), f"paths.cache_dir={tmp_path / 'cache'}", "trainer.enable_progress_bar=false"]


@pytest.mark.parametrize("arguments, error, says", [
    ({"strategies": ["linear_probe", "nope"]}, ConfigError, ("strategy=nope", "unknown strategy", "lp_ft")),
    ({"label": "stars"}, DataError, ("label='stars'", "no such column", "topic")),
    ({"data": topic_frame().query("topic == 'sport'")}, DataError, ("the DataFrame: ", "at least 2 classes", "sport")),
    ({"train_sizes": [500]}, DataError, ("compare.train_sizes[0]=500", "only")),
    ({"overrides": ["strategy=lora"]}, ConfigError, ("strategy=lora", "strategies=[...]")),
    ({"seeds": [0, -1]}, ConfigError, ("compare.seeds[1]=-1", "[0, 4294967295]")),
    ({"seeds": [0, 1, 0]}, ConfigError, ("compare.seeds=[0, 1, 0]", "0 is listed twice")),
], ids=["unknown-strategy", "missing-column", "one-class", "train-size-above-rows", "strategy-override",
        "negative-seed", "repeated-seed"])
def test_bad_arguments_raise_the_projects_errors_in_one_line_and_leave_no_run_folder(arguments, error, says, tmp_path):
    arguments = {"data": topic_frame(), "label": "topic", **arguments}
    arguments["overrides"] = [*small(tmp_path), *arguments.get("overrides", [])]
    with pytest.raises(error) as raised:
        tl.compare(**arguments, out_dir=tmp_path / "out", prefect=False)
    message = str(raised.value)
    assert "\n" not in message and all(part in message for part in says), message
    assert ".parquet" not in message  # the DataFrame, not the cache's copy of it
    assert raised.value.__cause__ is None  # no chain of Prefect's or Hydra's frames under it
    assert raised.value.__context__ is None or raised.value.__suppress_context__
    assert not (tmp_path / "out").exists()


def test_one_override_string_is_one_override_and_data_of_another_kind_is_named(tmp_path):
    """overrides="..." is one override, not its characters parsed one by one; data that is neither a
    DataFrame nor a path says so in one line rather than raising pathlib's TypeError."""
    with pytest.raises(ConfigError, match=r"^strategy=lora: a comparison runs each of its strategies"):
        tl.compare(topic_frame(), label="topic", overrides="strategy=lora", out_dir=tmp_path / "out", prefect=False)
    with pytest.raises(ConfigError, match=r"^overrides: 3 is not a string"):
        tl.adapt(topic_frame(), label="topic", overrides=["seed=1", 3], out_dir=tmp_path / "out", prefect=False)
    with pytest.raises(DataError, match=r"^data: a list is not a DataFrame, a \.csv/\.parquet path"):
        tl.compare(["a review", "another"], label="topic", out_dir=tmp_path / "out", prefect=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("prefect_api")
def test_bad_data_under_the_prefect_flow_raises_the_same_one_line_error(tmp_path):
    with pytest.raises(DataError, match=r"^compare\.train_sizes\[0\]=500: only \d+ training rows are available$"):
        tl.compare(topic_frame(), label="topic", train_sizes=[500], overrides=small(tmp_path), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


INTERRUPTED = """import sys
sys.path.insert(0, {tests!r})
from conftest import QUICK_BUDGET, topic_frame
from tiny_encoder import overrides
import transferlab as tl
try:
    tl.adapt(topic_frame(), label="topic", strategy="finetune_full", out_dir={run!r}, overrides=[*overrides(),
             *QUICK_BUDGET, "strategy.max_epochs=100000", "strategy.patience=100000",
             "trainer.enable_progress_bar=false", "paths.cache_dir={cache}"])
except KeyboardInterrupt:
    sys.exit(130)"""


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_a_kernel_interrupt_stops_the_fit_in_prefects_task_thread(tmp_path):
    """Jupyter's interrupt is SIGINT, which reaches only the main thread, where the flow waits: the
    fit in the task thread trained on to its end (here: never). Now it stops at its next batch and
    the call raises KeyboardInterrupt. (max_epochs is far more than the 120 s allowed.)"""
    run = tmp_path / "run"
    code = INTERRUPTED.format(tests=str(ROOT / "tests"), run=str(run), cache=tmp_path / "cache")
    proc = subprocess.Popen([PYTHON, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 240
        while not (run / "logs").is_dir():  # the fit has begun
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert not (run / "model.safetensors").exists() and (run / "clock.json").is_file()  # its time counts on resume


def test_a_plain_install_finds_conf_as_package_data(tmp_path):
    """A wheel (not the editable checkout) carries conf/; composed from there it equals the checkout's."""
    subprocess.run([PYTHON, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
                    "-w", str(tmp_path / "wheel")], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "wheel").glob("transferlab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"transferlab/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")} <= set(names)
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    probe = ("import json, transferlab.config as c; from omegaconf import OmegaConf; "
             "print(json.dumps([str(c.CONF_DIR), OmegaConf.to_container(c.compose(['strategy=lp_ft']))]))")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    conf_dir, composed = json.loads(out.stdout)
    assert Path(conf_dir) == tmp_path / "site" / "transferlab" / "conf"
    from omegaconf import OmegaConf

    from transferlab.config import compose

    assert composed == OmegaConf.to_container(compose(["strategy=lp_ft"]))
    assert sys.modules["transferlab"].__file__.startswith(str(ROOT))


def test_a_budget_through_the_api_shows_its_plan(tmp_path):
    """budget= is compare.budget: a budget the heads use up leaves every fine-tuning cell skipped."""
    cmp = tl.compare(topic_frame(), label="topic", strategies=["linear_probe", "finetune_full"], train_sizes=[12],
                     budget="0.5s", overrides=small(tmp_path), out_dir=tmp_path / "out", prefect=False)
    assert dict(zip(cmp.plan.cell, cmp.plan.status)) == {"linear_probe-n12-s0": "ran", "finetune_full-n12-s0": "skipped"}
    assert "of the budget left" in cmp.plan.set_index("cell").reason["finetune_full-n12-s0"]
    loaded = tl.load(cmp.path)
    assert written(loaded) == written(cmp) and loaded.result["not_bought"].startswith("Not bought by the budget")
    best = loaded.best()  # no verdict without a fine-tuning run: the best head on validation
    assert best.strategy == "linear_probe" and cmp.path.is_absolute()
    (row,) = best.predict("The striker scored twice in the cup final").itertuples()  # one text, one row
    assert row.predicted in best.labels


def test_a_loaded_comparison_is_the_one_compare_returned(tmp_path):
    """tl.load of a comparison's folder: the same recommendation, verdicts (one row per size),
    failed runs and repr as the object tl.compare returned, read back from the files it wrote."""
    fresh = tl.compare(topic_frame(), label="topic", strategies=["linear_probe", "finetune_full"],
                       train_sizes=[12, 24], seeds=[0], overrides=[*small(tmp_path), "strategy.max_epochs=1"],
                       out_dir=tmp_path / "out", prefect=False)
    loaded = tl.load(tmp_path / "out")
    assert loaded.recommendation == fresh.recommendation and fresh.recommendation.startswith("12-24 labels: use ")
    assert len(fresh.verdicts) == 2 and list(fresh.verdicts.train_size) == [12, 24]
    pd.testing.assert_frame_equal(loaded.verdicts, fresh.verdicts)
    assert loaded.failed_runs == fresh.failed_runs == []
    assert repr(loaded) == repr(fresh) and written(loaded) == written(fresh)


def written(cmp: tl.Comparison) -> dict:
    """A comparison's result but the extraction cost (summary.json keeps it to 3 decimals)."""
    return {k: v for k, v in cmp.result.items() if k != "extraction_seconds"}
