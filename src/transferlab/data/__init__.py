"""Data: where labelled texts come from (sources), how they are split (splits), how they are batched (datamodules)."""
