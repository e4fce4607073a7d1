"""Who a process is: owner records and proof that an owner is gone (wwm.locks' run lock uses them, as do
the data cache's build folders and a bucket folder's lease, wwm.fs.lease).

An owner record names the process that holds something: host name, boot id, pid namespace, pid and the
pid's start time, when it started and what it runs. An owner is **provably gone** when it ran on this
machine (same host name, boot id and pid namespace) and its pid is not running, or now belongs to
another process (another start time). An owner elsewhere cannot be judged by its pid: the caller's
heartbeat or lease rules decide (wwm.locks, wwm.fs.lease).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any

__all__ = ["describe_owner", "owner_gone", "owner_record", "pid_alive", "start_ticks", "this_machine"]


# --------------------------------------------------------------------------------------------------
# Owners
# --------------------------------------------------------------------------------------------------


def _boot_id() -> str | None:
    with contextlib.suppress(OSError):
        # local: /proc
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return None


def _pid_namespace() -> str | None:
    """Containers of one machine may share its host name and boot id, not their pids."""
    with contextlib.suppress(OSError):
        return os.readlink("/proc/self/ns/pid")
    return None


def this_machine() -> dict[str, Any]:
    """Where a pid means the same process: host name, boot id, pid namespace."""
    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid_ns": _pid_namespace()}


def start_ticks(pid: int) -> int | None:
    """The start time of a process in clock ticks since boot (Linux), which tells a reused pid apart."""
    try:
        # local: /proc
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": field 3 (state) onwards
    return int(fields[19]) if len(fields) > 19 else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def owner_record(**extra: Any) -> dict[str, Any]:
    """This process as an owner: pid, machine, the pid's start time, when, plus `extra`."""
    pid = os.getpid()
    return {"pid": pid, **this_machine(), "start_ticks": start_ticks(pid), "started": time.time(), **extra}


def owner_gone(owner: dict[str, Any] | None) -> tuple[bool | None, str]:
    """(True: provably gone | False: alive | None: cannot tell from here, reason). Only an owner of this
    machine (host, boot, pid namespace) can be checked by its pid."""
    if not owner or not isinstance(owner.get("pid"), int):
        return None, "no owner recorded"
    here = this_machine()
    pid = owner["pid"]
    if all(owner.get(k) == v for k, v in here.items()):
        ticks, recorded = start_ticks(pid), owner.get("start_ticks")
        if not pid_alive(pid) or (ticks is not None and recorded is not None and ticks != recorded):
            return True, f"its process {pid} has ended"
        return False, f"process {pid} is running"
    if owner.get("host") != here["host"]:
        return None, f"process {pid} on {owner.get('host')}"
    return None, f"process {pid} of another boot or container"


def describe_owner(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "an unknown process"
    started = owner.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if started else ""
    what = f" ({owner['command']})" if owner.get("command") else ""
    return f"pid {owner.get('pid')} on {owner.get('host')}{when}{what}"
