"""The cheaper dropout mask: the same Bernoulli statistics as torch's, seeded by torch, and an encoder
whose fp32 inference is bit-identical to the stock `transformers` model's, its bf16 inference close."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tiny_encoder import tiny_encoder

from transferlab.backbones.fast_dropout import ATTENTION, FastDropout, batched_attention, fast_dropout, keep_mask
from transferlab.backbones.hf_encoder import HFEncoder

TEXTS = ["the match ended in a draw", "shares fell", "a new phone was released with a larger screen today"]


def test_the_mask_keeps_one_minus_p_and_the_scale_keeps_the_mean():
    torch.manual_seed(0)
    ones = torch.ones(1_000_000)
    for p in (0.1, 0.5):
        out = fast_dropout(ones, p)
        assert abs((out == 0).float().mean().item() - p) < 0.002
        assert abs(out.mean().item() - 1.0) < 0.005
    values = torch.rand(1_000_000).add(1.0).to(torch.bfloat16)  # bf16 keeps its dtype and its mean
    out = fast_dropout(values, 0.1)
    assert out.dtype == torch.bfloat16 and abs(out.float().mean().item() / values.float().mean().item() - 1) < 0.005
    mask, scale = keep_mask(torch.Size([4096, 512]), 0.1)
    assert mask.shape == (4096, 512) and mask.dtype == torch.bool
    assert scale == 65536 / (65536 - 6554)


def test_masks_follow_torch_manual_seed_and_differ_between_draws():
    x = torch.randn(3, 7, 11)
    torch.manual_seed(1)
    first, second = fast_dropout(x, 0.1), fast_dropout(x, 0.1)
    torch.manual_seed(1)
    assert torch.equal(fast_dropout(x, 0.1), first)
    assert not torch.equal(first, second)


def test_eval_and_p_zero_pass_through_and_gradients_flow_through_the_kept_elements():
    layer = FastDropout(0.3)
    x = torch.randn(64, 32, requires_grad=True)
    assert torch.equal(layer.eval()(x), x) and torch.equal(fast_dropout(x, 0.0), x)
    out = layer.train()(x)
    out.sum().backward()
    kept = out != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 1 / 0.7), atol=1e-4)
    assert (x.grad[~kept] == 0).all()


def stock_and_ours() -> tuple[nn.Module, HFEncoder]:
    from transformers import AutoModel

    ours = HFEncoder(str(tiny_encoder()), max_length=32)
    return AutoModel.from_pretrained(str(tiny_encoder())), ours


def test_every_dropout_is_swapped_and_inference_is_bit_identical_to_the_stock_model():
    stock, ours = stock_and_ours()
    assert stock.config._attn_implementation == "sdpa" and ours.model.config._attn_implementation == ATTENTION
    assert not any(type(m) is nn.Dropout for m in ours.model.modules())
    assert sum(isinstance(m, FastDropout) for m in ours.model.modules()) == \
        sum(isinstance(m, nn.Dropout) for m in stock.modules())
    batch = ours.preprocess(TEXTS)  # padded: the attention mask matters
    with torch.inference_mode():
        assert torch.equal(ours.model.eval()(**batch).last_hidden_state, stock.eval()(**batch).last_hidden_state)


def test_training_attention_masks_padding_as_sdpa_does():
    """With a drop probability that rounds to zero, the training path (scores, mask, softmax, mask
    of kept probabilities, product) must give what the stock model gives without dropout."""
    stock, ours = stock_and_ours()
    for module in ours.model.modules():
        if isinstance(module, FastDropout):
            module.p = 0.0
    for layer in ours.model.encoder.layer:
        layer.attention.self.dropout.p = 1e-7  # passed to the attention function as its `dropout`
    batch = ours.preprocess(TEXTS)
    trained = ours.model.train()(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        reference = stock.eval()(**batch).last_hidden_state
    assert torch.allclose(trained[mask], reference[mask], atol=1e-5)


def test_batched_attention_is_sdpa_with_its_boolean_or_additive_mask():
    torch.manual_seed(0)
    query, key, value = (torch.randn(3, 7, 4, 8).transpose(1, 2) for _ in range(3))  # as transformers lays them out
    keep = torch.ones(3, 1, 7, 7, dtype=torch.bool)
    keep[0, ..., 5:] = False  # padded keys of the first row
    additive = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    reference = F.scaled_dot_product_attention(query, key, value, attn_mask=keep, scale=0.3).transpose(1, 2)
    for mask in (keep, additive):
        assert torch.allclose(batched_attention(query, key, value, mask, 0.3), reference, atol=1e-6)
    unmasked = F.scaled_dot_product_attention(query, key, value).transpose(1, 2)
    assert torch.allclose(batched_attention(query, key, value, None, 8 ** -0.5), unmasked, atol=1e-6)


def test_bf16_inference_attends_through_batched_gemms_and_stays_close_to_the_stock_model():
    stock, ours = stock_and_ours()
    batch = ours.preprocess(TEXTS)
    mask = batch["attention_mask"].bool()
    with torch.inference_mode():
        reference = stock.eval()(**batch).last_hidden_state[mask]
        stock_bf16 = stock.to(torch.bfloat16)(**batch).last_hidden_state[mask]
        bf16 = ours.model.eval().to(torch.bfloat16)(**batch).last_hidden_state[mask]
    assert not torch.equal(bf16, stock_bf16)  # a different kernel ran
    assert F.cosine_similarity(bf16.float(), reference, dim=-1).min() >= 0.999
