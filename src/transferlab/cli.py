"""The `transferlab` command.

    transferlab <stage> [--params params.yaml]     a pipeline stage, as dvc.yaml calls it
    transferlab compare --strategy S --train-size N --seed K   one cell of the comparison matrix
    transferlab predict RUN_DIR INPUT [-o OUT]      label a CSV/Parquet column, an image or a folder of images
    transferlab export RUN_DIR OUT_DIR --example X  serving weights (LoRA merged) + TorchScript
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transferlab.errors import TransferlabError
from transferlab.repro import STAGES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="transferlab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = p.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        sub = commands.add_parser(stage, help=f"run the {stage} stage on params.yaml")
        sub.add_argument("--params", default="params.yaml", help="the composed config (default: params.yaml)")
        if stage == "compare":
            sub.add_argument("--strategy", required=True, help="a strategy of conf/strategy/")
            sub.add_argument("--train-size", required=True, help="a count, a fraction or all")
            sub.add_argument("--seed", type=int, required=True)
    sub = commands.add_parser("predict", help="label new inputs with a trained run")
    sub.add_argument("run_dir", type=Path, help="a run directory (holding model.json)")
    sub.add_argument("input", type=Path, help="a CSV/Parquet file, an image, or a folder of images")
    sub.add_argument("--column", help="input column (default: the one the run trained on, else text)")
    sub.add_argument("-o", "--output", type=Path, default=Path("predictions.csv"))
    sub = commands.add_parser("export", help="export a trained run for serving")
    sub.add_argument("run_dir", type=Path)
    sub.add_argument("out_dir", type=Path)
    sub.add_argument("--example", type=Path, required=True,
                     help="a CSV/Parquet file, an image or an image folder whose first inputs trace the model")
    sub.add_argument("--column", help="input column (default: the one the run trained on, else text)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "predict":
            from transferlab.atomic import atomic_path
            from transferlab.predict import predict

            table = predict(args.run_dir, args.input, args.column)
            with atomic_path(args.output) as tmp:
                table.to_csv(tmp, index=False)
            print(f"{len(table)} predictions: {args.output}")
        elif args.command == "export":
            from transferlab.export import export
            from transferlab.predict import example_inputs

            info = export(args.run_dir, args.out_dir, example_inputs(args.run_dir, args.example, args.column))
            print(f"exported to {args.out_dir} (torchscript: {info['torchscript']})")
        else:
            from transferlab import repro
            from transferlab.config import load_params

            cfg = load_params(args.params)
            if args.command == "compare":
                repro.compare(cfg, args.strategy, args.train_size, args.seed)
            else:
                getattr(repro, args.command)(cfg)
    except TransferlabError as exc:
        print(f"transferlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
