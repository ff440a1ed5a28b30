"""Where a run happens: a cell (one strategy x train size x seed) through prepare -> extract (when
the strategy needs features) -> train -> evaluate, and the grid of cells of a comparison.

Every front end goes through here: the flows call `run_cell`/`run_grid` with `Steps` that wrap each
step in a Prefect task (caching, retries, fan-out), `dvc repro`'s stages and the tests call them
with plain `Steps`. The rule that makes a cell's config from the user's is `cell_config`, the same
for the compare flow, dvc.yaml's matrix and the API."""

from __future__ import annotations

import copy
import functools
import json
import logging
import time
import traceback
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transferlab.atomic import atomic_path
from transferlab.config import CONF_DIR, checked, compose
from transferlab.errors import TransferlabError
from transferlab.features import FeatureCache, load_features
from transferlab.stages import evaluate, extract, prepare, report, train
from transferlab.strategy import resolve

log = logging.getLogger("transferlab")
FAILURES = "failures.jsonl"  # a run folder's record of failed training attempts, one JSON line each


# --- cells and the grid ---------------------------------------------------------------------------

def run_name(strategy: str, size: int | float | str, seed: int) -> str:
    return f"{strategy}-n{size}-s{seed}"


def sized(data: dict, size: int | float | str) -> dict:
    """The data section at one train size (`all` keeps every training row)."""
    return {**data, "train_size": None if size == "all" else size}


def cell_config(base: DictConfig, strategy: str, size: int | float | str, seed: int,
                conf_dir: Path = CONF_DIR) -> DictConfig:
    """The one rule for a cell's config: `base` (data, backbone, trainer, ... as the user composed
    them) with its strategy section replaced by conf/strategy/<strategy>.yaml + compare.overrides,
    at this train size and seed; checked like any config. `conf_dir`: the configs the user's run
    composes (dvc: the repository's conf/; a flow script's Hydra app uses its own)."""
    chosen = strategy_section(strategy, tuple(base.compare.overrides), Path(conf_dir))
    cfg = OmegaConf.to_container(base, resolve=True)
    return checked({**cfg, "strategy": copy.deepcopy(chosen), "seed": seed, "data": sized(cfg["data"], size)},
                   f"strategy={strategy}")


@functools.lru_cache(maxsize=None)
def strategy_section(strategy: str, overrides: tuple[str, ...], conf_dir: Path) -> dict:
    """conf/strategy/<strategy>.yaml with the overrides, composed once per process (Hydra's compose
    takes a while, and a grid asks for each strategy once per size and seed)."""
    return OmegaConf.to_container(compose([f"strategy={strategy}", *overrides], conf_dir).strategy, resolve=True)


@dataclass(frozen=True)
class Cell:
    strategy: str
    train_size: int | float | str
    seed: int
    cfg: DictConfig

    @property
    def name(self) -> str:
        return run_name(self.strategy, self.train_size, self.seed)


def grid(base: DictConfig, conf_dir: Path = CONF_DIR) -> list[Cell]:
    """compare.strategies x train_sizes x seeds, seeds outermost: the cells of one comparison."""
    return [Cell(strategy, size, seed, cell_config(base, strategy, size, seed, conf_dir))
            for seed, size, strategy in product(base.compare.seeds, base.compare.train_sizes,
                                                base.compare.strategies)]


# --- the steps ---------------------------------------------------------------------------------------

def prepare_step(data: dict, seed: int, cache_root: str) -> str:
    """Prepared splits from the content-addressed cache, under a file lock (one copy, ever)."""
    return str(prepare.cached(OmegaConf.create(data), seed, cache_root))


def extract_step(backbone: dict, extract_cfg: dict, data_dir: str, cache_root: str) -> str:
    """Features of every split, embedded once per input; a damaged entry is rebuilt."""
    return str(extract.run(OmegaConf.create(backbone), OmegaConf.create(extract_cfg), data_dir,
                           features_root(cache_root)))


def train_step(cfg: dict, data_dir: str, features_dir: str | None, run_dir: str) -> str:
    """The train stage; a failure other than bad input is recorded in the run folder and logged
    before it propagates (to a retry, or to the user), so a retried run says why it was retried."""
    started = time.perf_counter()
    try:
        train.run(OmegaConf.create(cfg), data_dir, features_dir, run_dir)
    except TransferlabError:
        raise
    except Exception as exc:
        record_failure(Path(run_dir), exc, time.perf_counter() - started)
        raise
    return run_dir


def evaluate_step(data_dir: str, features_dir: str | None, run_dir: str) -> dict:
    return evaluate.run(data_dir, features_dir, run_dir, run_dir)


def record_failure(run_dir: Path, exc: BaseException, seconds: float) -> None:
    """Logs the failure as a warning and appends it to run_dir/failures.jsonl (when the folder can
    be written: the failure may be that it cannot), never hiding the exception being handled."""
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    error = f"{type(exc).__name__}: {exc}"
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "error": error, "seconds": round(seconds, 3),
             "at": f"{where.filename}:{where.lineno}" if where else None}
    path = run_dir / FAILURES
    log.warning("%s: training failed after %.1f s: %s (at %s; recorded in %s)", run_dir, seconds, error,
                entry["at"], path)
    try:
        earlier = path.read_text() if path.is_file() else ""
        with atomic_path(path) as tmp:
            tmp.write_text(earlier + json.dumps(entry) + "\n")
    except (OSError, TransferlabError):
        log.warning("%s: the failure could not be recorded there", run_dir)


