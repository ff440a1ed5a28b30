"""Shared fixtures: real small data, the real MiniLM, quiet offline settings for Prefect and HF."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
for key, value in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                   "PREFECT_LOGGING_LEVEL": "WARNING",
                   "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}.items():
    os.environ.setdefault(key, value)

PYTHON = sys.executable

TOPICS = {
    "sport": ["The striker scored twice as the home team won the league match",
              "The tennis champion lost in the final set after a long rally",
              "The coach praised the defence after the cup victory on Saturday",
              "The runner broke the world record at the athletics championship"],
    "tech": ["The new smartphone ships with a faster processor and better camera",
             "Software developers released an update that fixes the security flaw",
             "The chip maker unveiled a graphics card for gaming computers",
             "Broadband providers are rolling out faster internet connections"],
    "business": ["Shares fell sharply after the company reported lower quarterly profits",
                 "The central bank raised interest rates to curb inflation",
                 "The retailer announced job cuts as sales slowed over the holidays",
                 "Oil prices climbed as investors worried about supply"],
}


def topic_frame(copies: int = 5) -> pd.DataFrame:
    """Small, real, separable text data: each topic's sentences with distinct numbered suffixes."""
    rows = [(f"{text} (report {i})", label) for label, texts in TOPICS.items()
            for i in range(copies) for text in texts]
    return pd.DataFrame(rows, columns=["text", "topic"])


@pytest.fixture
def topic_csv(tmp_path: Path) -> Path:
    path = tmp_path / "topics.csv"
    topic_frame().to_csv(path, index=False)
    return path
