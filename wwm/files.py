"""Writing files safely: atomic replacement, ordinary permissions, content digests (no other wwm import:
the run directory, the tokenizer's trainer and the metrics writer use them)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid

__all__ = ["atomic_write_bytes", "atomic_write_text", "file_digest", "normalize_permissions"]


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `path` through a temporary file and a rename: a kill or a full disk leaves the old or the new
    file, never a torn one (the temporary is removed when the write fails)."""
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        # local: callers pass local paths (wwm.fs.write_bytes writes a URL)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """`atomic_write_bytes` of the text in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def normalize_permissions(path: str) -> None:
    """Give an exported folder the modes a normal `open`/`mkdir` would (files 0666, folders 0777, less
    the umask): temporary folders and some writers create 0600/0700 files others cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    for root, dirs, files in os.walk(path):
        os.chmod(root, 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)


def file_digest(path: str) -> str:
    """sha256 of a file's bytes."""
    # local: a local file (a bucket object is identified by wwm.fs.identity)
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
