"""`wwm bench buckets`: what a checkpoint in a bucket costs the step loop, and what each storage step costs.

A synthetic checkpoint (``--files`` files, ``--size-mb`` MB in all, the shape of an orbax or Trainer
checkpoint: a few large array files and small metadata files) is saved to a local folder, then:

* ``local save``: writing it locally with fsync (what every trainer pays anyway);
* ``snapshot``: the mirror's hard-link snapshot, the only thing the step loop pays on top of the local
  save (``wwm.fs.mirror.Mirror.submit``);
* ``upload``: the background upload of the snapshot and its commit marker;
* ``direct``: the peer, a synchronous upload from the step loop (what a trainer that writes its
  checkpoint straight into the bucket waits for);
* ``complete?``: the completeness check of a resume (one listing and the markers);
* ``pull``: a resume on a clean machine downloading the checkpoint;
* ``lease``: one heartbeat of the run lock (a conditional rewrite and its read-back);
* ``log sync``: one tick of the metrics/TensorBoard sync after ``--log-steps`` steps of records.

``--url``: the bucket folder to measure against (default ``memory://wwm-bench``: the layer's own overhead;
give ``s3://...`` or ``gs://...`` for a real store). Each figure is the median of ``--repeats`` runs.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
import uuid
from typing import Any


def _write_checkpoint(folder: str, size_mb: float, files: int) -> None:
    """``files`` files, 90% of the bytes in the first quarter of them (arrays), fsynced."""
    os.makedirs(folder, exist_ok=True)
    big = max(1, files // 4)
    total = int(size_mb * 1e6)
    sizes = [int(total * 0.9 / big)] * big + [max(1, int(total * 0.1 / max(files - big, 1)))] * (files - big)
    block = os.urandom(1 << 20)
    for i, size in enumerate(sizes):
        path = os.path.join(folder, "state" if i < big else "meta", f"part-{i:04d}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # local: the benchmark's temporary folder
        with open(path, "wb") as f:  # a local temporary folder of the benchmark
            left = size
            while left > 0:
                f.write(block[: min(left, len(block))])
                left -= min(left, len(block))
            f.flush()
            os.fsync(f.fileno())


def _median(values: list[float]) -> float:
    return statistics.median(values)


def run(url: str, size_mb: float, files: int, repeats: int, log_steps: int) -> dict[str, Any]:
    from wwm import fs
    from wwm.fs import mirror as mirrors
    from wwm.fs.sync import SyncedFolder
    from wwm.locks import BucketLock

    root = fs.join(url, f"bench-{uuid.uuid4().hex[:8]}")
    fs.check_writable_folder(root, "--url")
    figures: dict[str, list[float]] = {k: [] for k in ("local_save_s", "snapshot_s", "upload_s", "direct_s",
                                                       "complete_s", "pull_s", "lease_s", "log_sync_s")}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="wwm-bench-storage-") as tmp:
        local = os.path.join(tmp, "checkpoints")
        step_of = lambda name: int(name) if name.isdigit() else None  # noqa: E731
        mirror = mirrors.Mirror(local, fs.join(root, "checkpoints"), step_of, keep=2)
        try:
            for r in range(repeats):
                name = str(r + 1)
                t = time.perf_counter()
                _write_checkpoint(os.path.join(local, name), size_mb, files)
                figures["local_save_s"].append(time.perf_counter() - t)
                t = time.perf_counter()
                mirror.submit(name)
                figures["snapshot_s"].append(time.perf_counter() - t)
                t = time.perf_counter()
                mirror.wait()
                figures["upload_s"].append(time.perf_counter() - t + figures["snapshot_s"][-1])
                mirror.check()
                t = time.perf_counter()
                mirrors.upload_folder(os.path.join(local, name), fs.join(root, "direct", name))
                figures["direct_s"].append(time.perf_counter() - t)
                t = time.perf_counter()
                assert mirrors.remote_complete(fs.join(root, "checkpoints", name))
                figures["complete_s"].append(time.perf_counter() - t)
                clean = os.path.join(tmp, f"clean-{r}")
                t = time.perf_counter()
                mirrors.pull(fs.join(root, "checkpoints"), name, clean)
                figures["pull_s"].append(time.perf_counter() - t)
                shutil.rmtree(clean)
        finally:
            mirror.close()
        lock = BucketLock(fs.join(root, "run.lock"), "bench", heartbeat_s=3600, lease_s=7200)
        lock.acquire()
        try:
            for _ in range(repeats):
                t = time.perf_counter()
                assert lock.refresh()
                figures["lease_s"].append(time.perf_counter() - t)
        finally:
            lock.release()
        logs = os.path.join(tmp, "logs")
        os.makedirs(logs)
        synced = SyncedFolder(logs, fs.join(root, "logs"), ["metrics.jsonl"])
        record = (
            '{"step": 1, "loss": 7.1234, "learning_rate": 0.001, "grad_norm": 1.5, "tokens_per_s": 1e5}\n'
        )
        for _ in range(repeats):
            # local: the benchmark's temporary folder
            with open(os.path.join(logs, "metrics.jsonl"), "a") as f:  # the benchmark's temporary folder
                f.write(record * log_steps)
            t = time.perf_counter()
            synced.sync()
            figures["log_sync_s"].append(time.perf_counter() - t)
    fs.remove(root, recursive=True)
    out: dict[str, Any] = {"url": url, "size_mb": size_mb, "files": files, "repeats": repeats,
                           "log_steps": log_steps}  # fmt: skip
    out.update({k: _median(v) for k, v in figures.items()})
    out["step_blocked_mirror_s"] = out["snapshot_s"]
    out["step_blocked_direct_s"] = out["direct_s"]
    out["direct_over_mirror"] = out["direct_s"] / max(out["snapshot_s"], 1e-9)
    out["upload_mb_per_s"] = size_mb / max(out["upload_s"], 1e-9)
    return out


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"storage costs against {r['url']}: a checkpoint of {r['size_mb']:g} MB in {r['files']} files, median of "
        f"{r['repeats']} runs",
        f"  local save (fsync)          {r['local_save_s'] * 1e3:10.1f} ms   (every trainer pays this)",
        f"  snapshot (hard links)       {r['snapshot_s'] * 1e3:10.1f} ms   <- the step loop waits this long",
        f"  upload + commit marker      {r['upload_s'] * 1e3:10.1f} ms   in the background "
        f"({r['upload_mb_per_s']:.0f} MB/s)",
        f"  direct upload (the peer)    {r['direct_s'] * 1e3:10.1f} ms   a synchronous upload blocks the step "
        f"{r['direct_over_mirror']:.0f}x longer than the snapshot",
        f"  completeness check          {r['complete_s'] * 1e3:10.1f} ms   (a resume, per checkpoint)",
        f"  pull to a clean machine     {r['pull_s'] * 1e3:10.1f} ms",
        f"  lease heartbeat             {r['lease_s'] * 1e3:10.1f} ms   (every 30 s, a background thread)",
        f"  log sync of {r['log_steps']} steps       {r['log_sync_s'] * 1e3:10.1f} ms   (every 60 s, a background "
        "thread)",
    ]
    return "\n".join(lines)


__all__ = ["format_report", "run"]
