"""Paths and URLs: one set of file operations for local folders and buckets (fsspec underneath).

A path is a local path (``runs/x``, ``/data/x``, ``~/x``, ``file:///data/x``) or a URL of a bucket:

| scheme        | backend                                                   | writable |
|---------------|-----------------------------------------------------------|----------|
| ``gs://``     | gcsfs (``pip install 'wwm[gcs]'``); ``STORAGE_EMULATOR_HOST`` | yes  |
| ``s3://``     | s3fs (``pip install 'wwm[s3]'``); ``AWS_ENDPOINT_URL``    | yes      |
| ``hf://``     | huggingface_hub's HfFileSystem (datasets and models)      | no       |
| ``memory://`` | fsspec's in-process memory store (tests)                  | yes      |

Local paths go through ``os`` directly (the same calls wwm made before buckets existed); every other
scheme through its fsspec file system, built with listing caches off (a listing is never stale).

Every call maps what its backend raises to a ``WWMError`` of one line naming the URL, what failed (no
credentials, access denied, no such bucket, network) and the fix (``errors``). Network failures are
retried with exponential backoff (``retrying``; ``WWM_STORAGE_RETRIES``, ``WWM_STORAGE_BACKOFF_S``).

Writes of whole files are atomic: a local file is written to a temporary name, flushed to disk and
renamed; an object is one PUT (or a multipart upload completed in one call), which a reader sees whole
or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import glob as _glob
import io
import os
import random
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar

from wwm.errors import WWMError
from wwm.files import atomic_write_bytes

T = TypeVar("T")

REMOTE_SCHEMES = ("gs", "s3", "hf", "memory")
READ_ONLY_SCHEMES = ("hf",)
_ALIASES = {"gcs": "gs", "s3a": "s3", "file": "file", "local": "file"}
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)
_EXTRAS = {"gs": ("gcsfs", "gcs"), "s3": ("s3fs", "s3")}
_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz"}

# --------------------------------------------------------------------------------------------------
# Naming
# --------------------------------------------------------------------------------------------------


def split(path: str | os.PathLike) -> tuple[str, str]:
    """(scheme, the path inside it): ``"gs://b/x"`` -> ``("gs", "b/x")``; a local path -> ``("file", path)``."""
    text = os.fspath(path)
    match = _URL.match(text)
    if not match:
        return "file", text
    scheme, rest = match.group(1).lower(), match.group(2)
    scheme = _ALIASES.get(scheme, scheme)
    if scheme != "file" and scheme not in REMOTE_SCHEMES:
        raise WWMError(
            f"{text}: the scheme {scheme}:// is not supported; use a local path, file://, gs://, s3://, "
            "hf:// (read-only) or memory://"
        )
    if scheme == "memory":
        rest = "/" + rest.lstrip("/")  # fsspec's memory paths are rooted
    return scheme, rest


def scheme(path: str | os.PathLike) -> str:
    return split(path)[0]


def is_remote(path: str | os.PathLike | None) -> bool:
    """Whether ``path`` is a bucket URL (gs://, s3://, hf://, memory://), not a local path."""
    return path is not None and split(path)[0] != "file"


def normalize(path: str | os.PathLike) -> str:
    """A local path made absolute (``~`` expanded, file:// dropped); a URL with its scheme spelt as wwm
    spells it (gcs:// -> gs://) and without a trailing slash."""
    kind, rest = split(path)
    if kind == "file":
        return os.path.abspath(os.path.expanduser(rest))
    return f"{kind}://{rest.strip('/')}"


def join(base: str | os.PathLike, *names: str) -> str:
    """``base/name/...`` for a local path or a URL."""
    text = os.fspath(base)
    if not is_remote(text):
        return os.path.join(text, *names)
    out = text.rstrip("/")
    for name in names:
        out += "/" + name.strip("/")
    return out


def parent(path: str | os.PathLike) -> str:
    text = os.fspath(path)
    if not is_remote(text):
        return os.path.dirname(os.path.abspath(os.path.expanduser(text)))
    head, _, _ = text.rstrip("/").rpartition("/")
    return head


def basename(path: str | os.PathLike) -> str:
    return os.fspath(path).rstrip("/").rpartition("/")[2] if is_remote(path) else os.path.basename(path)


def bucket(path: str | os.PathLike) -> str | None:
    """The bucket of a gs:// or s3:// URL (None otherwise)."""
    kind, rest = split(path)
    return rest.split("/", 1)[0] if kind in ("gs", "s3") else None


def local_path(path: str | os.PathLike) -> str:
    """The OS path of a local path or file:// URL (``~`` expanded)."""
    kind, rest = split(path)
    if kind != "file":
        raise ValueError(f"{path} is not a local path")
    return os.path.expanduser(rest)


# --------------------------------------------------------------------------------------------------
# File systems
# --------------------------------------------------------------------------------------------------


def _require(kind: str) -> None:
    module, extra = _EXTRAS[kind]
    try:
        __import__(module)
    except ImportError as err:
        raise WWMError(
            f"{kind}:// paths need the {module} package; install it with: pip install 'wwm[{extra}]'"
        ) from err


def filesystem(path: str | os.PathLike) -> tuple[Any, str]:
    """(the fsspec file system of ``path``, the path in that file system's terms)."""
    import fsspec

    kind, rest = split(path)
    if kind == "file":
        return fsspec.filesystem("file"), os.path.abspath(os.path.expanduser(rest))
    if kind == "memory":
        return fsspec.filesystem("memory"), rest
    if kind == "hf":
        return fsspec.filesystem("hf"), rest
    _require(kind)
    if kind == "s3":
        options: dict[str, Any] = {"use_listings_cache": False}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint_url"] = endpoint
        retries = os.environ.get("WWM_STORAGE_CLIENT_RETRIES")  # the client's own retries (tests: 1)
        if retries:
            options["config_kwargs"] = {"retries": {"max_attempts": int(retries), "mode": "standard"}}
        filesys = fsspec.filesystem("s3", **options)
        if retries:
            filesys.retries = int(retries)
        return filesys, rest
    # gs: an emulator (STORAGE_EMULATOR_HOST) serves the JSON API over plain HTTP and has neither the
    # gRPC control plane nor zonal/hierarchical buckets: gcsfs's experimental layer, which asks the
    # control plane for every bucket's type (a 60 s timeout each against an emulator), is not used.
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(token="anon", use_listings_cache=False, endpoint_url=emulator), rest
    import gcsfs

    return gcsfs.GCSFileSystem(use_listings_cache=False), rest


def storage_options(path: str | os.PathLike) -> dict[str, Any]:
    """The fsspec options of ``path``'s file system (for libraries that open URLs themselves:
    ``datasets.load_dataset(..., storage_options=...)``)."""
    kind = scheme(path)
    if kind == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return {"endpoint_url": endpoint} if endpoint else {}
    if kind == "gs" and os.environ.get("STORAGE_EMULATOR_HOST"):
        return {"token": "anon", "endpoint_url": os.environ["STORAGE_EMULATOR_HOST"]}
    return {}


# --------------------------------------------------------------------------------------------------
# Errors: one line naming the URL, what failed and the fix
# --------------------------------------------------------------------------------------------------

_CREDENTIAL_FIX = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or run where an IAM role "
    "provides them",
    "gs": "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
    "service-account key file",
    "hf": "log in with `hf auth login` (or set HF_TOKEN)",
}
_DENIED_FIX = {
    "s3": "grant this identity s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on the bucket, "
    "or choose another path",
    "gs": "grant this account roles/storage.objectAdmin (or objectViewer to read) on the bucket, or choose "
    "another path",
    "hf": "check that the repository exists and that your token may read it",
    "memory": "choose another path",
    "file": "fix its permissions or choose another path",
}
_NETWORK_NAMES = {
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "ClientConnectorError", "ClientConnectionError", "ServerDisconnectedError", "ClientOSError",
    "ServerTimeoutError", "ConnectionError", "ProxyError", "TransportError", "ResponseStreamingError",
    "IncompleteReadError",
}  # fmt: skip
_CREDENTIAL_NAMES = {
    "NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError", "DefaultCredentialsError",
    "RefreshError", "CredentialRetrievalError", "UnauthorizedSSOTokenError",
}  # fmt: skip
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
              "ServiceUnavailable", "503", "500", "502", "504", "429"}  # fmt: skip


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _code(err: BaseException) -> str | None:
    """The service's error code: botocore's ``Error.Code``, gcsfs's HTTP status."""
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        if code:
            return str(code)
    code = getattr(err, "code", None)
    if isinstance(code, int) or (isinstance(code, str) and code.isdigit()):
        return str(code)
    return None


