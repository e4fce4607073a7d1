"""Prepared data in a bucket (``data.cache_dir: s3://...`` / ``gs://...``): writing it, and reading it.

Writing (every launcher: ``wwm prepare``, ``--worker i/n``, ``--finalize``, ``--ray``, ``wwm train``'s
per-host shares): each segment is built in a local staging folder of this host
(``wwm.fs.staging_dir(entry, "prepared")``), exactly as for a local cache; its files are then uploaded,
its ``done.json`` after them, and the local folder is removed. ``manifest.json`` is uploaded last, once
every segment's marker is in the bucket. A segment's done record and the manifest list every file of the
segment with its size and SHA-256 (``checksums``), so a reader knows what to expect without listing.

SHA-256 (``hashlib``), not CRC32C: it is in the standard library on every platform (CRC32C needs
google-crc32c), it releases the GIL so the copy's threads hash in parallel, it runs at ~1-2 GB/s per core
with SHA extensions (faster than a host's share of the network), and it is what the bucket's own ETags are
not: a content hash for multipart uploads too.

Reading, default (``LocalCopy``): each host copies the files it reads to
``<local_root>/prepared/<hash of the entry URL>/`` (``$WWM_LOCAL_DIR``, else ``~/.cache/wwm``) with
parallel ranged reads (``THREADS`` threads over ``CHUNK``-byte ranges), checks each file's size and
SHA-256 against the manifest (a mismatch: fetched again once, then a one-line error), then memory-maps it
as a local cache. A split folder's ``copy.json`` records the bucket objects' identities (size + ETag /
generation, ``wwm.fs.core.version_of``) and the checksums; a later run reuses the copy while one listing
of the entry shows the same identities.

Reading, ``data.remote_read: true`` (``RemoteParts``): nothing is copied whole. A batch's rows (sorted)
are grouped into runs of adjacent rows per segment; each run is one ranged read per block file. Rows are
kept in a byte-bounded LRU (``data.remote_cache_mb``), and ``BatchIterator`` asks for the rows of the next
``data.remote_prefetch_steps`` global steps in a background thread. The bytes are decoded by the same code
as a memory map's (``wwm.data.storage._Stored``), so the batches are bit-identical. Under an order rule
groups-G-K-r (``data.order: groups``) ``BatchIterator`` calls ``read_groups(G)``: a missing row then brings
its whole group of G adjacent example ids (split at part boundaries; no gap merging), so the rest of the
window finds its rows cached. Remote mode checks
sizes and object identities (a file changed under a run is named in one line), not SHA-256: a hash covers
a whole file, and remote mode never reads one whole.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import fcntl
import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from wwm import fs
from wwm.data import segments
from wwm.data.storage import _Parts, _ranges
from wwm.errors import WWMError
from wwm.files import file_digest

__all__ = [
    "CHECKSUM",
    "CopiedParts",
    "LocalCopy",
    "RemoteParts",
    "checksums",
    "read_json",
    "upload_segment",
    "write_json",
]

CHECKSUM = "sha256"
CHUNK = 8 << 20  # bytes per ranged read of the local copy
THREADS = 16  # concurrent ranged reads (copy and remote mode)
MERGE_GAP = 1 << 20  # remote mode: wanted rows closer than this many bytes of ids share one ranged read
COPY_RECORD = "copy.json"
_SKIP = {"done.json", "owner.json"}


# --------------------------------------------------------------------------------------------------
# Checksums and small JSON objects
# --------------------------------------------------------------------------------------------------


def checksums(folder: Path) -> dict[str, dict[str, Any]]:
    """{path relative to a segment folder ("train/input_ids.bin"): {"size", "sha256"}} of every file a
    reader needs (not the done marker)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name not in _SKIP:
            out[path.relative_to(folder).as_posix()] = {
                "size": path.stat().st_size,
                CHECKSUM: file_digest(str(path)),
            }
    return out


def read_json(url: str) -> dict[str, Any] | None:
    """A small JSON object of a bucket (a done marker, the manifest), or None when it is missing or not
    JSON."""
    filesys, p = fs.filesystem(url)

    def call() -> bytes | None:
        try:
            return filesys.cat_file(p)
        except FileNotFoundError as err:
            if fs.classify(err) == "no-bucket":
                raise
            return None

    raw = fs.retrying(call, url, "read")
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def write_json(url: str, value: dict[str, Any]) -> None:
    fs.write_bytes(url, json.dumps(value, indent=1, default=str).encode())


