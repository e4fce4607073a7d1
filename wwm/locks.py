"""Who owns a folder: owner records, proof that an owner is gone, and the run lock.

One run per `output_dir` needs an exclusive lock held for the whole run (docs/run_directories.md, "The
lock"). The interface is small so that a bucket can implement it with a lease object (the storage issue):

    lock = lock_for(output_dir)        # LocalLock for a local folder
    lock.acquire()                     # WWMError (exit 2) naming the live owner; takes over a dead one
    lock.lost                          # True once another process took the lock over (a heartbeat saw it)
    lock.release()                     # only if the lock is still ours

An owner record names the process that holds something: host name, boot id, pid namespace, pid and the
pid's start time, a random run id, when it started and what it runs. An owner is **provably gone** when:

* it ran on this machine (same host name, boot id and pid namespace) and its pid is not running, or now
  belongs to another process (another start time) -- the kernel's word, no waiting;
* it ran elsewhere (another host, boot or container: its pid means nothing here) and its heartbeat
  stopped: the owner refreshes the lock every `HEARTBEAT_S`, and nobody did for `LEASE_S`. A lock from
  another machine refreshed less than `LEASE_S` ago is watched until the lease ends: refreshed meanwhile,
  its owner is alive (refused); not, gone (taken over). Clocks of two machines need not agree: the
  watcher times the silence with its own monotonic clock, and never for less than two heartbeats.

Owner records and the same-machine proof live in wwm.owners (the cache's build folders and a bucket
folder's lease use them too).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from wwm.errors import WWMError, os_error
from wwm.owners import describe_owner, owner_gone, owner_record, pid_alive, start_ticks, this_machine

__all__ = [
    "HEARTBEAT_S",
    "LEASE_S",
    "BucketLock",
    "LocalLock",
    "LockHeld",
    "RunLock",
    "lock_for",
    "owner_gone",
    "owner_record",
    "pid_alive",
    "start_ticks",
    "this_machine",
]

HEARTBEAT_S = 15.0  # the owner refreshes its lock this often
LEASE_S = 90.0  # a lock of another machine that nobody refreshed for this long is abandoned


# --------------------------------------------------------------------------------------------------
# The lock interface and its local implementation
# --------------------------------------------------------------------------------------------------


class LockHeld(WWMError):
    """The folder is locked by a live process (or one that cannot be proven gone)."""


class RunLock(Protocol):
    """What a run needs of its lock (a lock file here; a lease object in a bucket)."""

    path: str
    owner: dict[str, Any]  # this process's record (with its run id) once acquired
    lost: bool  # another process took the lock over: stop writing

    def acquire(self) -> None: ...

    def release(self) -> None: ...


@contextlib.contextmanager
def _folder_guard(folder: str):
    """An flock on the folder: the read-judge-replace of a stale lock is one step among processes of this
    kernel (two starts that find the same dead owner do not both take over). Best effort: a file system
    without flock (some network mounts) goes on unguarded, and O_EXCL still lets one creator win."""
    fd = None
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class LocalLock:
    """A lock file created with O_EXCL, holding its owner's record; refreshed (mtime) by a heartbeat
    thread while held, and taken over only from a provably gone owner (module docstring).

    `what` names the thing locked in messages ("output_dir /runs/x"); `command` is recorded for the
    message another process gets; `wait` (seconds -> None) and the clock are the test's hooks."""

    def __init__(
        self,
        path: str,
        what: str,
        *,
        command: str | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        lease_s: float = LEASE_S,
        wait: Callable[[float], None] = time.sleep,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.path = os.path.abspath(path)
        self.what = what
        self.command = command
        self.heartbeat_s, self.lease_s = heartbeat_s, lease_s
        self._wait = wait
        self._say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self.owner: dict[str, Any] = {}
        self.lost = False
        self.took_over: str | None = None  # why a previous owner's lock was replaced
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ reading
    def read(self) -> tuple[dict[str, Any] | None, float | None]:
        """(the record, the file's mtime) or (None, None) when there is no lock file. A record that is
        not JSON (a writer between create and write, or a torn file) reads as {}."""
        try:
            # local: a local run folder's lock (a bucket folder's owner is wwm.fs.lease)
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return None, None
        try:
            record = json.loads(text)
        except ValueError:
            record = {}
        return (record if isinstance(record, dict) else {}), mtime

    # ------------------------------------------------------------------ acquire
    def acquire(self) -> None:
        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as err:
            raise os_error(err, self.what) from err
        self.owner = owner_record(run_id=uuid.uuid4().hex, command=self.command)
        for _ in range(100):  # each pass ends in a decision unless another process raced us
            with _folder_guard(folder):
                if self._create():
                    break
                record, mtime = self.read()
                if record is None:
                    continue  # released meanwhile
                gone, why = owner_gone(record)
                if gone is None:
                    gone, why = self._watch(record, mtime, why)
                if not gone:
                    raise LockHeld(
                        f"{self.what} is in use by a live run: {describe_owner(record)} holds {self.path} ({why}); "
                        "wait for it to finish, stop it (SIGTERM saves a checkpoint), or use another output_dir"
                    )
                if self.read()[0] == record:  # not replaced by another taker meanwhile
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(self.path)
                    self.took_over = f"{describe_owner(record)}: {why}"
        else:
            raise LockHeld(
                f"{self.what}: could not take the lock {self.path} (other processes keep taking it)"
            )
        self._start_heartbeat()

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as err:
            raise os_error(err, self.what) from err
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(self.owner))
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            with contextlib.suppress(OSError):
                os.remove(self.path)
            raise os_error(err, self.what) from err
        return True

    def _watch(self, record: dict[str, Any], mtime: float | None, why: str) -> tuple[bool, str]:
        """A lock of another machine: alive if refreshed within the lease, watched by our own clock."""
        age = max(0.0, time.time() - (mtime or 0.0))
        if age > self.lease_s + 10 * self.heartbeat_s:  # long silent even allowing for clock skew
            return True, f"{why}; not refreshed for {age:.0f} s"
        deadline = max(self.lease_s - age, 2 * self.heartbeat_s)
        self._say(
            f"wwm: {self.path} is held by {describe_owner(record)}, last refreshed {age:.0f} s ago; waiting up to "
            f"{deadline:.0f} s to see whether it is still alive"
        )
        watched = 0.0
        step = min(self.heartbeat_s / 3, 5.0)
        while watched < deadline:
            self._wait(step)
            watched += step
            now, now_mtime = self.read()
            if now != record or now_mtime != mtime:
                return False, f"{why}; refreshed {watched:.0f} s ago"
        return True, f"{why}; not refreshed for {age + watched:.0f} s"

    # ------------------------------------------------------------------ heartbeat
    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="wwm-lock-heartbeat")
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.refresh()

    def refresh(self) -> bool:
        """Touch the lock if it is still ours; otherwise mark it lost (another process took it over)."""
        record, _ = self.read()
        if not record or record.get("run_id") != self.owner.get("run_id"):
            self.lost = True
            self._stop.set()
            return False
        with contextlib.suppress(OSError):  # a full disk does not stop a touch; a vanished folder is lost
            os.utime(self.path)
        return True

    def lost_to(self) -> str:
        record, _ = self.read()
        return describe_owner(record) if record else "nobody (the lock file was removed)"

    # ------------------------------------------------------------------ release
    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        if not self.owner:
            return
        record, _ = self.read()
        if record and record.get("run_id") == self.owner.get("run_id"):
            with contextlib.suppress(OSError):
                os.remove(self.path)


