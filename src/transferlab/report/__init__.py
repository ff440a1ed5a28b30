"""The measured comparison: per-size summaries, verdicts with noise, the recommendation in words."""
