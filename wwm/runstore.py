"""Where a run's files live when `output_dir` is a bucket: the local folder the trainers write, and the
bucket folder it is copied to (docs/scale.md).

For a local `output_dir` nothing changes: ``RunStore.local`` is `output_dir` and ``remote`` is None.
For a bucket (gs://, s3://, memory://), the trainers write into a **staging folder** on this host's disk
(``wwm.fs.staging_dir``: ``$WWM_LOCAL_DIR`` or ``~/.cache/wwm``, then ``runs/<hash of the URL>``), as
they would into a local `output_dir`, and the store carries each file to the bucket the way it grows:

| file | written | in the bucket |
|---|---|---|
| run.json, config.yaml, run.lock | by `wwm.rundir` directly into the bucket (atomic PUTs) | always current |
| checkpoints/ | saved locally | JAX to gs://: orbax writes the bucket itself. Otherwise mirrored in the background (`wwm.fs.mirror`), each with its commit marker |
| metrics.jsonl, tensorboard/ | appended locally | copied on a cadence and at exit (`wwm.fs.sync`) |
| hf/, tokenizer/ | written locally when complete | uploaded then, config.json / the tokenizer's record last |

The staging folder belongs to one run: ``STAGING_FILE`` records the run id of the bucket's run.json.
A staging folder of another run (the bucket folder was overwritten or restarted from elsewhere) is
emptied before use, so that a checkpoint of another run is never resumed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable

from wwm import fs
from wwm.errors import WWMError
from wwm.fs.mirror import Mirror
from wwm.fs.sync import SyncedFolder

STAGING_FILE = ".wwm-staging.json"
LOG_NAMES = ("metrics.jsonl", "tensorboard")


def orbax_writes(url: str) -> bool:
    """Whether orbax writes checkpoints to this bucket itself (gs://), so no mirror is needed."""
    return fs.scheme(url) == "gs"


class RunStore:
    """The local and remote sides of one run folder (module doc)."""

    def __init__(self, output_dir: str, *, lead: bool = True) -> None:
        self.output_dir = output_dir
        self.remote = fs.normalize(output_dir) if fs.is_remote(output_dir) else None
        self.local = fs.staging_dir(self.remote) if self.remote else os.path.abspath(output_dir)
        self.lead = lead
        self.logs: SyncedFolder | None = None
        self.mirror: Mirror | None = None

    @property
    def is_remote(self) -> bool:
        return self.remote is not None

    def path(self, *names: str) -> str:
        """A path in the local folder (what the trainers write)."""
        return os.path.join(self.local, *names)

    def url(self, *names: str) -> str:
        """Where a file of the run lives for good: in the bucket, or the local path."""
        return fs.join(self.remote, *names) if self.remote else self.path(*names)

    # ---- the staging folder -----------------------------------------------------------------------

    def claim_staging(self, run_id: str | None, *, fresh: bool) -> None:
        """Make the staging folder this run's: emptied when ``fresh`` (a new, overwritten or restarted
        run) or when it belongs to another run id. A local `output_dir` is left alone."""
        if not self.remote:
            return
        record_path = self.path(STAGING_FILE)
        recorded = None
        try:
            with fs.open_file(record_path, "r") as f:
                recorded = json.load(f).get("run_id")
        except (ValueError, OSError, WWMError):
            recorded = None
        if fresh or recorded != run_id:
            shutil.rmtree(self.local, ignore_errors=True)
        fs.makedirs(self.local)
        fs.write_text(record_path, json.dumps({"run_id": run_id, "url": self.remote}))

    # ---- logs -------------------------------------------------------------------------------------

    def start_logs(self, every_s: float, names: tuple[str, ...] = LOG_NAMES) -> SyncedFolder | None:
        """Pull the bucket's logs (a resume elsewhere), then copy them on a cadence (lead process)."""
        if not (self.remote and self.lead):
            return None
        self.logs = SyncedFolder(self.local, self.remote, names, every_s=every_s)
        self.logs.pull()
        return self.logs.start()

    # ---- checkpoints --------------------------------------------------------------------------------

    def checkpoint_mirror(self, step_of: Callable[[str], int | None], *, keep: int | None, writer: int = 0,
                          writers: int = 1, subfolder: str = "checkpoints") -> Mirror | None:  # fmt: skip
        """The mirror of ``<local>/checkpoints`` to ``<remote>/checkpoints`` (None for a local run)."""
        if not self.remote:
            return None
        self.mirror = Mirror(self.path(subfolder), self.url(subfolder), step_of, keep=keep, writer=writer,
                             writers=writers)  # fmt: skip
        return self.mirror

    # ---- whole folders ----------------------------------------------------------------------------

    def publish(self, name: str, *, last: tuple[str, ...] = ()) -> str:
        """Upload the finished local folder ``name`` (hf/, tokenizer/) to the bucket; returns where it is."""
        if not self.remote:
            return self.path(name)
        target = self.url(name)
        fs.remove(target, recursive=True)
        fs.upload_tree(self.path(name), target, last=last)
        return target

    def fetch_folder(self, name: str) -> bool:
        """Bring the bucket's folder ``name`` down when the local folder lacks it. True if it came down."""
        if not self.remote or os.path.exists(self.path(name)) or not fs.isdir(self.url(name)):
            return False
        copy = fs.fetch(self.url(name))
        shutil.copytree(copy, self.path(name))
        return True

    def close(self) -> None:
        """The final copies: queued checkpoint uploads, then the logs."""
        try:
            if self.mirror is not None:
                self.mirror.close()
        finally:
            if self.logs is not None:
                self.logs.close()


__all__ = ["LOG_NAMES", "STAGING_FILE", "RunStore", "orbax_writes"]
