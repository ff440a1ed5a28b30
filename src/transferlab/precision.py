"""`precision: auto`: bf16 where the hardware computes it natively, fp32 elsewhere.

A CPU with AMX-BF16 or AVX512-BF16 runs bf16 matrix products in hardware (several times fp32's
rate); without them bf16 is emulated and 6-8x slower than fp32, so `auto` must look before it
picks. Resolved once, when a config is checked: cache keys, run records, model.json and
metrics.json carry the resolved value, never the word `auto`. Reads /proc/cpuinfo; imports torch
only to ask a GPU."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
EXTRACT = ("auto", "fp32", "bf16")  # extract.precision; bf16: the frozen backbone's weights in bf16
GPU_ACCELERATORS = ("gpu", "cuda")


@functools.lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset[str]]:
    """(name, flags) of this machine's CPU."""
    return parse_cpuinfo(Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else "")


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name with family and model number, flags) from /proc/cpuinfo's text. Virtual machines
    often report a bare "AMD EPYC": two such machines here, both with AVX512-BF16, differed 2x in
    bf16 matmul rate (family 25 model 17 was the slower), and only the numbers tell them apart."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name, frozenset(fields.get("flags", "").split())


def cpu_model() -> str:
    return cpu_info()[0]


def native_bf16(accelerator: str, flags: frozenset[str] | set[str] | None = None) -> bool:
    """Whether bf16 runs in hardware where this config trains: a GPU that supports it, or a CPU
    whose flags include AMX-BF16 or AVX512-BF16 (`flags`: this CPU's unless given)."""
    if accelerator in GPU_ACCELERATORS:
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(set(NATIVE_BF16_FLAGS) & set(cpu_info()[1] if flags is None else flags))


def extraction(setting: str, accelerator: str, flags: frozenset[str] | set[str] | None = None) -> str:
    """extract.precision resolved: fp32 or bf16."""
    if setting != "auto":
        return setting
    return "bf16" if native_bf16(accelerator, flags) else "fp32"


def training(setting: str, accelerator: str, flags: frozenset[str] | set[str] | None = None) -> str:
    """trainer.precision resolved to one of Lightning's: bf16-mixed (fp32 master weights) or 32-true."""
    if setting != "auto":
        return setting
    return "bf16-mixed" if native_bf16(accelerator, flags) else "32-true"
