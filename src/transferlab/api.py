"""The Python API: compare strategies on a DataFrame or a file from a notebook, adapt one, predict.

    import transferlab as tl
    cmp = tl.compare(df, text="review", label="stars", strategies=["linear_probe", "finetune_full"],
                     train_sizes=[50, 200], seeds=[0, 1], overrides=["strategy.max_epochs=3"])
    cmp                       # in Jupyter: the report (verdicts, tables, plots)
    cmp.best().predict(["a new review"])

A thin front end like flows/compare.py: the arguments become the same Hydra overrides, composed
from the same conf/ and checked by the same rules, and the grid runs through the same Prefect flow
(or, with prefect=False, the same pipeline in this process) into a run folder of the same layout.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from transferlab import interrupt
from transferlab.atomic import atomic_path
from transferlab.config import CONF_DIR, checked, compose, parsed
from transferlab.errors import ConfigError, DataError, TransferlabError

# --- arguments -> Hydra overrides ------------------------------------------------------------------

def quoted(value: Any) -> str:
    """A value as a quoted string of Hydra's override grammar (paths and column names may hold
    spaces, commas or brackets)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def listed(values: Sequence[Any], quote: bool = False) -> str:
    return "[" + ",".join(quoted(v) if quote else str(v) for v in values) + "]"


def frame_file(frame: pd.DataFrame, text: str, label: str, cache_dir: Path) -> Path:
    """The DataFrame's two columns as a Parquet file named by their content: the same data is the
    same file, so prepared splits, features and trained runs are found again on a rerun."""
    for argument, column in (("text", text), ("label", label)):
        if column not in frame.columns:
            raise DataError(f"{argument}={column!r}: no such column in the DataFrame; "
                            f"columns are {list(map(str, frame.columns))}")
    table = frame[[text, label]].reset_index(drop=True)
    digest = hashlib.sha256(json.dumps([list(map(str, table.columns)), list(map(str, table.dtypes))]).encode())
    digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    path = (cache_dir / "frames" / f"{digest.hexdigest()[:20]}.parquet").resolve()
    if not path.is_file():
        try:
            with atomic_path(path) as tmp:
                table.to_parquet(tmp, index=False)
        except (ValueError, TypeError) as exc:  # pyarrow: columns of mixed types
            raise DataError(f"the DataFrame's columns {text!r}, {label!r} cannot be stored as Parquet "
                            f"({str(exc).splitlines()[0]})") from None
    return path


def data_overrides(data: Any, text: str, label: str, cache_dir: Path) -> list[str]:
    """`data` as overrides: a DataFrame or a CSV/Parquet file (data=csv), an image folder
    (data=image_folder), the name of a data set in conf/data/, or None (the configured default)."""
    if data is None:
        return []
    columns = [f"data.text_column={quoted(text)}", f"data.label_column={quoted(label)}"]
    if isinstance(data, pd.DataFrame):
        return ["data=csv", "data.name=dataframe", f"data.path={quoted(frame_file(data, text, label, cache_dir))}",
                *columns]
    if not isinstance(data, (str, Path)):
        raise DataError(f"data: a {type(data).__name__} is not a DataFrame, a .csv/.parquet path, an image "
                        "folder or the name of a data set")
    path = Path(data)
    if isinstance(data, str) and not path.exists() and (CONF_DIR / "data" / f"{data}.yaml").is_file():
        return [f"data={data}"]
    if path.is_dir():
        return ["data=image_folder", f"data.path={quoted(path.resolve())}"]
    if path.suffix.lower() in (".csv", ".parquet"):
        if not path.is_file():
            raise DataError(f"{path}: data file not found")
        return ["data=csv", f"data.path={quoted(path.resolve())}", *columns]
    known = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))
    raise DataError(f"{data}: not a DataFrame, a .csv/.parquet file, an image folder or a data set of {known}")


