"""`dvc repro` with nothing changed, in a temporary clone of the project on small local data."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import ROOT, Figure


def dvc(repo: Path, *args: str) -> float:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    started = time.perf_counter()
    subprocess.run([str(bin_dir / "dvc"), *args], cwd=repo, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def small_repo(repo: Path) -> None:
    """The project's dvc.yaml, conf/ and code; the default data swapped for 300 BBC articles."""
    from transferlab.config import write_params

    for name in ("dvc.yaml", "conf", "src"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, repo / name)
    conf = repo / "conf"
    (conf / "data" / "bbc_news.yaml").write_text((conf / "data" / "bbc_news.yaml").read_text()
                                                 .replace("limit: null", "limit: 300"))
    compare = yaml.safe_load((conf / "compare" / "default.yaml").read_text())  # every key, the grid changed
    compare.update(strategies=["linear_probe", "mlp_head"], train_sizes=[50, 100], seeds=[0], workers=1)
    (conf / "compare" / "default.yaml").write_text(yaml.safe_dump(compare))
    write_params(repo / "params.yaml", conf_dir=conf)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "b@b"], ["git", "config", "user.name", "b"]):
        subprocess.run(cmd, cwd=repo, check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")


def measure() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        small_repo(repo)
        first = dvc(repo, "repro")
        noop = statistics.median(dvc(repo, "repro") for _ in range(3))
    return [Figure("dvc repro with nothing changed (s)", noop, 2.0, "s", noop / 2.0, "<= 1.0x",
                   f"vs the 2 s goal; {len(yaml.safe_load((ROOT / 'dvc.yaml').read_text())['stages'])} stage "
                   f"definitions (9 stages with the matrix); the first repro took {first:.0f} s")]
