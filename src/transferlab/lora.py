"""LoRA adapters (PEFT) inside a backbone's model, and merging them back for export."""

from __future__ import annotations

import copy
import warnings
from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from transferlab.backbones import Backbone
from transferlab.errors import ConfigError

warnings.filterwarnings("ignore", ".*is_gradient_checkpointing.*", FutureWarning)  # peft on transformers 5


def inject_lora(backbone: Backbone, cfg: Any) -> None:
    """Wrap `backbone.model` in place: only the adapters train; the new head lives outside it."""
    targets = list(cfg.target_modules) if cfg.target_modules else list(backbone.lora_targets)
    config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets)
    try:
        backbone.model = get_peft_model(backbone.model, config)
    except ValueError as exc:
        raise ConfigError(f"strategy.lora.target_modules={targets}: {str(exc).splitlines()[0]}") from None


def merged(module: nn.Module) -> nn.Module:
    """A copy of `module` with every LoRA adapter merged into its base weights (plain layers again)."""
    out = copy.deepcopy(module)
    for owner in out.modules():
        if isinstance(getattr(owner, "model", None), PeftModel):
            owner.model = owner.model.merge_and_unload()
    return out
