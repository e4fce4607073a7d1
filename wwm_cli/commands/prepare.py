"""`wwm prepare --config FILE [key=value ...]`: build (or find in the cache) the run's training data."""

from __future__ import annotations

import argparse
import json

HELP = "Read, tokenize (with word ids) and pack the training data into cached blocks; print a summary."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", required=True, metavar="FILE", help="run config (YAML), e.g. configs/tiny.yaml"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides, values as YAML scalars: data.max_seq_len=256 masking.mask_prob=0.2",
    )
    p.add_argument("--rebuild", action="store_true", help="ignore a cached result and build the blocks again")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def main(args: argparse.Namespace) -> int:
    from wwm.config import load_config
    from wwm.data.pipeline import format_summary, measure_stream, prepare_dataset

    config = load_config(args.config, args.overrides)
    prepared = prepare_dataset(config, progress=not args.no_progress, rebuild=args.rebuild)
    if config.data.streaming:
        measure_stream(prepared, progress=not args.no_progress)
    if args.json:
        print(
            json.dumps(
                {
                    "cache_path": prepared.cache_path,
                    "cache_hit": prepared.cache_hit,
                    "tokenizer_path": prepared.tokenizer_path,
                    "vocab_size": prepared.vocab_size,
                    **prepared.stats.to_dict(),
                },
                indent=2,
            )
        )
    else:
        print(format_summary(prepared))
    return 0
