"""provenance: import closures found from source, and code versions that follow code, not comments."""

from __future__ import annotations

import ast
import gc
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, topic_frame
from transferlab.provenance import closure_files, code_version, import_closure, module_file, normalized_source

SRC = ROOT / "src"
PACKAGE = SRC / "transferlab"


def test_prepare_closure_is_what_prepare_imports():
    closure = import_closure("transferlab.stages.prepare")
    assert {"transferlab.stages.prepare", "transferlab.data.splits", "transferlab.data.sources",
            "transferlab.atomic", "transferlab.errors", "transferlab.features",
            "transferlab", "transferlab.data", "transferlab.stages"} <= set(closure)
    # torch-side code prepare never imports
    assert not {"transferlab.modules", "transferlab.backbones", "transferlab.data.datamodules",
                "transferlab.trainer", "transferlab.stages.extract"} & set(closure)
    assert closure == sorted(closure)


def test_closure_files_are_this_trees_files():
    files = closure_files("transferlab.stages.prepare")
    assert PACKAGE / "data" / "splits.py" in files
    assert PACKAGE / "data" / "__init__.py" in files  # from transferlab.data import sources
    assert all(f.is_file() and f.is_relative_to(PACKAGE) for f in files)
    assert module_file("transferlab.stages") == PACKAGE / "stages" / "__init__.py"
    with pytest.raises(ModuleNotFoundError):
        module_file("transferlab.no_such_module")


def test_lazy_imports_in_real_source_are_followed():
    # strategy imports transferlab.lora only inside Strategy.apply; entry imports config and the
    # flows only inside functions
    assert "transferlab.lora" in import_closure("transferlab.strategy")
    assert {"transferlab.config", "transferlab.flows"} <= set(import_closure("transferlab.entry"))


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "transferlab"


def test_import_forms_on_a_throwaway_package(tmp_path):
    package = write_tree(tmp_path, {
        "transferlab/__init__.py": "",
        "transferlab/a.py": "import transferlab.x.y\nfrom transferlab import b\n"
                            "def later():\n    from transferlab.p import NAME, q\n",
        "transferlab/b.py": "from . import c\nfrom .x import helper\n",
        "transferlab/c.py": "import os\n",
        "transferlab/x/__init__.py": "helper = 1\n",
        "transferlab/x/y.py": "",
        "transferlab/p/__init__.py": "NAME = 1\n",
        "transferlab/p/q.py": "",
        "transferlab/unused.py": "",
    })
    assert import_closure("transferlab.a", root=package) == [
        "transferlab", "transferlab.a", "transferlab.b", "transferlab.c", "transferlab.p",
        "transferlab.p.q", "transferlab.x", "transferlab.x.y"]
    assert import_closure("transferlab.x.y", root=package) == ["transferlab", "transferlab.x", "transferlab.x.y"]


def copy_tree(dest: Path, edits: dict[str, tuple[str, str]]) -> Path:
    """A copy of src/transferlab under dest/src, each file's `old` text replaced by `new`."""
    package = dest / "src" / "transferlab"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    for name, (old, new) in edits.items():
        text = (package / name).read_text()
        assert old in text, f"{name} no longer contains {old!r}: update the test's edit"
        (package / name).write_text(text.replace(old, new, 1))
    return package.parent


IN_COPY = """
import json, sys
import transferlab.provenance as p
out = {"file": p.__file__, "prepare": p.code_version("transferlab.stages.prepare"),
       "extract": p.code_version("transferlab.stages.extract")}
if len(sys.argv) > 1:
    from transferlab.config import checked, compose
    cfg = checked(compose(["data=csv", "data.path=" + sys.argv[1], "data.label_column=topic"], sys.argv[2]), "test")
    if sys.argv[3] == "prepared_key":
        from transferlab.stages.prepare import cache_dir
        out["prepared_key"] = cache_dir(cfg.data, 0, "cache").name
    else:
        from transferlab.stages.extract import backbone_key
        out["features_key"] = backbone_key(cfg.backbone, cfg.extract)
print(json.dumps(out))
"""


def in_copy(src: Path, csv: Path | None = None, key: str | None = None) -> dict:
    """code_version of prepare and extract in a fresh process that imports the copy under `src`
    (no torch imported: quick), and the cache key `key` its stage computes for `csv`:
    `prepared_key` (splits) or `features_key` (the features' item store)."""
    args = [str(csv), str(ROOT / "conf"), key] if key else []
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", IN_COPY, *args], env=env, check=True, capture_output=True,
                         text=True, timeout=120).stdout
    result = json.loads(out)
    assert Path(result.pop("file")).is_relative_to(src)  # the copy, not the installed source
    return result


def keys_here(csv: Path) -> dict:
    from transferlab.config import checked, compose
    from transferlab.stages.extract import backbone_key
    from transferlab.stages.prepare import cache_dir

    cfg = checked(compose(["data=csv", f"data.path={csv}", "data.label_column=topic"]), "test")
    return {"prepared_key": cache_dir(cfg.data, 0, "cache").name,
            "features_key": backbone_key(cfg.backbone, cfg.extract)}


