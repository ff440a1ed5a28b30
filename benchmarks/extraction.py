"""Extraction throughput: transferlab's extract path vs `SentenceTransformer.encode`, same texts,
same batch size, same max length; and their agreement (cosine per text)."""

from __future__ import annotations

import torch

from common import Figure, best_of, config, texts

BATCH = 32
BF16_TEXTS = 128


# issue 17's goals against SentenceTransformer.encode (fp32), by what `auto` picks on the machine
GOALS = {"bf16": {"tweets": ">= 2.5x", "BBC articles": ">= 4.0x"}, "fp32": {"tweets": ">= 1.2x", "BBC articles": ">= 1.0x"}}


def measure(n_tweets: int = 1000, n_articles: int = 200) -> list[Figure]:
    from sentence_transformers import SentenceTransformer

    from transferlab.inference import features_of, frozen_backbone

    cfg = config()  # checked: extract.precision `auto` resolved for this machine
    chosen = cfg.extract.precision
    models = {p: frozen_backbone(cfg.backbone, p) for p in ("fp32", "bf16")}
    st = SentenceTransformer(models["fp32"].model.name_or_path, device="cpu")
    st.max_seq_length = cfg.backbone.max_length
    figures = []
    for name, items in (("tweets", texts("tweet_sentiment", n_tweets)), ("BBC articles", texts("bbc_news", n_articles))):
        for precision in ("fp32", "bf16"):
            if precision == "bf16" and chosen != "bf16":  # emulated without AVX512-BF16/AMX: fewer texts
                items = items[:BF16_TEXTS]
            (base_s, reference), (ours_s, ours) = best_of([
                lambda: st.encode(items, batch_size=BATCH, convert_to_tensor=True, normalize_embeddings=True),
                lambda: features_of(models[precision], items, BATCH, progress=False)], repeats=3 if precision == chosen else 1)
            cosine = torch.nn.functional.cosine_similarity(ours.float(), reference.float()).min().item()
            figures.append(Figure(f"extraction {name} {precision} (texts/s)", len(items) / ours_s,
                                  len(items) / base_s, "texts/s", base_s / ours_s,
                                  GOALS[precision][name] if precision == chosen else "",
                                  f"auto chose {chosen} here; min cosine vs sentence-transformers {cosine:.5f}"))
    return figures
