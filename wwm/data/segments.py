"""Preparation split by the input, never by the worker count: segments, done markers, the manifest.

A **segment** is one input file, or a fixed byte range of a large line-separated text file cut at line
starts (``data.segment_bytes``, in the cache key), or the whole source where it cannot be cut (the
built-in corpus, ``max_documents``, a Hub dataset read as one stream). Each segment is read, tokenized and
packed on its own into ``segments/<k>/{train,validation}/`` of the cache entry, then marked done
(``done.json``, written last inside a temporary folder that is renamed into place). Which worker, host or
Ray task prepares a segment changes nothing in its blocks.

The **manifest** (``manifest.json``) is written last, once every segment is done: the segments in order
with their block counts. Example id = the segment's offset (the blocks of the segments before it) + the
block's row in its segment. An entry without a manifest is never read.

Segment k of a text file of S bytes cut every R bytes holds the lines that start in [k*R, (k+1)*R):
bytes ``[s_k, s_{k+1})`` with ``s_k`` the first line start at or after k*R (s_0 = 0, s_m = S). A line
belongs to exactly one segment whatever R is, and nothing needs to be read before the segment but the
bytes up to its first line start. docs/data.md ("Segments") has the rules and their why.
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wwm.data.sources import (
    SourceStats,
    file_format,
    file_size,
    iter_documents,
    iter_file_documents,
    open_binary,
    resolve_files,
)
from wwm.errors import WWMError

__all__ = [
    "DONE_FILE",
    "MANIFEST_FILE",
    "SEGMENTS_DIR",
    "Segment",
    "document_ids",
    "documents",
    "line_start",
    "owned",
    "parse_worker",
    "plan",
    "text_ranges",
]

# How a run's blocks are laid out, recorded in run.json: "1" (before segments) packed the source as one
# stream; "segments" packs each segment on its own (wwm.rundir refuses to resume a run of several segments
# recorded under "1" unless --allow-config-change).
LAYOUT_RULE = "segments"
MANIFEST_FILE = "manifest.json"
BUILD_FILE = "build.json"  # when, where and from which paths the entry was built (not in the manifest)
DONE_FILE = "done.json"
SEGMENTS_DIR = "segments"
MANIFEST_FORMAT = 1
_SCAN = 1 << 16
OWNER_FILE = "owner.json"  # wwm.data.cache.OWNER_FILE: who builds a work folder
_COMPRESSED = (".gz", ".bz2", ".xz")


@dataclass(frozen=True)
class Segment:
    """One unit of preparation. ``index``: its place among the segments of its list (``which`` "train": the
    training source, whose documents may be held out for validation; "validation": data.validation_files);
    ``path``: the file (None: the whole source); ``start``/``stop``: its byte range (stop None: to the end)."""

    index: int
    which: str
    path: str | None = None
    start: int = 0
    stop: int | None = None

    @property
    def name(self) -> str:
        return f"{self.which}-{self.index:06d}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Segment:
        return cls(**data)


# --------------------------------------------------------------------------------------------------
# The plan: which segments a source has
# --------------------------------------------------------------------------------------------------


def line_start(f: Any, offset: int, size: int) -> int:
    """The first line start at or after ``offset`` in the binary file ``f`` of ``size`` bytes: 0, or the
    position after a newline."""
    if offset <= 0:
        return 0
    if offset >= size:
        return size
    f.seek(offset - 1)
    position = offset - 1
    while True:
        chunk = f.read(_SCAN)
        if not chunk:
            return size
        newline = chunk.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(chunk)


def text_ranges(path: str, segment_bytes: int) -> list[tuple[int, int]]:
    """The byte ranges [s_k, s_{k+1}) of a text file cut every ``segment_bytes`` bytes at line starts (a
    range may be empty where one line spans several)."""
    size = file_size(path)  # a bucket object too (wwm.fs)
    count = max(1, -(-size // segment_bytes))
    with open_binary(path) as f:
        starts = [line_start(f, k * segment_bytes, size) for k in range(count)] + [size]
    return list(itertools.pairwise(starts))


def _cuttable(path: str, data: Any) -> bool:
    """Whether a file may be cut into byte ranges: line-separated text, not compressed, in an encoding
    whose newline is the byte 0x0A and never part of another character (UTF-8, ASCII, Latin-1, cp125x)."""
    if data.document_separator != "line" or path.lower().endswith(_COMPRESSED):
        return False
    if file_format(path, data.file_format) != "text":
        return False
    try:
        encoding = codecs.lookup(getattr(data, "encoding", "utf-8")).name
    except LookupError:
        return False
    return (
        encoding == "utf-8"
        or encoding == "ascii"
        or encoding in ("iso8859-1", "latin-1")
        or (encoding.startswith("cp125"))
    )


def plan(data: Any, which: str = "train") -> list[Segment]:
    """The segments of ``which``: "train" (the configured source) or "validation" (data.validation_files).

    Files give one segment each, or, for line-separated text files larger than ``data.segment_bytes``,
    one per byte range; the built-in corpus, a Hub dataset and a source cut by ``max_documents`` are one
    segment (their documents are counted from the start of the source)."""
    if which == "train" and (data.source != "files" or data.max_documents is not None):
        return [Segment(0, "train")]
    patterns = data.validation_files if which == "validation" else data.train_files
    files = resolve_files(patterns, "data.validation_files" if which == "validation" else "data.train_files")
    out: list[Segment] = []
    for path in files:
        if _cuttable(path, data) and file_size(path) > data.segment_bytes:
            out += [Segment(len(out) + i, which, path, a, b) for i, (a, b) in
                    enumerate(text_ranges(path, data.segment_bytes))]  # fmt: skip
        else:
            out.append(Segment(len(out), which, path))
    return out


# --------------------------------------------------------------------------------------------------
# The documents of a segment
# --------------------------------------------------------------------------------------------------


def documents(data: Any, segment: Segment, stats: SourceStats) -> Iterator[str]:
    """The non-empty documents of a segment, in source order (``stats`` counts as ``iter_documents``)."""
    if segment.path is None:
        yield from iter_documents(data, segment.which, stats)
        return
    yield from iter_file_documents(segment.path, data, stats, segment.start, segment.stop)


def document_ids(segment: Segment, first: int, count: int) -> np.ndarray:
    """Document ids of the segment's documents ``first .. first + count - 1`` (their index in the segment):
    ``segment.index * 2^32 + index``. A source of one segment numbers its documents 0, 1, 2, ... as the
    validation hash always did (docs/data.md, "Validation split")."""
    local = np.arange(first, first + count, dtype=np.int64)
    if first + count > 1 << 32:
        raise WWMError(
            f"{segment.path or 'the source'} holds more than 2^32 documents in one segment; lower "
            "data.segment_bytes (or split the file)"
        )
    return (np.int64(segment.index) << np.int64(32)) + local


# --------------------------------------------------------------------------------------------------
# Workers, done markers, the manifest
# --------------------------------------------------------------------------------------------------


def parse_worker(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n (``wwm prepare --worker i/n``)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        i = n = -1
    if not 0 <= i < n:
        raise WWMError(
            f"--worker {text!r} is not i/n with 0 <= i < n; e.g. --worker 0/4 ... --worker 3/4 "
            "(SLURM: --worker $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)"
        )
    return i, n


def owned(segments: list[Segment], worker: int, workers: int) -> list[Segment]:
    """The segments worker ``worker`` of ``workers`` prepares: every workers-th one from ``worker`` on (the
    byte ranges of a large file go to different workers, so it is shared out evenly)."""
    return segments[worker::workers]


def segment_folder(entry: Path, segment: Segment) -> Path:
    return entry / SEGMENTS_DIR / segment.name


def done_record(entry: Path, segment: Segment) -> dict[str, Any] | None:
    """What a finished segment recorded (its blocks and statistics), or None when it is not done."""
    record = read_json(segment_folder(entry, segment) / DONE_FILE)
    if record is None or record.get("segment") != segment.to_dict():
        return None
    return record


def mark_done(work: Path, entry: Path, segment: Segment, record: dict[str, Any]) -> None:
    """Write ``done.json`` last into the segment's work folder and rename it into place. Another process
    that finished the same segment first wins (its blocks are the same); ours is removed."""
    with contextlib.suppress(OSError):
        (work / OWNER_FILE).unlink()  # the folder becomes the segment's: blocks and the done marker only
    # local: a segment's local work folder
    (work / DONE_FILE).write_text(
        json.dumps({"segment": segment.to_dict(), **record}, indent=1), encoding="utf-8"
    )
    final = segment_folder(entry, segment)
    try:
        os.replace(work, final)
    except OSError:
        if done_record(entry, segment) is None:  # not a finished copy: an old unfinished folder
            shutil.rmtree(final, ignore_errors=True)
            os.replace(work, final)
        else:
            shutil.rmtree(work, ignore_errors=True)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        # local: a local cache entry or staging folder
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_manifest(entry: Path) -> dict[str, Any] | None:
    return read_json(entry / MANIFEST_FILE)


def write_manifest(entry: Path, manifest: dict[str, Any]) -> None:
    """The manifest, through a temporary file and a rename: a prefix without one is never read."""
    tmp = entry / f".{MANIFEST_FILE}.tmp-{os.getpid()}"
    # local: a local cache entry or staging folder
    tmp.write_text(json.dumps({"manifest_format": MANIFEST_FORMAT, **manifest}, indent=1, default=str),
                   encoding="utf-8")  # fmt: skip
    with contextlib.suppress(OSError):
        # local: a local cache entry or staging folder
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp, entry / MANIFEST_FILE)
