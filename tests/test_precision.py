"""`precision: auto` picks bf16 only where the hardware has it, and the resolved value is what every
record says: the checked config, model.json and metrics.json."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf
from conftest import run_cell, topic_config

from transferlab import precision

AVX2_ONLY = {"fpu", "sse2", "avx", "avx2", "fma"}


@pytest.mark.parametrize("flags, extract, trainer", [
    (AVX2_ONLY, "fp32", "32-true"),
    (AVX2_ONLY | {"avx512f", "avx512_bf16"}, "bf16", "bf16-mixed"),
    (AVX2_ONLY | {"amx_bf16", "amx_tile"}, "bf16", "bf16-mixed"),
], ids=["avx2-only", "avx512-bf16", "amx-bf16"])
def test_auto_resolves_from_the_cpu_flags(flags, extract, trainer):
    assert precision.extraction("auto", "cpu", flags) == extract
    assert precision.training("auto", "cpu", flags) == trainer


def test_an_explicit_precision_is_kept_whatever_the_cpu():
    assert precision.extraction("fp32", "cpu", {"amx_bf16"}) == "fp32"
    assert precision.training("bf16-mixed", "cpu", AVX2_ONLY) == "bf16-mixed"
    assert precision.training("32-true", "cpu", {"avx512_bf16"}) == "32-true"


def test_this_machines_cpu_is_read():
    model, flags = precision.cpu_info()
    assert model and "fpu" in flags  # every x86-64 and the flags line of /proc/cpuinfo


def test_a_bare_model_name_gets_its_family_and_model_number():
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n" \
           "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\ncpu family\t: 99\n"
    assert precision.parse_cpuinfo(text) == ("AMD EPYC (family 25, model 17)",
                                             frozenset({"fpu", "avx2", "avx512_bf16"}))


def test_the_resolved_precision_is_what_the_config_and_the_run_records_say(tmp_path):
    cfg = topic_config(tmp_path, "strategy=finetune_full", "strategy.max_epochs=1", "strategy.min_steps=0")
    expected = (precision.extraction("auto", "cpu"), precision.training("auto", "cpu"))
    assert (cfg.extract.precision, cfg.trainer.precision) == expected
    metrics = run_cell(cfg, tmp_path / "run")
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert (card["precision"]["extract"], card["precision"]["trainer"]) == expected
    assert (metrics["extract_precision"], metrics["trainer_precision"]) == expected
    assert metrics["cpu"] == precision.cpu_model() == card["cpu"]
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")  # what `transferlab predict` rebuilds from
    assert (saved.extract.precision, saved.trainer.precision) == expected
