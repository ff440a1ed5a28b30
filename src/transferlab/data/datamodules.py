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


class TokenizedTexts(Dataset):
    """Texts tokenised once up front (not per epoch); batches are padded per batch."""

    def __init__(self, texts: list[str], labels: torch.Tensor, backbone):
        enc = backbone.tokenizer(texts, truncation=True, max_length=backbone.max_length)
        self.input_ids = enc["input_ids"]
        self.labels = labels
        self.pad_id = backbone.tokenizer.pad_token_id or 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[list[int], int]:
        return self.input_ids[i], int(self.labels[i])

    def collate(self, batch: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (seq, _) in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask,
                "labels": torch.tensor([y for _, y in batch], dtype=torch.long)}


class TextDataModule(L.LightningDataModule):
    def __init__(self, data_dir: str | Path, backbone, batch_size: int, eval_batch_size: int = 64):
        super().__init__()
        self.data_dir, self.backbone = Path(data_dir), backbone
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.sets: dict[str, TokenizedTexts] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.sets:
                frame = read_split(self.data_dir, split)
                self.sets[split] = TokenizedTexts(frame["text"].tolist(),
                                                  torch.tensor(frame["label"].to_numpy()), self.backbone)

    def train_dataloader(self) -> DataLoader:
        ds = self.sets["train"]
        return DataLoader(ds, batch_size=self.batch_size, shuffle=True, collate_fn=ds.collate)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def loader(self, split: str) -> DataLoader:
        self.setup()
        ds = self.sets[split]
        order = sorted(range(len(ds)), key=lambda i: len(ds.input_ids[i]))  # length-bucketed inference
        return DataLoader(torch.utils.data.Subset(ds, order), batch_size=self.eval_batch_size,
                          collate_fn=ds.collate)
