"""A lease: one live owner for a folder in a bucket (or anywhere the storage layer reaches).

A bucket has no ``flock``, and its writers may sit on different machines. A lease is one small JSON
object, ``<folder>/LEASE_NAME``, that names its owner (host, boot id, pid namespace, pid, the pid's
start time: the owner record of wwm.locks) and is **renewed** by a background
thread every ``renew_s`` seconds. It is taken over only when its owner is provably gone:

* the owner runs on this machine (same host, boot and pid namespace) and its process has ended (or its
  pid now belongs to another process): taken over at once;
* the owner runs elsewhere and has not renewed for ``ttl_s`` seconds (an owner that lives renews every
  ``renew_s`` < ``ttl_s``): expired, taken over. A lease renewed less than ``2 * renew_s`` ago belongs to a
  live run: ``acquire`` refuses in one line naming it. In between (an owner that stopped renewing a
  moment ago: a preempted host, a killed job) ``acquire`` waits for the expiry, and refuses if the lease is
  renewed meanwhile.

Every write is conditional where the store allows it: the first write only if no lease object exists
(S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``), each renewal and take-over only if the object is
still the version read before (S3 ``If-Match: <etag>``, GCS ``ifGenerationMatch=<generation>``). So of
two processes that race for a lease one wins, and a run whose lease was taken over while it was paused
learns it at its next renewal (``Lease.lost``) instead of writing on. Every write is read back, which
also covers stores without preconditions (emulators). Clocks: the expiry compares the owner's renewal
time with this machine's clock, so hosts must keep their clocks within a fraction of ``ttl_s`` (NTP).

Defaults: ``renew_s`` 30 s and ``ttl_s`` 120 s (``WWM_LEASE_RENEW_S``, ``WWM_LEASE_TTL_S``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from wwm.errors import WWMError
from wwm.fs import core
from wwm.owners import pid_alive, start_ticks, this_machine

LEASE_NAME = ".wwm-lease.json"
FORMAT = 1
_MEMORY_LOCK = threading.Lock()  # memory:// lives in this process: a lock makes its writes conditional


def default_ttl_s() -> float:
    return float(os.environ.get("WWM_LEASE_TTL_S", "120"))


def default_renew_s() -> float:
    return float(os.environ.get("WWM_LEASE_RENEW_S", "30"))


class LeaseHeld(WWMError):
    """Another live process holds the lease."""


# --------------------------------------------------------------------------------------------------
# Owners
# --------------------------------------------------------------------------------------------------


def owner_record(what: str) -> dict[str, Any]:
    """This process as a lease's owner: where its pid means this process, and what it runs."""
    return {"pid": os.getpid(), **this_machine(), "start_ticks": start_ticks(os.getpid()), "what": what,
            "argv": " ".join(sys.argv)[:300]}  # fmt: skip


def _same_machine(owner: dict[str, Any]) -> bool:
    here = this_machine()
    return all(owner.get(k) == v for k, v in here.items())


def _process_gone(owner: dict[str, Any]) -> bool:
    """On this machine: whether the owner's process has ended (or its pid was reused)."""
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return True
    if not pid_alive(pid):
        return True
    ticks, recorded = start_ticks(pid), owner.get("start_ticks")
    return ticks is not None and recorded is not None and ticks != recorded


def describe(record: dict[str, Any], now: float | None = None) -> str:
    owner = record.get("owner") or {}
    now = time.time() if now is None else now
    age = now - float(record.get("renewed") or 0)
    return (f"process {owner.get('pid')} on {owner.get('host')} ({owner.get('what') or 'wwm'}), lease renewed "
            f"{age:.0f} s ago")  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Conditional writes, per store
# --------------------------------------------------------------------------------------------------


