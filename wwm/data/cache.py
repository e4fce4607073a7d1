"""The block cache on disk: its entries, its build folders, and what `wwm cache list|prune` shows and removes.

Layout of ``<cache_dir>/data/`` (docs/data.md, "Cache"):

* ``<key>/``: an entry, 24 hex digits, holding ``segments/<name>/{train,validation}/`` (each segment's
  blocks, with its ``done.json``) and, written last, ``manifest.json`` (the cache inputs, the statistics,
  ``built_from``: what it was built from and when, and the segments in order: wwm.data.segments). An entry
  without a manifest is a build in progress (or an abandoned one), never read; entries of data format 3
  and older hold ``meta.json`` and ``train/``, ``validation/`` instead;
* ``.build-<name>-<random>/`` in ``<key>/segments/``: a segment being built, holding ``owner.json`` (pid,
  host, boot id, pid namespace, process start time) and the intermediate files, renamed to ``<name>/``
  when done; ``.build-<key>-<random>/`` in ``data/``: the build folders of older wwm versions.

A build folder is **stale** when its owner is known to be gone (same host, boot and pid namespace: the
process ended or its pid now belongs to another process) or, when that cannot be checked (another host,
boot or container, or no owner record), when nothing in it was written for ``STALE_AFTER_S``. Every build removes the stale build folders first; a live one is never touched.
An entry without a manifest is stale when none of its segments is being built and nothing in it was
written for ``STALE_AFTER_S`` (only ``prune`` removes it: workers may resume it later).

An entry is **superseded** when no run of this wwm can hit it again: another data format; an input it
recorded (corpus, validation or tokenizer file) was modified or removed since; or a newer entry exists
with the same identity (the same corpus paths, tokenizer path and block settings). ``prune`` removes
superseded entries and stale build folders, and nothing else: only folders whose names and contents
are those of wwm's cache are ever deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wwm.data.packing import PACKING_RULE
from wwm.data.segments import BUILD_FILE, DONE_FILE, MANIFEST_FILE, OWNER_FILE, SEGMENTS_DIR
from wwm.data.sources import source_fingerprint
from wwm.errors import WWMError
from wwm.locks import owner_gone, owner_record
from wwm.locks import start_ticks as _start_ticks  # noqa: F401 (tests)
from wwm.locks import this_machine as _machine  # noqa: F401 (tests)

if TYPE_CHECKING:
    from wwm.config import RunConfig

__all__ = [
    "BUILD_PREFIX",
    "DATA_FORMAT",
    "OWNER_FILE",
    "STALE_AFTER_S",
    "BuildFolder",
    "CacheEntry",
    "cache_inputs",
    "cache_key",
    "cache_root",
    "data_root",
    "holds_cache",
    "human_size",
    "iso_time",
    "new_build_folder",
    "prune",
    "remove_stale_builds",
    "scan",
]

# Bump when the blocks change for the same inputs (packing rules, storage). 2: documents longer than
# wwm.data.pieces.MAX_PIECE_CHARS are tokenized in pieces. 3: storage format 2 (wwm.data.storage: word
# starts and piece starts as bits, ~2.1 bytes a token; the same batches). 4: prepared in segments (one file
# or data.segment_bytes of a text file each, packed on its own; validation hash of segment * 2^32 + the
# document's index in it) with a manifest (wwm.data.segments).
DATA_FORMAT = 4
BUILD_PREFIX = ".build-"
STALE_AFTER_S = 24 * 3600  # without a checkable owner, a build folder idle this long is abandoned
_ENTRY_NAME = re.compile(r"^[0-9a-f]{24}$")
_BUILD_NAME = re.compile(r"^\.build-[0-9a-f]{24}-[A-Za-z0-9_]+$")


# --------------------------------------------------------------------------------------------------
# The key of an entry: a hash of everything its blocks depend on
# --------------------------------------------------------------------------------------------------


def cache_inputs(config: RunConfig, tokenizer: Any) -> dict[str, Any]:
    """Everything the stored blocks depend on (hashed into the cache key)."""
    from wwm.data.tokenizer import tokenizer_fingerprint

    data = config.data
    if data.validation_files:
        validation: Any = {"files": source_fingerprint(data, "validation")}
    elif data.validation_fraction > 0:
        validation = {"fraction": data.validation_fraction, "split_seed": data.split_seed}
    else:
        validation = None
    inputs = {
        "format": DATA_FORMAT,
        "wwm": _wwm_version(),
        "source": source_fingerprint(data, "train"),
        "validation": validation,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "word_policy": config.tokenizer.word_policy,
        "max_seq_len": data.max_seq_len,
        "packing": data.packing,
        "segment_bytes": data.segment_bytes,
    }
    if PACKING_RULE[data.packing] != "1":  # a packing's later rule (keys of unchanged packings stay)
        inputs["packing_rule"] = PACKING_RULE[data.packing]
    pre_segment = config.tokenizer.pre_segment
    if config.tokenizer.word_policy in ("segmenter", "cjk") or pre_segment:  # words and tokens depend on
        from wwm.words import segmenter_fingerprint  # the segmenters' versions

        inputs["segmenter"] = segmenter_fingerprint(config.tokenizer.segmenter)
    if pre_segment:  # (absent when off: the keys of data prepared before the option stay)
        inputs["pre_segment"] = True
    return inputs


def _wwm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wwm")
    except PackageNotFoundError:
        return "unknown"


def cache_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:24]


# --------------------------------------------------------------------------------------------------
# Where the cache is
# --------------------------------------------------------------------------------------------------


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """``cache_dir`` (``data.cache_dir``), else ``$WWM_CACHE_DIR``, else ``~/.cache/wwm``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("WWM_CACHE_DIR") or Path.home() / ".cache" / "wwm")