class BucketLock:
    """The run lock of a folder in a bucket (the RunLock of a gs:// / s3:// / memory:// folder, what
    `lock_for` gives): a lease object (``path``) renewed every ``heartbeat_s`` and taken over
    only from a provably gone owner (wwm.fs.lease). ``lost`` turns True once another process took it over."""

    def __init__(self, path: str, what: str, *, command: str | None = None, heartbeat_s: float | None = None,
                 lease_s: float | None = None, **_: Any) -> None:  # fmt: skip
        from wwm.fs import core, lease

        self.path = core.normalize(path)
        self.what = what
        self.command = command
        self.renew_s = lease.default_renew_s() if heartbeat_s is None else heartbeat_s
        self.ttl_s = lease.default_ttl_s() if lease_s is None else lease_s
        self.owner: dict[str, Any] = {}
        self.took_over: str | None = None
        self.lease: Any = None  # the wwm.fs.lease.Lease while held

    @property
    def lost(self) -> bool:
        return self.lease is not None and self.lease.lost is not None

    def acquire(self) -> None:
        from wwm.fs import core, lease

        try:
            self.lease = lease.acquire(core.parent(self.path), self.command or self.what, ttl_s=self.ttl_s,
                                       renew_s=self.renew_s, name=core.basename(self.path))  # fmt: skip
        except lease.LeaseHeld as err:
            raise LockHeld(f"{self.what}: {err}") from None
        self.owner = {**self.lease.owner, "run_id": self.lease.token}
        self.took_over = self.lease.took_over

    def refresh(self) -> bool:
        """One renewal now (the background thread renews on its own); False once lost."""
        return self.lease is not None and self.lease.renew()

    def lost_to(self) -> str:
        from wwm.fs import core, lease

        record = lease.read_lease(core.parent(self.path), core.basename(self.path))
        return lease.describe(record) if record else "nobody (the lease object was deleted)"

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()


def lock_for(folder: str, name: str, what: str, **kwargs: Any) -> RunLock:
    """The lock of `folder` (a lock file `name` in it); a bucket folder (gs://, s3://, memory://) gets a
    lease object `name` (BucketLock, wwm.fs.lease: conditional writes, renewed, taken over only from a
    provably gone owner)."""
    if "://" in folder:
        return BucketLock(f"{folder.rstrip('/')}/{name}", what, **kwargs)
    return LocalLock(os.path.join(folder, name), what, **kwargs)
