"""Smoke tests of the benchmarks (report structure, every implementation ran; no timings). The
masked-positions MLM head they measure is tested in tests/test_masked_head.py."""

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
    """benchmarks/gpu.sh's CPU smoke run, which is also the test of `wwm bench train`: the tiny BERT in all three
    implementations (timed steps, tokens/s, MFU against the given peak, both trainers' losses) and
    ModernBERT-tiny with packed documents in both frameworks, then the summary."""
    from wwm_cli.bench import train

    out = tmp_path / "gpu"
    env = {**os.environ, "WWM_BENCH_TINY": "1", "WWM_BENCH_OUT": str(out), "PYTHON": sys.executable,
           "WWM_BENCH_PEAK": "1e12"}  # fmt: skip
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

    # `wwm bench train --json` of the tiny BERT (L = 64, batch 4, 2 timed steps after 1 warm-up step)
    (path,) = out.glob("train-L64-*.json")
    report = json.loads(path.read_text())
    assert [r["impl"] for r in report["results"]] == ["jax", "torch", "hf_run_mlm"]
    for r in report["results"]:
        assert r["timed_steps"] == 2 and len(r["step_times_s"]) == 2
        assert all(t > 0 for t in r["step_times_s"])
        assert r["tokens_per_s"] == pytest.approx(4 * 64 / r["step_time_s"])
        assert 0 < r["mfu"] == pytest.approx(r["flops_per_step"] / r["step_time_s"] / 1e12)
    jax_r, torch_r, hf_r = report["results"]
    assert jax_r["params"] == torch_r["params"] == hf_r["params"]  # the same model everywhere
    assert hf_r["x_hf_run_mlm"] == 1.0
    for r in (jax_r, torch_r):  # both our trainers trained: finite losses near ln(vocab) at the start
        assert len(r["losses"]) == 3 and all(np.isfinite(r["losses"]))
        assert abs(r["losses"][0] - np.log(report["vocab_size"])) < 1.5
    text = train.format_table(report)
    assert "hf_run_mlm" in text and "x hf_run_mlm" in text

    # ModernBERT-tiny in both frameworks: one model (the same parameter count)
    modernbert = json.loads((out / "modernbert-L128.json").read_text())
    assert modernbert["model_sizes"]["type"] == "modernbert"
    assert len({r["params"] for r in modernbert["results"]}) == 1, modernbert["results"]


def test_bench_modernbert_base_is_transformers_published_shape():
    """The "published shape" is transformers' ModernBertConfig default (ModernBERT-base), not a copy of it here."""
    from transformers import ModernBertConfig

    from wwm_cli.bench import train

    shape = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    base = train.MODELS["modernbert-base"]
    assert base["type"] == "modernbert" and {k: base[k] for k in shape} == {
        k: getattr(ModernBertConfig(), k) for k in shape
    }


@pytest.mark.slow
def test_bench_attention_reports_every_backend_per_length_in_its_own_process():
    """modernbert-tiny at L = 64, flash in both frameworks and JAX's cudnn, each point in its own process;
    the JSON rows carry impl, backend, seq_len, peak_mib and step_s (JAX's also the compiled step's
    memory); a backend that cannot run here (cuDNN on a CPU) is a row with its one-line reason."""
    from wwm_cli.bench import attention

    report = attention.run(
        lengths=(64,), steps=1, model="modernbert-tiny", backends=("flash", "cudnn"), compiled=True
    )
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
    # --compiled: XLA's memory_analysis of the JAX step beside the resident-set figures (JAX rows only).
    assert rows[0]["temp_mib"] > 0 and rows[0]["argument_mib"] > 0 and "temp_mib" not in rows[2]
    # One model, one name, one function: both frameworks' flash compute the same first steps.
    assert ok[0]["loss"] == pytest.approx(ok[1]["loss"], rel=1e-4)
    assert "L=64" in attention.format_table(report)
