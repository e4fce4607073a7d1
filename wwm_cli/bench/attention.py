"""`wwm bench attention`: training-step time and peak memory against L for every attention backend,
in both frameworks, side by side.

Each point (framework, backend, L) runs in a fresh process (`python -m wwm_cli.bench.attention point ...`)
so that its memory figure is its own: `--model bert-tiny` (the tiny BERT of `wwm bench train`: hidden 128,
2 layers, 2 heads) or `modernbert-tiny` (hidden 128, 3 layers, 2 heads, ModernBERT-base's 128-token local
window, global attention every 3rd layer), B = 1, dropout 0 (only eager has attention dropout), float32,
one warm-up step then `steps` timed ones through the trainers' own step (`wwm_cli.bench.train`).
`peak_mib` is the growth of the process's resident set from just before the first step to its peak
(ru_maxrss), so data preparation and imports do not count (compilation does); `rss_mib` the whole
process's peak. `--repeats N` runs every point N times and reports the medians (and every run). A point
that fails (out of memory, a backend that cannot run here) is reported with its one-line reason, never
skipped silently.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

# framework -> train.attn_implementation names to measure (the kernel each selects: wwm/attention.py)
BACKENDS = {"jax": ("eager", "xla", "flash", "cudnn", "splash"), "torch": ("eager", "sdpa", "flash")}
LENGTHS = (512, 1024, 2048, 4096, 8192)
MODELS = {"bert-tiny": "tiny", "modernbert-tiny": "modernbert-tiny"}  # -> wwm_cli.bench.train.MODELS


def _rss_bytes() -> int:
    # local: /proc
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _setup(backend: str, seq_len: int, steps: int, model: str):
    """(bench data, run config) of one point: B = 1, float32, dropout 0, `backend` as the kernel."""
    from wwm_cli.bench import train as bench_train

    data = bench_train.make_data(seq_len, steps + 3)
    config = bench_train.make_config(
        MODELS[model], seq_len, 1, steps + 1, "float32", f"/tmp/wwm-bench-attention-{os.getpid()}"
    )
    mc = dataclasses.replace(config.model, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config = dataclasses.replace(
        config, model=mc, train=dataclasses.replace(config.train, attn_implementation=backend)
    )
    return data, config


def compiled_memory(backend: str, seq_len: int, model: str = "bert-tiny") -> dict[str, float]:
    """XLA's own account of the JAX trainer's compiled step at this point (`memory_analysis()` of
    `build_step`'s train step, lowered for one real batch; nothing runs): temporaries, arguments and
    outputs in MiB. Deterministic, unlike the resident set: it says which arrays the step holds."""
    from wwm.data import BatchIterator
    from wwm_cli.bench import train as bench_train
    from wwm_jax import sharding as shd
    from wwm_jax import train as jt

    data, config = _setup(backend, seq_len, 1, model)
    hf_config = config.model.hf_config_dict(data.tokenizer, seq_len)
    masker = bench_train._masker(data.tokenizer, config)
    setup = jt.build_step(config, hf_config, masker, seq_len)
    rows, _, _ = next(jt.masked_host_batches(BatchIterator(data.blocks, 1, config.seed), masker, 1))
    batch = shd.global_arrays(rows, setup.mesh, 1)
    m = setup.step_fn.lower(setup.state, batch).compile().memory_analysis()
    return {
        "temp_mib": m.temp_size_in_bytes / 2**20,
        "argument_mib": m.argument_size_in_bytes / 2**20,
        "output_mib": m.output_size_in_bytes / 2**20,
    }


def point(
    framework: str, backend: str, seq_len: int, steps: int = 2, model: str = "bert-tiny"
) -> dict[str, Any]:
    """One measurement, in this process."""
    from wwm_cli.bench import train as bench_train

    data, config = _setup(backend, seq_len, steps, model)
    before = _rss_bytes()
    out = bench_train.RUNNERS[framework](config, data, 1, steps, None, None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "impl": framework,
        "backend": backend,
        "model": model,
        "seq_len": seq_len,
        "step_s": out["step_time_s"],
        "peak_mib": max(0, peak - before) / 2**20,
        "rss_mib": peak / 2**20,
        "loss": out["losses"][-1] if out.get("losses") else None,
    }


def _one(framework: str, backend: str, L: int, steps: int, model: str, timeout: float) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "wwm_cli.bench.attention",
        "point",
        framework,
        backend,
        str(L),
        str(steps),
        model,
    ]
    base = {"impl": framework, "backend": backend, "model": model, "seq_len": L}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**base, "error": f"over {timeout:.0f} s"}
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return {**base, "error": tail[:200]}


def _compiled(backend: str, L: int, model: str, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "wwm_cli.bench.attention", "compiled", "jax", backend, str(L), model]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"compiled_error": f"over {timeout:.0f} s"}
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    return {"compiled_error": ((proc.stderr.strip().splitlines() or ["?"])[-1])[:200]}


def run(
    lengths=LENGTHS,
    frameworks=("jax", "torch"),
    steps: int = 2,
    timeout: float = 900,
    model: str = "bert-tiny",
    repeats: int = 1,
    backends: tuple[str, ...] | None = None,
    compiled: bool = False,
) -> dict[str, Any]:
    """`compiled`: JAX rows also carry `compiled_memory` (temp_mib, argument_mib, output_mib), from one more
    process per point that only compiles."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; use one of {', '.join(MODELS)}")
    rows = []
    for framework in frameworks:
        for backend in BACKENDS[framework]:
            if backends and backend not in backends:
                continue
            for L in lengths:
                t0 = time.perf_counter()
                runs = []
                for _ in range(repeats):
                    runs.append(_one(framework, backend, L, steps, model, timeout))
                    if "error" in runs[-1]:
                        break  # a refusal or an OOM does not change on a second try
                ok = [r for r in runs if "error" not in r]
                row = dict(runs[-1]) if not ok else dict(ok[0])
                if ok and len(ok) > 1:
                    for key in ("step_s", "peak_mib", "rss_mib"):
                        row[key] = statistics.median(r[key] for r in ok)
                    row["runs"] = [{k: r[k] for k in ("step_s", "peak_mib", "rss_mib")} for r in ok]
                if compiled and framework == "jax" and ok:
                    row.update(_compiled(backend, L, model, timeout))
                row["wall_s"] = time.perf_counter() - t0
                rows.append(row)
    report = {
        "results": rows,
        "date": time.strftime("%Y-%m-%d"),
        "batch": 1,
        "model": model,
        "repeats": repeats,
    }
    report["exponents"] = memory_exponents(rows)
    return report


