"""A full disk in the middle of a run (issue 21): one line, exit status 75, the run resumable.

Before: JAX printed 858 lines with 89 tracebacks (orbax's writer threads), torch raised from torch.save and
left a partial `checkpoint-<step>/` under its final name. Now: the save that finds the disk full removes its
partial files, names the newest intact checkpoint in one line and exits 75 (EX_TEMPFAIL); once there is
space, the same command resumes from that checkpoint and the metrics hold every step once.

The disk: a real 6 MB tmpfs, mounted by the test (root with mount permission: this machine, CI containers
run as root). Elsewhere a real ENOSPC from the kernel is simulated: metrics.jsonl is a link to /dev/full,
whose every write fails with ENOSPC (the same one-line, exit-75 path; the checkpoint case needs the tmpfs).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from wwm_cli import main

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One data cache for both frameworks' runs (the blocks are the same)."""
    return tmp_path_factory.mktemp("cache")


def _overrides(cache, out, steps):
    return [f"output_dir={out}", f"data.cache_dir={cache}", "data.max_documents=300",
            "data.validation_fraction=0", "tokenizer.train.vocab_size=300", "model.hidden_size=32",
            "model.num_hidden_layers=1", "model.num_attention_heads=2", "model.intermediate_size=64",
            "train.global_batch_size=8", f"train.max_steps={steps}", "train.log_every_steps=1",
            "checkpoint.every_steps=2", "checkpoint.keep=3", "checkpoint.export_hf_at_end=false",
            "logging.report_to=[]", "logging.progress_bar=false"]  # fmt: skip


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MB tmpfs (None where it cannot be mounted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    ok = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield disk if ok else None
    finally:
        if ok:
            subprocess.run(["umount", str(disk)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """A file taking all but `leave` bytes of the disk's free space."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def _steps(out) -> list[int]:
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return [r["step"] for r in records if "loss" in r]


def _train(framework, cache, out, steps, capsys) -> tuple[int, str]:
    status = main(["train", "--framework", framework, "--config", TINY, *_overrides(cache, out, steps)])
    return status, capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_a_full_disk_mid_run_is_one_line_exit_75_and_the_run_resumes(
    framework, tmp_path, small_disk, cache_dir, capsys
):
    if small_disk is None:
        _simulated_full_disk(framework, tmp_path, cache_dir, capsys)
        return
    out = small_disk / "run"
    status, _ = _train(framework, cache_dir, out, 2, capsys)  # a checkpoint at step 2
    assert status == 0
    filler = _fill(small_disk, leave=16 << 10)  # the disk fills up (another job, a big log...)
    status, err = _train(framework, cache_dir, out, 4, capsys)  # the save of step 4 cannot be written
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 75, err[-3000:]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert "no space left" in lines[0] and "saving the checkpoint of step 4" in lines[0]
    assert "newest intact checkpoint is" in lines[0] and "run the same command again" in lines[0]
    names = sorted(os.listdir(out / "checkpoints"))
    assert names == (["2"] if framework == "jax" else ["checkpoint-2"])  # nothing partial under any name
    filler.unlink()  # space again: the same command resumes from step 2
    status, _ = _train(framework, cache_dir, out, 4, capsys)
    assert status == 0 and _steps(out) == [1, 2, 3, 4]
    assert json.loads((out / "run.json").read_text())["steps"] == 4


def _simulated_full_disk(framework, tmp_path, cache_dir, capsys) -> None:
    """No tmpfs: metrics.jsonl links to /dev/full, so the first step's record meets a real ENOSPC."""
    out = tmp_path / "run"
    status, _ = _train(framework, cache_dir, out, 2, capsys)
    assert status == 0
    (out / "metrics.jsonl").unlink()
    os.symlink("/dev/full", out / "metrics.jsonl")
    status, err = _train(framework, cache_dir, out, 4, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 75 and len(lines) == 1 and "No space left on device (ENOSPC)" in lines[0], err[-3000:]
    (out / "metrics.jsonl").unlink()
    status, _ = _train(framework, cache_dir, out, 4, capsys)
    assert status == 0 and _steps(out) == [3, 4]
