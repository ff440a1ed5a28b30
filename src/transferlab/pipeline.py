"""Where a run happens: a cell (one strategy x train size x seed) through prepare -> extract (when
the strategy needs features) -> train -> evaluate, and the grid of cells of a comparison.

Every front end goes through here: the flows call `run_cell`/`run_grid` with `Steps` that wrap each
step in a Prefect task (caching, retries, fan-out), `dvc repro`'s stages and the tests call them
with plain `Steps`. The rule that makes a cell's config from the user's is `cell_config`, the same
for the compare flow, dvc.yaml's matrix and the API."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import time
import traceback
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from transferlab import planner
from transferlab.atomic import atomic_path
from transferlab.config import CONF_DIR, at_key, checked, compose
from transferlab.errors import EXPECTED, ConfigError, TransferlabError
from transferlab.data.datamodules import labels_of
from transferlab.features import FeatureCache, load_features
from transferlab.stages import evaluate, extract, prepare, report, train
from transferlab.strategy import resolve
from transferlab.trainer import fit_fingerprint, processes as trainer_processes
from transferlab.training import probe_rate

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


def extract_step(backbone: dict, extract_cfg: dict, data_dir: str, cache_root: str, progress: bool = True) -> str:
    """Features of every split, embedded once per input; a damaged entry is rebuilt."""
    return str(extract.run(OmegaConf.create(backbone), OmegaConf.create(extract_cfg), data_dir,
                           extract.features_root(cache_root), progress))


def train_step(cfg: dict, data_dir: str, features_dir: str | None, run_dir: str) -> str:
    """The train stage; a failure other than bad input is recorded in the run folder and logged
    before it propagates (to a retry, or to the user), so a retried run says why it was retried."""
    started = time.perf_counter()
    try:
        train.run(OmegaConf.create(cfg), data_dir, features_dir, run_dir)
    except EXPECTED:
        raise
    except Exception as exc:
        record_failure(Path(run_dir), exc, time.perf_counter() - started)
        raise
    return run_dir


def evaluate_step(data_dir: str, features_dir: str | None, run_dir: str) -> dict:
    return evaluate.run(data_dir, features_dir, run_dir, run_dir)


def probe_step(cfg: dict, data_dir: str) -> dict:
    """A fine-tuning strategy's seconds per sample-step and per evaluated item here (the planner's)."""
    return probe_rate(OmegaConf.create(cfg), Path(data_dir))


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


def features_entry(backbone: dict, extract_cfg: dict, data_dir: str | Path, cache_root: str | Path) -> Path:
    """Where `extract_step` puts (or finds) the features of `data_dir` for this backbone."""
    key = extract.cache_key(OmegaConf.create(backbone), OmegaConf.create(extract_cfg), Path(data_dir))
    return FeatureCache(extract.features_root(cache_root)).entry(key)


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
    probe = staticmethod(probe_step)

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
    features = steps.extract(c["backbone"], c["extract"], data_dir, cache_root, cfg.trainer.enable_progress_bar) \
        if resolve(cfg).needs_features else None
    trained = steps.train(c, data_dir, features, str(run_dir))
    return steps.evaluate(data_dir, features, str(run_dir), after=trained)


def run_grid(base: DictConfig, out_dir: str | Path, steps: Steps = Steps()) -> dict:
    """Every cell of the comparison into out_dir/runs/<cell>, then the report in out_dir. A failed
    cell (after its retries) is listed and left out of the report rather than stopping the others.
    With compare.budget set, the planner chooses the cells that fit (run_budgeted_grid)."""
    if base.compare.budget is not None:
        return run_budgeted_grid(base, out_dir, steps)
    out_dir = Path(out_dir)
    cells = prepared_grid(base, steps)
    outcomes = [(cell, run_cell(cell.cfg, runs_dir(out_dir) / cell.name, steps)) for cell in cells]
    failed = [cell.name for cell, outcome in outcomes if steps.result(outcome) is None]
    return reported(base, out_dir, [c for c in cells if c.name not in failed], failed)


def prepared_grid(base: DictConfig, steps: Steps) -> list[Cell]:
    """The grid's cells, every size's data prepared before any cell trains: a size the data cannot
    hold (more rows than it has, too few for its classes; known only once it is prepared) stops the
    grid naming its compare.train_sizes entry, before the cells ahead of it train and leave run folders;
    so do two sizes that resolve to the same training rows (42 and 'all' of 42; 0.5 and 21)."""
    cells = grid(base)
    sizes = list(base.compare.train_sizes)
    given: dict[tuple[int, int], int] = {}  # (seed, training rows) -> the compare.train_sizes index giving them
    for cell in {(c.train_size, c.seed): c for c in cells}.values():
        at = sizes.index(cell.train_size)
        try:
            rows = len(labels_of(cell_data_dir(cell, steps), "train"))
        except TransferlabError as exc:
            raise at_key(exc, f"compare.train_sizes[{at}]") from None
        if (cell.seed, rows) in given:  # the same runs twice, which the report would count as two sizes' evidence
            first = given[cell.seed, rows]
            raise ConfigError(f"compare.train_sizes[{at}]={cell.train_size!r}: {rows} training rows, as "
                              f"compare.train_sizes[{first}]={sizes[first]!r} gives; list that size once")
        given[cell.seed, rows] = at
    return cells


def cell_data_dir(cell: Cell, steps: Steps) -> str:
    """The cell's prepared splits (cached: one copy per size and seed, whatever the strategy)."""
    return steps.prepare(OmegaConf.to_container(cell.cfg.data, resolve=True), cell.seed, str(cell.cfg.paths.cache_dir))


