"""`transferlab predict` on a file as users write them: any name for the text column.
A real linear-probe run on the tiny encoder, trained once on a table whose text column is `review`,
labels the files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import PYTHON, ROOT, run_cell, topic_config, topic_frame


REVIEWS = ["The striker scored twice in the cup final", "The new smartphone has a faster processor"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    topic_frame().rename(columns={"text": "review"}).to_csv(root / "reviews.csv", index=False)
    run_cell(topic_config(root, "strategy=linear_probe", f"data.path={root / 'reviews.csv'}",
                          "data.text_column=review"), root / "run")
    return root / "run"


def predict(run: Path, table: pd.DataFrame, folder: Path, *options: str) -> subprocess.CompletedProcess:
    table.to_csv(folder / "new.csv", index=False)
    return subprocess.run([str(Path(PYTHON).parent / "transferlab"), "predict", str(run), str(folder / "new.csv"),
                           *options, "-o", str(folder / "preds.csv")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_the_predictions_show_each_text_whatever_its_column_is_called(trained, tmp_path):
    """As the user runs it: `--column body` writes the texts in `input`, not their row numbers."""
    proc = predict(trained, pd.DataFrame({"id": [7, 8], "body": REVIEWS}), tmp_path, "--column", "body")
    assert proc.returncode == 0, proc.stderr
    assert pd.read_csv(tmp_path / "preds.csv")["input"].tolist() == REVIEWS


def test_a_file_laid_out_like_the_training_data_needs_no_column_option(trained, tmp_path):
    """The run trained on `review`: a file with that column is read from it (it looked for `text`)."""
    proc = predict(trained, pd.DataFrame({"id": [7, 8], "review": REVIEWS}), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert pd.read_csv(tmp_path / "preds.csv")["input"].tolist() == REVIEWS
    proc = predict(trained, pd.DataFrame({"body": REVIEWS}), tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "no column 'review' or 'text'" in proc.stderr and "--column" in proc.stderr, proc.stderr
