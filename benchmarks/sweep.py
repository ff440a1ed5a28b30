"""Wall time of the user's commands: an 8-config head sweep vs one config (each from a cold cache),
and a rerun of that one config with its stages cached."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Figure

DATA = ["data=bbc_news", "data.train_size=200", "trainer.enable_progress_bar=false"]
DECAYS = "0.001,0.01,0.1,1,10,100,1000,10000"


def adapt(*args: str) -> float:
    flags = [a for a in args if a.startswith("-")]
    started = time.perf_counter()
    subprocess.run([sys.executable, "flows/adapt.py", *flags, *DATA, *(a for a in args if a not in flags)],
                   cwd=ROOT, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def measure() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one = adapt(f"paths.cache_dir={tmp / 'one'}", f"hydra.run.dir={tmp / 'run1'}")
        again = adapt(f"paths.cache_dir={tmp / 'one'}", f"hydra.run.dir={tmp / 'run2'}")
        sweep = adapt("-m", f"strategy.C={DECAYS}", f"paths.cache_dir={tmp / 'sweep'}",
                      f"hydra.sweep.dir={tmp / 'sweep_runs'}")
    return [Figure("8-config head sweep vs 1 config (wall s)", sweep, one, "s", sweep / one, "<= 1.5x",
                   "python flows/adapt.py -m strategy.C=<8 values>, BBC 200 labels, cold caches"),
            Figure("flow rerun with prepare+extract cached vs first run (wall s)", again, one, "s", again / one, "",
                   "the same command twice; the head retrains (it is cheap), the rest is cached")]
