"""Data-pipeline throughput: our prepare path (tokens + word ids + packing) vs transformers' run_mlm.py recipe.

    python benchmarks/bench_data.py ../shared/corpora/wikitext2_valid.txt --tokenizer PATH --repeats 5
    python benchmarks/bench_data.py builtin            # a WordPiece trained on the built-in corpus

The measurement itself lives in ``wwm.data.bench.bench_data`` (also behind ``wwm bench data``).
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "corpus", nargs="?", default="builtin", help="a text file (one document per line) or 'builtin'"
    )
    p.add_argument("--tokenizer", default=None, help="tokenizer folder / tokenizer.json / Hub name")
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from wwm.data.bench import bench_data

    results = bench_data(args.corpus, args.tokenizer, args.max_seq_len, args.repeats)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    first = results[0]
    print(f"corpus {args.corpus}: {first['tokens']:,} text tokens, max_seq_len {args.max_seq_len}, "
          f"median of {args.repeats}")  # fmt: skip
    for r in results:
        print(f"  {r['impl']:<12} {r['tokens_per_s']:>12,.0f} tokens/s  {r['seconds']:7.3f} s  "
              f"{r['blocks']:>7,} blocks  word ids: {'yes' if r['word_ids'] else 'no'}")  # fmt: skip
    ratio = results[0]["tokens_per_s"] / results[1]["tokens_per_s"]
    print(f"  wwm_prepare / hf_run_mlm = {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
