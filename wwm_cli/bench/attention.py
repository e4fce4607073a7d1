"""`wwm bench attention`: training-step time and peak memory against L for every attention backend,
in both frameworks, side by side.

Each point (framework, backend, L) runs in a fresh process (`python -m wwm_cli.bench.attention point ...`)
so that its memory figure is its own: the tiny BERT of `wwm bench train` (hidden 128, 2 layers, 2 heads),
B = 1, dropout 0 (the fused and blockwise JAX backends have no attention dropout), float32, one warm-up
step then `steps` timed ones through the trainers' own step (`wwm_cli.bench.train`). Memory is the growth of
the process's resident set from just before the first step to its peak (ru_maxrss), so data preparation and
imports do not count. A point that fails (out of memory, a backend that cannot run here) is reported with
its one-line reason, never skipped silently.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

# framework -> train.attn_implementation values to measure (the JAX backends they select: docs/models.md)
BACKENDS = {"jax": ("eager", "sdpa", "blockwise"), "torch": ("eager", "sdpa")}
LENGTHS = (512, 1024, 2048, 4096, 8192)


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def point(framework: str, backend: str, seq_len: int, steps: int = 2) -> dict[str, Any]:
    """One measurement, in this process."""
    from wwm_cli.bench import train as bench_train

    data = bench_train.make_data(seq_len, steps + 3)
    config = bench_train.make_config(
        "tiny", seq_len, 1, steps + 1, "float32", f"/tmp/wwm-bench-attention-{os.getpid()}"
    )
    model = dataclasses.replace(config.model, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config = dataclasses.replace(
        config, model=model, train=dataclasses.replace(config.train, attn_implementation=backend)
    )
    before = _rss_bytes()
    out = bench_train.RUNNERS[framework](config, data, 1, steps, None, None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "impl": framework,
        "backend": backend,
        "seq_len": seq_len,
        "step_time_s": out["step_time_s"],
        "peak_memory_bytes": max(0, peak - before),
        "loss": out["losses"][-1] if out.get("losses") else None,
    }


def run(lengths=LENGTHS, frameworks=("jax", "torch"), steps: int = 2, timeout: float = 900) -> dict[str, Any]:
    rows = []
    for framework in frameworks:
        for backend in BACKENDS[framework]:
            for L in lengths:
                cmd = [
                    sys.executable,
                    "-m",
                    "wwm_cli.bench.attention",
                    "point",
                    framework,
                    backend,
                    str(L),
                    str(steps),
                ]
                t0 = time.perf_counter()
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
                except subprocess.TimeoutExpired:
                    rows.append(
                        {
                            "impl": framework,
                            "backend": backend,
                            "seq_len": L,
                            "error": f"over {timeout:.0f} s",
                        }
                    )
                    continue
                lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
                if proc.returncode == 0 and lines:
                    rows.append(json.loads(lines[-1]))
                else:
                    tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
                    rows.append({"impl": framework, "backend": backend, "seq_len": L, "error": tail[:200]})
                rows[-1]["wall_s"] = time.perf_counter() - t0
    return {"results": rows, "date": time.strftime("%Y-%m-%d"), "batch": 1, "model": "tiny"}


def format_table(report: dict[str, Any]) -> str:
    lengths = sorted({r["seq_len"] for r in report["results"]})
    head = "impl   backend    " + "".join(f"{f'L={L}':>22}" for L in lengths)
    lines = [head, "                  " + "".join(f"{'step s / peak MiB':>22}" for _ in lengths)]
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
                cells.append(f"{r['step_time_s']:>10.3f} / {r['peak_memory_bytes'] / 2**20:>8.0f}")
        lines.append(f"{impl:<6} {backend:<10} " + "".join(cells))
    errors = [r for r in report["results"] if "error" in r]
    lines += [f"  {r['impl']} {r['backend']} L={r['seq_len']}: {r['error']}" for r in errors]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["point"]:
        framework, backend, L, steps = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(point(framework, backend, L, steps)), flush=True)
