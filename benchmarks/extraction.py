"""Extraction throughput: transferlab's extract path vs `SentenceTransformer.encode`, same texts,
same batch size, same max length; and their agreement (cosine per text)."""

from __future__ import annotations

import torch

from common import Figure, best_of, config, texts

BATCH = 32
BF16_TEXTS = 128


def measure(n_tweets: int = 1000, n_articles: int = 200) -> list[Figure]:
    from sentence_transformers import SentenceTransformer

    from transferlab.backbones import build_backbone
    from transferlab.inference import features_of
    from transferlab.strategy import freeze

    cfg = config()
    model = build_backbone(cfg.backbone)
    freeze(model)
    st = SentenceTransformer(model.model.name_or_path, device="cpu")
    st.max_seq_length = cfg.backbone.max_length
    figures = []
    for name, items in (("tweets", texts("tweet_sentiment", n_tweets)), ("BBC articles", texts("bbc_news", n_articles))):
        for precision, goal in (("fp32", ">= 1.2x"), ("bf16", ">= 2.0x")):
            if precision == "bf16":  # emulated without AVX512-BF16/AMX: measured on fewer texts
                items = items[:BF16_TEXTS]
            (base_s, reference), (ours_s, ours) = best_of([
                lambda: st.encode(items, batch_size=BATCH, convert_to_tensor=True, normalize_embeddings=True),
                lambda: features_of(model, items, BATCH, precision, progress=False)], repeats=3 if precision == "fp32" else 1)
            cosine = torch.nn.functional.cosine_similarity(ours.float(), reference.float()).min().item()
            figures.append(Figure(f"extraction {name} {precision} (texts/s)", len(items) / ours_s,
                                  len(items) / base_s, "texts/s", base_s / ours_s, goal,
                                  f"min cosine vs sentence-transformers {cosine:.5f}"))
    return figures
