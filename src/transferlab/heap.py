"""The process heap under glibc: large tensors reused while a model runs, freed memory handed back.

glibc serves each allocation above its mmap threshold (32 MiB at most) with a fresh mmap and
unmaps it when freed. A fine-tuning step allocates such tensors anew every time (MiniLM's word
embedding alone gets a fresh 47 MB dense gradient), and every page of a fresh mapping faults on
first touch: 20-40k page faults a step on this project's 2-core VMs, 15-30 % of a tweet step's time.
While a `RetainedHeap` callback's Trainer runs, mmap is off and the heap's top is not trimmed, so
the next step reuses the memory the last one freed; when the last such Trainer ends, the usual
settings come back (with glibc's threshold no longer adapting) and the freed memory is returned to
the OS (a later cell's peak memory is its own).
"""

from __future__ import annotations

import ctypes
import gc
import platform
import threading
from functools import cache
from typing import Any

import lightning.pytorch as L

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
USUAL = {M_TRIM_THRESHOLD: 128 * 1024, M_MMAP_MAX: 65536}  # glibc's defaults
RETAINED = {M_TRIM_THRESHOLD: 2**31 - 1, M_MMAP_MAX: 0}  # mallopt takes an int: ~2 GiB kept at most

_lock = threading.Lock()
_holders = 0  # Trainers running now (threads of one flow may run cells side by side)


@cache
def glibc() -> ctypes.CDLL | None:
    return ctypes.CDLL("libc.so.6") if platform.libc_ver()[0] == "glibc" else None


def _set(settings: dict[int, int]) -> None:
    libc = glibc()
    if libc is not None:
        for parameter, value in settings.items():
            libc.mallopt(parameter, value)


def trim() -> None:
    """Hand the heap's free pages back to the OS (glibc keeps them resident): ~1 ms."""
    if glibc() is not None:
        glibc().malloc_trim(0)


def release_freed_memory() -> None:
    """Collect garbage, then trim, so that a block measured after, say, a fine-tune in the same
    process does not start from that fine-tune's high-water mark: RSS then is about what is live.
    The collection takes ~0.25 s in a process that has the whole stack imported."""
    gc.collect()
    trim()


def retain() -> None:
    global _holders
    with _lock:
        if _holders == 0:
            _set(RETAINED)
        _holders += 1


def release() -> None:
    global _holders
    with _lock:
        _holders -= 1
        if _holders == 0:
            _set(USUAL)
            trim()  # no gc.collect (~0.25 s a Trainer): tensors of the steps are freed by refcount


class RetainedHeap(L.Callback):
    """Retains the heap from a Trainer's setup to its teardown (or the exception that ends it), in
    each process that runs it (a DDP worker unpickles its own copy)."""

    def __init__(self) -> None:
        self.holding = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.holding:
            self.holding = True
            retain()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.holding:
            self.holding = False
            release()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "exception")

    def __getstate__(self) -> dict[str, Any]:
        return {"holding": False}  # a spawned worker holds nothing until its own setup
