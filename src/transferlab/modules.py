"""The LightningModules: a head on cached features, and backbone + head for fine-tuning."""

from __future__ import annotations

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import nn


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != "labels"}


class FeatureExtractor(L.LightningModule):
    """Inference-only wrapper: the frozen backbone's pooled features, in fp32 whatever the autocast."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.backbone(**model_inputs(batch)).float()


class Classifier(L.LightningModule):
    """Shared steps: cross-entropy, accuracy, logits from `predict_step`."""

    def step(self, batch, stage: str) -> torch.Tensor:
        logits, labels = self.logits_and_labels(batch)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(-1) == labels).float().mean()
        self.log_dict({f"{stage}_loss": loss, f"{stage}_acc": acc}, prog_bar=stage == "val",
                      batch_size=len(labels))
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self.step(batch, "val")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.logits_and_labels(batch)[0].float()


class HeadClassifier(Classifier):
    """Transfer learning: a linear head trained on frozen-backbone features."""

    def __init__(self, feature_dim: int, num_classes: int, lr: float, weight_decay: float):
        super().__init__()
        self.head = nn.Linear(feature_dim, num_classes)
        self.lr, self.weight_decay = lr, weight_decay

    def logits_and_labels(self, batch):
        features, labels = batch
        return self.head(features), labels

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class FinetuneClassifier(Classifier):
    """Fine-tuning: backbone + head; the strategy has already set what requires grad."""

    def __init__(self, backbone: nn.Module, num_classes: int, lr: float, head_lr: float | None,
                 weight_decay: float, warmup_ratio: float):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_dim, num_classes)
        self.lr, self.head_lr = lr, head_lr or lr
        self.weight_decay, self.warmup_ratio = weight_decay, warmup_ratio

    def logits_and_labels(self, batch):
        return self.head(self.backbone(**model_inputs(batch))), batch["labels"]

    def configure_optimizers(self):
        groups = [{"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr": self.lr},
                  {"params": list(self.head.parameters()), "lr": self.head_lr}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=self.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.warmup_ratio * total)

        def warmup_then_linear_decay(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_linear_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