def classify(err: BaseException) -> str:
    """What an exception from a file system means: "credentials", "denied", "no-bucket", "missing",
    "exists", "network", "read-only" or "other"."""
    chain = list(_chain(err))
    names = {type(e).__name__ for e in chain}
    codes = {c for e in chain if (c := _code(e))}
    text = " ".join(str(e) for e in chain)
    if names & _CREDENTIAL_NAMES or "Unable to locate credentials" in text:
        return "credentials"
    if "Anonymous caller does not have" in text or codes & {"401"}:
        return "credentials"
    if codes & {"NoSuchBucket"} or "NoSuchBucket" in text or "specified bucket does not exist" in text:
        return "no-bucket"
    if codes & {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
                "ExpiredToken", "403", "AccountProblem"}:  # fmt: skip
        return "denied"
    if any(isinstance(e, PermissionError) for e in chain) or "Forbidden" in text:
        return "denied"
    if codes & {"PreconditionFailed", "412"} or any(isinstance(e, FileExistsError) for e in chain):
        return "exists"
    if names & _NETWORK_NAMES or codes & _THROTTLED:
        return "network"
    if any(isinstance(e, (ConnectionError, TimeoutError)) for e in chain):
        return "network"
    if any(isinstance(e, OSError) and e.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT,
                                                  errno.EHOSTUNREACH, errno.ENETUNREACH) for e in chain):  # fmt: skip
        return "network"
    if any(isinstance(e, (FileNotFoundError, NotADirectoryError)) for e in chain):
        return "missing"
    if any(isinstance(e, OSError) and e.errno in (errno.EROFS,) for e in chain):
        return "read-only"
    return "other"


