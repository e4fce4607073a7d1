"""Checkpoints in a bucket through a local copy: save locally, mirror in the background, resume from the
newest complete copy.

Where a trainer cannot write a bucket itself (the torch Trainer always; orbax for s3:// today), it saves
each checkpoint into a local folder as it always did, and hands the checkpoint's name to a ``Mirror``:

* ``submit(name)`` takes a snapshot of the checkpoint folder (hard links: instant, and immune to the
  trainer deleting or rewriting the folder afterwards; a copy where links are impossible) and returns.
  The step loop never waits for the bucket longer than the local save took.
* a background thread uploads the snapshot to ``<remote_root>/<name>/``, then writes the **commit
  marker** ``.wwm-commit-<k>-of-<n>.json`` last: the list of the files it uploaded and their sizes.
  Only a folder with every marker (one per writer: ``n`` > 1 when several hosts each save their own
  part: JAX processes on hosts with their own disks each upload their orbax part to
  ``<name>/process-<k>/``, ``part_name``) and every listed file at its listed size is a **complete** copy (``remote_complete``); anything else is a killed upload and is never resumed.
* after an upload, the oldest complete copies beyond ``keep`` and incomplete leftovers older than the
  newest complete copy are deleted from the bucket (writer 0 only).
* when uploads fall behind the saves, a snapshot superseded by a newer one before its upload started
  is dropped (only the newest checkpoint matters for a resume).
* an upload that still fails after the storage layer's retries (``wwm.fs.core.retrying``) sets
  ``error``: the trainer stops at its next step (``check``) and exits with the one-line error; the local
  checkpoints stay, so the same command resumes.

A resume (``candidates``) looks at both places: the newest checkpoint complete in either is used, the
local copy when both hold it; a newer remote copy (a clean machine, or a local disk that was lost) is
pulled into the local folder first (``pull``: downloaded beside it and renamed, so a half-pulled copy is
never taken for a checkpoint). A local checkpoint the bucket lacks (the run died before its upload) is
submitted again. A copy that turns out unreadable is set aside in both places (``set_aside``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wwm.errors import WWMError
from wwm.fs import core

MARKER_PREFIX = ".wwm-commit-"
_STAGING = ".wwm-mirror"


def marker_name(writer: int, writers: int) -> str:
    return f"{MARKER_PREFIX}{writer}-of-{writers}.json"


def _is_marker(relative: str) -> bool:
    return relative.rpartition("/")[2].startswith(MARKER_PREFIX)


# --------------------------------------------------------------------------------------------------
# Folders up and down
# --------------------------------------------------------------------------------------------------


def upload_folder(local_dir: str, remote_dir: str, *, writer: int = 0, writers: int = 1,
                  extra: dict[str, Any] | None = None, part: str = "") -> dict[str, int]:  # fmt: skip
    """Upload every file of ``local_dir`` to ``remote_dir`` (under ``remote_dir/part`` when several
    processes each upload their own part of one checkpoint: ``part`` is this writer's subfolder), then its
    commit marker (last, in ``remote_dir``; it lists the files relative to ``remote_dir``). A copy already
    there (a checkpoint of the same step saved again, e.g. after a fallback past a corrupt one) first
    loses its markers (a part: this writer's marker), so that it never counts as complete while its files
    change, and every file is sent again: equal sizes do not mean equal bytes. Returns {file: size}."""
    prefix = f"{part.strip('/')}/" if part else ""
    files = {prefix + rel: size for rel, size in core.tree(local_dir).items() if not _is_marker(rel)}
    there = core.tree(remote_dir)
    own_marker = marker_name(writer, writers)
    stale = [rel for rel in there if (rel == own_marker if prefix else _is_marker(rel))]
    stale += [rel for rel in there if not _is_marker(rel) and rel not in files and rel.startswith(prefix)]
    for relative in sorted(stale, key=lambda r: not _is_marker(r)):  # the marker first
        core.remove(core.join(remote_dir, relative))
    for relative in sorted(files):
        source = os.path.join(local_dir, *relative[len(prefix) :].split("/"))
        core.copy(source, core.join(remote_dir, relative))
    write_marker(remote_dir, files, writer=writer, writers=writers, extra=extra, part=part)
    return files


def write_marker(remote_dir: str, files: dict[str, int], *, writer: int = 0, writers: int = 1,
                 extra: dict[str, Any] | None = None, part: str = "") -> None:  # fmt: skip
    """Commit ``remote_dir``: write writer ``writer``'s marker, listing ``files`` ({path relative to
    ``remote_dir``: size}), once every one of them is there. Written last, by whoever wrote the files: an
    upload (``upload_folder``), or the lead after orbax finished a step it wrote into the bucket itself
    (``wwm_jax.checkpoint``, gs://)."""
    marker = {"writer": writer, "writers": writers, "files": files, "time": time.time(), **(extra or {})}
    if part:
        marker["part"] = part
    core.write_text(core.join(remote_dir, marker_name(writer, writers)), json.dumps(marker, indent=1))


def commit(remote_dir: str, *, extra: dict[str, Any] | None = None) -> dict[str, int]:
    """Commit what ``remote_dir`` holds now (one writer): its marker lists every file in it. For a folder
    something else wrote completely (orbax, once every process finished the step)."""
    files = {rel: size for rel, size in core.tree(remote_dir).items() if not _is_marker(rel)}
    write_marker(remote_dir, files, extra=extra)
    return files


def writers_of(remote_dir: str, listing: dict[str, int] | None = None) -> int | None:
    """How many processes wrote the remote copy (its markers' "<k>-of-<n>"), None without a marker."""
    listing = core.tree(remote_dir) if listing is None else listing
    for relative in listing:
        if "/" not in relative and relative.startswith(MARKER_PREFIX):
            with contextlib.suppress(IndexError, ValueError):
                return int(relative[len(MARKER_PREFIX) :].split("-of-")[1].removesuffix(".json"))
    return None


def part_name(writer: int, writers: int) -> str:
    """The subfolder of a checkpoint that process ``writer`` of ``writers`` uploads ("" for one process:
    the checkpoint folder itself, as a single-process run lays it out)."""
    return f"process-{writer}" if writers > 1 else ""


def remote_complete(remote_dir: str, listing: dict[str, int] | None = None) -> bool:
    """Whether ``remote_dir`` holds a complete copy: every writer's commit marker, and every file a
    marker lists at its listed size."""
    listing = core.tree(remote_dir) if listing is None else listing
    markers = [rel for rel in listing if "/" not in rel and rel.startswith(MARKER_PREFIX)]
    if not markers:
        return False
    try:
        writers = int(markers[0][len(MARKER_PREFIX) :].split("-of-")[1].removesuffix(".json"))
    except (IndexError, ValueError):
        return False
    if {marker_name(k, writers) for k in range(writers)} - set(markers):
        return False
    for name in markers:
        try:
            record = json.loads(core.read_bytes(core.join(remote_dir, name)))
        except (ValueError, WWMError):
            return False
        for relative, size in (record.get("files") or {}).items():
            if listing.get(relative) != size:
                return False
    return True


def download_folder(remote_dir: str, local_dir: str, *, parts: tuple[str, ...] = ()) -> None:
    """Download a complete remote copy into ``local_dir`` (beside it, then renamed: the folder appears
    whole or not at all). An existing ``local_dir`` is replaced. ``parts``: only the files of these
    writers' subfolders, merged into ``local_dir`` itself (two parts holding one file name: WWMError)."""
    files: dict[str, str] = {}  # local relative path -> remote relative path
    for relative in core.tree(remote_dir):
        head, _, rest = relative.partition("/")
        target = (rest if head in parts and rest else None) if parts else relative
        if target is None:
            continue
        if target in files:
            raise WWMError(f"{remote_dir}: {target} is in two writers' parts ({files[target]}, {relative})")
        files[target] = relative
    parent = os.path.dirname(os.path.abspath(local_dir))
    tmp = os.path.join(parent, f".pull-{os.path.basename(local_dir)}-{uuid.uuid4().hex[:8]}")
    try:
        for target, relative in sorted(files.items()):
            core.copy(core.join(remote_dir, relative), os.path.join(tmp, *target.split("/")))
        with core.errors(local_dir, "write"):
            os.makedirs(tmp, exist_ok=True)
            if os.path.lexists(local_dir):
                shutil.rmtree(local_dir)
            os.replace(tmp, local_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def set_aside(remote_root: str, name: str, corrupt_root: str) -> str:
    """Move an unreadable remote checkpoint to ``corrupt_root/<name>-<time>`` (never deleted): its markers
    go first, so that even a move cut short leaves nothing that counts as complete."""
    source = core.join(remote_root, name)
    destination = core.join(corrupt_root, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    listing = core.tree(source)
    for relative in listing:
        if _is_marker(relative):
            core.remove(core.join(source, relative))
    for relative in listing:
        if not _is_marker(relative):
            core.copy(core.join(source, relative), core.join(destination, relative))
    core.remove(source, recursive=True)
    return destination


def move_tree(source: str, destination: str) -> None:
    """Move a bucket folder (object stores have no rename: copy, then delete). Commit markers are copied
    last and deleted first, so that a move cut short never leaves a second complete copy of a checkpoint
    and never an incomplete one that counts as complete; what is left at the source is never deleted
    before its copy is there."""
    listing = core.tree(source)
    for relative in sorted(listing, key=_is_marker):  # markers last
        core.copy(core.join(source, relative), core.join(destination, relative))
    for relative in sorted(listing, key=lambda r: not _is_marker(r)):  # markers first
        core.remove(core.join(source, relative))
    core.remove(source, recursive=True)


# --------------------------------------------------------------------------------------------------
# The mirror
# --------------------------------------------------------------------------------------------------


@dataclass
class _Job:
    name: str
    snapshot: str
    step: int


class Mirror:
    """Uploads the checkpoints of ``local_root`` to ``remote_root`` in the background (module doc).

    ``step_of(name)``: a checkpoint folder's step, or None for a name that is no checkpoint (``"7"`` for
    orbax, ``"checkpoint-7"`` for the Trainer). ``keep``: complete copies kept in the bucket (None: all).
    ``writer`` / ``writers``: this process's part of a checkpoint that several hosts write."""

    def __init__(self, local_root: str, remote_root: str, step_of: Callable[[str], int | None], *,
                 keep: int | None = None, writer: int = 0, writers: int = 1, staging: str | None = None,
                 log: Callable[[str], None] | None = None) -> None:  # fmt: skip
        core.check_writable_folder(remote_root, "the checkpoint bucket folder")
        self.local_root = os.path.abspath(local_root)
        self.remote_root = remote_root
        self.step_of = step_of
        self.keep = keep
        self.writer, self.writers = writer, writers
        self.part = part_name(writer, writers)  # several processes: each uploads its own subfolder
        self.staging = staging or os.path.join(os.path.dirname(self.local_root), _STAGING)
        self.log = log or (lambda text: print(f"wwm: {text}", file=sys.stderr, flush=True))
        self.error: WWMError | None = None
        self.uploaded: list[str] = []
        self.dropped: list[str] = []
        self.upload_s = 0.0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._lock = threading.Lock()
        self._pending = 0
        shutil.rmtree(self.staging, ignore_errors=True)  # snapshots of a process that died
        self._thread = threading.Thread(target=self._work, name="wwm-mirror", daemon=True)
        self._thread.start()

    # ---- the step loop's side -------------------------------------------------------------------

    def submit(self, name: str) -> None:
        """Snapshot ``local_root/name`` and queue its upload; returns at once."""
        self.check()
        step = self.step_of(name)
        if step is None:
            raise ValueError(f"{name} is not a checkpoint name")
        source = os.path.join(self.local_root, name)
        snapshot = os.path.join(self.staging, f"{name}-{uuid.uuid4().hex[:8]}")
        _snapshot(source, snapshot)
        with self._lock:
            self._pending += 1
            self._idle.clear()
        self._queue.put(_Job(name, snapshot, step))

    def check(self) -> None:
        """Raise the upload error (one line) if an upload failed for good."""
        if self.error is not None:
            raise self.error

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every submitted checkpoint is uploaded (or dropped); False on timeout."""
        return self._idle.wait(timeout)

    def close(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Finish the queued uploads (``wait``), stop the thread, raise an upload error if one happened."""
        if wait:
            self.wait(timeout)
        self._queue.put(None)
        self._thread.join(timeout=5 if not wait else timeout)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.check()

    # ---- the background thread -------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            newer = []
            with contextlib.suppress(queue.Empty):
                while True:
                    newer.append(self._queue.get_nowait())
            if None in newer:
                newer = [j for j in newer if j is not None]
                self._queue.put(None)
            jobs = sorted([job, *newer], key=lambda j: j.step)
            for old in jobs[:-1]:  # superseded before their upload began
                shutil.rmtree(old.snapshot, ignore_errors=True)
                self.dropped.append(old.name)
                self._done()
            self._upload(jobs[-1])

    def _done(self) -> None:
        with self._lock:
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()

    def _upload(self, job: _Job) -> None:
        try:
            if self.error is None:
                start = time.perf_counter()
                remote = core.join(self.remote_root, job.name)
                upload_folder(job.snapshot, remote, writer=self.writer, writers=self.writers,
                              extra={"step": job.step}, part=self.part)  # fmt: skip
                self.upload_s += time.perf_counter() - start
                self.uploaded.append(job.name)
                if self.writer == 0:
                    self._prune(job.step)
        except WWMError as err:
            self.error = WWMError(f"mirroring checkpoint {job.name} to {self.remote_root} failed: {err}")
            self.log(f"error: {self.error}")
        except Exception as err:  # a bug or an unmapped failure: stop the run all the same
            self.error = WWMError(f"mirroring checkpoint {job.name} to {self.remote_root} failed: "
                                  f"{type(err).__name__}: {err}")  # fmt: skip
            self.log(f"error: {self.error}")
        finally:
            shutil.rmtree(job.snapshot, ignore_errors=True)
            self._done()

    def prune(self) -> None:
        """Apply ``keep`` to the bucket now (writer 0, after every writer's last part is up: with several
        writers the prune after writer 0's own upload may see the newest step still incomplete)."""
        if self.writer == 0:
            try:
                self._prune(0)
            except WWMError as err:  # older copies left in the bucket: nothing lost, the run is done
                self.log(f"could not delete checkpoints beyond keep={self.keep} in {self.remote_root}: {err}")

    def _prune(self, newest: int) -> None:
        prune(self.remote_root, self.step_of, self.keep)


def _folders(remote_root: str) -> dict[str, dict[str, int]]:
    """{folder name: {path inside it: size}} of the bucket folder ``remote_root``'s sub-folders, from one
    listing (files directly under ``remote_root`` are left out)."""
    by_name: dict[str, dict[str, int]] = {}
    for relative, size in core.tree(remote_root).items():
        head, _, rest = relative.partition("/")
        if rest:
            by_name.setdefault(head, {})[rest] = size
    return by_name


def prune(remote_root: str, step_of: Callable[[str], int | None], keep: int | None) -> list[str]:
    """Retention in the bucket (``checkpoint.keep``): keep the ``keep`` newest complete copies; delete
    older ones and killed saves or uploads older than the newest complete copy. Returns what it deleted."""
    by_name = _folders(remote_root)
    steps = {n: s for n in by_name if (s := step_of(n)) is not None}
    complete = sorted((n for n in steps if remote_complete(core.join(remote_root, n), by_name[n])),
                      key=steps.get, reverse=True)  # fmt: skip
    if not complete:
        return []
    kept = set(complete[:keep] if keep else complete)
    newest_complete = steps[complete[0]]
    deleted = []
    for name, step in steps.items():
        if name in kept or step > newest_complete:
            continue
        core.remove(core.join(remote_root, name), recursive=True)
        deleted.append(name)
    return deleted


def _snapshot(source: str, snapshot: str) -> None:
    """Hard-link every file of ``source`` under ``snapshot`` (copy where linking fails)."""
    with core.errors(source, "snapshot"):
        for root, _, files in os.walk(source):
            target_dir = os.path.join(snapshot, os.path.relpath(root, source))
            os.makedirs(target_dir, exist_ok=True)
            for name in files:
                src, dst = os.path.join(root, name), os.path.join(target_dir, name)
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
        os.makedirs(snapshot, exist_ok=True)


# --------------------------------------------------------------------------------------------------
# Resume: the newest complete copy
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A checkpoint to try on resume: its name and step, and whether it is complete locally and in the
    bucket."""

    name: str
    step: int
    local: bool
    remote: bool


def candidates(local_names: list[str], remote_root: str | None, step_of: Callable[[str], int | None]
               ) -> list[Candidate]:  # fmt: skip
    """Every checkpoint complete locally (``local_names``: the trainer's own test of completeness) or in
    the bucket, newest first."""
    remote: set[str] = set()
    if remote_root is not None:
        remote = {n for n, files in _folders(remote_root).items() if step_of(n) is not None
                  and remote_complete(core.join(remote_root, n), files)}  # fmt: skip
    local = {n for n in local_names if step_of(n) is not None}
    names = sorted(local | remote, key=lambda n: step_of(n) or 0, reverse=True)
    return [Candidate(n, step_of(n) or 0, n in local, n in remote) for n in names]


def pull(remote_root: str, name: str, local_root: str, *, part: str | tuple[str, ...] = "") -> str:
    """Download the remote checkpoint ``name`` (this process's ``part`` of it, when several processes
    wrote it; a tuple of parts: their files merged into one folder, as a torch node needs the world main
    process's part and its own ranks' RNG states) into ``local_root/name``; returns that path."""
    destination = os.path.join(local_root, name)
    if isinstance(part, tuple):
        download_folder(core.join(remote_root, name), destination, parts=part)
    else:
        source = core.join(remote_root, name, part) if part else core.join(remote_root, name)
        download_folder(source, destination)
    for marker in [n for n in os.listdir(destination) if n.startswith(MARKER_PREFIX)]:
        os.remove(os.path.join(destination, marker))  # the local folder is the trainer's, as it saved it
    return destination


__all__ = [
    "MARKER_PREFIX",
    "Candidate",
    "Mirror",
    "candidates",
    "commit",
    "download_folder",
    "marker_name",
    "move_tree",
    "part_name",
    "prune",
    "pull",
    "remote_complete",
    "set_aside",
    "upload_folder",
    "write_marker",
    "writers_of",
]
