"""Dropout with a cheaper random mask, for fine-tuning on CPU.

torch's CPU `bernoulli_` draws one 32-bit Mersenne-Twister number per element: a MiniLM step at
batch 16 spends 11 % (fp32) to 17 % (bf16-mixed) of its time there, the largest cost after the
matmuls under bf16. Cutting each 64-bit draw of torch's own generator (`random_`, seeded by
`torch.manual_seed` like everything else, over the full 64 bits: plain `random_()` leaves the
sign bit 0) into four 16-bit numbers makes the same Bernoulli mask
five times cheaper. The drop probability is rounded to a multiple of 2^-16 (0.1 -> 0.100006) and
the kept values are scaled by the exact inverse keep rate, so expectations are unchanged.

`use_fast_dropout` swaps a `transformers` model's `nn.Dropout` modules and routes its attention
through `attention`, which is `transformers`' own SDPA path in fp32 whenever no dropout applies
(eval, inference, export): outputs there are bit-identical to the stock model's. bf16 inference on
CPU attends through batched GEMMs instead (faster there than SDPA's flash kernel at 32-wide heads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RESOLUTION = 1 << 16  # one random number per 16 bits
ATTENTION = "transferlab_sdpa"  # the attention implementation registered with transformers


def keep_mask(shape: torch.Size, p: float) -> tuple[torch.Tensor, float]:
    """A boolean mask keeping each element with probability 1 - p (p rounded to 2^-16), and the
    scale that keeps the masked tensor's expectation."""
    count = shape.numel()
    dropped = round(p * RESOLUTION)
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)  # all 64 bits
    uniform16 = words.view(torch.int16)[:count].view(shape)  # uniform over [-2^15, 2^15)
    return uniform16 >= dropped - RESOLUTION // 2, RESOLUTION / (RESOLUTION - dropped)


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:  # a GPU's generator is fast already
        return F.dropout(x, p, training)
    mask, scale = keep_mask(x.shape, p)
    keep = mask.to(x.dtype)  # converted once: a bool factor is converted again in the backward pass
    if torch.finfo(x.dtype).bits >= 32:
        return x * keep.mul_(scale)
    return (x * keep).mul_(scale)  # in bf16 the scale itself would round (1.1111 -> 1.1094)


class FastDropout(nn.Dropout):
    """`nn.Dropout` (same `p`, same train/eval behaviour) with the cheaper mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
              **kwargs) -> tuple[torch.Tensor, None]:
    """`transformers`' SDPA attention, except on CPU in a bidirectional encoder: under dropout SDPA
    runs its math path anyway (scores, softmax, dropout, product), so the same steps run here with
    the cheaper mask; without dropout in bf16, SDPA's flash kernel is slower at BERT's 32-wide heads
    than `batched_attention`. fp32 inference, causal or grouped-query attention, and GPUs keep SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", False) if causal is None else causal
    ours = dropout or query.dtype == torch.bfloat16
    if not ours or causal or key.shape[1] != query.shape[1] or query.device.type != "cpu":
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scale = query.size(-1) ** -0.5 if scaling is None else scaling
    if not dropout:
        return batched_attention(query, key, value, attention_mask, scale), None
    scores = torch.matmul(query * scale, key.transpose(2, 3))  # scaling q is L/head_dim times cheaper
    if attention_mask is not None:
        scores = (scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
                  if attention_mask.dtype == torch.bool else scores + attention_mask)
    probs = fast_dropout(F.softmax(scores, dim=-1), dropout)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def batched_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                      scale: float) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v over [batch x heads] matrices, [batch, length, heads, dim] out.

    The heads are made contiguous once, so each product is one `bmm` over all of them (a 4-D
    `matmul` of transposed views copies its operands on every call); scaling rides on `baddbmm`'s
    alpha and the mask is applied in place, broadcast over the heads (never expanded)."""
    batch, heads, length, dim = query.shape
    q, k, v = (t.reshape(batch * heads, t.shape[2], dim) for t in (query, key, value))
    scores = torch.baddbmm(q.new_zeros(()), q, k.transpose(1, 2), beta=0.0, alpha=scale)
    if mask is not None:
        grid = scores.view(batch, heads, length, k.shape[1])
        if mask.dtype == torch.bool:
            grid.masked_fill_(~mask, torch.finfo(scores.dtype).min)
        else:
            grid.add_(mask)
    return torch.bmm(F.softmax(scores, dim=-1), v).view(batch, heads, length, dim).transpose(1, 2).contiguous()


def register_attention() -> None:
    """Makes `ATTENTION` known to transformers, with SDPA's mask; idempotent (every process that
    builds or unpickles a model calls it through this module's import)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def use_fast_dropout(model: nn.Module) -> nn.Module:
    """Every `nn.Dropout` of `model` becomes a `FastDropout`; SDPA-attention models attend through
    `attention`. Other attention implementations (eager, flash) are left as they are."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(ATTENTION)
    return model


register_attention()
