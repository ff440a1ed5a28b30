"""Lightning DataModules over prepared splits: cached features, or texts for fine-tuning."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, TensorDataset

from transferlab.data.splits import SPLITS


def split_file(data_dir: str | Path, split: str) -> Path:
    """Where `prepare` writes a split."""
    return Path(data_dir) / f"{split}.parquet"


def read_split(data_dir: str | Path, split: str) -> pd.DataFrame:
    return pd.read_parquet(split_file(data_dir, split))


def labels_of(data_dir: str | Path, split: str) -> torch.Tensor:
    return torch.tensor(read_split(data_dir, split)["label"].to_numpy(), dtype=torch.long)


def tensor_batches(dataset: TensorDataset, batch_size: int | None, shuffle: bool) -> DataLoader:
    """A batch is one fancy-index of the in-memory matrices (no per-row fetch, no collate);
    batch_size None gives the whole split as one batch (full-batch L-BFGS)."""
    size = batch_size or len(dataset)
    order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, sampler=BatchSampler(order, size, drop_last=False), batch_size=None)


class FeatureDataModule(L.LightningDataModule):
    """Whole feature matrices in memory; no workers, nothing to decode."""

    def __init__(self, features: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                 batch_size: int | None):
        super().__init__()
        self.sets = {s: TensorDataset(features[s], labels[s]) for s in features}
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return tensor_batches(self.sets["train"], self.batch_size, shuffle=self.batch_size is not None)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def loader(self, split: str) -> DataLoader:
        return tensor_batches(self.sets[split], 4096, shuffle=False)


class EncodedInputs(Dataset):
    """A split's inputs encoded once by the backbone (tokenised, resized); batches collated by it."""

    def __init__(self, items: list, labels: torch.Tensor, backbone):
        self.encoded = backbone.encode(items)
        self.labels = labels
        self.backbone = backbone

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple:
        return self.encoded[i], int(self.labels[i])

    def collate(self, batch: list[tuple]) -> dict[str, torch.Tensor]:
        inputs = self.backbone.collate([item for item, _ in batch])
        return {**inputs, "labels": torch.tensor([y for _, y in batch], dtype=torch.long)}

    def by_length(self) -> list[int]:
        return sorted(range(len(self)), key=lambda i: self.backbone.item_length(self.encoded[i]))


class LengthBucketSampler(BatchSampler):
    """Shuffled batches of similar-length items, so dynamic padding pads little while training.

    Indices come from `sampler` (random, or Lightning's DistributedSampler under DDP) in pools of
    `pool_batches` batches; each pool is sorted by length and cut into batches, whose order is shuffled."""

    def __init__(self, sampler, batch_size: int, drop_last: bool, lengths: list[int] | None = None,
                 pool_batches: int = 50):
        super().__init__(sampler, batch_size, drop_last)
        self.lengths, self.pool_batches = lengths, pool_batches

    def __iter__(self):
        order = list(self.sampler)
        pool = self.batch_size * self.pool_batches
        batches = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start:start + pool], key=lambda i: self.lengths[i])
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        for i in torch.randperm(len(batches)).tolist():
            yield batches[i]


class InputDataModule(L.LightningDataModule):
    """Raw inputs (texts, images) of the prepared splits, for fine-tuning and for extraction."""

    def __init__(self, data_dir: str | Path, backbone, batch_size: int, eval_batch_size: int):
        super().__init__()
        self.data_dir, self.backbone = Path(data_dir), backbone
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.sets: dict[str, EncodedInputs] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.sets:
                frame = read_split(self.data_dir, split)
                self.sets[split] = EncodedInputs(frame[self.backbone.input_column].tolist(),
                                                 torch.tensor(frame["label"].to_numpy()), self.backbone)

    def train_dataloader(self) -> DataLoader:
        ds = self.sets["train"]
        lengths = [self.backbone.item_length(item) for item in ds.encoded]
        sampler = LengthBucketSampler(RandomSampler(ds), self.batch_size, False, lengths)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=ds.collate)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def loader(self, split: str) -> DataLoader:
        self.setup()
        return by_length(self.sets[split], self.eval_batch_size)


def by_length(dataset: EncodedInputs, batch_size: int) -> DataLoader:
    """Batches of similar length for a forward-only pass (least padding); `loader.dataset.indices`
    maps outputs back to rows (`in_row_order`)."""
    return DataLoader(torch.utils.data.Subset(dataset, dataset.by_length()), batch_size=batch_size,
                      collate_fn=dataset.collate)


def in_row_order(outputs: torch.Tensor, loader: DataLoader) -> torch.Tensor:
    """Undo the length bucketing of `InputDataModule.loader`: row i of the result is split row i."""
    ordered = torch.empty_like(outputs)
    ordered[torch.tensor(loader.dataset.indices)] = outputs
    return ordered
