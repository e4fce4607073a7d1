"""`wwm bench scaling`: time and memory as the sequence length L grows (128 -> 8192).

* masking, B rows of L tokens of real text: our `WholeWordMasker` (word ids given) and transformers'
  `DataCollatorForLanguageModeling(whole_word_mask=True, return_tensors="np")` (offsets given, as
  its whole-word mode needs). transformers' collator builds a B x L x L tensor, so it runs only while
  its previous size took under `hf_max_seconds` and its next B * L * L * 8 bytes stay under
  `hf_max_bytes`. Memory: peak of numpy allocations (tracemalloc; numpy reports its buffers to it).
* a training step of the tiny BERT at batch `train_batch`: our JAX step and our torch trainer's step
  (`wwm_cli.bench.train`, the same code as `wwm bench train`), median of `train_steps` after one warm-up.
  Memory: the process's peak RSS so far (sizes run in increasing order, so it is this size's peak
  unless an earlier, smaller size needed more), and jax's peak bytes on devices that report it.

Each series gets the fitted exponent k of time ~ L^k (least squares on log-log): 1 is linear in L.
"""

from __future__ import annotations

import math
import resource
import time
import tracemalloc
from typing import Any

import numpy as np

MASK_LENGTHS = (128, 256, 512, 1024, 2048, 4096, 8192)
TRAIN_LENGTHS = (128, 512, 2048, 8192)


def _exponent(points: list[tuple[int, float]]) -> float | None:
    if len(points) < 2:
        return None
    x = np.log([p[0] for p in points])
    y = np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


def _timed_with_memory(fn, repeats: int) -> tuple[float, int]:
    """(median seconds per call over `repeats` samples of >= 20 ms each after warm-up calls, as in
    `wwm bench masking`; peak traced bytes of the first call)."""
    from wwm_cli.bench.common import median_seconds

    # The first call is traced: it also allocates what later calls reuse (the masker's workspace).
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return median_seconds(fn, repeats=repeats, warmup=1, min_sample_s=0.02), peak


def masking_scaling(
    batch: int = 8,
    lengths=MASK_LENGTHS,
    repeats: int = 5,
    hf_max_seconds: float = 3.0,
    hf_max_bytes: float = 2e9,
) -> list[dict[str, Any]]:
    from transformers import DataCollatorForLanguageModeling

    from wwm.masking import MaskingConfig, WholeWordMasker
    from wwm_cli.bench.common import benchmark_texts, benchmark_tokenizer
    from wwm_cli.bench.masking import _rows, _token_stream

    texts, _ = benchmark_texts()
    tokenizer, _ = benchmark_tokenizer(texts)
    stream = _token_stream(tokenizer, texts, batch * max(lengths))
    masker = WholeWordMasker.from_tokenizer(tokenizer, MaskingConfig(mask_prob=0.15))
    hf = DataCollatorForLanguageModeling(tokenizer, whole_word_mask=True, return_tensors="np", seed=0)
    out = []
    hf_last = 0.0
    for L in lengths:
        rows = _rows(stream, tokenizer, batch, L)
        ex = np.arange(batch)
        seconds, peak = _timed_with_memory(
            lambda rows=rows, ex=ex: masker(rows["ids"], rows["wids"], ex, 0), repeats
        )
        out.append({"impl": "wwm", "seq_len": L, "batch": batch, "seconds": seconds, "peak_bytes": peak})
        if hf_last <= hf_max_seconds and batch * L * L * 8 <= hf_max_bytes:
            features = [
                {
                    "input_ids": rows["ids"][b].tolist(),
                    "special_tokens_mask": rows["special"][b].tolist(),
                    "offset_mapping": rows["offsets"][b].tolist(),
                }
                for b in range(batch)
            ]
            n = repeats if hf_last < 0.5 else 1
            seconds, peak = _timed_with_memory(lambda f=features: hf(f), n)
            hf_last = seconds
            out.append(
                {"impl": "hf_wwm_np", "seq_len": L, "batch": batch, "seconds": seconds, "peak_bytes": peak}
            )
    for r in out:
        r["us_per_token"] = 1e6 * r["seconds"] / (r["batch"] * r["seq_len"])
    return out