def _bucket_exists(url: str) -> bool:
    """Whether the bucket of ``url`` exists (True when that cannot be told)."""
    name = bucket(url)
    try:
        filesys, _ = filesystem(url)
        filesys.info(name)
        return True
    except FileNotFoundError:
        return False
    except Exception:
        return True


def _short(err: BaseException, limit: int = 160) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:limit]}"


def explain(err: BaseException, path: str | os.PathLike, action: str) -> WWMError:
    """The one-line ``WWMError`` for ``err``, raised while ``action`` (e.g. "read", "write") ``path``."""
    url = os.fspath(path)
    kind = scheme(url)
    what = classify(err)
    if what == "credentials":
        fix = _CREDENTIAL_FIX.get(kind, "check your credentials")
        return WWMError(f"cannot {action} {url}: no usable credentials ({_short(err, 100)}); {fix}")
    if what == "denied":
        return WWMError(f"cannot {action} {url}: access denied ({_short(err, 100)}); {_DENIED_FIX[kind]}")
    if what == "no-bucket":
        name = bucket(url)
        make = {"s3": f"aws s3 mb s3://{name}", "gs": f"gcloud storage buckets create gs://{name}"}.get(
            kind, ""
        )
        return WWMError(f"cannot {action} {url}: the bucket {name!r} does not exist; create it ({make}) or "
                        "fix the URL")  # fmt: skip
    if what == "network":
        return WWMError(
            f"cannot {action} {url}: network error ({_short(err, 120)}) after {retries()} tries; check the "
            "connection and the endpoint (AWS_ENDPOINT_URL / STORAGE_EMULATOR_HOST); a stopped run resumes "
            "when the same command is run again"
        )
    if what == "missing" and kind in ("gs", "s3") and not _bucket_exists(url):
        return explain(FileNotFoundError("NoSuchBucket: The specified bucket does not exist"), url, action)
    if what == "missing":
        return WWMError(f"{url} does not exist; check the path")
    if what == "read-only":
        return WWMError(f"cannot {action} {url}: the file system is read-only; choose another path")
    return WWMError(f"cannot {action} {url}: {_short(err)}")