def override_list(overrides: Sequence[str] | str) -> list[str]:
    """`overrides` as a list of override strings: one string is one override (a str is itself a
    sequence, and its characters were parsed as overrides 'b', 'a', ...)."""
    overrides = [overrides] if isinstance(overrides, str) else list(overrides)
    wrong = [o for o in overrides if not isinstance(o, str)]
    if wrong:
        raise ConfigError(f"overrides: {wrong[0]!r} is not a string such as 'strategy.max_epochs=3'")
    return overrides


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(overrides of the comparison, strategy.* overrides that compare.overrides applies to every cell)."""
    overrides = list(overrides)
    common, per_cell = [], []
    for text, override in zip(overrides, parsed(overrides)):
        key = override.key_or_group
        if key == "strategy":
            raise ConfigError(f"{text}: a comparison runs each of its strategies; pass strategies=[...]")
        if key == "compare.overrides":
            raise ConfigError(f"{text}: pass strategy.* overrides directly in overrides=[...]")
        (per_cell if key.startswith("strategy.") else common).append(text)
    return common, per_cell


def composed(data: Any, text: str, label: str, overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """conf/ composed with the data's overrides and `overrides`, checked: (config, all overrides)."""
    cache_dir = Path(compose(overrides).paths.cache_dir)
    everything = [*data_overrides(data, text, label, cache_dir), *overrides]
    return checked(compose(everything), "config"), everything


def as_list(value: Any, name: str) -> list:
    if value is None:
        return []
    items = [value] if isinstance(value, (str, int, float)) else list(value)
    if not items:
        raise ConfigError(f"{name}=[]: give at least one")
    return items


def default_out_dir(kind: str, cfg: DictConfig) -> Path:
    """outputs/<kind>/<data>-<key of the whole config>: the same settings find their earlier run
    folder (and with Prefect its cached steps); other settings get their own."""
    key = hashlib.sha256(json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True,
                                    default=str).encode()).hexdigest()[:12]
    return Path("outputs") / kind / f"{cfg.data.name}-{key}"


def record(out_dir: Path, cfg: DictConfig, overrides: list[str]) -> None:
    """Hydra's own record of a run, as flows/*.py leave it: .hydra/config.yaml and overrides.yaml."""
    for name, content in (("config.yaml", OmegaConf.to_yaml(cfg)), ("overrides.yaml", OmegaConf.to_yaml(overrides))):
        with atomic_path(out_dir / ".hydra" / name) as tmp:
            tmp.write_text(content)


# --- running ---------------------------------------------------------------------------------------

def prefect_flows():
    """transferlab.flows, Prefect configured first as flows/*.py configure it (settings of the
    user's own environment win)."""
    from transferlab.entry import configure_prefect

    configure_prefect(Path.cwd())
    from transferlab import flows

    return flows


@contextmanager
def interruptible():
    """Ctrl-C (a kernel interrupt in Jupyter) stops a fit in Prefect's task thread at its next batch,
    as in the flow scripts (transferlab.interrupt): SIGINT reaches only the main thread, and the fit
    trained on to its end. The earlier handler is back afterwards; a request left from an earlier
    interrupt is cleared first, or it would stop this call's fits at their first batch."""
    if threading.current_thread() is not threading.main_thread():  # only it may set a handler
        yield
        return
    interrupt.REQUESTED.clear()
    previous = signal.getsignal(signal.SIGINT)
    interrupt.install()
    try:
        yield
    finally:
        if previous is not None:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGINT, previous)


def launched(call, out_dir: Path, cfg: DictConfig):
    """`call()`, interruptible; bad input raised as the project's error alone (no frames of Prefect's
    engine), in the caller's terms, and the run folder left as it was before."""
    from transferlab.entry import discard_run_dir

    try:
        with interruptible():
            return call()
    except TransferlabError as exc:
        discard_run_dir(out_dir)
        raise type(exc)(in_callers_terms(str(exc), cfg)) from None


def in_callers_terms(message: str, cfg: DictConfig) -> str:
    """A DataFrame's errors name the DataFrame, not the content-addressed Parquet copy runs read."""
    return message.replace(str(cfg.data.path), "the DataFrame") if cfg.data.name == "dataframe" else message


# --- results ---------------------------------------------------------------------------------------

def is_input_path(text: str) -> bool:
    """A string names a file of inputs (an existing folder or a .csv/.parquet path), else it is a text."""
    return Path(text).is_dir() or Path(text).suffix.lower() in (".csv", ".parquet")


