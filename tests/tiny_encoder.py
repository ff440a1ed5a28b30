"""A tiny randomly initialised BERT (about 10k parameters) with a word-level vocabulary of the test
texts: the real `backbone=hf_encoder` code path (tokeniser, layer groups, LoRA targets, pooling) in
milliseconds, for the tests that check logic rather than quality."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from filelock import FileLock

from conftest import ROOT, TOPICS

LOCATION = ROOT / ".cache" / "tiny-encoder"
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocabulary() -> list[str]:
    words = {w for texts in TOPICS.values() for t in texts for w in re.findall(r"\w+", t.lower())}
    return SPECIAL + sorted(words | {"report"}) + [str(d) for d in range(10)] + list("().,!?-")


def build(target: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        words = {w: i for i, w in enumerate(vocabulary())}
        BertTokenizerFast(vocab=words, do_lower_case=True).save_pretrained(tmp)
        config = BertConfig(vocab_size=len(vocabulary()), hidden_size=16, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
        torch.manual_seed(0)
        BertModel(config, add_pooling_layer=False).save_pretrained(tmp)
        os.replace(tmp, target)
        Path(tmp).mkdir()  # TemporaryDirectory removes what is at its path


def tiny_encoder() -> Path:
    """The model folder, built once per checkout (under .cache/, shared by test processes)."""
    LOCATION.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(LOCATION) + ".lock"):
        if not (LOCATION / "config.json").is_file():
            build(LOCATION)
    return LOCATION


def overrides() -> list[str]:
    return ["backbone=hf_encoder", f"backbone.model={tiny_encoder()}", "backbone.max_length=32"]