@contextlib.contextmanager
def errors(path: str | os.PathLike, action: str = "access") -> Iterator[None]:
    """Map what a file-system call raises to one-line ``WWMError``s (``explain``)."""
    try:
        yield
    except WWMError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except Exception as err:
        raise explain(err, path, action) from err


def retries() -> int:
    return max(1, int(os.environ.get("WWM_STORAGE_RETRIES", "5")))


def _backoff_s() -> float:
    return float(os.environ.get("WWM_STORAGE_BACKOFF_S", "1.0"))


def retrying(call: Callable[[], T], path: str | os.PathLike, action: str, *, tries: int | None = None,
             on_retry: Callable[[int, BaseException], None] | None = None) -> T:  # fmt: skip
    """``call()``, retried with exponential backoff and jitter while it fails with a network error
    (connection refused or reset, timeouts, throttling, 5xx); any other failure, or the last network
    failure, becomes a one-line ``WWMError`` (``explain``)."""
    tries = tries or retries()
    delay = _backoff_s()
    for attempt in range(1, tries + 1):
        try:
            return call()
        except WWMError:
            raise
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:
            if classify(err) != "network" or attempt == tries:
                raise explain(err, path, action) from err
            if on_retry is not None:
                on_retry(attempt, err)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 60.0)
    raise AssertionError("unreachable")


def _writable(path: str | os.PathLike) -> None:
    kind = scheme(path)
    if kind in READ_ONLY_SCHEMES:
        raise WWMError(f"{path}: {kind}:// is read-only in wwm; write to a local path, gs:// or s3://")


# --------------------------------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------------------------------


def info(path: str | os.PathLike) -> dict[str, Any] | None:
    """The file system's record of ``path`` (size, type, version fields), or None when it is missing."""
    filesys, p = filesystem(path)

    def call() -> dict[str, Any] | None:
        try:
            return filesys.info(p)
        except FileNotFoundError as err:
            if classify(err) == "no-bucket":
                raise
            return None

    return retrying(call, path, "read")


def exists(path: str | os.PathLike) -> bool:
    if not is_remote(path):
        return os.path.exists(local_path(path))
    return info(path) is not None


def isfile(path: str | os.PathLike) -> bool:
    if not is_remote(path):
        return os.path.isfile(local_path(path))
    record = info(path)
    return record is not None and record.get("type") == "file"


def isdir(path: str | os.PathLike) -> bool:
    """Local: a directory. Bucket: a prefix that holds at least one object (object stores have no empty
    folders)."""
    if not is_remote(path):
        return os.path.isdir(local_path(path))
    record = info(path)
    return record is not None and record.get("type") == "directory"


def listdir(path: str | os.PathLike) -> list[str]:
    """The names directly inside a folder, sorted ([] when it is missing)."""
    if not is_remote(path):
        folder = local_path(path)
        return sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    filesys, p = filesystem(path)

    def call() -> list[str]:
        try:
            entries = filesys.ls(p, detail=False)
        except FileNotFoundError as err:
            if classify(err) == "no-bucket":
                raise
            return []
        base = p.rstrip("/")
        return sorted({e.rstrip("/").rpartition("/")[2] for e in entries if e.rstrip("/") != base})

    return retrying(call, path, "list")


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/") if part)


def walk_order(relative: str) -> tuple[tuple[int, str], ...]:
    """The sort key of a "/"-separated path in ``os.walk`` order with sorted names: a folder's files
    before its sub-folders, each in name order (so a corpus folder gives its documents in the same
    order from a local disk and from a bucket)."""
    parts = relative.split("/")
    return (*((1, p) for p in parts[:-1]), (0, parts[-1]))


