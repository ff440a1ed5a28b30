"""The retained heap: while transferlab's Trainers run, a large block comes from glibc's heap, not
from a fresh mmap (which page-faults on every touch of every step); once they end, mmap is back and
freed memory goes back to the OS. Observed through glibc's own counters (mallinfo2)."""

from __future__ import annotations

import ctypes
import platform

import lightning.pytorch as L
import psutil
import pytest
import torch
from conftest import topic_config
from torch.utils.data import DataLoader, TensorDataset

from transferlab import heap
from transferlab.heap import RetainedHeap

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator settings")
BIG = 64 * 2**20  # above glibc's largest mmap threshold (32 MiB)
PROBE = 4 * 2**30  # larger than any free chunk earlier tests in this process can have left; never touched


class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


LIBC = heap.glibc()  # heap.py's handle; it calls none of the three functions typed here
if LIBC is not None:
    LIBC.mallinfo2.restype = Mallinfo2
    LIBC.malloc.restype, LIBC.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    LIBC.free.argtypes = [ctypes.c_void_p]


def mmapped_bytes() -> int:
    return LIBC.mallinfo2().hblkhd


def mmapped_by_a_big_block() -> int:
    """Bytes of fresh mappings a new large block took (0: served from the heap). glibc's malloc, as
    torch's CPU allocator calls it, with nothing allocated between it and its free: a tensor's own
    small objects could land above it, so that, freed, it stayed behind as a free chunk big enough
    to serve the next probe from the heap whatever the settings (a flaky test, not a leak)."""
    before = mmapped_bytes()
    block = LIBC.malloc(PROBE)
    taken = mmapped_bytes() - before
    LIBC.free(block)
    return taken


class Allocating(L.LightningModule):
    """A real fit whose every step also makes a large tensor, and notes where it came from."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.fail = fail
        self.mmapped: list[int] = []

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        self.mmapped.append(mmapped_by_a_big_block())
        if self.fail:
            raise RuntimeError("failed on purpose")
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(module: L.LightningModule, callbacks: list) -> None:
    data = DataLoader(TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))), batch_size=4)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks)
    trainer.fit(module, data)


def test_a_fit_reuses_the_heap_and_gives_it_back_after():
    plain = Allocating()
    fit(plain, [])
    assert min(plain.mmapped) >= PROBE  # glibc's default: a fresh mapping each step
    retained = Allocating()
    fit(retained, [RetainedHeap()])
    assert retained.mmapped == [0, 0]
    assert mmapped_by_a_big_block() >= PROBE  # the usual settings are back


def test_freed_memory_goes_back_to_the_os_when_the_fit_ends():
    process = psutil.Process()
    heap.retain()
    resident = process.memory_info().rss
    tensors = [torch.ones(BIG // 4) for _ in range(4)]
    del tensors
    assert process.memory_info().rss - resident >= 3 * BIG  # kept while retained
    heap.release()
    assert process.memory_info().rss - resident < BIG


def test_a_failed_fit_still_restores_the_usual_settings():
    module = Allocating(fail=True)
    with pytest.raises(RuntimeError, match="failed on purpose"):
        fit(module, [RetainedHeap()])
    assert module.mmapped == [0]
    assert mmapped_by_a_big_block() >= PROBE


def test_overlapping_trainers_keep_it_retained_until_the_last_ends():
    heap.retain()
    heap.retain()  # a second cell's Trainer, in another thread of the same flow
    heap.release()
    assert mmapped_by_a_big_block() == 0
    heap.release()
    assert mmapped_by_a_big_block() >= PROBE


def test_extraction_and_training_trainers_retain_it(tmp_path):
    """transferlab's own Trainers: extraction's predict loop (observed from inside the model's
    forward) and every fit build_trainer makes."""
    from transferlab.inference import features_of, frozen_backbone
    from transferlab.strategy import resolve
    from transferlab.trainer import build_trainer

    cfg = topic_config(tmp_path)
    model = frozen_backbone(cfg.backbone, "fp32")
    seen: list[int] = []
    model.register_forward_hook(lambda *_: seen.append(mmapped_by_a_big_block()))
    features_of(model, ["The striker scored twice", "Shares fell sharply"], 1, progress=False)
    assert seen == [0, 0]
    assert mmapped_by_a_big_block() >= PROBE
    trainer = build_trainer(cfg, resolve(cfg), tmp_path / "run", resumable=True, train_rows=8, logger=False)
    assert any(isinstance(c, RetainedHeap) for c in trainer.callbacks)