def reported(base: DictConfig, out_dir: Path, done: list[Cell], failed: list[str], plan: dict | None = None) -> dict:
    """The report over the cells that finished; the summary lists the failed ones' run folders.
    With none finished there is nothing to report: one line says why (it was a pandas KeyError)."""
    if not done:
        skipped = sum(c["status"] == "skipped" for c in plan["cells"]) if plan else 0
        if skipped:
            raise ConfigError(f"compare.budget={base.compare.budget!r}: it bought none of the {skipped} cells "
                              f"({Path(out_dir) / planner.PLAN} says why each was skipped); give it more time")
        raise TransferlabError(f"{runs_dir(out_dir)}: none of the {len(failed)} cells finished; each run "
                               f"folder's {FAILURES} says why")
    summary = write_report(base, [runs_dir(out_dir) / c.name / "metrics.json" for c in done], out_dir, plan=plan)
    return {**summary, "failed_runs": [str(runs_dir(out_dir) / name) for name in failed],
            **({"plan": plan} if plan is not None else {})}


def run_cells(cells: list[Cell], out_dir: Path, steps: Steps, plan: planner.Plan) -> list[Cell]:
    """These cells at once (through the steps' task runner), their plan entries filled in (measured:
    the wall time of them all, shared evenly): the cells that finished."""
    started = plan.clock()
    outcomes = [(cell, run_cell(cell.cfg, runs_dir(out_dir) / cell.name, steps)) for cell in cells]
    results = [(cell, steps.result(outcome)) for cell, outcome in outcomes]
    each = (plan.clock() - started) / max(1, len(cells))
    done = []
    for cell, metrics in results:
        entry = plan.entry(cell.name)
        entry.measured_seconds = round(each, 3)
        if metrics is None:
            entry.status, entry.reason = "failed", "failed after its retries"
            continue
        if json.loads((runs_dir(out_dir) / cell.name / "model.json").read_text()).get("stopped_by_max_time"):
            entry.status, entry.reason = "stopped", f"stopped at {entry.limited_by}"
        else:
            entry.status = "ran"
        done.append(cell)
    return done


