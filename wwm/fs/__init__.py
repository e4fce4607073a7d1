"""The storage layer: every path a user gives, local or in a bucket (gs://, s3://, hf://, memory://).

Not to be confused with ``wwm.data.storage``, the on-disk format of prepared blocks.

* ``wwm.fs.core``: naming (``split``, ``join``, ``is_remote``), the operations (``open_file``,
  ``read_bytes``, ``write_text`` (atomic), ``listdir``, ``find``, ``glob``, ``tree``, ``copy``,
  ``remove``), identities for cache keys (``identity``: size + generation / ETag), pre-flight checks
  (``check_readable``, ``check_writable_folder``), and errors mapped to one line (``errors``,
  ``explain``) with network retries (``retrying``);
* ``wwm.fs.lease``: one live owner per folder, as a renewed lease object;
* ``wwm.fs.mirror``: checkpoints saved locally and mirrored to a bucket in the background, commit
  markers, the newest complete copy on resume;
* ``wwm.fs.sync``: metrics and TensorBoard written locally and copied on a cadence and at exit;
* ``wwm.fs.transfer``: local copies of remote inputs (``fetch``) and local staging folders.

docs/scale.md describes what lives where in a run on a pod, and what each step costs.
"""

from wwm.fs.core import (
    basename,
    bucket,
    check_readable,
    check_writable_folder,
    classify,
    copy,
    errors,
    exists,
    explain,
    filesystem,
    find,
    glob,
    identity,
    info,
    is_remote,
    isdir,
    isfile,
    join,
    listdir,
    local_path,
    makedirs,
    normalize,
    open_file,
    parent,
    read_bytes,
    read_text,
    remove,
    retrying,
    scheme,
    size,
    split,
    storage_options,
    tree,
    write_bytes,
    write_text,
)
from wwm.fs.transfer import fetch, local_root, staging_dir, upload_tree

__all__ = [
    "basename",
    "bucket",
    "check_readable",
    "check_writable_folder",
    "classify",
    "copy",
    "errors",
    "exists",
    "explain",
    "fetch",
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
    "local_root",
    "makedirs",
    "normalize",
    "open_file",
    "parent",
    "read_bytes",
    "read_text",
    "remove",
    "retrying",
    "scheme",
    "size",
    "split",
    "staging_dir",
    "storage_options",
    "tree",
    "upload_tree",
    "write_bytes",
    "write_text",
]
