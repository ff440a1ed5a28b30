"""Lightning DataModules over prepared splits: cached features, or texts for fine-tuning."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from transferlab.data.splits import SPLITS


def read_split(data_dir: str | Path, split: str) -> pd.DataFrame:
    return pd.read_parquet(Path(data_dir) / f"{split}.parquet")


def labels_of(data_dir: str | Path, split: str) -> torch.Tensor:
    return torch.tensor(read_split(data_dir, split)["label"].to_numpy(), dtype=torch.long)


class FeatureDataModule(L.LightningDataModule):
    """Whole feature matrices in memory; no workers, nothing to decode."""

    def __init__(self, features: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], batch_size: int):
        super().__init__()
        self.sets = {s: TensorDataset(features[s], labels[s]) for s in features}
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["val"], batch_size=1024)

    def loader(self, split: str) -> DataLoader:
        return DataLoader(self.sets[split], batch_size=1024)


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


class InputDataModule(L.LightningDataModule):
    """Raw inputs (texts, images) of the prepared splits, for fine-tuning and for extraction."""

    def __init__(self, data_dir: str | Path, backbone, batch_size: int, eval_batch_size: int = 64):
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
        return DataLoader(ds, batch_size=self.batch_size, shuffle=True, collate_fn=ds.collate)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def loader(self, split: str) -> DataLoader:
        """Length-bucketed for inference: `loader.dataset.indices` maps outputs back to rows."""
        self.setup()
        ds = self.sets[split]
        return DataLoader(torch.utils.data.Subset(ds, ds.by_length()), batch_size=self.eval_batch_size,
                          collate_fn=ds.collate)


def in_row_order(outputs: torch.Tensor, loader: DataLoader) -> torch.Tensor:
    """Undo the length bucketing of `InputDataModule.loader`: row i of the result is split row i."""
    ordered = torch.empty_like(outputs)
    ordered[torch.tensor(loader.dataset.indices)] = outputs
    return ordered
