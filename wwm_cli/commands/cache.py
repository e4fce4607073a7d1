"""`wwm cache list|prune [--cache-dir DIR | --config FILE]`: the block cache of `wwm prepare` (wwm/data/cache.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "List the cached blocks of `wwm prepare`, or prune the superseded ones and abandoned build folders."


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    list_p = sub.add_parser(
        "list", help="entries (size, created, built from, current or superseded) and builds"
    )
    prune_p = sub.add_parser("prune", help="remove superseded entries and stale build folders")
    prune_p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    for q in (list_p, prune_p):
        where = q.add_mutually_exclusive_group()
        where.add_argument("--cache-dir", metavar="DIR",
                           help="as data.cache_dir (default: $WWM_CACHE_DIR, else ~/.cache/wwm); entries are in DIR/data")  # fmt: skip
        where.add_argument("--config", metavar="FILE", help="use the data.cache_dir of this run config")
        q.add_argument("--json", action="store_true", help="print the result as JSON")


def _config_cache_dir(args: argparse.Namespace) -> str | None:
    from wwm.config import load_config

    return load_config(args.config).data.cache_dir


def _root(args: argparse.Namespace) -> Path:
    from wwm.data.cache import data_root, holds_cache
    from wwm.errors import WWMError

    given = _config_cache_dir(args) if args.config else args.cache_dir
    if given and "://" in str(given):  # a bucket's entries (issue 24): not listed or pruned here
        raise WWMError(
            f"{given} is a bucket: wwm cache lists and prunes local caches only; list the bucket's entries "
            "(<cache_dir>/data/<key>/manifest.json) with its own tool (gsutil ls, aws s3 ls), and the local "
            "copies under $WWM_LOCAL_DIR (~/.cache/wwm)/prepared"
        )
    if args.config:
        return data_root(given)
    if args.cache_dir:
        given = Path(args.cache_dir).expanduser()
        if not given.is_dir():
            raise WWMError(
                f"--cache-dir {args.cache_dir!r} is not a folder; give the data.cache_dir of your runs"
            )
        if not (given / "data").is_dir() and holds_cache(given):
            return given  # the <cache_dir>/data folder itself
        return given / "data"
    return data_root(None)


def main(args: argparse.Namespace) -> int:
    from wwm.data import cache

    root = _root(args)
    if args.action == "list":
        return _list(root, args.json)
    removed = cache.prune(root, dry_run=args.dry_run)
    freed = sum(size for _, size, _ in removed)
    if args.json:
        print(json.dumps({"cache_dir": str(root), "dry_run": args.dry_run, "freed": freed,
                          "removed": [{"path": str(p), "size": n, "reason": why} for p, n, why in removed]},
                         indent=2))  # fmt: skip
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for path, size, why in removed:
        print(f"{verb} {path.name} ({cache.human_size(size)}): {why}")
    if not removed:
        print(f"nothing to prune in {root}")
    else:
        print(f"{'would free' if args.dry_run else 'freed'} {cache.human_size(freed)} in {root}")
    return 0


def _list(root: Path, as_json: bool) -> int:
    from wwm.data import cache

    entries, builds = cache.scan(root)
    if as_json:
        print(json.dumps({"cache_dir": str(root), "entries": [e.to_dict() for e in entries],
                          "builds": [b.to_dict() for b in builds]}, indent=2))  # fmt: skip
        return 0
    if not entries and not builds:
        print(f"no cache entries in {root}")
        return 0
    size = sum(e.size for e in entries) + sum(b.size for b in builds)
    prunable = sum(e.size for e in entries if e.superseded) + sum(b.size for b in builds if b.stale)
    counts = (
        f"{_count(len(entries), 'entry', 'entries')}, {_count(len(builds), 'build folder', 'build folders')}"
    )
    print(f"{root}: {counts}, {cache.human_size(size)}; `wwm cache prune` frees {cache.human_size(prunable)}")
    for e in entries:
        status = f"superseded: {e.superseded}" if e.superseded else "current"
        print(f"{e.key}  {cache.human_size(e.size):>9}  {cache.iso_time(e.created)}  {status}")
        print(f"    {e.description}")
    for b in builds:
        status = "stale build" if b.stale else "building"
        print(
            f"{b.path.name}  {cache.human_size(b.size):>9}  {cache.iso_time(b.modified)}  {status}: {b.reason}"
        )
    return 0


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
