"""Fine-tuning samples/s: transferlab's Lightning module and DataModule vs a plain PyTorch loop over
the same model, tokenised data, batch size, optimiser and precision."""

from __future__ import annotations

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from common import Figure, best_of, prepared

EPOCHS = 1


def lightning_fit(cfg, data_dir) -> int:
    from transferlab.data.datamodules import InputDataModule
    from transferlab.models import build
    from transferlab.strategy import resolve

    L.seed_everything(0, verbose=False)
    module = build(cfg, 3)
    datamodule = InputDataModule(data_dir, module.backbone, resolve(cfg).budget.batch_size)
    datamodule.setup()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=EPOCHS, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        precision=cfg.trainer.precision)
    trainer.fit(module, train_dataloaders=datamodule.train_dataloader())
    return EPOCHS * len(datamodule.sets["train"])


def plain_loop(cfg, data_dir) -> int:
    """What a user writes by hand: shuffled batches, forward, loss, backward, step."""
    from transferlab.data.datamodules import InputDataModule
    from transferlab.models import build
    from transferlab.strategy import resolve

    torch.manual_seed(0)
    strategy = resolve(cfg)
    module = build(cfg, 3)
    dataset = InputDataModule(data_dir, module.backbone, strategy.budget.batch_size)
    dataset.setup()
    train = dataset.sets["train"]
    loader = DataLoader(train, batch_size=strategy.budget.batch_size, shuffle=True, collate_fn=train.collate)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=strategy.lr)
    module.train()
    bf16 = cfg.trainer.precision.startswith("bf16")
    for _ in range(EPOCHS):
        for batch in loader:
            labels = batch.pop("labels")
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(module.head(module.backbone(**batch)), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return EPOCHS * len(train)


def measure() -> list[Figure]:
    from transferlab.strategy import resolve

    figures = []
    for precision, train_size in (("32-true", 256), ("bf16-mixed", 64)):  # bf16: fewer if emulated
        cfg, data_dir, _ = prepared("data=tweet_sentiment", f"data.train_size={train_size}", "data.limit=4000",
                                    "strategy=finetune_full", f"trainer.precision={precision}",
                                    "trainer.deterministic=false")
        (plain_s, n), (ours_s, _) = best_of([lambda: plain_loop(cfg, data_dir),
                                             lambda: lightning_fit(cfg, data_dir)],
                                            repeats=2 if precision == "32-true" else 1)
        figures.append(Figure(f"fine-tuning {precision} (samples/s)", n / ours_s, n / plain_s, "samples/s",
                              plain_s / ours_s, ">= 0.95x",
                              f"MiniLM full fine-tune, {n} tweets x {EPOCHS} epoch, batch {resolve(cfg).budget.batch_size}; "
                              "ours draws length-bucketed batches, the plain loop shuffles"))
    return figures