def memory_exponents(rows: list[dict[str, Any]], low: int = 2048, high: int = 8192) -> dict[str, float]:
    """Per "impl/backend": log(peak(high) / peak(low)) / log(high / low), the memory growth exponent."""
    out = {}
    for impl, backend in sorted({(r["impl"], r["backend"]) for r in rows}):
        got = {
            r["seq_len"]: r["peak_mib"]
            for r in rows
            if (r["impl"], r["backend"]) == (impl, backend) and "error" not in r
        }
        if low in got and high in got and got[low] > 0:
            out[f"{impl}/{backend}"] = math.log(got[high] / got[low]) / math.log(high / low)
    return out


def format_table(report: dict[str, Any]) -> str:
    lengths = sorted({r["seq_len"] for r in report["results"]})
    head = "impl   backend    " + "".join(f"{f'L={L}':>22}" for L in lengths)
    lines = [f"model {report['model']}, B = {report['batch']}, medians of {report['repeats']} run(s)", head,
             "                  " + "".join(f"{'step s / peak MiB':>22}" for _ in lengths)]  # fmt: skip
    keys = sorted({(r["impl"], r["backend"]) for r in report["results"]}, key=lambda k: (k[0] != "jax", k))
    for impl, backend in keys:
        cells = []
        for L in lengths:
            r = next(
                (
                    x
                    for x in report["results"]
                    if (x["impl"], x["backend"], x["seq_len"]) == (impl, backend, L)
                ),
                None,
            )
            if r is None or "error" in r:
                cells.append(f"{'failed' if r else '-':>22}")
            else:
                cells.append(f"{r['step_s']:>10.3f} / {r['peak_mib']:>8.0f}")
        lines.append(f"{impl:<6} {backend:<10} " + "".join(cells))
    temps = [r for r in report["results"] if "temp_mib" in r]
    if temps:
        lines.append("compiled step (XLA memory_analysis), temporaries MiB: " + ", ".join(
            f"{r['impl']}/{r['backend']} L={r['seq_len']} {r['temp_mib']:.0f}" for r in temps))  # fmt: skip
    exps = report.get("exponents") or {}
    if exps:
        lines.append("memory exponent 2048 -> 8192: " + ", ".join(f"{k} {v:.2f}" for k, v in exps.items()))
    errors = [r for r in report["results"] if "error" in r]
    lines += [f"  {r['impl']} {r['backend']} L={r['seq_len']}: {r['error']}" for r in errors]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["point"]:
        framework, backend, L, steps = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        model = sys.argv[6] if len(sys.argv) > 6 else "bert-tiny"
        print(json.dumps(point(framework, backend, L, steps, model)), flush=True)
    elif sys.argv[1:2] == ["compiled"]:  # compiled jax BACKEND L [MODEL]
        backend, L = sys.argv[3], int(sys.argv[4])
        model = sys.argv[5] if len(sys.argv) > 5 else "bert-tiny"
        print(json.dumps(compiled_memory(backend, L, model)), flush=True)