def data_root(cache_dir: str | os.PathLike | None) -> Path:
    """The folder of the block entries: ``<cache_root>/data``."""
    return cache_root(cache_dir) / "data"


# --------------------------------------------------------------------------------------------------
# Build folders and their owners
# --------------------------------------------------------------------------------------------------


def new_build_folder(root: Path, key: str) -> Path:
    """A fresh ``.build-<key>-*`` folder in ``root`` with this process recorded as its owner."""
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{key}-", dir=root))
    # local: the local data cache (a bucket cache_dir goes through wwm.data.remote)
    (work / OWNER_FILE).write_text(json.dumps(owner_record()), encoding="utf-8")
    return work


def _tree(path: Path) -> tuple[int, float]:
    """(bytes, newest modification time) of the files under ``path`` (the folder itself included)."""
    size, newest = 0, 0.0
    with contextlib.suppress(OSError):
        newest = path.stat().st_mtime
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed meanwhile
                st = os.stat(os.path.join(folder, name))
                size += st.st_size
                newest = max(newest, st.st_mtime)
    return size, newest


@dataclass
class BuildFolder:
    """A ``.build-*`` folder: a build in progress (``stale`` False) or an abandoned one."""

    path: Path
    size: int
    modified: float  # newest write inside
    stale: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "size": self.size, "modified": iso_time(self.modified),
                "status": "stale" if self.stale else "building", "reason": self.reason}  # fmt: skip


def _read_owner(path: Path) -> dict[str, Any] | None:
    try:
        # local: the local data cache (a bucket cache_dir goes through wwm.data.remote)
        owner = json.loads((path / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None


def build_folder(path: Path, now: float | None = None) -> BuildFolder:
    now = time.time() if now is None else now
    size, modified = _tree(path)
    idle = now - modified
    owner = _read_owner(path)
    # The pid can be checked only on the same machine, boot and pid namespace (two machines or containers
    # may share a host name); otherwise the idle rule below decides (wwm.locks.owner_gone).
    gone, who = owner_gone(owner)
    if gone is not None:
        reason = who if gone else f"process {owner['pid']} is writing it"
        return BuildFolder(path, size, modified, gone, reason)
    if idle > STALE_AFTER_S:
        return BuildFolder(path, size, modified, True, f"{who}; nothing written for {idle / 3600:.0f} h")
    return BuildFolder(path, size, modified, False, f"{who}; written {_ago(idle)} ago")


def holds_cache(folder: Path) -> bool:
    """Whether ``folder`` holds cache entries or build folders itself (it is a ``<cache_dir>/data``)."""
    return folder.is_dir() and any(
        _ENTRY_NAME.match(p.name) or _BUILD_NAME.match(p.name) for p in folder.iterdir()
    )


def _build_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.iterdir() if _BUILD_NAME.match(p.name) and p.is_dir() and not p.is_symlink()
    )


def remove_stale_builds(root: Path) -> list[BuildFolder]:
    """Delete the stale build folders of ``root`` (never a live one); returns those removed."""
    removed = []
    for path in _build_folders(root):
        folder = build_folder(path)
        if folder.stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(folder)
    return removed


# --------------------------------------------------------------------------------------------------
# Entries
# --------------------------------------------------------------------------------------------------


def file_stats(paths: list[str]) -> list[list[Any]]:
    """[path, size, mtime_ns] of each file (what ``built_from`` records to notice later edits)."""
    out = []
    for p in paths:
        with contextlib.suppress(OSError):
            st = os.stat(p)
            out.append([p, st.st_size, st.st_mtime_ns])
    return out


@dataclass
class CacheEntry:
    key: str
    path: Path
    size: int
    created: float
    description: str  # what it was built from, one line
    identity: str  # corpus + tokenizer + block settings, without the versions of the inputs
    superseded: str | None = None  # why no run can hit it again; None: current
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "path": str(self.path), "size": self.size, "created": iso_time(self.created),
                "built_from": self.description, "status": "superseded" if self.superseded else "current",
                "reason": self.superseded or "", "identity": self.identity}  # fmt: skip


