"""Errors that the user can fix. The CLI prints them as one line, without a traceback.

`os_error(err, what)` turns an OSError on a user's path (a full disk, a read-only or special file
system, permissions) into such a line, naming the path and what to do; a full disk gets its own class
and exit status 75 (EX_TEMPFAIL: free space and run the same command again, the run resumes).
"""

from __future__ import annotations

import errno


class WWMError(ValueError):
    """Bad input or configuration: the message names the problem and the fix."""

    exit_status = 2


class WWMWarning(UserWarning):
    """Something the user may want to fix that does not stop the work (the CLI prints it as one line)."""


class DiskFull(WWMError):
    """No space left (or the quota is used up) where wwm writes: a temporary failure. Exit status 75."""

    exit_status = 75


DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_FIXES = {
    errno.EROFS: "the file system is read-only; choose a writable path",
    errno.EACCES: "permission denied; fix its permissions or choose another path",
    errno.EPERM: "the operation is not permitted there (a special or read-only file system?); choose another path",
    errno.ENOENT: "it (or a folder above it) does not exist or cannot hold files (a special file system such as "
    "/proc?); choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder where a file was expected; choose another path",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
    errno.EIO: "the disk reported an I/O error; check the disk, or choose another path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
    errno.EXDEV: "it is on another file system than expected; keep the folder on one file system",
}
RESUME_HINT = "then run the same command again (a run resumes from its newest checkpoint)"


def os_error(err: OSError, what: str | None = None, *, path: str | None = None) -> WWMError:
    """One line for an OSError on a user's path: `what` names the thing ("output_dir /x", "the data cache
    folder"), the path is the error's own (else `path`). ENOSPC/EDQUOT -> DiskFull (exit 75)."""
    where = err.filename if err.filename is not None else path
    name = errno.errorcode.get(err.errno or 0, "")
    reason = f"{err.strerror or err}{f' ({name})' if name else ''}"
    subject = f"{what}: " if what else ""
    if err.errno in DISK_FULL:
        target = f"cannot write {where}" if where is not None else "a write failed"
        return DiskFull(
            f"{subject}{target}: {reason}; free space on that disk (or point the path elsewhere), {RESUME_HINT}"
        )
    target = f"cannot use {where}" if where is not None else "a file operation failed"
    fix = _FIXES.get(err.errno or 0, "check the path and its disk")
    return WWMError(f"{subject}{target}: {reason}; {fix}")


FULL_BELOW_BYTES = (
    1 << 20
)  # a write that failed with less than this free on its disk failed for want of space


def is_disk_full(err: BaseException, path: str | None = None) -> bool:
    """Whether an exception says the disk is full: an OSError ENOSPC/EDQUOT, a library's error that carries
    its text (orbax/tensorstore, safetensors), or, given the `path` that was being written, any error while
    that disk has less than 1 MiB free (torch.save reports a full disk as "iostream error")."""
    if path is not None:
        import os

        try:
            st = os.statvfs(path)
            if st.f_bavail * st.f_frsize < FULL_BELOW_BYTES:
                return True
        except OSError:
            pass
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            return True
        text = str(e)
        if "No space left on device" in text or "Disk quota exceeded" in text or "os_error_code='28'" in text:
            return True
    return False


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__
