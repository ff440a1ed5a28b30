"""`transferlab predict` on a file as users write them: any name for the text column.
A real linear-probe run on the tiny encoder, trained once, labels the files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import PYTHON, ROOT, run_cell, topic_config


REVIEWS = ["The striker scored twice in the cup final", "The new smartphone has a faster processor"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    run_cell(topic_config(root, "strategy=linear_probe"), root / "run")
    return root / "run"


def test_the_predictions_show_each_text_whatever_its_column_is_called(trained, tmp_path):
    """As the user runs it: `--column review` writes the texts in `input`, not their row numbers."""
    pd.DataFrame({"id": [7, 8], "review": REVIEWS}).to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "preds.csv"
    proc = subprocess.run([str(Path(PYTHON).parent / "transferlab"), "predict", str(trained), str(tmp_path / "new.csv"),
                           "--column", "review", "-o", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert pd.read_csv(out)["input"].tolist() == REVIEWS