def upload_segment(folder: Path, url: str, done_file: str) -> None:
    """A built segment folder to the bucket: the block files in parallel, its done marker last."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    rest = [f for f in files if f != done_file]
    with cf.ThreadPoolExecutor(min(THREADS, max(len(rest), 1))) as pool:
        for job in [pool.submit(fs.copy, str(folder / f), fs.join(url, f)) for f in rest]:
            job.result()
    fs.copy(str(folder / done_file), fs.join(url, done_file))


# --------------------------------------------------------------------------------------------------
# Ranged reads
# --------------------------------------------------------------------------------------------------


def _read_range(url: str, start: int, stop: int) -> bytes:
    filesys, p = fs.filesystem(url)
    data = fs.retrying(lambda: filesys.cat_file(p, start=start, end=stop), url, "read")
    if len(data) != stop - start:
        raise WWMError(
            f"{url}: asked for bytes [{start}, {stop}), got {len(data)}; the object is shorter than its "
            "manifest says: the prepared data was modified; prepare it again (wwm prepare --rebuild)"
        )
    return data


def _listing(entry: str) -> dict[str, dict[str, Any]]:
    """{path relative to the entry: {"size", "version"}}: one listing of the bucket entry."""
    from wwm.fs.transfer import remote_files

    return remote_files(entry)


class _Pool:
    """A thread pool created on first use in this process (a forked data-loader worker makes its own)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._pool: cf.ThreadPoolExecutor | None = None
        self._pid = -1

    def get(self) -> cf.ThreadPoolExecutor:
        if self._pool is None or self._pid != os.getpid():
            self._pool = cf.ThreadPoolExecutor(self.threads, thread_name_prefix="wwm-read")
            self._pid = os.getpid()
        return self._pool

    def __getstate__(self) -> dict[str, Any]:
        return {"threads": self.threads, "_pool": None, "_pid": -1}


# --------------------------------------------------------------------------------------------------
# Default: a verified local copy
# --------------------------------------------------------------------------------------------------


