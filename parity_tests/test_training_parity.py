"""Training parity: the JAX/Flax trainer and the Hugging Face Trainer learn the same.

configs/parity-tiny.yaml (2-layer hidden-64 BERT, WordPiece trained on 400 built-in documents, 247
blocks of 64 tokens, batch 8, AdamW lr 1e-3 with 5 warmup steps then linear decay, weight decay 0.01,
clipping at 1.0, which is active: gradient norms are ~1.6-2.1), float32 on CPU, dropout off, 50 steps
(two epochs), both from the same safetensors initial weights (`wwm_cli.parity.setup`).

Measured (2 CPU cores, jax 0.10.2 / torch 2.13 / transformers 5.24): per-step loss max abs diff 1.3e-6,
max rel diff 2.1e-7; grad norm max rel diff 6.7e-6; final parameters max abs diff 2.4e-7 (a LayerNorm
weight), max rel 1.5e-6; final eval loss equal to 1e-7. JAX accumulation 4 vs torch 1 (20 steps): loss rel
1.4e-7, parameters 1.2e-7. Tolerances: loss rel 1e-4 (the issue's), parameters abs 1e-5 (~40x the measured
figure, and small enough that the negative control below fails: a weight-decay mismatch of 0.1 moves the
weights by 9.5e-5 in 20 steps while the losses still agree to 3.5e-5).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from wwm.config import load_config
from wwm_cli import parity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "parity-tiny.yaml")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("training")
    return load_config(CONFIG, [f"data.cache_dir={tmp / 'cache'}", f"output_dir={tmp}"]), tmp


@pytest.fixture(scope="module")
def report(base):
    config, tmp = base
    report, _ = parity.run_parity(config, out_dir=str(tmp / "parity50"), quiet=True)
    return report


def test_fifty_steps_two_epochs_same_masks_and_losses(report):
    assert report["problems"] == [] and report["passed"]
    assert report["steps"] == 50 and report["masks_identical"] and report["mask_steps_compared"] == 50
    rows = report["rows"]
    assert [r["step"] for r in rows] == list(range(1, 51))
    assert report["max_rel_loss_diff"] <= 1e-4
    for r in rows:
        assert abs(r["jax_loss"] - r["torch_loss"]) <= 1e-4 * abs(r["torch_loss"]), r
        assert r["jax_masked"] == r["torch_masked"] > 0
        assert r["jax_lr"] == pytest.approx(r["torch_lr"], rel=1e-6, abs=1e-12)
        assert r["jax_grad_norm"] == pytest.approx(r["torch_grad_norm"], rel=1e-4)
    # HF's schedule: update 1 has rate 0 (scheduler stepped after the update), peak after the warmup.
    assert rows[0]["jax_lr"] == 0.0 and rows[5]["jax_lr"] == pytest.approx(1e-3)
    # Clipping is active (norm > max_grad_norm 1.0), so its formula is exercised.
    assert min(r["torch_grad_norm"] for r in rows) > 1.0
    # Both learn: the loss falls.
    losses = np.array([r["jax_loss"] for r in rows])
    assert losses[-10:].mean() < losses[:10].mean() - 0.5


def test_final_parameters_and_eval_loss_match(report):
    p = report["params"]
    assert p["only_in_one"] == [] and p["compared"] == 42  # every tensor of a 2-layer BertForMaskedLM
    assert p["max_abs"] <= parity.PARAM_ATOL, p
    ev = report["final_eval_loss"]
    assert ev["jax"] == pytest.approx(ev["torch"], rel=1e-4)


@pytest.mark.slow
def test_jax_accumulation_4_equals_torch_accumulation_1(base):
    """Cross-framework invariance: the same global batch in 4 JAX micro-batches and in 1 torch batch."""
    config, tmp = base
    report, _ = parity.run_parity(config, steps=20, out_dir=str(tmp / "accum"), quiet=True,
                                  jax_values={"train.grad_accum_steps": 4})  # fmt: skip
    assert report["passed"], report["problems"]
    assert report["max_rel_loss_diff"] <= 1e-4 and report["params"]["max_abs"] <= parity.PARAM_ATOL


@pytest.mark.slow
def test_a_weight_decay_mismatch_fails_the_check(base):
    """Negative control: torch without weight decay against JAX with 0.1. The losses stay within 1e-4 (decay
    is a tiny effect on them), but the final parameters do not: the parameter check is what catches it."""
    config, tmp = base
    report, _ = parity.run_parity(config, steps=20, out_dir=str(tmp / "decay"), quiet=True,
                                  torch_values={"optim.weight_decay": 0.0})  # fmt: skip
    assert report["masks_identical"]
    assert not report["passed"]
    assert report["params"]["max_abs"] > 5 * parity.PARAM_ATOL  # measured 9.5e-5
    assert any("final parameters differ" in p for p in report["problems"])