def find(path: str | os.PathLike, *, hidden: bool = False) -> list[str]:
    """Every file under a folder, recursively, as paths of ``path``'s kind (``walk_order``: a folder's
    files in name order, then its sub-folders'); names that start with "." (and what is under them) are
    skipped unless ``hidden``."""
    if not is_remote(path):
        folder = local_path(path)
        found = []
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if hidden or not d.startswith("."))
            found += [os.path.join(root, f) for f in sorted(files) if hidden or not f.startswith(".")]
        if folder == os.fspath(path):
            return found
        return [os.path.join(os.fspath(path), os.path.relpath(f, folder)) for f in found]
    filesys, p = filesystem(path)
    base = p.rstrip("/")

    def call() -> list[str]:
        try:
            return filesys.find(base, detail=False)
        except FileNotFoundError as err:
            if classify(err) == "no-bucket":
                raise
            return []

    relatives = []
    for entry in retrying(call, path, "list"):
        relative = entry[len(base) :].lstrip("/") if entry.startswith(base) else entry
        if relative and (hidden or not _hidden(relative)):
            relatives.append(relative)
    return [join(path, relative) for relative in sorted(relatives, key=walk_order)]


def tree(path: str | os.PathLike) -> dict[str, int]:
    """{path relative to the folder ("/"-separated): size} of every file under ``path``, hidden ones
    included ({} when it is missing). One listing call for a bucket."""
    if not is_remote(path):
        folder = local_path(path)
        out = {}
        for root, _, files in os.walk(folder):
            for name in files:
                full = os.path.join(root, name)
                with contextlib.suppress(OSError):  # removed meanwhile
                    out[os.path.relpath(full, folder).replace(os.sep, "/")] = os.path.getsize(full)
        return out
    filesys, p = filesystem(path)
    base = p.rstrip("/")

    def call() -> dict[str, Any]:
        try:
            return filesys.find(base, detail=True)
        except FileNotFoundError as err:
            if classify(err) == "no-bucket":
                raise
            return {}

    out = {}
    for name, record in retrying(call, path, "list").items():
        relative = name[len(base) :].lstrip("/") if name.startswith(base) else name
        if relative and record.get("type", "file") == "file":
            out[relative] = int(record.get("size") or 0)
    return out


def glob(pattern: str) -> list[str]:
    """The files that match a glob pattern (``**`` spans folders), sorted."""
    if not is_remote(pattern):
        return [p for p in sorted(_glob.glob(os.path.expanduser(local_path(pattern)), recursive=True))
                if os.path.isfile(p)]  # fmt: skip
    filesys, p = filesystem(pattern)
    kind = scheme(pattern)

    def call() -> dict[str, Any]:
        return filesys.glob(p, detail=True)

    matches = retrying(call, pattern, "list")
    return sorted(
        f"{kind}://{name.lstrip('/')}" for name, record in matches.items() if record.get("type") == "file"
    )


def size(path: str | os.PathLike) -> int:
    if not is_remote(path):
        return os.path.getsize(local_path(path))
    record = info(path)
    if record is None:
        raise WWMError(f"{path} does not exist; check the path")
    return int(record.get("size") or 0)


def identity(path: str | os.PathLike) -> dict[str, Any]:
    """What tells one version of a file from another, without reading it: its size and a version
    stamp. Local: the modification time in ns. gs://: the object's generation. s3://: its ETag (and
    version id where the bucket keeps versions). hf://: the blob id (git or LFS hash). memory://: its
    creation time. A changed object is a changed input (cache keys and resume checks use this)."""
    if not is_remote(path):
        st = os.stat(local_path(path))
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    record = info(path)
    if record is None:
        raise WWMError(f"{path} does not exist; check the path")
    return {"size": int(record.get("size") or 0), "version": version_of(record)}


def version_of(record: dict[str, Any]) -> str:
    """The version stamp in a file system's ``info`` record."""
    if record.get("generation"):
        return f"generation:{record['generation']}"
    if record.get("ETag") or record.get("etag"):
        tag = str(record.get("ETag") or record.get("etag")).strip('"')
        version = record.get("VersionId")
        return f"etag:{tag}" + (f"@{version}" if version else "")
    if record.get("lfs"):
        return f"sha256:{(record['lfs'] or {}).get('sha256')}"
    if record.get("blob_id"):
        return f"blob:{record['blob_id']}"
    if record.get("created") is not None:
        return f"created:{record['created']}"
    mtime = record.get("mtime") or record.get("LastModified") or record.get("updated")
    return f"mtime:{mtime}"