def _read(url: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the lease record, its version stamp), (None, None) when there is none. An unreadable record
    (a torn local write, a stranger's file) counts as a record of nobody, version kept."""
    record = core.info(url)
    if record is None:
        return None, None
    try:
        data = json.loads(core.read_bytes(url))
    except (ValueError, WWMError) as err:
        if isinstance(err, WWMError) and not core.exists(url):
            return None, None
        data = {"owner": {}, "renewed": 0, "unreadable": True}
    version = core.version_of(record) if core.is_remote(url) else _local_version(url)
    return (data if isinstance(data, dict) else {"owner": {}, "renewed": 0}), version


def _local_version(url: str) -> str:
    st = os.stat(core.local_path(url))
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"


def _create(url: str, data: bytes) -> bool:
    """Write the lease only if none exists. True: written."""
    kind = core.scheme(url)
    if kind == "file":
        path = core.local_path(url)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True
    if kind == "memory":
        with _MEMORY_LOCK:
            if core.exists(url):
                return False
            core.write_bytes(url, data)
            return True
    if core.info(url) is not None:  # also where a store ignores the precondition below (emulators)
        return False
    filesys, p = core.filesystem(url)

    def call() -> bool:
        try:
            filesys.pipe_file(p, data, mode="create")
            return True
        except Exception as err:
            if core.classify(err) == "exists":
                return False
            raise

    return core.retrying(call, url, "write the lease")


def _replace(url: str, data: bytes, version: str) -> bool:
    """Write the lease only if it is still at ``version``. True: written."""
    kind = core.scheme(url)
    if kind in ("file", "memory"):
        with _MEMORY_LOCK:
            _, now = _read(url)
            if now != version:
                return False
            core.write_bytes(url, data)
            return True
    record = core.info(url)  # also where a store ignores the precondition below (emulators)
    if record is None or core.version_of(record) != version:
        return False
    filesys, p = core.filesystem(url)
    bucket_name, _, key = p.partition("/")

    def call() -> bool:
        try:
            if kind == "s3":
                tag = version.removeprefix("etag:").split("@")[0]
                filesys.call_s3("put_object", Bucket=bucket_name, Key=key, Body=data, IfMatch=f'"{tag}"')
            else:  # gs
                from urllib.parse import quote

                generation = version.removeprefix("generation:")
                filesys.call("POST", f"{filesys._location}/upload/storage/v1/b/{quote(bucket_name)}/o",
                             uploadType="media", name=key, ifGenerationMatch=generation, data=data,
                             headers={"Content-Type": "application/octet-stream"})  # fmt: skip
            return True
        except Exception as err:
            if core.classify(err) in ("exists", "missing"):
                return False
            raise

    return core.retrying(call, url, "renew the lease")


# --------------------------------------------------------------------------------------------------
# The lease
# --------------------------------------------------------------------------------------------------


@dataclass
class Lease:
    """A held lease. ``lost``: why it is no longer ours (taken over, or not renewable for ``ttl_s``);
    the holder must stop writing. ``release()`` (or leaving the ``with`` block) deletes it."""

    url: str
    token: str
    owner: dict[str, Any]
    ttl_s: float
    renew_s: float
    version: str | None = None
    acquired: float = field(default_factory=time.time)
    lost: str | None = None
    took_over: str | None = None  # the gone owner whose lease this one replaced
    renewals: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _last_ok: float = field(default_factory=time.time, repr=False)

    def payload(self) -> bytes:
        return json.dumps({"kind": "wwm-lease", "format": FORMAT, "token": self.token, "owner": self.owner,
                           "acquired": self.acquired, "renewed": time.time(), "ttl_s": self.ttl_s,
                           "renew_s": self.renew_s}, indent=1).encode()  # fmt: skip

    def _confirm(self) -> bool:
        """Read the lease back: ours (and note its version) or not."""
        record, version = _read(self.url)
        if record is None or record.get("token") != self.token:
            return False
        self.version = version
        return True

    def renew(self) -> bool:
        """One renewal (the background thread calls it). False: the lease is lost (``lost`` says why)."""
        if self.lost:
            return False
        try:
            if self.version is None or not _replace(self.url, self.payload(), self.version):
                record, _ = _read(self.url)
                who = describe(record) if record else "nobody (the lease object was deleted)"
                self.lost = f"the lease {self.url} was taken over; it now names {who}"
                return False
            if not self._confirm():
                self.lost = f"the lease {self.url} was overwritten by another process"
                return False
        except WWMError as err:
            if time.time() - self._last_ok > self.ttl_s - self.renew_s:
                self.lost = f"the lease {self.url} could not be renewed for {self.ttl_s:.0f} s ({err})"
                return False
            return True  # a passing network error: the next renewal tries again
        self._last_ok = time.time()
        self.renewals += 1
        return True

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.renew_s):
                if not self.renew():
                    print(f"wwm: error: {self.lost}; stopping", file=sys.stderr, flush=True)
                    return

        self._thread = threading.Thread(target=loop, name="wwm-lease", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise (WWMError) if the lease was lost: call before writing into the folder."""
        if self.lost:
            raise WWMError(f"{self.lost}: this process stopped writing into the folder (nothing of the other "
                           "run was touched); run the command again once the other run is finished")  # fmt: skip

    def release(self) -> None:
        """Stop renewing and delete the lease object if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.lost:
            return
        with contextlib.suppress(WWMError):
            record, _ = _read(self.url)
            if record is not None and record.get("token") == self.token:
                core.remove(self.url)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _refusal(folder: str, record: dict[str, Any], what: str) -> LeaseHeld:
    return LeaseHeld(
        f"{folder} is in use by {describe(record)} ({what} holds one live run per folder); wait for it to "
        f"finish or stop it, or use another folder. If that process is gone, its lease expires "
        f"{float(record.get('ttl_s') or default_ttl_s()):.0f} s after its last renewal"
    )


def acquire(folder: str, what: str = "wwm", *, ttl_s: float | None = None, renew_s: float | None = None,
            wait_s: float | None = None, name: str = LEASE_NAME) -> Lease:  # fmt: skip
    """Take the lease of ``folder`` (see the module doc) and start renewing it; ``LeaseHeld`` (a
    ``WWMError``) when a live process holds it. ``wait_s``: how long to wait for a stale lease to expire
    (default: its ttl)."""
    ttl_s = default_ttl_s() if ttl_s is None else ttl_s
    renew_s = default_renew_s() if renew_s is None else renew_s
    if renew_s >= ttl_s:
        raise ValueError("a lease must be renewed more often than it expires (renew_s < ttl_s)")
    url = core.join(folder, name)
    lease = Lease(url, uuid.uuid4().hex, owner_record(what), ttl_s, renew_s)
    deadline = time.time() + (ttl_s if wait_s is None else wait_s)
    announced = False
    while True:
        if _create(url, lease.payload()):
            if lease._confirm():
                break
            raise LeaseHeld(f"{folder}: another process took the lease at the same moment; {what} holds one "
                            "live run per folder (use another folder, or wait for that run)")  # fmt: skip
        record, version = _read(url)
        if record is None:
            continue  # released meanwhile: try again
        owner = record.get("owner") or {}
        if record.get("token") == lease.token:
            lease.version = version
            break
        age = time.time() - float(record.get("renewed") or 0)
        ttl = float(record.get("ttl_s") or ttl_s)
        renew = float(record.get("renew_s") or renew_s)
        if _same_machine(owner):
            gone = _process_gone(owner)
        elif record.get("unreadable"):
            # Not a lease wwm wrote whole: a local write torn by a crash (objects are written whole).
            gone = core.is_remote(url) or time.time() - os.stat(core.local_path(url)).st_mtime > renew
        else:
            gone = age > ttl
        if not gone:
            if age < 2 * renew or time.time() + (ttl - age) > deadline:
                raise _refusal(folder, record, what)
            if not announced:
                print(f"wwm: {folder} holds the lease of {describe(record)}, not renewed since; waiting up to "
                      f"{ttl - age:.0f} s for it to expire", file=sys.stderr, flush=True)  # fmt: skip
                announced = True
            time.sleep(min(renew, max(ttl - age, 0.05)))
            continue
        if version is not None and _replace(url, lease.payload(), version) and lease._confirm():
            lease.took_over = describe(record)
            print(f"wwm: took over the lease of {folder} from {describe(record)} (gone)", file=sys.stderr,
                  flush=True)  # fmt: skip
            break
        # Somebody else replaced it first: look again (it may be a live run now).
    lease._last_ok = time.time()
    lease.start()
    return lease


def read_lease(folder: str, name: str = LEASE_NAME) -> dict[str, Any] | None:
    """The lease record of ``folder`` (None: no lease)."""
    return _read(core.join(folder, name))[0]


__all__ = [
    "LEASE_NAME",
    "Lease",
    "LeaseHeld",
    "acquire",
    "describe",
    "owner_record",
    "read_lease",
]
