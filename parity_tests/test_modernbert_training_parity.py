"""Training parity for ModernBERT: the JAX/Flax trainer and the Hugging Face Trainer
(`ModernBertForMaskedLM`) learn the same.

configs/parity-modernbert-tiny.yaml: a 3-layer hidden-64 ModernBERT (layers 0 and 2 global, layer 1 local
with a window of +-16 tokens in 64-token blocks), a ModernBERT-style byte-level BPE tokenizer trained on
400 built-in documents, packed documents (each attends only itself), 30% masking, batch 8, StableAdamW lr
1e-3 with fully decoupled weight decay 1e-3 and no clipping (JAX `wwm_jax.optim.stable_adamw`, torch
torch-optimi's), the wsd schedule (5 warmup steps, stable, 20 decay steps of 1-sqrt), float32 on CPU,
dropout off, 50 steps, both from the same safetensors initial weights (`wwm_cli.parity.setup`, norms and
biases perturbed).

Measured (2 shared CPU cores, jax 0.10 / torch 2.13 / transformers 5.25, 2026-12-06): per-step loss max abs
diff 1.7e-6, max rel diff 2.4e-7; grad norm max rel diff 5.1e-6; final parameters max abs diff 6.3e-7 (the
token embeddings), under the BERT config's tolerances (loss rel 1e-4, parameters abs 1e-5).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from wwm.config import load_config
from wwm_cli import parity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "parity-modernbert-tiny.yaml")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("modernbert_training")
    return load_config(CONFIG, [f"data.cache_dir={tmp / 'cache'}", f"output_dir={tmp}"]), tmp


@pytest.fixture(scope="module")
def report(base):
    config, tmp = base
    report, _ = parity.run_parity(config, out_dir=str(tmp / "parity50"), quiet=True)
    return report


@pytest.mark.slow
def test_modernbert_fifty_steps_same_masks_losses_and_wsd_rates(report):
    assert report["problems"] == [] and report["passed"]
    assert report["steps"] == 50 and report["masks_identical"] and report["mask_steps_compared"] == 50
    rows = report["rows"]
    assert report["max_rel_loss_diff"] <= parity.LOSS_RTOL
    for r in rows:
        assert r["jax_masked"] == r["torch_masked"] > 0
        assert r["jax_lr"] == pytest.approx(r["torch_lr"], rel=1e-6, abs=1e-12)
        assert r["jax_grad_norm"] == pytest.approx(r["torch_grad_norm"], rel=1e-4)
    # wsd: warmup over updates 0-4, the peak for 5-29, then 1 - sqrt(progress) over the last 20.
    lrs = [r["torch_lr"] for r in rows]
    assert lrs[0] == 0.0 and lrs[5:30] == [pytest.approx(1e-3)] * 25
    assert lrs[30 + 4] == pytest.approx(1e-3 * (1 - np.sqrt(4 / 20)))
    losses = np.array([r["jax_loss"] for r in rows])
    assert losses[-10:].mean() < losses[:10].mean() - 0.5  # both learn


@pytest.mark.slow
def test_modernbert_final_parameters_and_eval_loss_match(report):
    p = report["params"]
    assert p["only_in_one"] == [] and p["compared"] == 23  # every tensor of the 3-layer ModernBertForMaskedLM
    assert p["max_abs"] <= parity.PARAM_ATOL, p
    ev = report["final_eval_loss"]
    assert ev["jax"] == pytest.approx(ev["torch"], rel=1e-4)


@pytest.mark.slow
def test_modernbert_wrong_local_window_on_one_side_fails_the_check(base):
    """Negative control: the JAX side reads the same weights with local_attention 16 (+-8) instead of 32
    (+-16); masks stay identical, the run fails the check."""
    config, tmp = base
    out = tmp / "window"
    config = parity.with_values(config, {"optim.decay_steps": 5})  # 10 steps: 5 warmup, 5 decay
    config, prepared = parity.setup(config, str(out), steps=10)
    init = config.model.pretrained
    other = str(out / "init-window16")
    shutil.copytree(init, other)
    with open(os.path.join(other, "config.json"), encoding="utf-8") as f:
        hf = json.load(f)
    assert hf["local_attention"] == 32
    hf["local_attention"] = 16
    if hf.get("sliding_window") is not None:
        hf["sliding_window"] = 8
    with open(os.path.join(other, "config.json"), "w", encoding="utf-8") as f:
        json.dump(hf, f)
    jax_result = parity.run_jax(
        parity.with_values(config, {"output_dir": str(out / "jax"), "train.framework": "jax",
                                    "model.pretrained": other})
    )  # fmt: skip
    torch_result = parity.run_torch(
        parity.with_values(config, {"output_dir": str(out / "torch"), "train.framework": "torch"}), prepared
    )
    report = parity.compare_runs(jax_result, torch_result, steps=10)
    assert report["masks_identical"]
    assert not report["passed"]
    # Measured: losses rel 1.0e-5 apart (near-uniform attention at init hardly sees the window in 10 steps),
    # the local layer's Wqkv 3.7e-3 apart: the parameter check is what catches it.
    assert report["params"]["max_abs"] > 100 * parity.PARAM_ATOL
    assert any("final parameters differ" in p and "layers.1.attn" in p for p in report["problems"])
