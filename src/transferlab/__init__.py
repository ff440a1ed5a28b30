"""transferlab: transfer learning vs fine-tuning, measured on your own data.

    import transferlab as tl
    cmp = tl.compare(df, text="review", label="stars")   # see help(tl.compare), help(tl.adapt)
"""

import importlib

__version__ = "0.1.0"
API = ("compare", "adapt", "load", "Comparison", "Run", "Model")


def __getattr__(name: str):
    """The Python API (transferlab.api), imported on first use: `transferlab` itself stays light for
    the CLI and the flows, which import torch and Prefect only when they need them."""
    if name in API:  # by name, so no stage's import closure (provenance.py) counts the API as its code
        return getattr(importlib.import_module("transferlab.api"), name)
    raise AttributeError(f"module 'transferlab' has no attribute {name!r}")
