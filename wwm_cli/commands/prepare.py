"""`wwm prepare --config FILE [key=value ...]`: build (or find in the cache) the run's training data.

Launchers (docs/scale.md): on one machine by default; `--worker i/n` prepares worker i's share of the
segments (SLURM arrays, k8s indexed jobs, TPU `--worker=all`); `--finalize` writes the manifest once every
segment is done; `--ray [ADDRESS]` runs the segments as Ray tasks; `--tokenizer-only` trains (or finds) the
run's tokenizer and stops, before workers start.
"""

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
    how = p.add_mutually_exclusive_group()
    how.add_argument("--worker", metavar="I/N", default=None,
                     help="prepare worker I's share of the segments (0 <= I < N); the last worker to finish "
                     "writes the manifest (SLURM: --worker $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")  # fmt: skip
    how.add_argument("--finalize", action="store_true",
                     help="write the manifest once every segment is prepared (names the missing ones)")  # fmt: skip
    how.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help='run the segments as Ray tasks: on a running cluster (ADDRESS, or "auto"), else on a '
                     'Ray instance started here (pip install "wwm[ray]")')  # fmt: skip
    how.add_argument("--tokenizer-only", action="store_true",
                     help="train (or find) the run's tokenizer and stop: before starting workers")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    from wwm.config import load_config
    from wwm.data import pipeline, segments
    from wwm.errors import WWMError

    config = load_config(args.config, args.overrides)
    progress = not args.no_progress
    if args.rebuild and (args.worker or args.finalize):
        raise WWMError(
            "--rebuild with --worker/--finalize would delete the other workers' segments; remove the entry "
            "first (wwm cache list / rm) and start the workers again"
        )
    if args.tokenizer_only:
        path, size = pipeline.prepare_tokenizer_only(config)
        print(f"tokenizer        {path} ({size} tokens)")
        return 0
    if args.worker is not None:
        worker, workers = segments.parse_worker(args.worker)
        prepared, counts = pipeline.prepare_share(config, worker, workers, progress=progress)
        if prepared is None:
            message = (f"worker {worker}/{workers}: built {counts['built']} segment(s), {counts['skipped']} were "
                       f"done already; {counts['done']} of {counts['total']} segments are done: the last worker "
                       "(or `wwm prepare --finalize`) writes the manifest")  # fmt: skip
            print(json.dumps({"worker": args.worker, **counts, "complete": False}) if args.json else message)
            return 0
    elif args.finalize:
        prepared = pipeline.finalize_prepared(config)
    elif args.ray is not None:
        prepared = pipeline.prepare_with_ray(config, args.ray or None, progress=progress)
    else:
        prepared = pipeline.prepare_dataset(config, progress=progress, rebuild=args.rebuild)
    if config.data.streaming:
        pipeline.measure_stream(prepared, progress=progress)
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
        print(pipeline.format_summary(prepared))
    return 0
