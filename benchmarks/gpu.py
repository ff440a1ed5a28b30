"""The GPU check of issue 17, as one prepared script: transferlab's own Lightning modules fine-tune
and extract MiniLM in bf16 on a GPU; samples/s and the share of the GPU's bf16 matmul peak.

The GPU machine has torch, Lightning, transformers and PEFT but no Hydra, Prefect or DVC and no
network, and takes at most 64 MiB along. So `pack` runs here and writes `.gpu/` (ignored by git):
the composed config (no Hydra needed to read it), the prepared tweet splits, MiniLM with its
weights in bf16 (45 MB; fine-tuning upcasts them to fp32 master weights), and copies of the
installed pure-Python packages omegaconf, antlr4 and hydra (transferlab's trainer builds Lightning
objects with Hydra's `instantiate`; antlr4 4.9.3 has no wheel to download). `run` runs there, or
here on the CPU to try it (`--accelerator cpu --quick`):

    .venv/bin/python benchmarks/gpu.py pack
    PYTHONPATH=.gpu/site:src python3 benchmarks/gpu.py run --out $OUT/gpu.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / ".gpu"
PURE_PYTHON = ("omegaconf", "antlr4", "hydra")


def pack() -> None:
    """Everything `run` reads, under .gpu/ (rewritten whole)."""
    import torch
    from common import prepared
    from omegaconf import OmegaConf

    shutil.rmtree(PACK, ignore_errors=True)
    cfg, data_dir, _ = prepared("data=tweet_sentiment", "data.train_size=2000", "data.limit=4000",
                                "strategy=finetune_full", "trainer=gpu", "trainer.enable_progress_bar=false")
    from transferlab.backbones.hf_encoder import resolve_model_location

    source = Path(resolve_model_location(cfg.backbone.model, cfg.backbone.local_package))
    from transformers import AutoModel

    model = AutoModel.from_pretrained(source).to(torch.bfloat16)
    model.save_pretrained(PACK / "minilm")
    for f in source.iterdir():  # tokenizer files
        if f.suffix in (".json", ".txt") and f.name != "config.json" and not (PACK / "minilm" / f.name).exists():
            shutil.copy(f, PACK / "minilm" / f.name)
    shutil.copytree(data_dir, PACK / "data")
    cfg.backbone.model, cfg.backbone.local_package = "minilm", None
    OmegaConf.save(OmegaConf.to_container(cfg, resolve=True), PACK / "config.yaml")
    for name in PURE_PYTHON:
        package = Path(importlib.import_module(name).__file__).parent
        shutil.copytree(package, PACK / "site" / name, ignore=shutil.ignore_patterns("__pycache__"))
    size = sum(f.stat().st_size for f in PACK.rglob("*") if f.is_file()) / 2**20
    print(f"packed {PACK}: {size:.1f} MiB")


def finetune(cfg, data_dir: Path, device: str, batch_size: int, epochs: int) -> dict:
    """transferlab's FinetuneClassifier and InputDataModule under a plain Lightning Trainer, bf16-mixed;
    FLOPs counted as benchmarks/finetune.py counts them."""
    import lightning.pytorch as L
    from finetune import classes, epoch_flops

    from transferlab.data.datamodules import InputDataModule
    from transferlab.models import build

    L.seed_everything(0, verbose=False)
    cfg.strategy.batch_size = batch_size
    module = build(cfg, classes(data_dir)).float()  # fp32 master weights from the bf16 pack
    data = InputDataModule(data_dir, module.backbone, batch_size, cfg.extract.batch_size)
    data.setup()
    trainer = L.Trainer(accelerator=device, devices=1, max_epochs=epochs, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, precision=cfg.trainer.precision)
    started = time.perf_counter()
    trainer.fit(module, train_dataloaders=data.train_dataloader())
    seconds = time.perf_counter() - started
    samples = epochs * len(data.sets["train"])
    flops = epoch_flops(cfg, data_dir, device)[0] * epochs
    return {"batch_size": batch_size, "samples": samples, "seconds": round(seconds, 2),
            "samples_per_s": round(samples / seconds, 1), "flop_per_s": flops / seconds}


def extract(cfg, data_dir: Path, batch_size: int) -> dict:
    """transferlab's extraction path (bf16 weights, Lightning's predict loop) over the train texts."""
    import pandas as pd

    from transferlab.inference import features_of, frozen_backbone

    texts = pd.read_parquet(data_dir / "train.parquet")["text"].tolist()
    model = frozen_backbone(cfg.backbone, "bf16")
    features_of(model, texts[:256], batch_size, progress=False)  # warm-up: kernels, allocator
    started = time.perf_counter()
    features_of(model, texts, batch_size, progress=False)
    seconds = time.perf_counter() - started
    return {"texts": len(texts), "batch_size": batch_size, "texts_per_s": round(len(texts) / seconds, 1)}


def run(out: Path | None, accelerator: str, quick: bool) -> dict:
    import torch
    from finetune import matmul_peak
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(PACK / "config.yaml")
    cfg.backbone.model = str(PACK / "minilm")
    cfg.trainer.accelerator = accelerator
    device = "cuda" if accelerator == "gpu" else "cpu"
    data_dir = PACK / "data"
    report = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "torch": torch.__version__, "precision": cfg.trainer.precision}
    big = {} if quick else {"tokens": 16384, "square": 8192}
    report["bf16_peak_flop_per_s"] = matmul_peak(torch.bfloat16, device=device, **big)
    for batch_size in (16,) if quick else (16, 128):
        fit = finetune(cfg, data_dir, device, batch_size, 1 if quick else 3)
        fit["share_of_bf16_peak"] = round(fit["flop_per_s"] / report["bf16_peak_flop_per_s"], 4)
        report[f"finetune_batch{batch_size}"] = fit
        print(json.dumps(fit), flush=True)
    for batch_size in (32,) if quick else (32, 256):
        report[f"extract_batch{batch_size}"] = extract(cfg, data_dir, batch_size)
        print(json.dumps(report[f"extract_batch{batch_size}"]), flush=True)
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("pack", "run"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--quick", action="store_true", help="small sizes, to try the script on a CPU")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]
    if args.what == "pack":
        pack()
    else:
        print(json.dumps(run(args.out, args.accelerator, args.quick), indent=2))


if __name__ == "__main__":
    main()
