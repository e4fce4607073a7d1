"""Local copies of remote inputs, and local staging folders of remote outputs.

Some readers need a local path: ``transformers``' ``from_pretrained`` (a tokenizer, ``model.pretrained``),
numpy's memmaps of prepared blocks, orbax restoring an s3:// checkpoint. ``fetch(url)`` gives them one:
the file or folder is downloaded under ``<local_root>/remote/<hash of the URL>/`` and reused while every
file's identity (size and generation / ETag, ``wwm.fs.core.identity``) is unchanged; a changed object is
downloaded again. A download goes to a temporary folder that is renamed when complete, so a killed
download is never taken for a copy.

``local_root()``: ``$WWM_LOCAL_DIR``, else ``$WWM_CACHE_DIR`` (when local), else ``~/.cache/wwm``: a host's
own disk, for what it stages of a bucket (``remote/`` inputs, ``runs/`` the local side of a run whose
``output_dir`` is a bucket).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import uuid
from typing import Any

from wwm.fs import core

_SOURCE = "source.json"


def local_root() -> str:
    for variable in ("WWM_LOCAL_DIR", "WWM_CACHE_DIR"):
        value = os.environ.get(variable)
        if value and not core.is_remote(value):
            return os.path.abspath(os.path.expanduser(value))
    return os.path.join(os.path.expanduser("~"), ".cache", "wwm")


def _slug(url: str) -> str:
    tail = "".join(c if c.isalnum() or c in "-_." else "-" for c in core.basename(url))[:40]
    return f"{hashlib.sha256(core.normalize(url).encode()).hexdigest()[:16]}-{tail}"


def staging_dir(url: str, kind: str = "runs") -> str:
    """The local folder that stands for the bucket folder ``url`` on this host (``kind``: "runs")."""
    return os.path.join(local_root(), kind, _slug(url))


def remote_files(url: str) -> dict[str, dict[str, Any]]:
    """{relative path ("" for a single file): identity} of a remote file or folder."""
    record = core.info(url)
    if record is None:
        raise core.explain(FileNotFoundError(url), url, "read")
    if record.get("type") != "directory":
        return {"": {"size": int(record.get("size") or 0), "version": core.version_of(record)}}
    filesys, p = core.filesystem(url)
    base = p.rstrip("/")
    listing = core.retrying(lambda: filesys.find(base, detail=True), url, "list")
    out = {}
    for name, entry in listing.items():
        relative = name[len(base) :].lstrip("/")
        if relative and entry.get("type", "file") == "file":
            out[relative] = {"size": int(entry.get("size") or 0), "version": core.version_of(entry)}
    return out


def fetch(url: str) -> str:
    """A local path holding what ``url`` holds (a local path is returned as it is; see the module doc)."""
    if not core.is_remote(url):
        return core.local_path(url)
    files = remote_files(url)
    home = os.path.join(local_root(), "remote", _slug(url))
    with core.errors(home, "write"):
        os.makedirs(home, exist_ok=True)
        guard = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        # Processes of one host (torchrun's ranks) fetch one at a time: the second finds the first's copy
        # instead of replacing it under a reader.
        fcntl.flock(guard, fcntl.LOCK_EX)
        return _fetch(url, files, home)
    finally:
        os.close(guard)


def _fetch(url: str, files: dict[str, dict[str, Any]], home: str) -> str:
    name = core.basename(url) or "content"
    content = os.path.join(home, name)
    source = os.path.join(home, _SOURCE)
    try:
        with open(source, encoding="utf-8") as f:
            recorded = json.load(f)
        if (
            recorded.get("url") == core.normalize(url)
            and recorded.get("files") == files
            and os.path.exists(content)
        ):
            return content
    except (OSError, ValueError):
        pass
    tmp = os.path.join(home, f".download-{uuid.uuid4().hex[:8]}")
    try:
        for relative in sorted(files):
            target = os.path.join(tmp, name, *relative.split("/")) if relative else os.path.join(tmp, name)
            core.copy(core.join(url, relative) if relative else url, target)
        with core.errors(home, "write"):
            if os.path.lexists(content):
                shutil.rmtree(content) if os.path.isdir(content) else os.remove(content)
            os.replace(os.path.join(tmp, name), content)
        core.write_text(source, json.dumps({"url": core.normalize(url), "files": files}, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return content


def upload_tree(local_dir: str, url: str, *, last: tuple[str, ...] = ()) -> list[str]:
    """Upload every file of ``local_dir`` to the folder ``url``; the names in ``last`` (e.g. config.json,
    what readers look for first) after all others. Returns the relative paths sent."""
    files = sorted(core.tree(local_dir), key=lambda rel: (rel in last, rel))
    for relative in files:
        core.copy(os.path.join(local_dir, *relative.split("/")), core.join(url, relative))
    return files


__all__ = ["fetch", "local_root", "remote_files", "staging_dir", "upload_tree"]
