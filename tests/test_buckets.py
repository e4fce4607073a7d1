"""The storage layer (wwm.fs) over every kind of storage: a local folder (file://), memory://, an S3
server (moto) and a GCS emulator, both on 127.0.0.1 and started once per session (tests/conftest.py).
`pytest -k bucket` selects these tests.

Covered: reading, atomic writing, listing, globbing, compression; identities that change with the
object; the lease (one live owner, take-over of a provably gone one, a lost lease noticed); the
checkpoint mirror (commit marker last, complete copies only, retention, the newest complete copy on
resume, pull, set aside); logs synced on a cadence; local copies of remote inputs; errors in one line
(no credentials, no such bucket, a network that does not answer, a read-only scheme).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from wwm import fs
from wwm.errors import WWMError
from wwm.fs import lease as leases
from wwm.fs import mirror as mirrors
from wwm.fs.sync import SyncedFolder

# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def test_bucket_files_read_write_list_glob(storage_root):
    root = storage_root
    fs.write_text(fs.join(root, "a.txt"), "alpha\n")
    fs.write_text(fs.join(root, "sub/b.txt"), "beta\n")
    fs.write_text(fs.join(root, "sub/deep/c.jsonl"), '{"text": "gamma"}\n')
    fs.write_text(fs.join(root, "sub/.hidden/d.txt"), "hidden\n")
    with fs.open_file(fs.join(root, "sub/e.txt.gz"), "wt", compression="infer") as f:
        f.write("compressed\nlines\n")

    assert fs.read_text(fs.join(root, "a.txt")) == "alpha\n"
    assert fs.exists(fs.join(root, "a.txt")) and fs.isfile(fs.join(root, "a.txt"))
    assert fs.isdir(fs.join(root, "sub")) and not fs.isfile(fs.join(root, "sub"))
    assert not fs.exists(fs.join(root, "nothing.txt"))
    assert fs.listdir(root) == ["a.txt", "sub"]
    assert fs.listdir(fs.join(root, "missing")) == []
    found = fs.find(root)
    assert found == [fs.join(root, p) for p in ("a.txt", "sub/b.txt", "sub/e.txt.gz", "sub/deep/c.jsonl")]
    assert len(fs.find(root, hidden=True)) == 5
    assert fs.glob(fs.join(root, "*.txt")) == [fs.normalize(fs.join(root, "a.txt"))]
    assert [fs.basename(f) for f in fs.glob(fs.join(root, "sub/*.txt"))] == ["b.txt"]
    with fs.open_file(fs.join(root, "sub/e.txt.gz"), "rt", compression="infer") as f:
        assert f.read() == "compressed\nlines\n"
    sizes = fs.tree(root)
    assert sizes["a.txt"] == 6 and sizes["sub/deep/c.jsonl"] == 18 and "sub/.hidden/d.txt" in sizes
    assert fs.size(fs.join(root, "sub/b.txt")) == 5

    fs.write_text(fs.join(root, "a.txt"), "replaced")
    assert fs.read_text(fs.join(root, "a.txt")) == "replaced"
    fs.remove(fs.join(root, "sub"), recursive=True)
    assert fs.listdir(root) == ["a.txt"]


def test_bucket_copy_between_kinds(storage_root, tmp_path):
    local = tmp_path / "local.bin"
    local.write_bytes(bytes(range(256)) * 100)
    remote = fs.join(storage_root, "x/copy.bin")
    fs.copy(str(local), remote)
    back = tmp_path / "back" / "copy.bin"
    fs.copy(remote, str(back))
    assert back.read_bytes() == local.read_bytes()
    fs.copy(remote, fs.join(storage_root, "y/again.bin"))
    assert fs.read_bytes(fs.join(storage_root, "y/again.bin")) == local.read_bytes()


def test_bucket_identity_is_size_and_version_not_name(storage_root):
    """A rewritten object of the same size is another input (cache keys and resume checks use this)."""
    path = fs.join(storage_root, "corpus.txt")
    fs.write_text(path, "one two three\n")
    first = fs.identity(path)
    assert first["size"] == 14 and first == fs.identity(path)
    time.sleep(0.01)
    fs.write_text(path, "one two THREE\n")
    if not fs.is_remote(path):
        os.utime(fs.local_path(path), ns=(first["mtime_ns"] + 10**9, first["mtime_ns"] + 10**9))
    second = fs.identity(path)
    assert second["size"] == 14 and second != first


def test_bucket_urls_and_names():
    assert fs.split("gcs://b/x") == ("gs", "b/x")
    assert fs.split("/data/x") == ("file", "/data/x") and fs.split("file:///data/x") == ("file", "/data/x")
    assert fs.normalize("gs://b/x/") == "gs://b/x" and fs.normalize("file:///a/../b") == "/b"
    assert fs.join("s3://b/run", "checkpoints", "7") == "s3://b/run/checkpoints/7"
    assert fs.parent("s3://b/run/x.json") == "s3://b/run" and fs.basename("s3://b/run/x.json") == "x.json"
    assert fs.bucket("s3://b/run") == "b" and fs.bucket("memory://x") is None
    assert fs.is_remote("memory://x") and not fs.is_remote("runs/x") and not fs.is_remote("file:///x")
    with pytest.raises(WWMError, match="ftp:// is not supported"):
        fs.split("ftp://host/x")
    with pytest.raises(WWMError, match="read-only"):
        fs.write_text("hf://datasets/org/name/x.txt", "x")


# --------------------------------------------------------------------------------------------------
# Errors in one line
# --------------------------------------------------------------------------------------------------


def test_bucket_missing_bucket_is_one_line(s3_server, gcs_server):
    for url in ("s3://wwm-no-such-bucket/run", "gs://wwm-no-such-bucket/run"):
        with pytest.raises(WWMError) as err:
            fs.check_writable_folder(url, "output_dir")
        text = str(err.value)
        assert "\n" not in text and url.split("/run")[0] in text, text
        assert "does not exist" in text and ("mb s3://" in text or "buckets create gs://" in text), text


def _one_line_error(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = ("import sys\nfrom wwm.errors import WWMError\nfrom wwm import fs\ntry:\n" + code
              + "\nexcept WWMError as err:\n    print(err, file=sys.stderr); sys.exit(2)\n")  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )


def test_bucket_no_credentials_is_one_line(s3_server, s3_bucket, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k == "AWS_ENDPOINT_URL"}
    env.update(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), WWM_STORAGE_RETRIES="1")  # fmt: skip
    proc = _one_line_error(f"    fs.check_writable_folder({s3_bucket + '/run'!r}, 'output_dir')", env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip()
    assert "\n" not in line and s3_bucket in line and "no usable credentials" in line, line
    assert "AWS_ACCESS_KEY_ID" in line, line


def test_bucket_network_error_retries_then_one_line(s3_server, tmp_path):
    """An endpoint that does not answer: retried with backoff, then one line naming the URL."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", WWM_STORAGE_RETRIES="3",
               WWM_STORAGE_BACKOFF_S="0.05", WWM_STORAGE_CLIENT_RETRIES="1")  # fmt: skip
    start = time.time()
    proc = _one_line_error("    fs.read_bytes('s3://some-bucket/corpus/a.txt')", env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip()
    assert "\n" not in line and "s3://some-bucket/corpus/a.txt" in line and "network error" in line, line
    assert "after 3 tries" in line and "resumes" in line, line
    assert time.time() - start < 60


def test_bucket_read_only_scheme_refuses_writes():
    with pytest.raises(WWMError, match="read-only"):
        fs.check_writable_folder("hf://datasets/someone/something", "output_dir")


# --------------------------------------------------------------------------------------------------
# The lease
# --------------------------------------------------------------------------------------------------


def test_bucket_lease_one_live_owner(storage_root):
    folder = fs.join(storage_root, "run")
    first = leases.acquire(folder, "test", ttl_s=30, renew_s=10)
    try:
        record = leases.read_lease(folder)
        assert record["token"] == first.token and record["owner"]["pid"] == os.getpid()
        with pytest.raises(leases.LeaseHeld) as err:
            leases.acquire(folder, "test", ttl_s=30, renew_s=10)
        text = str(err.value)
        assert "\n" not in text and f"process {os.getpid()}" in text and "in use" in text, text
        assert first.renew() and first.renewals == 1 and not first.lost
    finally:
        first.release()
    assert leases.read_lease(folder) is None
    with leases.acquire(folder, "test", ttl_s=30, renew_s=10) as second:
        assert not second.lost
    assert leases.read_lease(folder) is None


def _forged(folder: str, **changes) -> None:
    record = {"kind": "wwm-lease", "format": 1, "token": "someone-else", "owner": leases.owner_record("other"),
              "acquired": time.time(), "renewed": time.time(), "ttl_s": 30, "renew_s": 10}  # fmt: skip
    for key, value in changes.items():
        if key in ("pid", "host", "start_ticks"):
            record["owner"][key] = value
        else:
            record[key] = value
    fs.write_text(fs.join(folder, leases.LEASE_NAME), json.dumps(record))


def test_bucket_lease_taken_over_only_from_a_gone_owner(storage_root, capfd):
    folder = fs.join(storage_root, "run")
    # A process of this machine that has ended: taken over at once.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    _forged(folder, pid=int(dead.stdout))
    with leases.acquire(folder, "test", ttl_s=30, renew_s=10) as lease:
        assert leases.read_lease(folder)["token"] == lease.token
    assert "took over the lease" in capfd.readouterr().err
    # Another host, renewed a moment ago: a live run, refused at once.
    _forged(folder, host="elsewhere", pid=1)
    start = time.time()
    with pytest.raises(leases.LeaseHeld, match="on elsewhere"):
        leases.acquire(folder, "test", ttl_s=30, renew_s=10)
    assert time.time() - start < 5
    # Another host, not renewed for longer than its ttl: gone.
    _forged(folder, host="elsewhere", pid=1, renewed=time.time() - 31)
    with leases.acquire(folder, "test", ttl_s=30, renew_s=10) as lease:
        assert leases.read_lease(folder)["token"] == lease.token
    # Another host, stale but not expired: waited for (here 1.5 s), then taken over.
    _forged(folder, host="elsewhere", pid=1, renewed=time.time() - 2.5, ttl_s=4, renew_s=1)
    start = time.time()
    with leases.acquire(folder, "test", ttl_s=4, renew_s=1) as lease:
        assert 1.0 < time.time() - start < 6 and leases.read_lease(folder)["token"] == lease.token


def test_bucket_lease_lost_to_another_owner_is_noticed(storage_root):
    folder = fs.join(storage_root, "run")
    lease = leases.acquire(folder, "test", ttl_s=30, renew_s=10)
    _forged(folder, host="elsewhere", pid=1)  # what a take-over by another host writes
    assert not lease.renew()
    assert "taken over" in lease.lost and "elsewhere" in lease.lost
    with pytest.raises(WWMError, match="stopped writing"):
        lease.check()
    lease.release()
    assert leases.read_lease(folder)["token"] == "someone-else"  # the new owner's lease is untouched


def test_bucket_run_lock_is_a_lease_one_run_per_folder(storage_root):
    """Issue 21's lock interface in a bucket folder (`wwm.locks.lock_for`): a second run is refused in one
    line naming the live owner; released, the folder is free; a dead owner's lock is taken over (and
    said); a lock taken over by another process is noticed (`lost`, `lost_to`)."""
    from wwm.locks import LockHeld, lock_for

    folder = fs.join(storage_root, "run")
    first = lock_for(folder, "run.lock", f"output_dir {folder}", command="wwm train A")
    first.acquire()
    assert first.owner["run_id"] and first.owner["pid"] == os.getpid() and not first.lost
    second = lock_for(folder, "run.lock", f"output_dir {folder}", command="wwm train B")
    with pytest.raises(LockHeld) as err:
        second.acquire()
    line = str(err.value)
    assert "\n" not in line and f"output_dir {folder}" in line and f"process {os.getpid()}" in line, line
    assert "wwm train A" in line and "in use" in line, line
    first.release()
    assert not fs.exists(fs.join(folder, "run.lock"))
    second.acquire()
    assert second.refresh() and not second.lost
    fs.write_text(fs.join(folder, "run.lock"), json.dumps({"token": "x", "owner": {"host": "elsewhere", "pid": 7},
                                                           "renewed": time.time()}))  # fmt: skip
    assert not second.refresh() and second.lost and "elsewhere" in second.lost_to()
    second.release()  # lost: the new owner's lease stays
    assert json.loads(fs.read_text(fs.join(folder, "run.lock")))["token"] == "x"

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    record = {
        "token": "gone",
        "owner": leases.owner_record("wwm train C"),
        "renewed": time.time(),
        "ttl_s": 30,
    }
    record["owner"]["pid"] = int(dead.stdout)
    fs.write_text(fs.join(folder, "run.lock"), json.dumps(record))
    third = lock_for(folder, "run.lock", f"output_dir {folder}")
    third.acquire()
    assert third.took_over and f"process {int(dead.stdout)}" in third.took_over
    third.release()


# --------------------------------------------------------------------------------------------------
# The checkpoint mirror
# --------------------------------------------------------------------------------------------------


def _step(name: str) -> int | None:
    tail = name.removeprefix("checkpoint-")
    return int(tail) if tail.isdigit() else None


def _save(local_root, step: int, payload: bytes = b"w" * 1000) -> str:
    folder = local_root / f"checkpoint-{step}"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.bin").write_bytes(payload + bytes([step]))
    (folder / "sub" / "state.json").write_text(json.dumps({"step": step}))
    return folder.name


def test_bucket_mirror_uploads_complete_copies_and_resumes_from_the_newest(storage_root, tmp_path):
    local = tmp_path / "run" / "checkpoints"
    remote = fs.join(storage_root, "run/checkpoints")
    mirror = mirrors.Mirror(str(local), remote, _step, keep=2)
    for step in (1, 2, 3):
        mirror.submit(_save(local, step))
        assert mirror.wait(60)
    mirror.close()
    # keep=2: the two newest complete copies, each with its marker written last.
    assert fs.listdir(remote) == ["checkpoint-2", "checkpoint-3"]
    assert mirrors.remote_complete(fs.join(remote, "checkpoint-3"))
    marker = json.loads(fs.read_text(fs.join(remote, "checkpoint-3", mirrors.marker_name(0, 1))))
    assert marker["files"] == {"model.bin": 1001, "sub/state.json": 11} and marker["step"] == 3

    # An upload killed before its marker: files without a marker, never a candidate.
    fs.write_bytes(fs.join(remote, "checkpoint-4/model.bin"), b"partial")
    # A marker whose file is shorter than listed (a copy cut short by hand): not complete either.
    fs.write_bytes(fs.join(remote, "checkpoint-2/model.bin"), b"short")
    assert not mirrors.remote_complete(fs.join(remote, "checkpoint-4"))
    assert not mirrors.remote_complete(fs.join(remote, "checkpoint-2"))

    # A clean machine: nothing local; the newest complete copy is pulled.
    clean = tmp_path / "clean" / "checkpoints"
    found = mirrors.candidates([], remote, _step)
    assert [(c.name, c.local, c.remote) for c in found] == [("checkpoint-3", False, True)]
    path = mirrors.pull(remote, "checkpoint-3", str(clean))
    assert sorted(os.listdir(path)) == ["model.bin", "sub"]
    assert (clean / "checkpoint-3" / "model.bin").read_bytes() == (
        local / "checkpoint-3" / "model.bin"
    ).read_bytes()
    # A newer local checkpoint (the run died before its upload) wins, and the local copy is preferred.
    found = mirrors.candidates(["checkpoint-3", "checkpoint-5"], remote, _step)
    assert [(c.name, c.local, c.remote) for c in found] == [
        ("checkpoint-5", True, False),
        ("checkpoint-3", True, True),
    ]

    # An unreadable copy is set aside, never deleted, and no longer counts.
    aside = mirrors.set_aside(remote, "checkpoint-3", fs.join(storage_root, "run/corrupt-checkpoints"))
    assert fs.read_bytes(fs.join(aside, "model.bin")) == (local / "checkpoint-3" / "model.bin").read_bytes()
    assert [c.name for c in mirrors.candidates([], remote, _step)] == []


def test_bucket_mirror_parts_of_several_processes_complete_only_together(tmp_path):
    """Two processes each upload their own part of checkpoint 4 (``4/process-<k>/``, JAX processes on
    hosts with their own disks): complete only once both markers are there; a part uploaded again keeps
    the other process's part and marker; each process pulls its own part (a torch node: the lead's part
    merged with its own, one folder); a run with another process count is refused in one line (each
    process restores its own part)."""
    import uuid

    from wwm.errors import WWMError
    from wwm.runstore import _same_writers, step_of

    remote = f"memory://wwm-test-{uuid.uuid4().hex[:12]}/run/checkpoints"
    parts = []
    for k in range(2):
        local = tmp_path / f"host{k}" / "4"
        (local / "state").mkdir(parents=True)
        (local / "state" / "shard").write_bytes(bytes([k]) * (10 + k))
        (local / "meta.json").write_text("{}")
        parts.append(local)
    mirrors.upload_folder(str(parts[0]), fs.join(remote, "4"), writer=0, writers=2, part="process-0")
    assert not mirrors.remote_complete(fs.join(remote, "4"))  # process 1's part is missing
    mirrors.upload_folder(str(parts[1]), fs.join(remote, "4"), writer=1, writers=2, part="process-1")
    assert mirrors.remote_complete(fs.join(remote, "4"))
    assert sorted(fs.tree(fs.join(remote, "4"))) == [
        ".wwm-commit-0-of-2.json", ".wwm-commit-1-of-2.json", "process-0/meta.json", "process-0/state/shard",
        "process-1/meta.json", "process-1/state/shard",
    ]  # fmt: skip
    mirrors.upload_folder(str(parts[0]), fs.join(remote, "4"), writer=0, writers=2, part="process-0")
    assert mirrors.remote_complete(fs.join(remote, "4")) and mirrors.writers_of(fs.join(remote, "4")) == 2
    for k in range(2):
        path = mirrors.pull(remote, "4", str(tmp_path / f"clean{k}"), part=mirrors.part_name(k, 2))
        assert (tmp_path / f"clean{k}" / "4" / "state" / "shard").read_bytes() == bytes([k]) * (10 + k)
        assert sorted(os.listdir(path)) == ["meta.json", "state"]
    with pytest.raises(WWMError, match="is in two writers' parts"):  # parts merged (a torch node): no clash
        mirrors.pull(remote, "4", str(tmp_path / "merged"), part=("process-0", "process-1"))
    torch_parts = {"process-0/model.safetensors": b"w", "process-0/rng_state_0.pth": b"0",
                   "process-1/rng_state_1.pth": b"1", "process-2/rng_state_2.pth": b"2"}  # fmt: skip
    for relative, data in torch_parts.items():
        fs.write_bytes(fs.join(remote, "checkpoint-6", relative), data)
    path = mirrors.pull(remote, "checkpoint-6", str(tmp_path / "node1"), part=("process-0", "process-1"))
    assert sorted(os.listdir(path)) == ["model.safetensors", "rng_state_0.pth", "rng_state_1.pth"]
    found = mirrors.candidates([], remote, step_of)
    assert _same_writers(found, remote, 2, "s3://b/run") == found
    with pytest.raises(WWMError, match=r"saved by 2 process\(es\) and this run has 1; resume it with 2"):
        _same_writers(found, remote, 1, "s3://b/run")


def test_bucket_mirror_of_two_writers_applies_keep_once_the_last_part_is_up(tmp_path):
    """keep=1 with two writers: writer 0's prune after its own part of step 4 sees step 4 incomplete
    (writer 1's part is not up yet) and keeps step 2; `prune()` after both parts (what the run's close
    does after its barrier) deletes step 2. Found by the 2-process SIGKILL test, resumed from step 4."""
    import uuid

    remote = f"memory://wwm-test-{uuid.uuid4().hex[:12]}/run/checkpoints"
    hosts = [tmp_path / "host0", tmp_path / "host1"]
    mirror = mirrors.Mirror(str(hosts[0]), remote, _step, keep=1, writer=0, writers=2, log=lambda text: None)
    for step in (2, 4):
        if step == 4:  # writer 0 first: its prune runs before writer 1's part is there
            mirror.submit(_save(hosts[0], step))
            assert mirror.wait(30)
        mirrors.upload_folder(str(hosts[1] / _save(hosts[1], step)), fs.join(remote, f"checkpoint-{step}"),
                              writer=1, writers=2, part=mirrors.part_name(1, 2))  # fmt: skip
        if step == 2:
            mirror.submit(_save(hosts[0], step))
            assert mirror.wait(30)
    mirror.close()
    complete = [n for n in fs.listdir(remote) if mirrors.remote_complete(fs.join(remote, n))]
    assert complete == ["checkpoint-2", "checkpoint-4"]  # the prune inside the upload thread kept step 2
    mirror.prune()
    assert fs.listdir(remote) == ["checkpoint-4"]


def test_bucket_mirror_snapshot_survives_local_deletion(storage_root, tmp_path):
    """The trainer deletes old checkpoints (save_total_limit, max_to_keep) while uploads run: the mirror
    uploads its snapshot, not the live folder."""
    local = tmp_path / "checkpoints"
    remote = fs.join(storage_root, "checkpoints")
    mirror = mirrors.Mirror(str(local), remote, _step)
    name = _save(local, 7)
    mirror.submit(name)
    import shutil

    shutil.rmtree(local / name)
    mirror.close()
    assert mirrors.remote_complete(fs.join(remote, name))
    assert fs.read_bytes(fs.join(remote, name, "model.bin")).endswith(bytes([7]))


def test_bucket_mirror_failure_stops_the_run_in_one_line(tmp_path, monkeypatch):
    """An upload that fails for good is reported by `check()` (the trainer stops at its next step)."""
    local = tmp_path / "checkpoints"
    mirror = mirrors.Mirror(str(local), "memory://wwm-test-fails/checkpoints", _step)
    name = _save(local, 1)

    def broken(*args, **kwargs):
        raise WWMError(
            "cannot write memory://wwm-test-fails/checkpoints/checkpoint-1/model.bin: network error"
        )

    monkeypatch.setattr(mirrors, "upload_folder", broken)
    mirror.submit(name)
    assert mirror.wait(30)
    with pytest.raises(WWMError, match=r"mirroring checkpoint checkpoint-1 .* network error"):
        mirror.check()
    with pytest.raises(WWMError):
        mirror.close()


# --------------------------------------------------------------------------------------------------
# Logs synced on a cadence
# --------------------------------------------------------------------------------------------------


def test_bucket_logs_sync_changed_files_on_a_cadence_and_at_close(storage_root, tmp_path):
    local = tmp_path / "run"
    (local / "tensorboard").mkdir(parents=True)
    remote = fs.join(storage_root, "run")
    synced = SyncedFolder(str(local), remote, ["metrics.jsonl", "tensorboard"], every_s=0.2).start()
    with open(local / "metrics.jsonl", "a") as f:
        f.write('{"step": 1}\n')
    (local / "tensorboard" / "events.1").write_bytes(b"e1")
    deadline = time.time() + 20
    while time.time() < deadline and not fs.exists(fs.join(remote, "tensorboard/events.1")):
        time.sleep(0.05)
    assert fs.read_text(fs.join(remote, "metrics.jsonl")) == '{"step": 1}\n'
    uploads = synced.uploads
    time.sleep(0.5)
    assert synced.uploads == uploads  # nothing changed: nothing sent again
    with open(local / "metrics.jsonl", "a") as f:
        f.write('{"step": 2}\n')
    synced.close()
    assert fs.read_text(fs.join(remote, "metrics.jsonl")) == '{"step": 1}\n{"step": 2}\n'

    # A resume on a clean machine continues the bucket's files.
    clean = tmp_path / "clean"
    again = SyncedFolder(str(clean), remote, ["metrics.jsonl", "tensorboard"])
    assert sorted(again.pull()) == ["metrics.jsonl", "tensorboard/events.1"]
    assert (clean / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'
    assert again.sync() == 0


# --------------------------------------------------------------------------------------------------
# Local copies of remote inputs
# --------------------------------------------------------------------------------------------------


def test_bucket_fetch_reuses_a_copy_until_the_object_changes(storage_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WWM_LOCAL_DIR", str(tmp_path / "local"))
    folder = fs.join(storage_root, "tokenizer")
    fs.write_text(fs.join(folder, "tokenizer.json"), '{"v": 1}')
    fs.write_text(fs.join(folder, "tokenizer_config.json"), "{}")
    first = fs.fetch(folder)
    assert sorted(os.listdir(first)) == ["tokenizer.json", "tokenizer_config.json"]
    stamp = os.stat(os.path.join(first, "tokenizer.json")).st_mtime_ns
    assert fs.fetch(folder) == first and os.stat(os.path.join(first, "tokenizer.json")).st_mtime_ns == stamp
    fs.write_text(fs.join(folder, "tokenizer.json"), '{"v": 2}')
    if not fs.is_remote(folder):
        return  # a local path is used where it is, never copied
    assert open(os.path.join(fs.fetch(folder), "tokenizer.json")).read() == '{"v": 2}'
    single = fs.fetch(fs.join(folder, "tokenizer_config.json"))
    assert os.path.isfile(single) and open(single).read() == "{}"


def test_bucket_bench_storage_reports_each_step(s3_bucket, capsys):
    """`wwm bench buckets` against the S3 server: every figure is there, the step loop's cost (the
    snapshot) is reported beside the peer's synchronous upload, and the bench leaves nothing behind."""
    from wwm_cli import main

    assert main(["bench", "buckets", "--url", f"{s3_bucket}/bench", "--size-mb", "0.5", "--files", "4",
                 "--repeats", "1", "--log-steps", "5", "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    for key in ("local_save_s", "snapshot_s", "upload_s", "direct_s", "complete_s", "pull_s", "lease_s",
                "log_sync_s", "direct_over_mirror"):  # fmt: skip
        assert report[key] > 0, key
    assert report["step_blocked_mirror_s"] == report["snapshot_s"]
    assert fs.tree(f"{s3_bucket}/bench") == {}
