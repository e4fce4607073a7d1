"""`wwm bench WHAT`: benchmarks that print our figures beside the peer's, as ratios, in one run."""

from __future__ import annotations

import argparse
import json

HELP = "Benchmarks against the peer implementations (masking, data)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", metavar="WHAT")
    sub.required = True
    masking = sub.add_parser("masking", help="masker tokens/s vs transformers' collators")
    masking.add_argument("--repeats", type=int, default=7, help="timed runs per figure (median)")
    masking.add_argument("--json", action="store_true", help="print the results as JSON")


def main(args: argparse.Namespace) -> int:
    if args.what == "masking":
        from wwm.bench import masking

        report = masking.run(repeats=args.repeats)
        if args.json:
            print(
                json.dumps(
                    {
                        "results": report["results"],
                        "corpus": report["corpus"],
                        "tokenizer": report["tokenizer"],
                    },
                    indent=2,
                )
            )
        else:
            print(masking.format_table(report))
        return 0
    raise AssertionError(args.what)
