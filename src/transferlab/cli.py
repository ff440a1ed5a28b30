"""The `transferlab` command: `transferlab <stage> [--params params.yaml]`, as dvc.yaml calls it."""

from __future__ import annotations

import argparse
import importlib
import sys

from transferlab.errors import TransferlabError
from transferlab.stages import STAGES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="transferlab", description=__doc__)
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--params", default="params.yaml", help="the composed config (default: params.yaml)")
    args = parser.parse_args(argv)
    from transferlab.config import load_params

    try:
        cfg = load_params(args.params)
        importlib.import_module(f"transferlab.stages.{args.stage}").dvc_main(cfg)
    except TransferlabError as exc:
        print(f"transferlab {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
