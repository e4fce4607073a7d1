"""The `wwm` console script.

Each subcommand lives in its own module under `wwm.commands` and exposes `HELP` (one line),
`add_arguments(parser)` and `main(args) -> int`. Command modules import nothing heavy at module
level (no jax, torch or transformers) so that `wwm --help` is instant; they import what they need
inside `main`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name on the command line -> module under wwm.commands
COMMANDS: dict[str, str] = {
    "inspect": "inspect_cmd",
    "bench": "bench",
    "convert": "convert",
    "prepare": "prepare",
    "train-tokenizer": "train_tokenizer",
    "train": "train",
    "parity": "parity",
    "cache": "cache",
}


def _available_commands() -> dict[str, object]:
    modules = {}
    for name, module_name in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(f"wwm.commands.{module_name}")
        except ModuleNotFoundError as err:
            # A command whose module is not written yet is simply not offered.
            if err.name != f"wwm.commands.{module_name}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wwm", description="Whole-word masking pretraining toolkit (JAX/Flax and PyTorch)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in _available_commands().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as err:  # user-facing errors: one clear line, no traceback
        from wwm.errors import WWMError

        if isinstance(err, WWMError):
            print(f"wwm {args.command}: error: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
