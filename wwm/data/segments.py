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

import itertools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from wwm.errors import WWMError

__all__ = [
    "DONE_FILE",
    "MANIFEST_FILE",
    "Segment",
    "line_start",
    "parse_worker",
    "text_ranges",
]

MANIFEST_FILE = "manifest.json"
DONE_FILE = "done.json"
SEGMENTS_DIR = "segments"
_SCAN = 1 << 16


@dataclass(frozen=True)
class Segment:
    """One unit of preparation. ``index``: its place among the segments of its list (the training source,
    or ``data.validation_files``); ``path``: the file (None: the whole source); ``start``/``stop``: its
    byte range (stop None: to the end of the file)."""

    index: int
    which: str  # "train": the training source (its documents may be held out); "validation": validation_files
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
    size = os.path.getsize(path)
    count = max(1, -(-size // segment_bytes))
    with open(path, "rb") as f:
        starts = [line_start(f, k * segment_bytes, size) for k in range(count)] + [size]
    return list(itertools.pairwise(starts))


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
    """The segments worker ``worker`` of ``workers`` prepares: every workers-th one, from ``worker`` on
    (contiguous byte ranges go to different workers, so a large file is shared out evenly)."""
    return segments[worker::workers]


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