@dataclass
class Model:
    """A trained run's model, reloaded from its folder: `predict` labels new inputs."""

    path: Path

    def __post_init__(self) -> None:
        from transferlab.models import load_trained

        self.trained = load_trained(self.path)

    @property
    def strategy(self) -> str:
        return self.trained.cfg.strategy.name

    @property
    def labels(self) -> list[str]:
        return self.trained.labels

    def predict(self, inputs: Sequence[Any] | str | Path, column: str | None = None) -> pd.DataFrame:
        """One row per input: the input, the predicted label and a probability per label.
        `inputs`: texts (or encoded images) as a list, one text, or a CSV/Parquet file / image folder."""
        from transferlab import predict

        if isinstance(inputs, Path) or (isinstance(inputs, str) and is_input_path(inputs)):
            return predict.predict(self.path, inputs, column)
        items = [inputs] if isinstance(inputs, str) else list(inputs)
        return predict.table(self.trained, items, [str(x) for x in items])

    def __repr__(self) -> str:
        return f"Model({self.strategy}, labels={self.labels}, path='{self.path}')"


@dataclass
class Run:
    """One adapted strategy: its run folder, metrics and model (`tl.adapt`)."""

    path: Path
    metrics: dict
    _model: Model | None = field(default=None, repr=False)

    @property
    def model(self) -> Model:
        if self._model is None:
            self._model = Model(self.path)
        return self._model

    def predict(self, inputs: Sequence[Any] | str | Path, column: str | None = None) -> pd.DataFrame:
        return self.model.predict(inputs, column)

    def export(self, out_dir: str | Path, example: Sequence[Any] | None = None) -> dict:
        """Serving weights (LoRA merged) and a TorchScript trace into out_dir; the trace's example
        inputs default to the first two test items of this run's data."""
        from transferlab.export import export

        return export(self.path, out_dir, list(example) if example is not None else self.test_items(2))

    def test_items(self, count: int) -> list:
        from transferlab.backbones import backbone_class
        from transferlab.pipeline import prepared_dir

        cfg = self.model.trained.cfg
        test = prepared_dir(OmegaConf.to_container(cfg.data, resolve=True), cfg.seed, cfg.paths.cache_dir) / "test.parquet"
        return pd.read_parquet(test)[backbone_class(cfg.backbone).input_column].head(count).tolist()

    def __repr__(self) -> str:
        m = self.metrics
        return (f"Run({m.get('strategy')}, train_size={m.get('train_size')}, "
                f"test_accuracy={m.get('test_accuracy')}, path='{self.path}')")

    def _repr_html_(self) -> str:
        keys = ("strategy", "train_size", "test_accuracy", "test_macro_f1", "trainable_params", "train_seconds")
        table = pd.DataFrame([{k: self.metrics.get(k) for k in keys}]).to_html(index=False)
        return f"<p>transferlab run <code>{self.path}</code></p>{table}"


class Plots(dict):
    """The report's figures by name (matplotlib Figures); shown in Jupyter as images."""

    def _repr_html_(self) -> str:
        import base64

        from transferlab.report.plots import png

        return "".join(f'<img alt="{name}" style="max-width:48%" src="data:image/png;base64,'
                       f'{base64.b64encode(png(fig)).decode()}">' for name, fig in self.items())


def paragraph(page: str, key: str) -> str:
    """The text of the report's <p id=key> (build_report writes it escaped, on one line); "" if absent."""
    found = re.search(f"<p id='{key}'>(.*?)</p>", page)
    return html.unescape(found.group(1)) if found else ""


def failed_cells(path: Path, plan: dict | None) -> list[str]:
    """The run folders of the cells the report left out as failed: plan.json's failed cells, or
    (a whole grid) the grid's cells that runs.csv does not list."""
    from transferlab.pipeline import grid, runs_dir

    if plan is not None:
        names = [c["cell"] for c in plan["cells"] if c["status"] == "failed"]
    else:
        reported = {Path(f).parent.name for f in pd.read_csv(path / "runs.csv")["metrics_file"]}
        names = [c.name for c in grid(OmegaConf.load(path / ".hydra" / "config.yaml")) if c.name not in reported]
    return [str(runs_dir(path) / name) for name in names]


def written_result(path: Path) -> dict:
    """What tl.compare returned for this folder, from the files the report wrote rather than worked
    out again: summary.json's figures and verdicts (keyed by size there, a list in the result), the
    recommendation and what the budget did not buy as report.html states them, plan.json."""
    summary = json.loads((path / "summary.json").read_text())
    page = (path / "report.html").read_text()
    plan = json.loads((path / "plan.json").read_text()) if (path / "plan.json").is_file() else None
    return {"crossover": summary["crossover"], "recommendation": paragraph(page, "recommendation"),
            "forecast": summary["forecast"], "not_bought": paragraph(page, "not-bought"),
            "verdicts": list(summary["verdicts"].values()), "extraction_seconds": summary["extraction_seconds"],
            "failed_runs": failed_cells(path, plan), **({"plan": plan} if plan is not None else {})}