SPLITS_DOC = '"""Cleaning and stratified splitting'
POOL_DOC = '"""Pads to the longest item of this batch'
EDITS = {
    "original": {},
    "splits code": {"data/splits.py": ('SPLITS = ("train", "val", "test")',
                                       'SPLITS = ("train", "val", "test")\nMIN_PER_CLASS = 1')},
    "splits comment": {"data/splits.py": (SPLITS_DOC, '# a new comment\n' + SPLITS_DOC + ' (reworded)')},
    "pooling code": {"backbones/hf_encoder.py": ("clamp(min=1e-9)", "clamp(min=1e-6)")},
    "pooling comment": {"backbones/hf_encoder.py": (POOL_DOC, POOL_DOC + " (reworded)")},
}


def test_code_version_follows_code_not_comments(tmp_path):
    topic_frame().to_csv(tmp_path / "topics.csv", index=False)  # one data file: only the code differs
    keys = {"original": "prepared_key", "splits code": "prepared_key", "pooling code": "features_key"}
    copies = {name: copy_tree(tmp_path / name.replace(" ", "_"), edits) for name, edits in EDITS.items()}
    v = {name: in_copy(src, tmp_path / "topics.csv", keys.get(name)) for name, src in copies.items()}
    versions = {name: {k: r[k] for k in ("prepare", "extract")} for name, r in v.items()}
    assert versions["splits comment"] == versions["original"]
    assert versions["pooling comment"] == versions["original"]
    assert v["splits code"]["prepare"] != v["original"]["prepare"]
    assert v["splits code"]["extract"] != v["original"]["extract"]  # extract imports splits too
    assert v["pooling code"]["extract"] != v["original"]["extract"]
    assert v["pooling code"]["prepare"] == v["original"]["prepare"]  # prepare never runs the encoder
    assert v["original"]["prepare"] == code_version("transferlab.stages.prepare")  # the copy is this tree
    # ... and the caches' keys follow: a fix to splitting or pooling is a miss, never a stale hit
    here = keys_here(tmp_path / "topics.csv")
    assert v["original"]["prepared_key"] == here["prepared_key"]
    assert v["splits code"]["prepared_key"] != here["prepared_key"]
    assert v["pooling code"]["features_key"] != here["features_key"]


class GivesUpTheGil:
    """Freed by the garbage collector (a cycle) and sleeping in its finalizer, so that another thread
    runs in the middle of whatever triggered the collection."""

    def __init__(self) -> None:
        self.cycle = self

    def __del__(self) -> None:
        time.sleep(0)


def test_code_is_parsed_safely_from_several_threads():
    """A flow's cells key their caches from threads, beside threads of other libraries that parse
    too. CPython 3.11's AST constructor keeps one recursion counter for all threads: a collection
    inside one thread's parse that lets another thread parse failed the first with "SystemError:
    AST constructor recursion depth mismatch" (seen in a ddp flow run; python/cpython#106905)."""
    files = closure_files("transferlab.pipeline")
    errors: list[BaseException] = []

    def parse_repeatedly() -> None:
        try:
            for _ in range(8):
                for path in files[:6]:
                    for _ in range(5):
                        GivesUpTheGil()
                    normalized_source(path)
        except BaseException as exc:  # noqa: BLE001 -- a thread's error is the test's result
            errors.append(exc)

    def parse_elsewhere() -> None:  # as Python 3.11's traceback formatting does, outside our lock
        text = files[0].read_text()
        for _ in range(200):
            GivesUpTheGil()
            try:
                ast.parse(text)
            except SystemError:
                pass  # another library's parse, hit by ours: not ours to mend

    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    gc.set_threshold(50)  # collect often
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=parse_repeatedly) for _ in range(3)] + [threading.Thread(target=parse_elsewhere)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        gc.set_threshold(*threshold)
        sys.setswitchinterval(interval)
    assert not errors, errors[0]


def test_every_dvc_stage_depends_on_exactly_the_code_it_imports():
    """dvc.yaml's code deps of each stage = the import closure of its module (repro.STAGE_MODULES),
    plus the entry that runs it (cli.py -> repro.py): editing any module a stage runs reruns it."""
    import yaml

    from transferlab.repro import STAGE_MODULES

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(STAGE_MODULES)
    for name, stage in stages.items():
        listed = set()
        for dep in (d for d in stage["deps"] if d.startswith("src/")):
            path = ROOT / dep
            assert path.exists(), f"{name}: {dep} does not exist"
            listed |= {p.relative_to(ROOT) for p in path.rglob("*.py")} if path.is_dir() else {Path(dep)}
        expected = {p.resolve().relative_to(ROOT) for p in closure_files(STAGE_MODULES[name])}
        expected |= {Path("src/transferlab/cli.py"), Path("src/transferlab/repro.py")}
        assert listed == expected, (name, sorted(map(str, expected - listed)), sorted(map(str, listed - expected)))


def test_no_stage_imports_another_stage_and_models_are_rebuilt_in_one_place():
    stages = [f"transferlab.stages.{p.stem}" for p in (PACKAGE / "stages").glob("*.py") if p.stem != "__init__"]
    assert len(stages) == 5
    for stage in stages:
        others = [m for m in import_closure(stage) if m.startswith("transferlab.stages.") and m != stage]
        assert others == [], (stage, others)
    for user in ("transferlab.stages.evaluate", "transferlab.predict", "transferlab.export"):
        assert "transferlab.models" in import_closure(user)
    assert "transferlab.pipeline" not in import_closure("transferlab.models")  # the core builds on it, not the reverse
