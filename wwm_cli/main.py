"""The `wwm` console script.

Each subcommand lives in its own module under `wwm_cli.commands` and exposes `HELP` (one line),
`add_arguments(parser)` and `main(args) -> int`. Command modules import nothing heavy at module
level (no jax, torch or transformers) so that `wwm --help` is instant; they import what they need
inside `main`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings

# name on the command line -> module under wwm_cli.commands
COMMANDS: dict[str, str] = {
    "inspect": "inspect_cmd",
    "bench": "bench",
    "convert": "convert",
    "prepare": "prepare",
    "train-tokenizer": "train_tokenizer",
    "train": "train",
    "parity": "parity",
    "cache": "cache",
    "eval": "eval",
    "fill-mask": "fill_mask",
}


def _available_commands() -> dict[str, object]:
    modules = {}
    for name, module_name in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(f"wwm_cli.commands.{module_name}")
        except ModuleNotFoundError as err:
            # A command whose module is not written yet is simply not offered.
            if err.name != f"wwm_cli.commands.{module_name}":
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line. ``KEY=VALUE`` overrides may come anywhere after the command, also after
    its flags (argparse alone takes the positionals only up to the first flag)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [x for x in extra if "=" in x and not x.startswith("-")]
    if extra and (len(overrides) < len(extra) or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    return args


@contextlib.contextmanager
def _one_line_warnings(command: str):
    """wwm's own warnings (``WWMWarning``) as one line on stderr: ``wwm CMD: warning: ...``."""
    from wwm.errors import WWMWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, WWMWarning):
            print(f"wwm {command}: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def _as_user_error(err: BaseException) -> Exception | None:
    """The one-line form of an error the user can act on, or None (a bug: the traceback is shown).

    WWMError as it is; an OSError on a path (a full disk, a read-only or special file system, permissions)
    through wwm.errors.os_error; any library error whose text says the disk is full (orbax, safetensors)
    as DiskFull. WWM_DEBUG=1 shows the traceback of these too."""
    from wwm.errors import RESUME_HINT, DiskFull, WWMError, is_disk_full, os_error

    if isinstance(err, WWMError):
        return err
    if isinstance(err, OSError) and not isinstance(err, BrokenPipeError):
        return os_error(err)
    if is_disk_full(err):
        text = " ".join(str(err).split())[:200]
        return DiskFull(f"no space left on device ({type(err).__name__}: {text}); free space, {RESUME_HINT}")
    return None


def main(argv: list[str] | None = None) -> int:
    import os

    args = parse_args(argv)
    try:
        with _one_line_warnings(args.command):
            return int(args._main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as err:  # user-facing errors: one clear line, no traceback
        user = _as_user_error(err)
        if user is None or os.environ.get("WWM_DEBUG"):
            raise
        print(f"wwm {args.command}: error: {user}", file=sys.stderr)
        return int(getattr(user, "exit_status", 2))


if __name__ == "__main__":
    sys.exit(main())