# --------------------------------------------------------------------------------------------------
# Reading and writing
# --------------------------------------------------------------------------------------------------


def compression_of(path: str | os.PathLike) -> str | None:
    name = os.fspath(path).lower()
    return next((c for ext, c in _COMPRESSION.items() if name.endswith(ext)), None)


def open_file(path: str | os.PathLike, mode: str = "rb", *, compression: str | None = None,
              encoding: str | None = None, errors_mode: str | None = None) -> IO[Any]:  # fmt: skip
    """A file object for ``path`` (``mode`` as ``open``; ``compression``: "infer" decompresses .gz, .bz2
    and .xz by their extension). Writing to a bucket uploads on close: the object appears whole."""
    if any(c in mode for c in "wax+"):
        _writable(path)
    kind = scheme(path)
    if compression == "infer":
        compression = compression_of(path)
    binary = "b" in mode
    raw_mode = mode if binary else mode.replace("t", "") + "b"
    action = "write" if raw_mode[0] in "wax" else "read"
    with errors(path, action):
        if kind == "file":
            target = local_path(path)
            if compression:
                import bz2
                import gzip
                import lzma

                opener = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}[compression]
                raw = opener(target, raw_mode)
            else:
                raw = open(target, raw_mode)  # the caller closes it
        else:
            filesys, p = filesystem(path)
            if raw_mode[0] in "wa" and kind == "memory":
                parent_dir = p.rpartition("/")[0]
                if parent_dir:
                    filesys.makedirs(parent_dir, exist_ok=True)
            raw = retrying(lambda: filesys.open(p, raw_mode, compression=compression), path, action)
    if binary:
        return raw
    return io.TextIOWrapper(
        raw, encoding=encoding or "utf-8", errors=errors_mode, newline=None if "r" in mode else ""
    )


def read_bytes(path: str | os.PathLike) -> bytes:
    if not is_remote(path):
        with errors(path, "read"), open(local_path(path), "rb") as f:
            return f.read()
    filesys, p = filesystem(path)
    return retrying(lambda: filesys.cat_file(p), path, "read")


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    return read_bytes(path).decode(encoding)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a whole file atomically: a reader sees the old content or the new, never a part."""
    _writable(path)
    if not is_remote(path):
        target = local_path(path)
        with errors(path, "write"):
            os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
            atomic_write_bytes(target, data)
        return
    filesys, p = filesystem(path)
    if scheme(path) == "memory":
        parent_dir = p.rpartition("/")[0]
        if parent_dir:
            filesys.makedirs(parent_dir, exist_ok=True)
    retrying(lambda: filesys.pipe_file(p, data), path, "write")


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    write_bytes(path, text.encode(encoding))


def makedirs(path: str | os.PathLike) -> None:
    """Create a local folder (and its parents). Object stores have no folders: nothing to do there."""
    _writable(path)
    if not is_remote(path):
        with errors(path, "create"):
            os.makedirs(local_path(path), exist_ok=True)
    elif scheme(path) == "memory":
        filesys, p = filesystem(path)
        filesys.makedirs(p, exist_ok=True)


def remove(path: str | os.PathLike, *, recursive: bool = False, missing_ok: bool = True) -> None:
    """Delete a file (or, ``recursive``, a folder and everything under it)."""
    _writable(path)
    if not is_remote(path):
        target = local_path(path)
        with errors(path, "delete"):
            if os.path.isdir(target) and not os.path.islink(target):
                if not recursive:
                    raise IsADirectoryError(target)
                shutil.rmtree(target)
            elif os.path.lexists(target):
                os.remove(target)
            elif not missing_ok:
                raise FileNotFoundError(target)
        return
    filesys, p = filesystem(path)

    def call() -> None:
        try:
            filesys.rm(p, recursive=recursive)
        except FileNotFoundError as err:
            if not missing_ok or classify(err) == "no-bucket":
                raise

    retrying(call, path, "delete")


def copy(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Copy one file between any two kinds of path (local <-> bucket, bucket <-> bucket); the destination
    appears whole or not at all."""
    _writable(destination)
    src_kind, dst_kind = scheme(source), scheme(destination)
    if src_kind == "file" and dst_kind == "file":
        _local_copy(source, destination)
    elif src_kind == "file":
        filesys, p = filesystem(destination)
        if dst_kind == "memory":
            filesys.makedirs(p.rpartition("/")[0] or "/", exist_ok=True)
        retrying(lambda: filesys.put_file(local_path(source), p), destination, "write")
    elif dst_kind == "file":
        filesys, p = filesystem(source)
        target = local_path(destination)
        tmp = f"{target}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with errors(destination, "write"):
            os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        try:
            retrying(lambda: filesys.get_file(p, tmp), source, "read")
            with errors(destination, "write"):
                os.replace(tmp, target)
        finally:
            with contextlib.suppress(OSError):
                os.remove(tmp)
    elif src_kind == dst_kind:
        filesys, p = filesystem(source)
        _, q = filesystem(destination)
        retrying(lambda: filesys.copy(p, q), destination, "write")
    else:
        write_bytes(destination, read_bytes(source))