@dataclass
class Comparison:
    """A finished comparison: its run folder, the verdict and the tables behind it (`tl.compare`)."""

    path: Path
    result: dict = field(repr=False)

    @classmethod
    def load(cls, path: str | Path) -> "Comparison":
        """An earlier comparison's run folder (of tl.compare or flows/compare.py), as tl.compare
        returned it: its result read back from the files the comparison wrote."""
        path = Path(path).resolve()
        for name in ("summary.json", "report.html"):
            if not (path / name).is_file():
                raise DataError(f"{path}: not a comparison's run folder (no {name})")
        return cls(path, written_result(path))

    @property
    def recommendation(self) -> str:
        return self.result["recommendation"]

    @property
    def verdicts(self) -> pd.DataFrame:
        return pd.DataFrame(self.result["verdicts"])

    @property
    def failed_runs(self) -> list[str]:
        return self.result.get("failed_runs", [])

    @property
    def plan(self) -> pd.DataFrame | None:
        """A budgeted comparison's cells: status (ran / stopped / skipped / failed), why, predicted
        and measured seconds (plan.json); None for a whole grid."""
        path = self.path / "plan.json"
        return pd.DataFrame(json.loads(path.read_text())["cells"]) if path.is_file() else None

    @property
    def config(self) -> DictConfig:
        return OmegaConf.load(self.path / ".hydra" / "config.yaml")

    def _scored_runs(self) -> pd.DataFrame:
        from transferlab.report.render import load_runs

        files = pd.read_csv(self.path / "runs.csv")["metrics_file"]
        return load_runs([Path(f) for f in files])

    @property
    def runs(self) -> pd.DataFrame:
        """One row per cell: metrics and costs (the report's runs.csv)."""
        return pd.read_csv(self.path / "runs.csv")

    @property
    def summary(self) -> pd.DataFrame:
        """One row per strategy x train size: means and spreads over seeds."""
        from transferlab.report.recommend import summarize

        return summarize(self._scored_runs())

    def plot(self) -> Plots:
        """The learning curves (with forecast) and accuracy vs compute, as matplotlib Figures."""
        from transferlab.report.render import figures, forecasts
        from transferlab.report.recommend import summarize, verdicts

        runs = self._scored_runs()
        curves, _ = forecasts(runs, verdicts(runs, self.config.compare.tie_margin))
        return Plots(figures(summarize(runs), curves))

    def best(self) -> Model:
        """The recommended strategy's run at the largest compared size (its best-validation seed)."""
        from transferlab.report.recommend import advice, verdicts

        runs = self._scored_runs()
        found = verdicts(runs, self.config.compare.tie_margin)
        if found:
            last = found[-1]
            chosen = runs[(runs.train_size == last.train_size)
                          & (runs.strategy == (last.finetune if advice(last) == "fine-tune" else last.transfer))]
        else:  # one family only: the best on validation at the largest size
            chosen = runs[runs.train_size == runs.train_size.max()]
        row = chosen.sort_values(["val_accuracy", "seed"], ascending=[False, True]).iloc[0]
        return Model(Path(row["metrics_file"]).parent)

    def _repr_html_(self) -> str:
        page = (self.path / "report.html").read_text()
        body = page.split("<body>", 1)[-1].rsplit("</body>", 1)[0]
        return f"<div class='transferlab-report'><p>run folder: <code>{self.path}</code></p>{body}</div>"

    def __repr__(self) -> str:
        return f"Comparison(path='{self.path}'): {self.recommendation}"


# --- the front end ---------------------------------------------------------------------------------

