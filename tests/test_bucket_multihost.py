"""Two JAX processes (gloo, jax.distributed on 127.0.0.1) with `output_dir` in the S3 server's bucket,
each with its own staging disk (WWM_LOCAL_DIR), as the hosts of a pod have: SIGKILLed mid-run, the
staging folders deleted, resumed from the bucket alone, with the uninterrupted run's losses and final
parameters bit for bit (docs/scale.md, "Several processes").

The runs go through tests/jax_multihost_worker.py (XLA's flags and jax.distributed before jax loads)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "jax_multihost_worker.py")
sys.path.insert(0, HERE)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_pair(tmp_path, name: str, run: dict, hosts: list) -> list[subprocess.Popen]:
    """Processes 0 and 1 of one run, each with its own WWM_LOCAL_DIR (`hosts[i]`); a compilation cache
    shared by the launches (the same step compiles once)."""
    port = _free_port()
    procs = []
    for i in range(2):
        spec = {
            "devices": 1,
            "distributed": {"process_id": i, "num_processes": 2, "port": port},
            "runs": [run],
        }
        path = tmp_path / f"{name}-p{i}.json"
        path.write_text(json.dumps(spec))
        env = dict(os.environ, WWM_LOCAL_DIR=str(hosts[i]), WWM_LOG_SYNC_S="0.2",
                   JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla-cache"),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, WORKER, str(path)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))  # fmt: skip
    return procs


def _finish(procs: list[subprocess.Popen]) -> list[str]:
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-4000:]
        outs.append(out)
    return outs


def _losses(url: str) -> dict[int, float]:
    """step -> loss from the bucket's metrics.jsonl (a resumed run logs the steps after its checkpoint
    again: the later record of a step is the one that counts)."""
    from wwm import fs

    records = [json.loads(line) for line in fs.read_text(fs.join(url, "metrics.jsonl")).splitlines() if line]
    return {r["step"]: r["loss"] for r in records if "loss" in r and "step" in r}


def _complete_steps(url: str) -> list[int]:
    from wwm import fs
    from wwm.fs import mirror

    root = fs.join(url, "checkpoints")
    if not fs.isdir(root):
        return []
    return sorted(
        int(n) for n in fs.listdir(root) if n.isdigit() and mirror.remote_complete(fs.join(root, n))
    )


@pytest.mark.slow
def test_bucket_two_jax_processes_sigkilled_resume_from_s3_as_the_uninterrupted_run(s3_bucket, tmp_path):
    from wwm import fs

    base = {"mode": "sharded", "mesh": [-1, 1, 1], "steps": 8, "every_steps": 2, "keep": 2, "batch": 8,
            "dropout": 0.1, "eval": False}  # fmt: skip
    ref_url, url = f"{s3_bucket}/ref", f"{s3_bucket}/runs/mh"
    hosts = [tmp_path / "host0", tmp_path / "host1"]
    run = {**base, "output_dir": url, "result_dir": str(tmp_path / "mh")}
    procs = _start_pair(tmp_path, "slow", {**run, "slow_s": 0.5}, hosts)

    def reference() -> list[subprocess.Popen]:  # uninterrupted, also two processes into the bucket
        ref_run = {**base, "output_dir": ref_url, "result_dir": str(tmp_path / "ref")}
        return _start_pair(tmp_path, "ref", ref_run, [tmp_path / "ref-host0", tmp_path / "ref-host1"])

    ref = None
    deadline = time.time() + 240
    while not [s for s in _complete_steps(url) if s >= 4]:  # a checkpoint with both processes' parts up
        assert time.time() < deadline and all(p.poll() is None for p in procs), procs[0].stdout.read()[-3000:]
        if ref is None and fs.exists(fs.join(url, "metrics.jsonl")) and _losses(url):
            ref = reference()  # once the killed run has compiled its step (the reference loads it from the
            # shared cache) and mostly waits on its slow batches
        time.sleep(0.1)
    for p in procs:
        p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait()
    killed_at = max(_complete_steps(url))
    assert 4 <= killed_at < 8, killed_at
    for host in hosts:  # a clean machine: every host's disk is gone, the bucket alone remains
        shutil.rmtree(host)
    _finish(ref or reference())

    outs = _finish(_start_pair(tmp_path, "resume", run, hosts))
    said = outs[0][-3000:]
    assert f"took over the lease of {url}" in said and f"/checkpoints/{killed_at} " in said, said
    expected = _losses(ref_url)
    assert sorted(expected) == list(range(1, 9))
    assert _losses(url) == expected  # exact float equality, every step
    a, b = np.load(tmp_path / "mh" / "params.npz"), np.load(tmp_path / "ref" / "params.npz")
    assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    # The bucket: the kept checkpoints, each with both processes' parts and both commit markers.
    assert _complete_steps(url) == [6, 8]
    names = set(fs.listdir(fs.join(url, "checkpoints", "8")))
    assert {"process-0", "process-1", ".wwm-commit-0-of-2.json", ".wwm-commit-1-of-2.json"} <= names, names
    record = json.loads(fs.read_text(fs.join(url, "run.json")))
    assert [h.get("event") for h in record.get("history", [])][-1:] == ["resumed"], record.get("history")