def _local_copy(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    src, dst = local_path(source), local_path(destination)
    with errors(destination, "write"):
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        tmp = f"{dst}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        finally:
            with contextlib.suppress(OSError):
                os.remove(tmp)


# --------------------------------------------------------------------------------------------------
# Pre-flight
# --------------------------------------------------------------------------------------------------


def check_readable(path: str | os.PathLike, what: str) -> None:
    """One line (WWMError) unless ``path`` exists and can be read: credentials, permission, bucket."""
    with errors(path, f"read {what}"):
        if not exists(path):
            raise WWMError(f"{what} {path} does not exist; check the path")


def check_writable_folder(path: str | os.PathLike, what: str) -> None:
    """One line (WWMError) unless wwm can write into the folder ``path``. A bucket is asked with a small
    probe object, written and deleted, so that missing credentials, a denied permission or a missing
    bucket stop the run before any slow set-up."""
    if not is_remote(path):
        folder = os.path.abspath(local_path(path))
        if os.path.exists(folder):
            if not os.path.isdir(folder):
                raise WWMError(f"{what} {folder} is a file, not a directory; choose a directory path")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise WWMError(f"{what} {folder} is not writable; fix its permissions or choose another path")
            return
        above = os.path.dirname(folder)
        while above and not os.path.exists(above):
            above = os.path.dirname(above)
        if not os.path.isdir(above):
            raise WWMError(f"{what} {folder} cannot be created: {above} is a file, not a directory")
        if not os.access(above, os.W_OK | os.X_OK):
            raise WWMError(f"{what} {folder} cannot be created: {above} is not writable; choose another path")
        return
    _writable(path)
    filesys, p = filesystem(path)
    probe = f"{p.rstrip('/')}/.wwm-probe-{uuid.uuid4().hex}"
    if scheme(path) == "memory":
        filesys.makedirs(p, exist_ok=True)
    retrying(lambda: filesys.pipe_file(probe, b"wwm"), path, f"write {what}")
    retrying(lambda: filesys.rm(probe), path, f"write {what}")


__all__ = [
    "READ_ONLY_SCHEMES",
    "REMOTE_SCHEMES",
    "basename",
    "bucket",
    "check_readable",
    "check_writable_folder",
    "classify",
    "compression_of",
    "copy",
    "errors",
    "exists",
    "explain",
    "filesystem",
    "find",
    "glob",
    "identity",
    "info",
    "is_remote",
    "isdir",
    "isfile",
    "join",
    "listdir",
    "local_path",
    "makedirs",
    "normalize",
    "open_file",
    "parent",
    "read_bytes",
    "read_text",
    "remove",
    "retries",
    "retrying",
    "scheme",
    "size",
    "split",
    "storage_options",
    "tree",
    "version_of",
    "walk_order",
    "write_bytes",
    "write_text",
]
