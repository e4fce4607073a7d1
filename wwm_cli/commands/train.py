"""`wwm train --framework jax|torch --config FILE [--overwrite | --allow-config-change | --restart-from-scratch]
[dotted.key=value ...]`."""

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
        help="replace the run in output_dir: delete what it recorded in run.json (checkpoints, metrics, exports, "
        "the record) and start over; a folder without a run record is refused unless it is empty",
    )
    group.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume the run in output_dir although settings that change its trajectory differ "
        "(the change is recorded in run.json)",
    )
    group.add_argument(
        "--restart-from-scratch",
        action="store_true",
        help="train the run in output_dir again from step 0 (e.g. when none of its checkpoints is left): what the "
        "earlier attempt wrote moves to previous/<time>/, run.json keeps the history and records the restart",
    )
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=100")


def main(args: argparse.Namespace) -> int:
    from wwm.config import load_config

    overrides = list(args.overrides)
    if args.framework:
        overrides.append(f"train.framework={args.framework}")
    config = load_config(args.config, overrides)
    from wwm.preflight import check_storage

    check_storage(config)  # bucket credentials and URLs, before the trainer's (slow) imports
    trainer = importlib.import_module(f"wwm_{config.train.framework}.train")
    status = trainer.run(
        config,
        overwrite=args.overwrite,
        allow_changes=args.allow_config_change,
        restart=args.restart_from_scratch,
    )
    return int(status or 0)
