"""`wwm train --framework jax|torch --config FILE [--overwrite | --allow-config-change] [dotted.key=value ...]`."""

from __future__ import annotations

import argparse
import importlib

HELP = "Pretrain an encoder with whole-word masking (JAX/Flax or PyTorch), from a YAML config."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="FILE", help="YAML run config, e.g. configs/tiny.yaml")
    p.add_argument("--framework", choices=("jax", "torch"), default=None, help="overrides train.framework")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in output_dir: delete its checkpoints, metrics, exports and record, start over",
    )
    group.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume the run in output_dir although settings that change its trajectory differ "
        "(the change is recorded in run.json)",
    )
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=100")


def main(args: argparse.Namespace) -> int:
    from wwm.config import load_config

    overrides = list(args.overrides)
    if args.framework:
        overrides.append(f"train.framework={args.framework}")
    config = load_config(args.config, overrides)
    trainer = importlib.import_module(f"wwm_{config.train.framework}.train")
    return int(trainer.run(config, overwrite=args.overwrite, allow_changes=args.allow_config_change) or 0)