def compare(data: Any = None, *, text: str = "text", label: str = "label",
            strategies: Sequence[str] | None = None, train_sizes: Sequence[int | float | str] | None = None,
            seeds: Sequence[int] | None = None, budget: str | float | None = None, overrides: Sequence[str] | str = (),
            out_dir: str | Path | None = None, prefect: bool = True) -> Comparison:
    """Compare transfer learning and fine-tuning strategies on your data; the report's verdict.

    Args:
        data: a pandas DataFrame, a CSV/Parquet file, a folder of images (one subfolder per class),
            the name of a data set in conf/data/ ("bbc_news", "tweet_sentiment", ...), or None for
            conf/'s default. A DataFrame is stored by its content, so rerunning with the same data
            finds the same prepared splits, features and (with Prefect) trained runs.
        text, label: the DataFrame's or file's input and label columns.
        strategies: names in conf/strategy/ (default: compare.strategies of conf/compare/).
        train_sizes: labelled training examples per run: counts, fractions in (0, 1], or "all".
        seeds: one run per seed; the verdict's interval covers seed-to-seed variation.
        budget: a duration ("15m", "90s", "1h30m"): the planner runs what fits (heads first, then
            fine-tuning smallest size first) and the report says what was skipped; None: the whole grid.
        overrides: any Hydra overrides, as on flows/compare.py's command line ("backbone=minilm",
            "trainer.enable_progress_bar=false"); strategy.* keys apply to every compared strategy.
        out_dir: the run folder (default: outputs/compare/<data>-<key of these settings>).
        prefect: run as the Prefect compare flow (cached steps, retries); False runs the same
            pipeline in this process without Prefect's start-up and bookkeeping.

    Raises ConfigError / DataError with a one-line message on bad arguments or data.
    """
    common, per_cell = split_overrides(override_list(overrides))
    grid = [*(["compare.strategies=" + listed(as_list(strategies, "strategies"))] if strategies is not None else []),
            *(["compare.train_sizes=" + listed(as_list(train_sizes, "train_sizes"))] if train_sizes is not None else []),
            *(["compare.seeds=" + listed(as_list(seeds, "seeds"))] if seeds is not None else []),
            *([f"compare.budget={quoted(budget)}"] if budget is not None else []),
            *(["compare.overrides=" + listed(per_cell, quote=True)] if per_cell else [])]
    cfg, everything = composed(data, text, label, [*common, *grid])
    out = (Path(out_dir) if out_dir is not None else default_out_dir("compare", cfg)).resolve()

    def run() -> dict:
        from transferlab import pipeline

        pipeline.grid(cfg)  # every cell's config checked before anything runs
        record(out, cfg, everything)
        if not prefect:
            return pipeline.run_grid(cfg, out)
        flows = prefect_flows()
        return flows.compare.with_options(task_runner=flows.task_runner(cfg.compare))(
            OmegaConf.to_container(cfg, resolve=True), str(out))

    return Comparison(out, launched(run, out, cfg))


def adapt(data: Any = None, *, text: str = "text", label: str = "label", strategy: str | None = None,
          train_size: int | float | str | None = None, seed: int | None = None, overrides: Sequence[str] | str = (),
          out_dir: str | Path | None = None, prefect: bool = True) -> Run:
    """Adapt one strategy to your data: prepare, extract (if it trains on features), train, evaluate.

    Args:
        data, text, label, overrides, prefect: as for `compare` (strategy.* overrides tune this strategy).
        strategy: a name in conf/strategy/ (default: conf/config.yaml's).
        train_size: labelled training examples: a count, a fraction in (0, 1], or "all".
        seed: the split and training seed.
        out_dir: the run folder (default: outputs/adapt/<data>-<key of these settings>).

    Returns a Run: `.metrics`, `.predict(texts)`, `.export(out_dir)`, `.model`.
    """
    chosen = [*([f"strategy={strategy}"] if strategy is not None else []),
              *([f"data.train_size={'null' if train_size == 'all' else train_size}"] if train_size is not None else []),
              *([f"seed={seed}"] if seed is not None else [])]
    cfg, everything = composed(data, text, label, [*chosen, *override_list(overrides)])
    out = (Path(out_dir) if out_dir is not None else default_out_dir("adapt", cfg)).resolve()

    def run() -> dict:
        record(out, cfg, everything)
        if not prefect:
            from transferlab import pipeline

            return pipeline.run_cell(cfg, out)
        return prefect_flows().adapt(OmegaConf.to_container(cfg, resolve=True), str(out))

    return Run(out, launched(run, out, cfg))


def load(path: str | Path) -> Comparison | Model:
    """An earlier run folder: a comparison's (summary.json) or a trained run's (model.json)."""
    path = Path(path)
    return Comparison.load(path) if (path / "summary.json").is_file() else Model(path)
