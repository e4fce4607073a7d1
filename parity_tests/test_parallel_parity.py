"""JAX parallel modes: the same global batch gives the same losses and parameters on 1 device, on 8
simulated CPU devices under `pmap` and under `sharded` meshes (data, fsdp, tensor), with and without
gradient accumulation.

tests/test_jax_train.py already compares, on synthetic blocks for 3 steps: 1 device vs 4 accumulation
steps, a 2x2x2 mesh with 2 accumulation steps, pmap over 8 devices, a 4x1x2 mesh with dropout, and 2
processes x 2 devices. This file adds the remaining mesh shapes (8,1,1) pure data parallel, (2,4,1)
data x FSDP, (1,8,1) pure FSDP, (1,1,8) pure tensor parallel, (2,2,2) without accumulation and pmap with
accumulation, on the real parity data (configs/parity-tiny.yaml, 20 steps, from the same initial
weights as the cross-framework tests), in one subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 set before jax is imported (`python -m wwm_cli.parity jax`).

With tensor=8 the 2 attention heads and the 1,779-token vocabulary are not divisible by 8 and stay
replicated (the trainer logs it); the MLP (128) and FSDP's embed axis (64) are split.

Tolerance: per-step loss rel 1e-5 and final parameters abs 1e-6, float32 sums in different orders
(measured: see docs/parity.md).
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
STEPS = 20
LOSS_RTOL = 1e-5
PARAM_ATOL = 1e-6

RUNS = {
    "single": {"parallel.mode": "single"},
    "data8": {"parallel.mode": "sharded", "parallel.mesh.data": 8},
    "data2_fsdp4": {"parallel.mode": "sharded", "parallel.mesh.data": 2, "parallel.mesh.fsdp": 4},
    "fsdp8": {"parallel.mode": "sharded", "parallel.mesh.data": 1, "parallel.mesh.fsdp": 8},
    "tensor8": {"parallel.mode": "sharded", "parallel.mesh.data": 1, "parallel.mesh.tensor": 8},
    "mesh222": {"parallel.mode": "sharded", "parallel.mesh.data": 2, "parallel.mesh.fsdp": 2,
                "parallel.mesh.tensor": 2},
    "pmap8_accum2": {"parallel.mode": "pmap", "train.grad_accum_steps": 2, "train.global_batch_size": 16},
    "single_batch16": {"parallel.mode": "single", "train.global_batch_size": 16},
}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parallel")
    config = load_config(CONFIG, [f"data.cache_dir={tmp / 'cache'}", f"output_dir={tmp}"])
    config, _ = parity.setup(config, str(tmp), STEPS)
    save_config(config, tmp / "config.yaml")
    spec = {"config": str(tmp / "config.yaml"), "devices": 8, "runs": []}
    for name, values in RUNS.items():
        shutil.rmtree(tmp / name, ignore_errors=True)
        (tmp / name).mkdir()
        spec["runs"].append({"values": {"output_dir": str(tmp / name), **values}})
    (tmp / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "wwm_cli.parity", "jax", str(tmp / "spec.json")], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {name: str(tmp / name) for name in RUNS}


def _losses(folder):
    records = parity.read_metrics(folder)[0]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    return np.array([r["loss"] for r in records])


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in RUNS if n not in ("single", "single_batch16")])
def test_parallel_mode_matches_one_device(runs, name):
    ref = runs["single_batch16"] if "batch16" in name or name.startswith("pmap8") else runs["single"]
    batches = {k: parity.load_batches(os.path.join(runs[k], "batches_0.npz")) for k in (name,)}
    ref_batches = parity.load_batches(os.path.join(ref, "batches_0.npz"))
    assert parity.compare_batches(ref_batches, batches[name])["identical"]
    np.testing.assert_allclose(_losses(runs[name]), _losses(ref), rtol=LOSS_RTOL, atol=0)
    params = parity.compare_params(os.path.join(ref, "hf"), os.path.join(runs[name], "hf"))
    assert params["compared"] == 42 and params["max_abs"] <= PARAM_ATOL, params
