"""`wwm fill-mask --model PATH [--framework jax|torch|both] [--top-k K] [--mask-words W ...] TEXT...`."""

from __future__ import annotations

import argparse
import json

HELP = "Top-k predictions for each mask in TEXT, from a checkpoint, in JAX, torch or both."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="PATH", help="HF model directory or run directory")
    p.add_argument("--framework", choices=("jax", "torch", "both"), default="jax")
    p.add_argument("--top-k", type=int, default=5, metavar="K")
    p.add_argument("--mask-words", action="append", default=[], metavar="WORD",
                   help="mask every token of each occurrence of WORD in the texts (repeatable)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "texts", nargs="+", metavar="TEXT", help="text with the tokenizer's mask token, e.g. [MASK]"
    )


def main(args: argparse.Namespace) -> int:
    from wwm_cli.evaluate import fill_mask, format_fill_mask, frameworks_of

    result = fill_mask(
        args.model, args.texts, frameworks_of(args.framework), args.top_k, tuple(args.mask_words)
    )
    print(json.dumps(result) if args.json else format_fill_mask(result))
    return 0