def train_scaling(
    lengths=TRAIN_LENGTHS, batch: int = 1, steps: int = 2, impls=("jax", "torch"), model: str = "tiny"
) -> list[dict[str, Any]]:
    from wwm_cli.bench import train as bench_train

    out = []
    for L in lengths:
        data = bench_train.make_data(L, max(4, batch * (steps + 1)))
        report = bench_train.run(
            model=model, seq_len=L, batch=batch, steps=steps, warmup=1, impls=tuple(impls), data=data
        )
        for r in report["results"]:
            entry = {
                "impl": r["impl"],
                "seq_len": L,
                "batch": batch,
                "seconds": r["step_time_s"],
                "peak_rss_bytes": _peak_rss_bytes(),
                "us_per_token": 1e6 * r["step_time_s"] / (batch * L),
            }
            if r["impl"].startswith("jax"):
                entry["device_peak_bytes"] = _jax_peak_bytes()
            out.append(entry)
    return out


def _jax_peak_bytes() -> int | None:
    try:
        import jax

        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def exponents(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        series.setdefault(r["impl"], []).append((r["seq_len"], r["seconds"]))
    return {impl: _exponent(points) for impl, points in series.items()}


def run(
    mask_lengths=MASK_LENGTHS,
    train_lengths=TRAIN_LENGTHS,
    mask_batch: int = 8,
    repeats: int = 5,
    train_batch: int = 1,
    train_steps: int = 2,
    train_impls=("jax", "torch"),
) -> dict[str, Any]:
    t0 = time.perf_counter()
    masking = masking_scaling(mask_batch, mask_lengths, repeats)
    training = train_scaling(train_lengths, train_batch, train_steps, train_impls) if train_lengths else []
    return {
        "masking": masking,
        "training": training,
        "masking_exponents": exponents(masking),
        "training_exponents": exponents(training),
        "wall_s": time.perf_counter() - t0,
        "date": time.strftime("%Y-%m-%d"),
    }


def _mb(x) -> str:
    return "-" if x is None else f"{x / 2**20:,.1f}"


def format_table(report: dict[str, Any]) -> str:
    lines = ["masking (median; peak = numpy allocations, tracemalloc)",
             f"{'impl':<11}{'B':>3}{'L':>6}{'seconds':>11}{'us/token':>10}{'peak MiB':>10}"]  # fmt: skip
    for r in report["masking"]:
        lines.append(
            f"{r['impl']:<11}{r['batch']:>3}{r['seq_len']:>6}{r['seconds']:>11.4f}{r['us_per_token']:>10.3f}"
            f"{_mb(r['peak_bytes']):>10}"
        )
    lines.append("exponent k of time ~ L^k: " + _fmt_exp(report["masking_exponents"]))
    if report["training"]:
        lines.append("training step, tiny BERT (median; peak RSS of the process so far)")
        lines.append(f"{'impl':<11}{'B':>3}{'L':>6}{'seconds':>11}{'us/token':>10}{'RSS MiB':>10}")
        for r in report["training"]:
            lines.append(
                f"{r['impl']:<11}{r['batch']:>3}{r['seq_len']:>6}{r['seconds']:>11.4f}{r['us_per_token']:>10.2f}"
                f"{_mb(r['peak_rss_bytes']):>10}"
            )
        lines.append("exponent k of time ~ L^k: " + _fmt_exp(report["training_exponents"]))
    return "\n".join(lines)


def _fmt_exp(exps: dict[str, float | None]) -> str:
    return ", ".join(f"{k} {'-' if v is None or math.isnan(v) else f'{v:.2f}'}" for k, v in exps.items())


__all__ = ["exponents", "format_table", "masking_scaling", "run", "train_scaling"]
