"""`wwm parity --config FILE [--steps N] [--json] [--out DIR] [KEY=VALUE ...]` (logic: wwm_cli/parity.py)."""

from __future__ import annotations

import argparse
import json

HELP = (
    "Train with the JAX and the PyTorch trainer from the same weights and compare masks, losses and weights."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", metavar="FILE", help="run config, e.g. configs/parity-tiny.yaml (needed unless --compare)"
    )
    p.add_argument(
        "--steps", type=int, default=None, metavar="N", help="optimizer steps (default: train.max_steps)"
    )
    p.add_argument("--out", default=None, metavar="DIR", help="report folder (default: <output_dir>/parity)")
    p.add_argument("--json", action="store_true",
                   help='print only {"steps", "masks_identical", "max_abs_loss_diff", "max_rel_loss_diff", "passed"}')  # fmt: skip
    p.add_argument("--compare", nargs=2, default=None, metavar=("JAX_RUN", "TORCH_RUN"),
                   help="compare two finished runs (their folders or metrics.jsonl) instead of training")  # fmt: skip
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.global_batch_size=16"
    )


def main(args: argparse.Namespace) -> int:
    import os

    from wwm.config import load_config
    from wwm.errors import WWMError
    from wwm_cli import parity

    if args.steps is not None and args.steps < 1:
        raise WWMError(f"--steps must be >= 1; got {args.steps}")
    if not args.compare and not args.config:
        raise WWMError("--config FILE is required (or --compare JAX_RUN TORCH_RUN)")
    from wwm import fs

    for what, path in (("--out", args.out), *((f"--compare {p}", p) for p in args.compare or ())):
        if path and fs.is_remote(path):
            raise WWMError(
                f"wwm parity {what} {path}: parity runs both trainers on this machine and reads and writes "
                "local folders; give a local path (copy a bucket run's metrics.jsonl here first)"
            )
    if args.compare:
        report = parity.compare_metrics_files(*args.compare)
        out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.compare[0])), "parity")
        paths = parity.write_report(report, out)
    else:
        config = load_config(args.config, args.overrides)
        if not args.out and fs.is_remote(config.output_dir):
            raise WWMError(
                f"wwm parity: output_dir {config.output_dir} is in a bucket; parity runs both trainers on this "
                "machine in local folders: pass --out DIR (a local folder) or output_dir=DIR"
            )
        report, paths = parity.run_parity(config, steps=args.steps, out_dir=args.out, quiet=args.json)
    if args.json:
        print(json.dumps(parity.summary_json(report)))
    else:
        print(parity.format_text(report, paths))
    return 0 if report["passed"] else 1
