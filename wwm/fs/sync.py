"""Logs written locally, copied to a bucket on a cadence and at exit.

metrics.jsonl grows by a line a step, and a TensorBoard event file by a record per scalar. Written into
a bucket through a file object, every flush would upload the whole file again (tensorboardX's bucket
writers do, and an object cannot be appended to). So both trainers write them into a local folder, as
they always did, and a ``SyncedFolder`` copies the files that changed (size or modification time) to the
bucket every ``every_s`` seconds (default 60, ``logging.sync_every_s``) from a background thread, and
once more at exit. A step never waits for the bucket.

On a resume on another machine, ``pull`` first brings the bucket's copies down (a file the local folder
lacks, or holds shorter), so metrics.jsonl continues where the run left it and the old TensorBoard event
files stay beside the new ones.

A failed upload (after the storage layer's retries) is reported in one line and tried again at the next
tick; the local files stay the reference until a sync succeeds.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable

from wwm.errors import WWMError
from wwm.fs import core


class SyncedFolder:
    """Copies ``names`` (files or folders, relative to ``local_dir``) to ``remote_dir`` on a cadence."""

    def __init__(self, local_dir: str, remote_dir: str, names: Iterable[str], *, every_s: float = 60.0,
                 log: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.local_dir = os.path.abspath(local_dir)
        self.remote_dir = remote_dir
        self.names = list(names)
        self.every_s = every_s
        self.log = log or (lambda text: print(f"wwm: {text}", file=sys.stderr, flush=True))
        self.syncs = 0
        self.uploads = 0
        self.last_error: WWMError | None = None
        self._sent: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def _files(self) -> dict[str, tuple[int, int]]:
        """{relative path: (size, mtime_ns)} of the local files to sync."""
        out = {}
        for name in self.names:
            path = os.path.join(self.local_dir, name)
            if os.path.isfile(path):
                st = os.stat(path)
                out[name] = (st.st_size, st.st_mtime_ns)
            elif os.path.isdir(path):
                for relative in core.tree(path):
                    st = os.stat(os.path.join(path, *relative.split("/")))
                    out[f"{name}/{relative}"] = (st.st_size, st.st_mtime_ns)
        return out

    def pull(self) -> list[str]:
        """Download what the bucket holds of ``names`` and the local folder lacks (or holds shorter)."""
        pulled = []
        for name in self.names:
            remote = core.join(self.remote_dir, name)
            record = core.info(remote)
            if record is None:
                continue
            if record.get("type") == "directory":
                files = {f"{name}/{rel}": size for rel, size in core.tree(remote).items()}
            else:
                files = {name: int(record.get("size") or 0)}
            for relative, size in files.items():
                local = os.path.join(self.local_dir, *relative.split("/"))
                if os.path.isfile(local) and os.path.getsize(local) >= size:
                    continue
                core.copy(core.join(self.remote_dir, relative), local)
                pulled.append(relative)
        # What came down is in the bucket already.
        self._sent.update({k: v for k, v in self._files().items() if k in set(pulled)})
        return pulled

    def sync(self) -> int:
        """Upload the files changed since the last upload; returns how many were sent."""
        with self._lock:
            sent = 0
            for relative, stamp in sorted(self._files().items()):
                if self._sent.get(relative) == stamp:
                    continue
                core.copy(
                    os.path.join(self.local_dir, *relative.split("/")), core.join(self.remote_dir, relative)
                )
                self._sent[relative] = stamp
                sent += 1
            self.syncs += 1
            self.uploads += sent
            return sent

    def _tick(self) -> None:
        try:
            self.sync()
            self.last_error = None
        except WWMError as err:
            if self.last_error is None:
                self.log(f"warning: copying the logs to {self.remote_dir} failed ({err}); trying again in "
                         f"{self.every_s:.0f} s, the local copies in {self.local_dir} are intact")  # fmt: skip
            self.last_error = err

    def soon(self) -> None:
        """Sync at once in the background thread (e.g. run.json after a checkpoint), not waiting for the
        cadence; the caller does not wait."""
        self._wake.set()

    def start(self) -> SyncedFolder:
        def loop() -> None:
            while not self._stop.is_set():
                self._wake.wait(self.every_s)
                self._wake.clear()
                if self._stop.is_set():
                    return
                self._tick()

        self._thread = threading.Thread(target=loop, name="wwm-log-sync", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the cadence and sync once more (the final records)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        start = time.perf_counter()
        try:
            self.sync()
        except WWMError as err:
            self.log(f"warning: the final copy of the logs to {self.remote_dir} failed ({err}); they are in "
                     f"{self.local_dir}")  # fmt: skip
            return
        self.last_error = None
        self.final_sync_s = time.perf_counter() - start


__all__ = ["SyncedFolder"]