def failures(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / FAILURES
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def features_root(cache_root: str | Path) -> Path:
    return Path(cache_root) / "features"


def features_entry(backbone: dict, extract_cfg: dict, data_dir: str | Path, cache_root: str | Path) -> Path:
    """Where `extract_step` puts (or finds) the features of `data_dir` for this backbone."""
    key = extract.cache_key(OmegaConf.create(backbone), OmegaConf.create(extract_cfg), Path(data_dir))
    return FeatureCache(features_root(cache_root)).entry(key)


def features_intact(backbone: dict, extract_cfg: dict, data_dir: str | Path, cache_root: str | Path) -> bool:
    """Every split's features load and match their sha256: what a cached extract result is worth."""
    entry = features_entry(backbone, extract_cfg, data_dir, cache_root)
    try:
        return (entry / "meta.json").is_file() and all(load_features(entry, s) is not None
                                                       for s in ("train", "val", "test"))
    except TransferlabError:
        return False


def prepared_dir(data: dict, seed: int, cache_root: str | Path) -> Path:
    return prepare.cache_dir(OmegaConf.create(data), seed, cache_root)


def prepared_intact(data: dict, seed: int, cache_root: str | Path) -> bool:
    return (prepared_dir(data, seed, cache_root) / "data_card.json").is_file()


RUN_OUTPUTS = {"train": ("model.json", "model.safetensors"), "evaluate": ("metrics.json",)}


def run_intact(run_dir: str | Path, step: str) -> bool:
    """A train or evaluate step's outputs are all still in its run folder."""
    return all((Path(run_dir) / name).is_file() for name in RUN_OUTPUTS[step])


class Steps:
    """How the steps are called: here directly, in this process; `transferlab.flows.TaskSteps` runs
    each as a Prefect task. `result` turns what `evaluate` returned into metrics (None: failed)."""

    prepare = staticmethod(prepare_step)
    extract = staticmethod(extract_step)
    train = staticmethod(train_step)

    def evaluate(self, data_dir: str, features_dir: str | None, run_dir: str, after: Any = None) -> Any:
        """`after`: what train returned (here its run folder; under tasks, its future)."""
        return evaluate_step(data_dir, features_dir, run_dir)

    def result(self, outcome: Any) -> dict | None:
        return outcome


# --- a cell, a grid ---------------------------------------------------------------------------------

def run_cell(cfg: DictConfig, run_dir: str | Path, steps: Steps = Steps()) -> Any:
    """prepare -> extract (if the strategy trains on features) -> train -> evaluate: the metrics
    (or, under task steps, the future of them)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    cache_root = str(cfg.paths.cache_dir)
    data_dir = steps.prepare(c["data"], cfg.seed, cache_root)
    features = steps.extract(c["backbone"], c["extract"], data_dir, cache_root) \
        if resolve(cfg).needs_features else None
    trained = steps.train(c, data_dir, features, str(run_dir))
    return steps.evaluate(data_dir, features, str(run_dir), after=trained)


def run_grid(base: DictConfig, out_dir: str | Path, steps: Steps = Steps()) -> dict:
    """Every cell of the comparison into out_dir/runs/<cell>, then the report in out_dir. A failed
    cell (after its retries) is listed and left out of the report rather than stopping the others."""
    out_dir = Path(out_dir)
    cells = grid(base)
    outcomes = [(cell, run_cell(cell.cfg, runs_dir(out_dir) / cell.name, steps)) for cell in cells]
    failed = [str(runs_dir(out_dir) / cell.name) for cell, outcome in outcomes if steps.result(outcome) is None]
    done = [cell for cell in cells if str(runs_dir(out_dir) / cell.name) not in failed]
    summary = write_report(base, [runs_dir(out_dir) / c.name / "metrics.json" for c in done], out_dir)
    return {**summary, "failed_runs": failed}


def runs_dir(out_dir: Path) -> Path:
    return Path(out_dir) / "runs"


def write_report(base: DictConfig, metrics_files: list[Path], out_dir: str | Path,
                 conf_dir: Path = CONF_DIR) -> dict:
    """The report stage over these runs, with the extraction cost of the grid's distinct inputs."""
    cells = grid(base, conf_dir)
    uses_features = [c for c in cells if resolve(c.cfg).needs_features]
    data_dirs = [prepared_dir(OmegaConf.to_container(c.cfg.data), c.seed, base.paths.cache_dir) for c in uses_features]
    extraction = extract.amortised_seconds(base.backbone, base.extract, data_dirs,
                                           features_root(base.paths.cache_dir)) if uses_features else 0.0
    title = f"transferlab: {base.data.name} on {base.backbone.name}"
    summary = report.run(metrics_files, out_dir, title, extraction, base.compare.tie_margin)
    return {**summary, "extraction_seconds": extraction}
