"""Export a trained run for serving: merged safetensors weights + config, and TorchScript if it traces."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from transferlab.atomic import atomic_path
from transferlab.backbones import build_backbone
from transferlab.lora import merged
from transferlab.models import load_trained


class ServingModel(nn.Module):
    """Backbone + head in one module: model inputs in, logits out (for head-only runs too)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(**dict(zip(self.input_names, inputs))))


def serving_model(run_dir: Path) -> tuple[ServingModel, dict]:
    trained = load_trained(run_dir)
    module = trained.module
    backbone = module.backbone if trained.card["kind"] == "finetune" else build_backbone(trained.cfg.backbone)
    model = merged(ServingModel(backbone, module.head)).eval()  # LoRA folded into plain weights
    return model, {"cfg": trained.cfg, "card": trained.card}


@torch.no_grad()
def traced(model: ServingModel, example: list) -> torch.jit.ScriptModule:
    """TorchScript of `model`, traced on the example batch and checked against the model on each
    example alone (another length, no padding). A trace records one path through data-dependent
    branches (transformers' attention masks), which its TracerWarnings only suspect: this check
    decides, so the warnings are not shown."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        script = torch.jit.trace(model, tuple(model.backbone.preprocess(example).values()), check_trace=False,
                                 strict=False)
    for item in example:
        inputs = tuple(model.backbone.preprocess([item]).values())
        if not torch.allclose(script(*inputs), model(*inputs), rtol=1e-3, atol=1e-4):
            raise ValueError("the trace gives other logits than the model on an input of another length")
    return script


def export(run_dir: str | Path, out_dir: str | Path, example: list) -> dict:
    """Writes model.safetensors, config.json, config.yaml and (when tracing works) model.torchscript.pt."""
    run_dir = Path(run_dir)
    model, facts = serving_model(run_dir)
    inputs = model.backbone.preprocess(example)
    model.input_names = list(inputs)
    info = {"labels": facts["card"]["labels"], "strategy": facts["card"]["strategy"],
            "backbone": facts["card"]["backbone"], "inputs": model.input_names,
            "output": "logits over labels"}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        shutil.copy(run_dir / "config.yaml", tmp / "config.yaml")
        try:
            traced(model, example).save(str(tmp / "model.torchscript.pt"))
            info["torchscript"] = "model.torchscript.pt"
        except Exception as exc:  # tracing is best effort; the safetensors export stands alone
            info["torchscript"] = f"not exported: {str(exc).splitlines()[0]}"
        (tmp / "config.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
