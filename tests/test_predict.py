"""`transferlab predict` on a file as users write them: any name for the text column, blank lines.
A real linear-probe run on the tiny encoder, trained once, labels the files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import PYTHON, ROOT, run_cell, topic_config

from transferlab import predict
from transferlab.errors import DataError

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


def test_blank_lines_are_refused_as_empty_inputs_not_dropped(trained, tmp_path):
    """pandas skips a CSV's blank lines: a one-column file's empty inputs would silently yield fewer
    predictions than rows. They are refused like blank cells, naming the file and the rows."""
    new = tmp_path / "new.csv"
    new.write_text(f"review\n{REVIEWS[0]}\n\n{REVIEWS[1]}\n \t\n")
    with pytest.raises(DataError) as raised:
        predict.predict(trained, new, "review")
    assert str(raised.value) == (f"{new}: 2 of 4 rows have an empty 'review' "
                                 "(data rows 2, 4, counting from 1 below the header)")


def test_a_blank_line_inside_a_quoted_text_is_part_of_the_text(trained, tmp_path):
    new = tmp_path / "new.csv"
    new.write_text(f'review\n"{REVIEWS[0]}\n\nand again"\n{REVIEWS[1]}\n')
    assert predict.predict(trained, new, "review")["input"].tolist() == [f"{REVIEWS[0]}\n\nand again", REVIEWS[1]]
