"""Smoke tests of the training benchmarks (report structure, every implementation ran; no timings)
and of the masked-positions MLM head they measure (equal losses and gradients in both trainers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data():
    from wwm_cli.bench.train import make_data

    return make_data(32, 16)


@pytest.mark.slow
def test_bench_train_runs_modernbert_shapes_in_all_three_implementations(tiny_data):
    from wwm_cli.bench import train

    report = train.run(model="modernbert-tiny", seq_len=32, batch=4, steps=1, warmup=1, data=tiny_data)
    assert report["model_sizes"]["type"] == "modernbert"
    params = {r["impl"]: r["params"] for r in report["results"]}
    assert set(params) == {"jax", "torch", "hf_run_mlm"} and len(set(params.values())) == 1, params
    assert train.MODELS["modernbert-base"] == {"type": "modernbert", "hidden_size": 768, "num_hidden_layers": 22,
                                              "num_attention_heads": 12, "intermediate_size": 1152}  # fmt: skip


def test_bench_train_runs_all_three_implementations(tiny_data):
    from wwm_cli.bench import train

    report = train.json_ready(
        train.run(model="tiny", seq_len=32, batch=4, steps=2, warmup=1, peak_flops=1e12, data=tiny_data)
    )
    assert [r["impl"] for r in report["results"]] == ["jax", "torch", "hf_run_mlm"]
    for r in report["results"]:
        assert r["timed_steps"] == 2 and len(r["step_times_s"]) == 2
        assert all(t > 0 for t in r["step_times_s"])
        assert r["tokens_per_s"] == pytest.approx(4 * 32 / r["step_time_s"])
        assert 0 < r["mfu"] == pytest.approx(r["flops_per_step"] / r["step_time_s"] / 1e12)
    jax_r, torch_r, hf_r = report["results"]
    assert jax_r["params"] == torch_r["params"] == hf_r["params"]  # the same model everywhere
    assert hf_r["x_hf_run_mlm"] == 1.0
    # both our trainers trained: finite losses near ln(vocab) at the start
    for r in (jax_r, torch_r):
        assert len(r["losses"]) == 3 and all(np.isfinite(r["losses"]))
        assert abs(r["losses"][0] - np.log(report["vocab_size"])) < 1.5
    text = train.format_table(report)
    assert "hf_run_mlm" in text and "x hf_run_mlm" in text
    json.dumps(report)


def test_pipeline_headroom_report(tiny_data):
    from wwm_cli.bench import pipeline

    report = pipeline.run(seq_len=32, batch=4, steps=2, data=tiny_data)
    ref = report["reference"]
    # BERT-base at L=512: ~110M parameters; 6N + 12*layers*L*H FLOPs per token
    assert 105e6 < ref["params"] < 115e6
    assert ref["flops_per_token"] == pytest.approx(6 * ref["params"] + 12 * 12 * 32 * 768)
    assert [r["impl"] for r in report["results"]] == ["masker", "jax", "torch"]
    for r in report["results"]:
        assert r["tokens_per_s_per_core"] > 0
        assert r["headroom"] == pytest.approx(r["tokens_per_s_per_core"] / ref["tokens_per_s"])
    assert "headroom" in pipeline.format_table(report)


def test_reference_rate_for_bert_base_512():
    from wwm_cli.bench.pipeline import reference_rate

    ref = reference_rate(512)
    assert 700e6 < ref["flops_per_token"] < 730e6
    assert 650e3 < ref["tokens_per_s"] < 720e3  # 0.5 * 989e12 / ~714e6


def test_scaling_reports_exponents():
    from wwm_cli.bench import scaling

    report = scaling.run(mask_lengths=(64, 128, 256), train_lengths=(32, 64), mask_batch=2, repeats=1)
    impls = {(r["impl"], r["seq_len"]) for r in report["masking"]}
    assert {("wwm", 64), ("wwm", 256), ("hf_wwm_np", 64), ("hf_wwm_np", 256)} <= impls
    assert all(r["peak_bytes"] > 0 for r in report["masking"])
    assert {(r["impl"], r["seq_len"]) for r in report["training"]} == {
        ("jax", 32), ("jax", 64), ("torch", 32), ("torch", 64)
    }  # fmt: skip
    assert set(report["masking_exponents"]) == {"wwm", "hf_wwm_np"}
    assert set(report["training_exponents"]) == {"jax", "torch"}
    assert all(np.isfinite(v) for v in report["masking_exponents"].values())
    assert "exponent" in scaling.format_table(report)


def test_exponent_fit():
    from wwm_cli.bench.scaling import _exponent

    assert _exponent([(128, 1.0), (256, 2.0), (512, 4.0)]) == pytest.approx(1.0)
    assert _exponent([(128, 1.0), (256, 4.0)]) == pytest.approx(2.0)
    assert _exponent([(128, 1.0)]) is None


def test_gpu_script_runs_tiny_on_cpu(tmp_path):
    out = tmp_path / "gpu"
    env = {**os.environ, "WWM_BENCH_TINY": "1", "WWM_BENCH_OUT": str(out), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = [(r["model"], r["impl"], r["attn"], r["packing"]) for r in summary["results"]]
    assert rows == [
        ("modernbert-tiny", "jax", "flash", "packed_documents"),
        ("modernbert-tiny", "torch", "flash", "packed_documents"),
        ("tiny", "jax", "auto", "full_sentences"),
        ("tiny", "torch", "auto", "full_sentences"),
        ("tiny", "hf_run_mlm", "auto", "full_sentences"),
    ]
    assert all(r["tokens_per_s"] > 0 for r in summary["results"])
    md = (out / "summary.md").read_text()
    assert "| jax | auto | full_sentences | tiny |" in md and "hf_run_mlm" in md
    assert "| jax | flash | packed_documents | modernbert-tiny | 128 |" in md


def test_masked_bound():
    from wwm.masking import MaskingConfig
    from wwm_jax.train_step import masked_bound

    assert masked_bound(MaskingConfig(mask_prob=0.15), 512) == 80  # round(76.8) = 77 -> 80
    assert masked_bound(MaskingConfig(mask_prob=0.15), 128) == 24  # 19 -> 24
    assert masked_bound(MaskingConfig(mask_prob=0.15, max_predictions=20), 512) == 24
    assert masked_bound(MaskingConfig(mask_prob=0.15, budget="bernoulli"), 512) == 128
    assert masked_bound(MaskingConfig(mask_prob=0.9), 16) == 16  # never above L


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_jax_masked_head_equals_full_head(model_type):
    """Loss, correct count and gradients with the head at masked positions (and its overflow fallback)
    equal the head at every position."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from wwm_jax.modeling import EncoderConfig, build_model
    from wwm_jax.train_step import token_losses

    cfg = EncoderConfig(
        model_type=model_type, vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=80, pad_token_id=1,
    )  # fmt: skip
    graphdef, params = nnx.split(build_model(cfg, seed=0))
    rng = np.random.default_rng(0)
    M, L = 4, 48
    ids = jnp.asarray(rng.integers(5, 300, (M, L)), jnp.int32)
    mask = jnp.ones((M, L), jnp.int32).at[1, 40:].set(0)
    labels = np.full((M, L), -100)
    for row, n in enumerate([9, 3, 0, 7]):
        pos = rng.choice(np.arange(1, 40), size=n, replace=False)
        labels[row, pos] = rng.integers(5, 300, n)
    labels = jnp.asarray(labels, jnp.int32)

    def run(k):
        def f(p):
            ce, correct = token_losses(
                graphdef, p, ids, mask, labels, deterministic=True, rng=None, max_masked=k
            )
            return ce, correct

        (ce, correct), grads = jax.value_and_grad(f, has_aux=True)(params)
        return float(ce), int(correct), jax.tree.leaves(grads)

    ce0, c0, g0 = run(None)
    for k in (16, 8):  # 16: gathered; 8 < 9 masked in row 0: the full-head fallback
        ce, c, g = run(k)
        assert ce == pytest.approx(ce0, rel=1e-6) and c == c0
        for a, b in zip(g, g0, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_torch_masked_head_equals_full_head():
    """WWMTrainer.compute_loss (head at masked positions) equals the loss of the full logits."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from wwm_torch.trainer import WWMTrainer, masked_lm_sums

    torch.manual_seed(0)
    model = BertForMaskedLM(
        BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, attn_implementation="eager")
    )  # fmt: skip
    trainer = WWMTrainer.__new__(WWMTrainer)  # only compute_loss and the masked-positions head are exercised
    trainer.model, trainer.masked_head = model, True
    trainer.args = type("A", (), {"world_size": 1})()
    model.train(False)
    ids = torch.randint(5, 300, (3, 24))
    labels = torch.full((3, 24), -100)
    labels[0, [2, 5, 6]] = ids[0, [2, 5, 6]]
    labels[2, [1, 20]] = 7
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    loss = trainer.compute_loss(model, inputs)
    full = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert full.shape == (3, 24, 300)  # the masked-positions head is scoped to compute_loss
    ce, n, _ = masked_lm_sums(full, labels)
    assert float(loss.detach()) == pytest.approx(float(ce.detach() / n), rel=1e-6)
    loss.backward()
    g_masked = model.cls.predictions.transform.dense.weight.grad.clone()
    model.zero_grad()
    (ce / n).backward()
    torch.testing.assert_close(
        g_masked, model.cls.predictions.transform.dense.weight.grad, rtol=1e-4, atol=1e-7
    )


@pytest.mark.slow
def test_bench_attention_reports_every_backend_per_length_in_its_own_process():
    """modernbert-tiny at L = 64, flash in both frameworks and JAX's cudnn, each point in its own process;
    the JSON rows carry impl, backend, seq_len, peak_mib and step_s; a backend that cannot run here (cuDNN
    on a CPU) is a row with its one-line reason."""
    from wwm_cli.bench import attention

    report = attention.run(lengths=(64,), steps=1, model="modernbert-tiny", backends=("flash", "cudnn"))
    rows = report["results"]
    assert [(r["impl"], r["backend"], r["seq_len"]) for r in rows] == [
        ("jax", "flash", 64),
        ("jax", "cudnn", 64),
        ("torch", "flash", 64),
    ]
    ok = [rows[0], rows[2]]
    assert all("error" not in r and r["step_s"] > 0 and r["peak_mib"] >= 0 and r["model"] == "modernbert-tiny"
               for r in ok), rows  # fmt: skip
    assert "needs an NVIDIA GPU" in rows[1]["error"]
    # One model, one name, one function: both frameworks' flash compute the same first steps.
    assert ok[0]["loss"] == pytest.approx(ok[1]["loss"], rel=1e-4)
    assert "L=64" in attention.format_table(report)
