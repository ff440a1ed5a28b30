"""The LightningModules: a head on cached features, and backbone + head for fine-tuning."""

from __future__ import annotations

from typing import Any, Callable

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import nn

from transferlab.checkpoints import full_state, leave_out


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != "labels"}


class FeatureExtractor(L.LightningModule):
    """Inference-only wrapper: the frozen backbone's pooled features in fp32, whatever dtype its
    weights are in (float inputs, such as images, are cast to it)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        dtype = next(self.backbone.parameters()).dtype
        inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model_inputs(batch).items()}
        return self.backbone(**inputs).float()


class Classifier(L.LightningModule):
    """Shared steps: cross-entropy, accuracy, logits from `predict_step`.

    Validation metrics are averaged over DDP processes (sync_dist; a no-op in one process): early
    stopping and checkpointing decide on them, and every process must decide alike."""

    def step(self, batch, stage: str) -> torch.Tensor:
        logits, labels = self.logits_and_labels(batch)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(-1) == labels).float().mean()
        self.log_dict({f"{stage}_loss": loss, f"{stage}_acc": acc}, prog_bar=stage == "val",
                      batch_size=len(labels), sync_dist=stage != "train")
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self.step(batch, "val")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.logits_and_labels(batch)[0].float()


def build_head(feature_dim: int, num_classes: int, head: Any) -> nn.Module:
    """`linear`, or `mlp`: one hidden layer with ReLU and dropout."""
    if head.type == "mlp":
        return nn.Sequential(nn.Linear(feature_dim, head.hidden_dim), nn.ReLU(), nn.Dropout(head.dropout),
                             nn.Linear(head.hidden_dim, num_classes))
    return nn.Linear(feature_dim, num_classes)


LBFGS_MAX_ITERATIONS = 1000  # one optimizer step (an epoch) solves to strategy.tol, or stops here


class HeadClassifier(Classifier):
    """Transfer learning: a head trained on frozen-backbone features.

    `lbfgs` trains on the whole feature matrix as one batch, as scikit-learn's LogisticRegression
    does, with weight_decay as an L2 penalty in the loss (mean cross-entropy + weight_decay/2 |W|^2,
    i.e. C = 1 / (weight_decay x rows)), to convergence; `adamw` takes mini-batches."""

    def __init__(self, head: nn.Module, lr: float, weight_decay: float, optimizer: str, tol: float):
        super().__init__()
        self.head = head
        self.lr, self.weight_decay, self.optimizer, self.tol = lr, weight_decay, optimizer, tol
        # L-BFGS evaluates the loss ~20 times a step: those evaluations run as plain torch in our
        # closure, and the step is logged once, instead of Lightning's hooks and logging for each.
        self.automatic_optimization = optimizer != "lbfgs"

    def logits_and_labels(self, batch):
        features, labels = batch
        return self.head(features), labels

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        if self.automatic_optimization:
            return self.step(batch, "train")
        features, labels = batch
        optimizer = self.optimizers()
        weights = [p for name, p in self.head.named_parameters() if name.endswith("weight")]

        def penalised_loss() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(self.head(features), labels)
            loss = loss + 0.5 * self.weight_decay * sum(w.pow(2).sum() for w in weights)
            self.manual_backward(loss)
            return loss

        optimizer.step(penalised_loss)
        with torch.no_grad():
            self.step(batch, "train")
        return None

    def configure_optimizers(self):
        if self.optimizer == "lbfgs":
            return torch.optim.LBFGS(self.parameters(), lr=self.lr, max_iter=LBFGS_MAX_ITERATIONS,
                                     max_eval=2 * LBFGS_MAX_ITERATIONS, history_size=10,
                                     tolerance_grad=self.tol, line_search_fn="strong_wolfe")
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=True)


class FinetuneClassifier(Classifier):
    """Fine-tuning: backbone + head. The strategy has set what requires grad and built the
    optimizer's parameter groups (with their learning rates) before this module sees them.
    `param_groups` must pickle (a function or functools.partial, no lambda): ddp_spawn sends the
    module to its worker processes."""

    def __init__(self, backbone: nn.Module, head: nn.Module, param_groups: Callable[[], list[dict]],
                 weight_decay: float, warmup_ratio: float):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.param_groups = param_groups
        self.weight_decay, self.warmup_ratio = weight_decay, warmup_ratio

    def logits_and_labels(self, batch):
        return self.head(self.backbone(**model_inputs(batch))), batch["labels"]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The weights no optimizer updates are left out (LoRA, last-N: the frozen backbone). Gradual
        unfreezing has every weight in its optimizer, so a weight frozen when the best checkpoint
        is written, which trains later, is kept in it."""
        if not self.trainer.optimizers:  # written before the optimizer exists: nothing to go by
            return
        updated = {id(p) for optimizer in self.trainer.optimizers for group in optimizer.param_groups
                   for p in group["params"]}
        leave_out(checkpoint, [name for name, p in self.named_parameters() if id(p) not in updated])

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = full_state(checkpoint, self, "the checkpoint resumed from")

    def configure_optimizers(self):
        # fused: one kernel for all parameters; the per-parameter loop (sqrt, div, lerp per tensor)
        # was 37% of a MiniLM step at batch 16 on 2 cores, fused ran 1.3x the samples/s. Not under
        # fp16's GradScaler, which must unscale gradients before they are clipped.
        optimizer = torch.optim.AdamW(self.param_groups(), weight_decay=self.weight_decay,
                                      fused=self.trainer.precision != "16-mixed")
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.warmup_ratio * total)

        def warmup_then_linear_decay(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_linear_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clipped here, not by Lightning's mixed-precision plugin, which refuses every fused
        optimizer, even under bf16 where nothing is scaled; fp16 keeps Lightning's own path."""
        if self.trainer.precision == "16-mixed":
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if not gradient_clip_val:
            return None
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            return None
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        # clip_grad_norm_ scales by min(1, max / (norm + 1e-6)) always, so that a GPU never waits
        # for the norm; on a CPU the comparison is free, and at scale 1 the pass over every gradient
        # (~6 ms of a ~200 ms MiniLM step on 2 cores) is skipped
        if norm.device.type != "cpu" or norm + 1e-6 > gradient_clip_val:
            torch.nn.utils.clip_grads_with_norm_(params, gradient_clip_val, norm)
        return None
