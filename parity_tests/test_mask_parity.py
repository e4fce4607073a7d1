"""Masks bit-exact across frameworks: the batches the JAX trainer feeds its train step k equal the batches
the PyTorch trainer feeds its model at step k (input_ids after masking, labels, attention_mask).

Both sides are recorded where they enter the model, not re-derived: both trainers' `on_batch` hook
(`wwm_cli.parity.batch_recorder`) gets each step's rows as fed to the model (the JAX step's host rows, the
torch step's micro-batches on every rank). Data: configs/parity-tiny.yaml cut to 60
documents (37 blocks, 4 steps per epoch at batch 8), so that 11 steps cover epochs 0, 1 and 2.

Covered: 0 and 2 torch data-loader workers, torch accumulation 4 vs JAX accumulation 2, 2 JAX processes
(jax.distributed, gloo) and 2 torchrun ranks whose slices put together are the single-host batch, and
a resume from a mid-epoch checkpoint on both sides.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from wwm.config import load_config, save_config
from wwm_cli import parity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "parity-tiny.yaml")
STEPS = 11
BATCH = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("masks")
    config = load_config(
        CONFIG,
        [
            f"data.cache_dir={tmp / 'cache'}",
            "data.max_documents=60",
            "model.num_hidden_layers=1",
            "eval.every_steps=1000",
        ],
    )
    config, prepared = parity.setup(config, str(tmp), STEPS)
    return config, prepared, tmp


def _run(framework, setup, name, values=None, **kwargs):
    config, prepared, tmp = setup
    config = parity.with_values(config, {"output_dir": str(tmp / name), **(values or {})})
    if framework == "jax":
        result = parity.run_jax(config, **kwargs)
    else:
        result = parity.run_torch(config, prepared, **kwargs)
    assert result.error is None and result.status == 0, result.error
    return result


@pytest.fixture(scope="module")
def jax_single(setup):
    return _run("jax", setup, "jax_single")


def _assert_identical(a, b):
    report = parity.compare_batches(a, b)
    assert report["identical"], report["first_difference"]


def test_the_runs_cover_three_epochs_and_real_masks(setup, jax_single):
    _, prepared, _ = setup
    steps_per_epoch = len(prepared.train) // BATCH
    assert steps_per_epoch == 4 and STEPS > 2 * steps_per_epoch
    batches = jax_single.batches
    assert len(batches) == STEPS
    for b in batches:
        assert b["input_ids"].shape == (BATCH, 64)
        masked = b["labels"] != -100
        assert masked.any() and (b["attention_mask"][masked] == 1).all()
    # Reshuffled each epoch, and masked anew: step 0 and step 4 are not the same batch.
    assert not np.array_equal(batches[0]["labels"], batches[steps_per_epoch]["labels"])


@pytest.mark.parametrize(
    "name, values",
    [
        ("workers0", {}),
        ("workers2", {"train.dataloader_num_workers": 2}),
        ("accum4", {"train.grad_accum_steps": 4}),
    ],
)
def test_torch_feeds_the_batches_jax_feeds(setup, jax_single, name, values):
    torch_run = _run("torch", setup, f"torch_{name}", values)
    assert len(torch_run.batches) == STEPS
    _assert_identical(jax_single.batches, torch_run.batches)


def test_jax_accumulation_feeds_the_same_global_batch(setup, jax_single):
    accum = _run("jax", setup, "jax_accum2", {"train.grad_accum_steps": 2})
    _assert_identical(jax_single.batches, accum.batches)


def test_the_comparison_sees_a_different_mask(setup, jax_single):
    """The check can fail: another masking seed gives other batches, and compare_batches says where."""
    _, prepared, _ = setup
    config = setup[0]
    other = _run(
        "torch", (parity.with_values(config, {"masking.seed": 1}), prepared, setup[2]), "torch_seed1"
    )
    report = parity.compare_batches(jax_single.batches, other.batches)
    assert not report["identical"] and report["first_difference"].startswith("step 1 input_ids")


# -------------------------------------------------------------------------------------- resume
def _drop_checkpoints_after(folder: str, step: int) -> None:
    for name in os.listdir(folder):
        number = name.removeprefix("checkpoint-")
        if number.isdigit() and int(number) > step:
            shutil.rmtree(os.path.join(folder, name))


def test_resume_from_a_mid_epoch_checkpoint_feeds_the_same_batches(setup, jax_single):
    """Both trainers run 11 steps with a checkpoint at step 6 (epoch 1, step 2 of 4); the later
    checkpoints are deleted and each run resumes from step 6: steps 7..11 get the batches of the
    uninterrupted run (DataPosition on the JAX side, the sequential sampler's skip on the torch side)."""
    every = {"checkpoint.every_steps": 6, "checkpoint.keep": 5, "checkpoint.resume": True}
    resumed = {}
    for framework in ("jax", "torch"):
        first = _run(framework, setup, f"{framework}_resume", every)
        ckpts = os.path.join(first.output_dir, "checkpoints")
        _drop_checkpoints_after(ckpts, 6)
        assert sorted(os.listdir(ckpts)) in (["6"], ["checkpoint-6"])
        resumed[framework] = _run(framework, setup, f"{framework}_resume", every, fresh=False)
        assert len(resumed[framework].batches) == STEPS - 6
        assert [r["step"] for r in resumed[framework].records] == list(range(1, STEPS + 1))
    _assert_identical(jax_single.batches[6:], resumed["jax"].batches)
    _assert_identical(jax_single.batches[6:], resumed["torch"].batches)
    # and the resumed runs still train alike (optimizer state restored on both sides)
    losses = {k: np.array([r["loss"] for r in v.records]) for k, v in resumed.items()}
    np.testing.assert_allclose(losses["jax"], losses["torch"], rtol=parity.LOSS_RTOL)


# -------------------------------------------------------------------------------------- hosts, ranks
def _worker(tmp, framework, name, devices, values, *, nproc=1, distributed=None):
    spec = {"config": str(tmp / "config.yaml"), "devices": devices, "runs": [{"values": values}]}
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(spec))
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])
    )
    if framework == "torch" and nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "wwm_cli.parity", "torch", str(path)]  # fmt: skip
        return [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    procs = []
    for i in range(nproc):
        v = dict(values)
        if distributed:
            v.update({"parallel.distributed.coordinator_address": f"127.0.0.1:{distributed}",
                      "parallel.distributed.num_processes": nproc, "parallel.distributed.process_id": i})  # fmt: skip
            p = tmp / f"{name}_{i}.json"
            p.write_text(json.dumps(dict(spec, runs=[{"values": v}])))
        else:
            p = path
        cmd = [sys.executable, "-m", "wwm_cli.parity", framework, str(p)]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    return procs


def _wait(procs, timeout=300):
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, out[-4000:]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_hosts_and_two_ranks_put_together_are_the_single_host_batch(setup, jax_single):
    """JAX: 2 processes x 1 CPU device (jax.distributed over gloo, mesh data=2): each process feeds only
    its rows. Torch: torchrun with 2 ranks (gloo): each rank's micro-batches. Host/rank 0's rows then
    host/rank 1's rows, step by step, are the single-process JAX batch."""
    config, _, tmp = setup
    save_config(config, tmp / "config.yaml")
    jax_dir, torch_dir = tmp / "jax_2hosts", tmp / "torch_2ranks"
    for d in (jax_dir, torch_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    jax_values = {"output_dir": str(jax_dir), "parallel.mode": "sharded", "parallel.mesh.data": 2}
    procs = _worker(tmp, "jax", "jax2", 1, jax_values, nproc=2, distributed=_free_port())
    procs += _worker(tmp, "torch", "torch2", 1, {"output_dir": str(torch_dir)}, nproc=2)
    _wait(procs)
    for folder in (jax_dir, torch_dir):
        parts = [parity.load_batches(str(folder / f"batches_{i}.npz")) for i in (0, 1)]
        assert len(parts[0]) == len(parts[1]) == STEPS
        for step in range(STEPS):
            assert parts[0][step]["input_ids"].shape[0] == BATCH // 2
        union = [
            {k: np.concatenate([parts[0][s][k], parts[1][s][k]]) for k in parity.BATCH_KEYS}
            for s in range(STEPS)
        ]
        _assert_identical(jax_single.batches, union)
    # The two-process runs also train like the single-process run.
    single = [r["loss"] for r in jax_single.records]
    for folder in (jax_dir, torch_dir):
        losses = [r["loss"] for r in parity.read_metrics(str(folder))[0]]
        np.testing.assert_allclose(losses, single, rtol=parity.LOSS_RTOL)