def _read_entry(path: Path) -> CacheEntry | None:
    """The entry at ``path``, or None when the folder is not a complete wwm cache entry."""
    if not (_ENTRY_NAME.match(path.name) and path.is_dir()) or path.is_symlink():
        return None
    record = path / MANIFEST_FILE if (path / MANIFEST_FILE).is_file() else path / "meta.json"  # format <= 3
    try:
        # local: the local data cache (a bucket cache_dir goes through wwm.data.remote)
        meta = json.loads(record.read_text(encoding="utf-8"))
        with contextlib.suppress(OSError, ValueError):  # format 4: built_from beside the manifest
            meta.setdefault(  # local: the local data cache (a bucket cache_dir goes through wwm.data.remote)
                "built_from", json.loads((path / BUILD_FILE).read_text(encoding="utf-8"))["built_from"]
            )
        created = float((meta.get("built_from") or {}).get("created") or record.stat().st_mtime)
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("inputs"), dict) or "stats" not in meta:
        return None
    size, _ = _tree(path)
    return CacheEntry(path.name, path, size, created, _describe(meta), _identity(meta), meta=meta)


def _identity(meta: dict[str, Any]) -> str:
    """sha256 of what the entry was built from minus the versions: corpus paths (the configured patterns
    when recorded), tokenizer path (else its hash), validation settings, word policy, L, packing."""
    inputs, made = meta["inputs"], meta.get("built_from") or {}
    source = dict(inputs.get("source") or {})
    if "files" in source:
        source["files"] = made.get("train_files") or [f[0] for f in source["files"]]
        source["file_format"] = made.get("file_format")
    if isinstance(source.get("builtin"), dict):
        source["builtin"] = source["builtin"].get("lang")
    if "hub" in source:
        source["hub"] = list(source["hub"])[:3]  # the revision is the version of the data
    validation = inputs.get("validation")
    if isinstance(validation, dict) and isinstance(validation.get("files"), dict):
        validation = made.get("validation_files") or [f[0] for f in validation["files"].get("files", [])]
    identity = {
        "source": source,
        "validation": validation,
        "tokenizer": made.get("tokenizer") or inputs.get("tokenizer"),
        **{k: inputs.get(k) for k in ("word_policy", "max_seq_len", "packing")},
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _describe(meta: dict[str, Any]) -> str:
    inputs, made = meta["inputs"], meta.get("built_from") or {}
    source = inputs.get("source") or {}
    if "files" in source:
        files = made.get("train_files") or [f[0] for f in source["files"]]
        corpus = f"files {', '.join(files[:2])}" + (f" (+{len(files) - 2} more)" if len(files) > 2 else "")
    elif "builtin" in source:
        corpus = f"built-in ({(source.get('builtin') or {}).get('lang')})"
    elif "hub" in source:
        corpus = f"Hub {'/'.join(str(x) for x in source['hub'] if x)}"
    else:
        corpus = "unknown source"
    tokenizer = made.get("tokenizer") or f"sha256 {str(inputs.get('tokenizer'))[:12]}"
    return (f"{corpus}; tokenizer {tokenizer}; max_seq_len {inputs.get('max_seq_len')}, "
            f"{inputs.get('packing')}, word policy {inputs.get('word_policy')}; wwm {inputs.get('wwm')}")  # fmt: skip


def _changed_input(meta: dict[str, Any], builtin: dict[str, Any]) -> str | None:
    """The first recorded input that was modified or removed since the build, or None."""
    inputs, made = meta["inputs"], meta.get("built_from") or {}
    recorded = [f[:3] for f in (inputs.get("source") or {}).get("files", [])]
    validation = inputs.get("validation")
    if isinstance(validation, dict) and isinstance(validation.get("files"), dict):
        recorded += [f[:3] for f in validation["files"].get("files", [])]
    recorded += made.get("tokenizer_files", [])
    from wwm.data.sources import stamp

    for path, size, mtime_ns in recorded:
        try:
            now = stamp(path)  # (size, mtime_ns); a bucket object: (size, generation / ETag)
        except (OSError, WWMError):
            return f"input {path} is gone"
        if now != (size, mtime_ns):
            return f"input {path} was modified"
    fingerprint = (inputs.get("source") or {}).get("builtin")
    if isinstance(fingerprint, dict):
        lang = fingerprint.get("lang")
        if lang not in builtin:
            from wwm.data.builtin import builtin_fingerprint

            try:
                builtin[lang] = builtin_fingerprint(lang)
            except Exception:  # a language this wwm does not ship
                builtin[lang] = None
        if builtin[lang] != fingerprint:
            return f"the built-in corpus ({lang}) changed (Python or wwm version)"
    return None


def _mark_superseded(entries: list[CacheEntry]) -> None:
    builtin: dict[str, Any] = {}
    newest: dict[str, CacheEntry] = {}
    for entry in sorted(entries, key=lambda e: (e.created, e.key)):
        newest[entry.identity] = entry
    for entry in entries:
        fmt = entry.meta["inputs"].get("format")
        if fmt != DATA_FORMAT:
            entry.superseded = f"data format {fmt} (this wwm writes format {DATA_FORMAT})"
        elif newest[entry.identity] is not entry:
            other = newest[entry.identity]
            entry.superseded = f"superseded by {other.key} (built {iso_time(other.created)})"
        else:
            entry.superseded = _changed_input(entry.meta, builtin)


def scan(root: Path) -> tuple[list[CacheEntry], list[BuildFolder]]:
    """The entries (oldest first, each marked current or superseded) and build folders under ``root``."""
    if not root.is_dir():
        return [], []
    entries = [e for p in sorted(root.iterdir()) if (e := _read_entry(p)) is not None]
    _mark_superseded(entries)
    entries.sort(key=lambda e: (e.created, e.key))
    complete = {e.path for e in entries}
    unfinished = [_unfinished_entry(p) for p in sorted(root.iterdir())
                  if _ENTRY_NAME.match(p.name) and p not in complete and (p / SEGMENTS_DIR).is_dir()]  # fmt: skip
    return entries, [build_folder(p) for p in _build_folders(root)] + unfinished


def _unfinished_entry(path: Path, now: float | None = None) -> BuildFolder:
    """An entry without a manifest: some segments prepared (by workers that may come back), none for good."""
    now = time.time() if now is None else now
    size, modified = _tree(path)
    folder = path / SEGMENTS_DIR
    done = sum((p / DONE_FILE).is_file() for p in folder.iterdir() if p.is_dir())
    live = [b for p in folder.glob(f"{BUILD_PREFIX}*") if not (b := build_folder(p, now)).stale]
    if live:
        return BuildFolder(path, size, modified, False, f"{done} segment(s) prepared; {live[0].reason}")
    idle = now - modified
    if idle > STALE_AFTER_S:
        return BuildFolder(path, size, modified, True, f"no manifest, {done} segment(s) prepared, nothing "
                           f"written for {idle / 3600:.0f} h")  # fmt: skip
    return BuildFolder(path, size, modified, False, f"no manifest yet, {done} segment(s) prepared, written "
                       f"{_ago(idle)} ago (workers may be running)")  # fmt: skip


def prune(root: Path, dry_run: bool = False) -> list[tuple[Path, int, str]]:
    """Remove the superseded entries and the stale build folders of ``root``: [(path, bytes, why)]."""
    entries, builds = scan(root)
    doomed = [(e.path, e.size, e.superseded) for e in entries if e.superseded]
    doomed += [(b.path, b.size, f"stale build folder: {b.reason}") for b in builds if b.stale]
    if not dry_run:
        for path, _, _ in doomed:
            try:
                shutil.rmtree(path)
            except OSError as err:
                raise WWMError(f"could not remove {path}: {err}; check its permissions") from err
    return doomed


# --------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------


def iso_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def human_size(n: float) -> str:
    """Bytes in decimal units: 512 B, 40.1 MB, 1.2 GB."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            break
    return f"{n:.1f} {unit}"