class LocalCopy:
    """The local copy of a bucket entry's split folders (see the module docstring).

    ``folder(segment_name, split)`` is the local split folder; ``ensure(...)`` makes the copies (once per
    process; a second process of the host waits for the first's lock and reuses its copy)."""

    def __init__(
        self, entry: str, files: dict[str, dict[str, dict[str, Any]]], root: str | None = None
    ) -> None:
        # files: {segment name: {relative path: {"size", "sha256"}}} from the manifest
        self.entry = entry
        self.files = files
        self.home = Path(root or fs.staging_dir(entry, "prepared"))
        self.stats = {"bytes": 0, "files": 0, "seconds": 0.0, "reused": 0, "refetched": 0}
        self._done: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def folder(self, segment: str, split: str) -> Path:
        return self.home / "segments" / segment / split

    def ensure(self, wanted: list[tuple[str, str]]) -> None:
        """Copy (or reuse) the split folders ``[(segment name, split), ...]``."""
        with self._lock:
            todo = [w for w in wanted if w not in self._done]
            if not todo:
                return
            start = time.perf_counter()
            with fs.errors(str(self.home), "write"):
                self.home.mkdir(parents=True, exist_ok=True)
                guard = os.open(self.home, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(guard, fcntl.LOCK_EX)  # the ranks of one host copy once
                listing = _listing(self.entry)
                jobs = []
                for segment, split in todo:
                    names = {
                        rel: spec for rel, spec in self.files[segment].items() if rel.split("/")[0] == split
                    }
                    jobs.append((segment, split, names))
                self._copy(jobs, listing)
            finally:
                os.close(guard)
            self._done.update(todo)
            self.stats["seconds"] += time.perf_counter() - start

    def _copy(self, jobs: list[tuple[str, str, dict[str, dict[str, Any]]]], listing: dict[str, Any]) -> None:
        stale = []
        for segment, split, names in jobs:
            record = segments.read_json(self.folder(segment, split) / COPY_RECORD)
            identities = {rel: listing.get(f"segments/{segment}/{rel}") for rel in names}
            missing = [rel for rel, ident in identities.items() if ident is None]
            if missing:
                raise WWMError(
                    f"{fs.join(self.entry, 'segments', segment, missing[0])} is missing from the bucket but "
                    "listed in its manifest: the prepared data was modified; prepare it again (wwm prepare "
                    "--rebuild)"
                )
            if record == {"url": self.entry, "files": names, "objects": identities} and all(
                _size(self.folder(segment, split) / rel.split("/", 1)[1]) == spec["size"]
                for rel, spec in names.items()
            ):  # the copy of these objects, whole (the local disk is trusted as a local cache is)
                self.stats["reused"] += len(names)
                continue
            stale.append((segment, split, names, identities))
        if not stale:
            return
        pool = cf.ThreadPoolExecutor(THREADS, thread_name_prefix="wwm-copy")
        try:
            for segment, split, names, identities in stale:
                target = self.folder(segment, split)
                for old in target.parent.glob(
                    f".copy-{split}-*"
                ):  # a killed copy's (we hold the host's lock)
                    shutil.rmtree(old, ignore_errors=True)
                tmp = target.parent / f".copy-{split}-{uuid.uuid4().hex[:8]}"
                try:
                    tmp.mkdir(parents=True)
                    bad = self._fetch_files(pool, segment, names, tmp)
                    if bad:  # a checksum mismatch: fetch those files once more
                        self.stats["refetched"] += len(bad)
                        bad = self._fetch_files(pool, segment, {rel: names[rel] for rel in bad}, tmp)
                    if bad:
                        rel = bad[0]
                        raise WWMError(
                            f"{fs.join(self.entry, 'segments', segment, rel)}: its {CHECKSUM} differs from "
                            f"the manifest's {names[rel][CHECKSUM][:12]}... twice: the object in the bucket is "
                            "damaged or was modified; prepare the data again (wwm prepare --rebuild)"
                        )
                    # local: the local copy's temporary folder
                    (tmp / COPY_RECORD).write_text(
                        json.dumps({"url": self.entry, "files": names, "objects": identities}),
                        encoding="utf-8",
                    )
                    if target.exists():
                        shutil.rmtree(target)
                    os.replace(tmp, target)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _fetch_files(
        self, pool: cf.ThreadPoolExecutor, segment: str, names: dict[str, dict[str, Any]], tmp: Path
    ) -> list[str]:
        """Fetch ``names`` into ``tmp`` with parallel ranged reads; the names whose checksum is wrong."""
        handles: dict[str, int] = {}
        futures = []
        try:
            for rel, spec in names.items():
                path = tmp / rel.split("/", 1)[1]
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                handles[rel] = fd
                size = int(spec["size"])
                os.ftruncate(fd, size)
                url = fs.join(self.entry, "segments", segment, rel)
                for start in range(0, size, CHUNK):
                    futures.append(pool.submit(_fetch_range, url, start, min(start + CHUNK, size), fd))
            for future in futures:
                self.stats["bytes"] += future.result()
        finally:
            for fd in handles.values():
                os.close(fd)
        self.stats["files"] += len(names)
        hashes = dict(
            zip(names, pool.map(lambda rel: file_digest(str(tmp / rel.split("/", 1)[1])), names), strict=True)
        )
        return [rel for rel, spec in names.items() if hashes[rel] != spec[CHECKSUM]]


def _fetch_range(url: str, start: int, stop: int, fd: int) -> int:
    data = _read_range(url, start, stop)
    os.pwrite(fd, data, start)
    return len(data)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


# --------------------------------------------------------------------------------------------------
# Opt-in: remote mode
# --------------------------------------------------------------------------------------------------


class _RowCache:
    """Rows' bytes keyed by (part, row), least recently used dropped past ``capacity`` bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.size = 0
        self.peak = 0
        self._rows: collections.OrderedDict[tuple[int, int], tuple[bytes, ...]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> tuple[bytes, ...] | None:
        with self._lock:
            value = self._rows.get(key)
            if value is not None:
                self._rows.move_to_end(key)
            return value

    def put(self, key: tuple[int, int], value: tuple[bytes, ...]) -> None:
        self.put_many([(key, value)])

    def put_many(self, items: list[tuple[tuple[int, int], tuple[bytes, ...]]]) -> None:
        """``put`` of each (key, value), under one acquisition of the lock (a group is 1,024 rows)."""
        sized = [(key, value, sum(len(v) for v in value)) for key, value in items]
        with self._lock:
            for key, value, nbytes in sized:
                if nbytes > self.capacity:
                    continue
                old = self._rows.pop(key, None)
                if old is not None:
                    self.size -= sum(len(v) for v in old)
                self._rows[key] = value
                self.size += nbytes
                while self.size > self.capacity:
                    _, dropped = self._rows.popitem(last=False)
                    self.size -= sum(len(v) for v in dropped)
            self.peak = max(self.peak, self.size)

    def __contains__(self, key: tuple[int, int]) -> bool:
        with self._lock:
            return key in self._rows

    def contains_many(self, keys: list[tuple[int, int]]) -> list[bool]:
        """``key in self`` of each key, under one acquisition of the lock (a batch asks for hundreds)."""
        with self._lock:
            rows = self._rows
            return [key in rows for key in keys]

    def __len__(self) -> int:
        return len(self._rows)


def _decode_key(stored: Any, files: list[tuple[str, str, int]]) -> tuple:
    """What decoding a part's rows depends on besides its rows: parts equal in it decode together."""
    return (tuple(files), stored.L, stored.pad, tuple(stored.non_word.ids), stored.segments,
            stored.stored_lengths is not None)  # fmt: skip


class _Gathered:
    """Array-like over the fetched rows of one part: ``x[rows]`` gives those rows (``rows`` sorted, all
    fetched), so ``_Stored.rows`` decodes them as it decodes a memory map."""

    def __init__(self, rows: np.ndarray, values: np.ndarray) -> None:
        self._rows, self._values = rows, values

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        return self._values[np.searchsorted(self._rows, rows)]


class RemoteParts:
    """A prepared split read from the bucket row by row: the ``_Parts`` interface (``n``, ``L``,
    ``segments``, ``rows``) over ranged reads (see the module docstring)."""

    def __init__(
        self,
        urls: list[str],
        counts: list[int],
        max_seq_len: int,
        segments: bool,
        *,
        cache_bytes: int,
        prefetch_steps: int,
        sizes: list[dict[str, int]] | None = None,
    ) -> None:
        self.urls = urls  # each part's split folder in the bucket
        self.offsets = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))])
        self.n, self.L, self.segments = int(self.offsets[-1]), int(max_seq_len), segments
        self.prefetch_steps = int(prefetch_steps)
        self.sizes = sizes  # each part's {file name: bytes} from the manifest (None: not checked)
        self.cache = _RowCache(cache_bytes)
        self.group_rows = 0  # G of a groups-G-K-r order (``read_groups``): reads cover whole groups
        self.stats = {"requests": 0, "bytes": 0, "rows_fetched": 0, "hits": 0, "misses": 0}
        self._parts: dict[int, Any] = {}
        self._pool = _Pool(THREADS)
        self._prefetcher = _Pool(1)
        self._inflight: dict[tuple[int, int], cf.Future] = {}
        self._lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:  # a data-loader worker starts with an empty cache
        state = dict(self.__dict__)
        state["cache"] = _RowCache(self.cache.capacity)
        state["_inflight"], state["_lock"] = {}, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    @property
    def folders(self) -> list[str]:
        return self.urls

    @property
    def input_ids(self) -> np.ndarray:
        return self.rows(np.arange(self.n, dtype=np.int64))[0]

    # ------------------------------------------------------------------ layout
    def _part(self, p: int) -> Any:
        from wwm.data.storage import _layout, _Stored

        part = self._parts.get(p)
        if part is None:
            url = self.urls[p]
            meta = read_json(fs.join(url, "meta.json"))
            if meta is None:
                raise WWMError(
                    f"{url}/meta.json is missing from the bucket: the prepared data was modified; prepare "
                    "it again (wwm prepare --rebuild)"
                )
            stored = _Stored.remote(meta)
            expected = (int(self.offsets[p + 1] - self.offsets[p]), self.L, self.segments)
            if (stored.n, stored.L, stored.segments) != expected:
                raise WWMError(
                    f"{url} holds {stored.n} blocks of {stored.L} tokens, not what its manifest says; the "
                    "prepared data was modified: prepare it again (wwm prepare --rebuild)"
                )
            files = _layout(meta)  # [(name, dtype, bytes per row)] of the per-row files
            if stored.exceptions is not None:  # a few positions, read whole
                raw = _read_range(fs.join(url, "word_exceptions.bin"), 0, stored.exceptions.nbytes)
                self._count(1, len(raw))
                stored.exceptions = np.frombuffer(raw, dtype=stored.exceptions.dtype)
            if self.sizes is not None:
                for name, _, width in files:
                    size = self.sizes[p].get(f"{name}.bin")
                    if size is not None and size != width * stored.n:
                        raise WWMError(
                            f"{url}/{name}.bin: {size} bytes in the manifest, {width * stored.n} by its "
                            "meta.json; the prepared data was modified: prepare it again (wwm prepare --rebuild)"
                        )
            part = (stored, files)
            self._parts[p] = part
        return part

    def _count(self, requests: int, nbytes: int) -> None:
        with self._lock:
            self.stats["requests"] += requests
            self.stats["bytes"] += nbytes

    # ------------------------------------------------------------------ fetching
    def _fetch_run(self, p: int, start: int, stop: int, wanted: np.ndarray | None = None) -> None:
        """Rows [start, stop) of part p: one ranged read per block file, then the ``wanted`` rows (all when
        None) into the cache; the rows between them were read only to save requests."""
        _, files = self._part(p)
        blobs = []
        for name, _, width in files:
            blobs.append(_read_range(fs.join(self.urls[p], f"{name}.bin"), start * width, stop * width))
        self._count(len(files), sum(len(b) for b in blobs))
        with self._lock:
            self.stats["rows_fetched"] += stop - start
        rows = range(start, stop) if wanted is None else wanted.tolist()
        widths = [width for _, _, width in files]
        self.cache.put_many([((p, row), tuple(blob[(row - start) * w : (row - start + 1) * w]
                                              for blob, w in zip(blobs, widths, strict=True)))
                             for row in rows])  # fmt: skip

    def read_groups(self, group_rows: int, window_rows: int = 0) -> None:
        """The order reads groups of ``group_rows`` adjacent rows (an order rule groups-G-K-r, set by
        ``BatchIterator``): from now on a missing row brings its whole group [gG, (g+1)G) of global
        example ids, split at part boundaries, into the cache, one ranged read per block file and part
        (adjacent groups share it), so that the rest of the window finds its rows cached. 0: rows only.
        ``window_rows``: this host's rows of a window (K/H groups of G); a row cache smaller than two
        windows (this one and the next, read ahead) is named in a warning: it still gives the same
        batches, but reads rows again one by one."""
        self.group_rows = max(int(group_rows), 0)
        per_row = self._row_bytes()
        need = 2 * int(window_rows) * per_row
        if self.group_rows and per_row and need > self.cache.capacity:
            import warnings

            from wwm.errors import WWMWarning

            warnings.warn(
                f"data.remote_cache_mb holds {self.cache.capacity >> 20} MiB of rows, less than two windows of this "
                f"host's groups under the groups order ({2 * window_rows:,} rows of {per_row} bytes = "
                f"{-(-need // (1 << 20))} MiB): rows are read again one by one; set data.remote_cache_mb to at "
                f"least {-(-need // (1 << 20))}",
                WWMWarning,
                stacklevel=3,
            )

    def _row_bytes(self) -> int:
        """Bytes a row takes in the block files (from the manifest's sizes; 0 when unknown)."""
        counts = np.diff(self.offsets)
        for p, sizes in enumerate(self.sizes or []):
            if counts[p]:
                rows = sum(v for k, v in sizes.items() if k.endswith(".bin") and k != "word_exceptions.bin")
                return -(-rows // int(counts[p]))
        return 0

    def _missing(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(global rows, part, local row) of the sorted unique ``rows`` that are neither cached nor in flight."""
        part = np.searchsorted(self.offsets, rows, side="right") - 1
        local = rows - self.offsets[part]
        keys = list(zip(part.tolist(), local.tolist(), strict=True))
        cached = self.cache.contains_many(keys)
        keep = [i for i, key in enumerate(keys) if not cached[i] and key not in self._inflight]
        return rows[keep], part[keep], local[keep]

    def _runs(self, rows: np.ndarray) -> list[tuple[int, int, int, np.ndarray]]:
        """(part, first row, end row, the rows wanted in it) of each run of nearby global rows not cached
        nor in flight (with ``group_rows``: of the whole groups of those rows)."""
        rows, part, local = self._missing(np.unique(rows))
        if not rows.size:
            return []
        gap = max(MERGE_GAP // max(self.L * 2, 1), 0)
        if self.group_rows:  # whole groups, each read once: no rows read only to save a request
            G = self.group_rows
            groups = np.unique(rows // G)
            first = groups * G
            sizes = np.minimum(first + G, self.n) - first
            rows = np.repeat(first - (np.cumsum(sizes) - sizes), sizes) + np.arange(int(sizes.sum()))
            rows, part, local = self._missing(rows)
            gap = 0
        # Rows at most `gap` rows apart share one read: a request costs more than the bytes between them.
        cut = np.flatnonzero((np.diff(local) > gap + 1) | (np.diff(part) != 0)) + 1
        firsts = np.concatenate([[0], cut])
        ends = np.concatenate([cut, [local.size]])
        return [
            (int(part[a]), int(local[a]), int(local[b - 1]) + 1, local[a:b])
            for a, b in zip(firsts, ends, strict=True)
        ]

    def disk_bytes(self) -> int | None:
        return None if self.sizes is None else sum(sum(s.values()) for s in self.sizes)

    def _start(self, runs: list[tuple[int, int, int]]) -> list[cf.Future]:
        pool = self._pool.get()
        futures = []
        for p, a, b, wanted in runs:
            self._part(p)  # meta first, in this thread (a missing part is one line here)
            future = pool.submit(self._fetch_run, p, a, b, wanted)
            for row in wanted.tolist():
                self._inflight[(p, row)] = future
            future.add_done_callback(lambda f, p=p, wanted=wanted: self._landed(p, wanted, f))
            futures.append(future)
        return futures

    def _landed(self, p: int, wanted: np.ndarray, future: cf.Future) -> None:
        with self._lock:
            for row in wanted.tolist():
                if self._inflight.get((p, row)) is future:
                    del self._inflight[(p, row)]

    def prefetch(self, rows: np.ndarray) -> None:
        """Fetch these global rows in the background (a later ``rows`` finds them cached)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size:
            self._prefetcher.get().submit(self._prefetch, rows)

    def _open_parts(self, rows: np.ndarray) -> None:
        """Open each part these global rows (and, under a groups order, their groups) fall in: the new
        parts' meta.json read in parallel, before any lock is taken (read one by one under the lock, they
        held up every read in flight; a window of the groups order touches up to K new segments)."""
        if len(self._parts) == len(self.urls):
            return  # every part open already
        if self.group_rows:
            first = rows // self.group_rows * self.group_rows
            rows = np.concatenate([first, np.minimum(first + self.group_rows, self.n) - 1])
        parts = np.unique(np.searchsorted(self.offsets, rows, side="right") - 1).tolist()
        new = [p for p in parts if p not in self._parts]
        if len(new) > 1:
            list(self._pool.get().map(self._part, new))

    def _prefetch(self, rows: np.ndarray) -> None:
        self._open_parts(rows)
        with self._lock:
            runs = self._runs(rows)
            futures = self._start(runs)
        for future in futures:
            with contextlib.suppress(Exception):  # the reader fetches again and reports the error
                future.result()

    def rows(self, rows: np.ndarray) -> tuple[np.ndarray | None, ...]:
        """Decode sorted global rows (as ``_Parts.rows``)."""
        if not rows.size:
            empty = np.zeros((0, self.L), np.int32)
            return empty, empty.copy(), np.zeros(0, np.int32), empty.copy() if self.segments else None
        self._open_parts(rows)
        with self._lock:
            part = np.searchsorted(self.offsets, rows, side="right") - 1
            keys = list(zip(part.tolist(), (rows - self.offsets[part]).tolist(), strict=True))
            waiting, absent = {}, []  # the reads in flight this batch waits for; its rows nothing brings yet
            for i, (key, cached) in enumerate(zip(keys, self.cache.contains_many(keys), strict=True)):
                if not cached:
                    future = self._inflight.get(key)
                    if future is not None:
                        waiting[id(future)] = future
                    else:
                        absent.append(i)
            missing = np.unique(rows[absent])
            mine = self._start(self._runs(missing)) if missing.size else []
        for future in mine:
            future.result()  # this batch's own reads: their errors are raised here
        for future in waiting.values():
            with contextlib.suppress(Exception):
                future.result()
        starts = np.flatnonzero(np.diff(part, prepend=-1))
        ends = np.append(starts[1:], rows.size)
        pieces = []
        fetched = int(missing.size)
        with self._lock:
            self.stats["misses"] += fetched
            self.stats["hits"] += int(rows.size) - fetched
        spans = [(int(part[a]), rows[a:b] - self.offsets[part[a]]) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]  # fmt: skip
        parts = [self._part(p) for p, _ in spans]
        if len({_decode_key(stored, files) for stored, files in parts}) == 1:
            return self._decode_together(spans, parts)
        for (p, local), (stored, files) in zip(spans, parts, strict=True):
            pieces.append(self._decode(p, local, stored, files))
        return tuple(None if x[0] is None else np.concatenate(x) for x in zip(*pieces, strict=True))

    def _values(
        self, p: int, local: np.ndarray, files: list[tuple[str, str, int]]
    ) -> list[tuple[bytes, ...]]:
        """The cached bytes of part ``p``'s rows ``local`` (one tuple of per-file bytes a row)."""
        values = []
        for row in local.tolist():
            value = self.cache.get((p, row))
            if value is None:  # dropped by the bound before this batch used it: read it again
                self._fetch_run(p, row, row + 1)
                value = self.cache.get((p, row))
                if value is None:  # a row larger than the whole cache
                    value = self._uncached(p, row, files)
            values.append(value)
        return values

    def _decode(self, p: int, local: np.ndarray, stored: Any, files: list) -> tuple[np.ndarray | None, ...]:
        values = self._values(p, local, files)
        arrays = {}
        for i, (name, dtype, _) in enumerate(files):
            raw = np.frombuffer(b"".join(v[i] for v in values), dtype=dtype)
            arrays[name] = _Gathered(local, raw.reshape(local.size, -1) if name != "lengths" else raw)
        return stored.over(arrays).rows(local)

    def _decode_together(
        self, spans: list[tuple[int, np.ndarray]], parts: list
    ) -> tuple[np.ndarray | None, ...]:
        """The rows of several parts of one layout decoded in one ``_Stored.rows`` call (a batch of the groups
        order touches up to K parts; decoding each apart cost more than the reads): the rows are numbered
        0..n-1 in batch order, and each part's word exceptions (flat positions row * L + column of its own
        rows) are renumbered to match. Bit-identical to decoding part by part (tests/test_remote_read.py)."""
        L = self.L
        files = parts[0][1]
        values, exceptions, first = [], [], 0
        for (p, local), (stored, _) in zip(spans, parts, strict=True):
            values.extend(self._values(p, local, files))
            if stored.exceptions is not None and stored.exceptions.size:
                lo = np.searchsorted(stored.exceptions, local * L)
                hi = np.searchsorted(stored.exceptions, local * L + L)
                which = np.repeat(np.arange(local.size), hi - lo)
                flat = np.asarray(stored.exceptions[_ranges(lo, hi)], dtype=np.int64)
                exceptions.append(flat - local[which] * L + (first + which) * L)
            first += local.size
        n = len(values)
        arrays = {}
        for i, (name, dtype, _) in enumerate(files):
            raw = np.frombuffer(b"".join(v[i] for v in values), dtype=dtype)
            arrays[name] = raw.reshape(n, -1) if name != "lengths" else raw
        together = parts[0][0].over(arrays)
        together.exceptions = np.concatenate(exceptions) if exceptions else None
        return together.rows(np.arange(n, dtype=np.int64))

    def _uncached(self, p: int, row: int, files: list[tuple[str, str, int]]) -> tuple[bytes, ...]:
        return tuple(
            _read_range(fs.join(self.urls[p], f"{name}.bin"), row * width, (row + 1) * width)
            for name, _, width in files
        )


class CopiedParts(_Parts):
    """``_Parts`` over a ``LocalCopy``: the copy is made (or found) when a batch first needs a part."""

    def __init__(self, copied: LocalCopy, wanted: list[tuple[str, str]], counts: list[int], max_seq_len: int,
                 segments: bool) -> None:  # fmt: skip
        super().__init__([copied.folder(*w) for w in wanted], counts, max_seq_len, segments)
        self.copied, self.wanted = copied, wanted

    def part(self, p: int) -> Any:
        self.copied.ensure(self.wanted)
        return super().part(p)
