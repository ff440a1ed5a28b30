"""The pipeline's stages: leaves, each with one `run(...)`; no stage imports another stage.

The cell sequence that chains them is `transferlab.pipeline`; the fixed paths `dvc repro` gives
them are `transferlab.repro`."""