class ProbedCosts:
    """The cost model of a budgeted grid: each fine-tuning strategy's rate probed once on this machine
    (training.probe_rate, on the seed-0 cell of the smallest size), times each cell's shape; once a
    strategy's cells have run, the rate their fits measured (`learn`) replaces the probe's. A strategy
    is probed only when a cell of it is predicted: a rerun whose cells all finished earlier probes nothing."""

    def __init__(self, cells: list[Cell], steps: Steps) -> None:
        self.cells, self.steps = cells, steps
        self.probed: dict[str, planner.StepRate] = {}
        self.fits: dict[str, tuple[planner.Shape, list[dict]]] = {}  # strategy -> its latest fits' fit.json
        self.learned: dict[str, planner.StepRate] = {}  # rate() of a strategy with fits, once worked out
        self.shapes: dict[tuple, planner.Shape] = {}  # residual() re-predicts every finished cell

    def cell(self, strategy: str, size) -> Cell:
        return next(c for c in self.cells if c.strategy == strategy and c.train_size == size)

    def probe(self, strategy: str) -> planner.StepRate:
        if strategy not in self.probed:
            order = planner.size_order(self.sizes())
            first = min((c for c in self.cells if c.strategy == strategy),
                        key=lambda c: (c.seed, order.index(c.train_size)))
            self.probed[strategy] = planner.StepRate(**self.steps.probe(
                OmegaConf.to_container(first.cfg, resolve=True), cell_data_dir(first, self.steps)))
        return self.probed[strategy]

    def rate(self, strategy: str) -> planner.StepRate:
        """The probe's rates, with the seconds per sample-step the latest fits took where there are any
        (validations and their checkpoints taken out at the probed rates: a probe's few steps, each at a
        shape not seen before, ran ~1.3x slower than a whole fit (tweets, MiniLM, 2 cores), which made
        larger sizes look dearer than they are)."""
        if strategy not in self.fits:
            return self.probe(strategy)
        if strategy not in self.learned:
            probed, (shape, fits) = self.probe(strategy), self.fits[strategy]
            per_step = float(np.mean([training_per_sample_step(fit, shape, probed) for fit in fits]))
            self.learned[strategy] = dataclasses.replace(probed, seconds_per_sample_step=per_step)
        return self.learned[strategy]

    def sizes(self) -> list:
        return list(dict.fromkeys(c.train_size for c in self.cells))

    def shape(self, strategy: str, size) -> planner.Shape:
        if (strategy, size) not in self.shapes:
            self.shapes[strategy, size] = self.read_shape(strategy, size)
        return self.shapes[strategy, size]

    def read_shape(self, strategy: str, size) -> planner.Shape:
        cell = self.cell(strategy, size)
        data_dir = Path(cell_data_dir(cell, self.steps))
        rows = {s: len(labels_of(data_dir, s)) for s in ("train", "val", "test")}
        schedule = resolve(cell.cfg).budget.trainer_args(rows["train"], trainer_processes(cell.cfg.trainer))
        return planner.Shape(rows["train"], rows["val"], rows["test"], schedule["max_epochs"],
                             schedule["max_epochs"] // schedule["check_val_every_n_epoch"])

    def predict(self, strategy: str, size) -> dict[str, float]:
        return planner.predicted_seconds(self.rate(strategy), self.shape(strategy, size))

    def learn(self, strategy: str, size, run_dirs: list[Path]) -> None:
        """These finished fits' records, for `rate`: read now, priced only when a prediction needs
        them, so that a rerun whose cells all finished earlier runs no probe."""
        if run_dirs:
            self.fits[strategy] = (self.shape(strategy, size),
                                   [json.loads((Path(d) / "fit.json").read_text()) for d in run_dirs])
            self.learned.pop(strategy, None)

    def record(self) -> dict:
        return {s: {**dataclasses.asdict(r), "learned_seconds_per_sample_step": self.rate(s).seconds_per_sample_step}
                for s, r in self.probed.items()}


def training_per_sample_step(fit: dict, shape: planner.Shape, probed: planner.StepRate) -> float:
    """A finished fit's (fit.json) training seconds per sample-step, its validations taken out."""
    epochs = max(1, fit["epochs"])
    validating = epochs * shape.validations / shape.epochs * planner.validation_seconds(probed, shape)
    return max(0.0, fit["train_seconds"] - validating) / (epochs * shape.train_rows)


def finished_earlier(cell: Cell, out_dir: Path, steps: Steps) -> DictConfig | None:
    """The fine-tuning cell's config as an earlier run in this folder finished it, or None. A budgeted
    rerun in its folder plans such a cell as free: otherwise it re-probed the machine and planned
    finished cells at full cost, so under load it bought less than the first run had and the report
    changed from run to run. Finished: its fit's fingerprint (config, splits, code) is this cell's,
    it was not stopped by max_time, and its metrics are there. The config keeps that run's
    trainer.max_time, so the flows' train and evaluate tasks find their cached results (elsewhere
    the fit resumes from its last.ckpt, already at its end)."""
    run_dir = runs_dir(out_dir) / cell.name
    if not (run_intact(run_dir, "train") and run_intact(run_dir, "evaluate") and (run_dir / "config.yaml").is_file()):
        return None
    try:
        card = json.loads((run_dir / "model.json").read_text())
        earlier = OmegaConf.load(run_dir / "config.yaml").trainer.max_time
    except (OSError, ValueError, OmegaConfBaseException):
        return None
    if card.get("stopped_by_max_time", True) or \
            card.get("fit_fingerprint") != fit_fingerprint(cell.cfg, Path(cell_data_dir(cell, steps))):
        return None
    cfg = copy.deepcopy(cell.cfg)
    cfg.trainer.max_time = earlier
    return cfg


def run_budgeted_grid(base: DictConfig, out_dir: str | Path, steps: Steps = Steps(),
                      costs: planner.CostModel | None = None, clock=time.monotonic) -> dict:
    """The cells of the grid that fit in compare.budget (transferlab.planner): every head cell first,
    then fine-tuning smallest size first, a (strategy, size) with all its seeds or not at all, its
    fit stopped at twice its predicted time or its share of what is left; strategies beaten on
    validation beyond noise are not run at larger sizes. plan.json and the report say what ran, what
    was skipped and why."""
    out_dir = Path(out_dir)
    plan = planner.Plan(planner.budget_seconds(base.compare.budget), clock)  # the budget counts preparing
    cells = prepared_grid(base, steps)
    plan.entries = [planner.Entry(c.name, c.strategy, c.train_size, c.seed, resolve(c.cfg).kind) for c in cells]
    done = run_cells([c for c in cells if resolve(c.cfg).kind == "head"], out_dir, steps, plan)
    tunes = [c for c in cells if resolve(c.cfg).kind != "head"]
    costs = costs or ProbedCosts(tunes, steps)
    alive = list(dict.fromkeys(c.strategy for c in tunes))
    measured: list[tuple[str, Any, float]] = []  # (strategy, size, seconds) of the fine-tuning cells so far
    for size in planner.size_order(list(dict.fromkeys(c.train_size for c in tunes))):
        ran, val_rows = {}, 0
        for strategy in alive:
            group = [c for c in tunes if c.strategy == strategy and c.train_size == size]
            finished = run_group(group, out_dir, steps, plan, costs, measured)
            done += finished
            if finished:
                metrics = [json.loads((runs_dir(out_dir) / c.name / "metrics.json").read_text()) for c in finished]
                ran[strategy] = float(np.mean([m["val_accuracy"] for m in metrics]))
                val_rows = metrics[0]["val_size"]
        alive = trimmed(alive, ran, val_rows, size, tunes, plan)
    plan.rates = costs.record()
    record = plan.write(out_dir)
    finished = {c.name for c in done}
    return reported(base, out_dir, [c for c in cells if c.name in finished],
                    [e.cell for e in plan.entries if e.status == "failed"], record)


def run_group(group: list[Cell], out_dir: Path, steps: Steps, plan: planner.Plan, costs: planner.CostModel,
              measured: list[tuple[str, Any, float]]) -> list[Cell]:
    """One fine-tuning strategy at one size, all its seeds or none: the cells finished earlier in this
    folder cost nothing, the others run if their prediction fits in what is left, each fit limited
    (planner.train_limit); what they take is added to `measured`. The cells that finished."""
    strategy, size = group[0].strategy, group[0].train_size
    earlier = {c.name: finished_earlier(c, out_dir, steps) for c in group}
    todo = [c for c in group if earlier[c.name] is None]
    reused = [Cell(c.strategy, c.train_size, c.seed, earlier[c.name]) for c in group if earlier[c.name]]
    predicted = costs.predict(strategy, size) if todo else {"train": 0.0}
    each = sum(predicted.values()) + residual(costs, measured) if todo else 0.0
    for c in group:
        plan.entry(c.name).predicted_seconds = 0.0 if earlier[c.name] else round(each, 3)
    if todo and not planner.fits(plan, [each] * len(todo)):
        for c in group:
            plan.entry(c.name).status = "skipped"
            plan.entry(c.name).reason = (f"predicted {each * len(todo):.3g} s for its {len(todo)} seed(s), "
                                         f"{max(0.0, plan.left()):.3g} s of the budget left")
        return []
    for c in reused:
        plan.entry(c.name).reason = "finished by an earlier run in this folder: not trained again"
    finished = run_cells(reused, out_dir, steps, plan)
    if todo:
        limit, limited_by = planner.train_limit(predicted["train"], each, len(todo), plan.left())
        for c in todo:
            plan.entry(c.name).max_train_seconds, plan.entry(c.name).limited_by = limit, limited_by
        trained = run_cells([Cell(c.strategy, c.train_size, c.seed, with_max_time(c.cfg, limit)) for c in todo],
                            out_dir, steps, plan)
        measured += [(strategy, size, plan.entry(c.name).measured_seconds) for c in trained]
        finished += trained
    costs.learn(strategy, size, [runs_dir(out_dir) / c.name for c in finished])
    return finished


def residual(costs: planner.CostModel, measured: list[tuple[str, Any, float]]) -> float:
    """What the fine-tuning cells so far took beyond the cost model's prediction of them now (a cell's
    task and evaluation overheads), on average; never below 0, so a prediction is not cut by it."""
    over = [seconds - sum(costs.predict(strategy, size).values()) for strategy, size, seconds in measured]
    return max(0.0, float(np.mean(over))) if over else 0.0


def with_max_time(cfg: DictConfig, seconds: int) -> DictConfig:
    cfg = copy.deepcopy(cfg)
    cfg.trainer.max_time = planner.max_time(seconds)
    return cfg


def trimmed(alive: list[str], ran: dict[str, float], val_rows: int, size, tunes: list[Cell],
            plan: planner.Plan) -> list[str]:
    """Successive halving: the strategies that go on to larger sizes (those that ran here, with mean
    validation accuracy `ran` on `val_rows` items, and were not beaten beyond noise; one that did not
    run here does not run larger either)."""
    # the best first (survivors always hold it): the next size spends on it before the budget runs short
    keep = sorted(planner.survivors(ran, val_rows), key=ran.get, reverse=True)
    for c in tunes:
        if c.strategy in alive and c.strategy not in keep and plan.entry(c.name).status == "planned":
            plan.entry(c.name).status = "skipped"
            plan.entry(c.name).reason = (f"trailed {keep[0]} on validation beyond noise at {size} labels"
                                         if c.strategy in ran else f"did not fit at {size} labels")
    return keep


def runs_dir(out_dir: Path) -> Path:
    return Path(out_dir) / "runs"


def write_report(base: DictConfig, metrics_files: list[Path], out_dir: str | Path,
                 conf_dir: Path = CONF_DIR, plan: dict | None = None) -> dict:
    """The report stage over these runs (runs/<cell>/metrics.json), with the extraction cost of the
    distinct inputs of those on features; refused where paths.cache_dir cannot price it
    (extract.amortised_seconds: None), rather than a report that costs extraction at 0 s. A flow's
    cells have just filled it (a budget that skipped every cell on features embedded nothing, and
    none is reported); under dvc no stage outputs it, so a report rerun finds it absent in a queued
    experiment's copy or a fresh clone."""
    reported_cells = {Path(f).parent.name for f in metrics_files}
    uses_features = [c for c in grid(base, conf_dir) if c.name in reported_cells and resolve(c.cfg).needs_features]
    data_dirs = [prepared_dir(OmegaConf.to_container(c.cfg.data), c.seed, base.paths.cache_dir) for c in uses_features]
    extraction = extract.amortised_seconds(base.backbone, base.extract, data_dirs,
                                           extract.features_root(base.paths.cache_dir)) if uses_features else 0.0
    if extraction is None:
        raise ConfigError(f"paths.cache_dir={base.paths.cache_dir}: the comparison's feature extraction was not "
                          "measured here (the cache is no DVC output; a queued experiment's copy has none): "
                          "share it, -S paths.cache_dir=$PWD/.cache/transferlab, or rerun `dvc repro -f compare`")
    title = f"transferlab: {base.data.name} on {base.backbone.name}"
    summary = report.run(metrics_files, out_dir, title, extraction, base.compare.tie_margin, plan)
    return {**summary, "extraction_seconds": extraction}
