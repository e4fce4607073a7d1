"""Prepared data in a bucket (docs/data.md "Prepared data in a bucket", wwm.data.remote), against moto's S3
server on 127.0.0.1: the segments, done markers and manifest (last) written to s3://; the default local
copy (parallel ranged reads, SHA-256 checked) and the opt-in remote mode (merged range reads, read-ahead,
a bounded row cache) give the local cache's batches byte for byte; a damaged object is caught."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from wwm import fs
from wwm.config import load_config
from wwm.data import prepare_dataset, segments
from wwm.data.loader import BatchIterator, DataPosition
from wwm.errors import WWMError, WWMWarning

WORDS = "the cat sat on a mat while 日本語 と café naïve über alpha beta gamma delta epsilon".split()
SEGMENT_BYTES = 4096
B = 8  # global batch


def _corpus(folder: Path) -> list[Path]:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, lines in (("a.txt", 30), ("b.txt", 90)):
        text = [" ".join(rng.choice(WORDS, int(rng.integers(1, 60)))) for _ in range(lines)]
        (folder / name).write_text("\n".join(text) + "\n", encoding="utf-8")
        files.append(folder / name)
    return files


@pytest.fixture(scope="module")
def bucket(s3_server) -> str:
    name = f"wwm-test-{uuid.uuid4().hex[:12]}"
    filesys, _ = fs.filesystem(f"s3://{name}")
    filesys.mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="module")
def setting(tmp_path_factory, wordpiece_tokenizer, bucket):
    """The corpus and tokenizer, a local cache entry, and the same data prepared into the bucket."""
    root = tmp_path_factory.mktemp("remote")
    tokenizer = root / "tok"
    wordpiece_tokenizer.save_pretrained(str(tokenizer))
    corpus = _corpus(root / "corpus")

    def config(cache: str, *extra: str):
        return load_config(None, [
            "data.source=files", f"data.train_files=[{','.join(map(str, corpus))}]", f"tokenizer.path={tokenizer}",
            "data.max_seq_len=32", "data.packing=packed_documents", "data.validation_fraction=0.1",
            f"data.segment_bytes={SEGMENT_BYTES}", f"data.cache_dir={cache}", *extra,
        ])  # fmt: skip

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WWM_LOCAL_DIR", str(root / "host"))
        local = prepare_dataset(config(str(root / "cache")))
        remote_cache = f"{bucket}/cache"
        built = prepare_dataset(config(remote_cache))
    return {"root": root, "config": config, "local": local, "remote": remote_cache, "built": built}


def _batches(dataset, steps, start=0, host=(0, 1)):
    it = BatchIterator(dataset, B, 3, host_index=host[0], host_count=host[1], start=DataPosition(0, start))
    out = []
    for batch in it:
        out.append(batch)
        if len(out) == steps:
            return out
    return out


def _equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) and a
    for x, y in zip(a, b, strict=True):
        assert sorted(x) == sorted(y)
        for key in x:
            if isinstance(x[key], np.ndarray):
                assert x[key].dtype == y[key].dtype and x[key].tobytes() == y[key].tobytes(), key
            else:
                assert x[key] == y[key], key


def test_remote_read_bucket_entry_has_manifest_last_and_checksums(setting):
    """The bucket entry holds what a local entry holds, byte for byte; the manifest lists every file's
    size and SHA-256; this host kept no staging copy."""
    local, entry = Path(setting["local"].cache_path), setting["built"].cache_path
    assert entry.startswith(setting["remote"]) and not setting["built"].cache_hit
    names = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    listing = sorted(fs.tree(entry))
    assert listing == names
    for rel in names:
        if Path(rel).name not in (segments.DONE_FILE, segments.BUILD_FILE):
            assert fs.read_bytes(fs.join(entry, rel)) == (local / rel).read_bytes(), rel
    manifest = json.loads(fs.read_bytes(fs.join(entry, "manifest.json")))
    assert manifest == json.loads((local / "manifest.json").read_text())
    import hashlib

    for item in manifest["segments"]:
        name = segments.Segment.from_dict(item["segment"]).name
        assert item["files"], name
        for rel, spec in item["files"].items():
            data = (local / "segments" / name / rel).read_bytes()
            assert spec == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    staging = Path(os.environ.get("WWM_LOCAL_DIR", setting["root"] / "host"))
    assert not list((setting["root"] / "host").rglob("*.bin")), staging  # uploaded, then removed


def test_remote_read_local_copy_gives_the_local_cache_batches_and_is_reused(setting, monkeypatch):
    monkeypatch.setenv("WWM_LOCAL_DIR", str(setting["root"] / "host-copy"))
    local = setting["local"]
    prepared = prepare_dataset(setting["config"](setting["remote"]))
    assert prepared.cache_hit
    _equal(_batches(prepared.train, 6), _batches(local.train, 6))
    _equal(_batches(prepared.train, 3, start=4, host=(1, 2)), _batches(local.train, 3, start=4, host=(1, 2)))
    _equal(list(prepared.validation_batches(B)), list(local.validation_batches(B)))
    copied = prepared.train.source.copied
    assert copied.stats["bytes"] > 0 and copied.stats["files"] > 0 and copied.stats["refetched"] == 0
    again = prepare_dataset(setting["config"](setting["remote"]))  # another run: the copy is reused
    _equal(_batches(again.train, 2), _batches(local.train, 2))
    stats = again.train.source.copied.stats
    assert stats["bytes"] == 0 and stats["reused"] > 0, stats


def test_remote_read_damaged_object_is_caught_by_its_checksum(setting, monkeypatch, bucket):
    """An object of the right size with other bytes: fetched twice, then one line naming it; a changed
    object (new ETag) is copied again, not taken from the old copy."""
    monkeypatch.setenv("WWM_LOCAL_DIR", str(setting["root"] / "host-damaged"))
    source = setting["built"].cache_path
    entry = f"{bucket}/damaged/data/{source.rsplit('/', 1)[1]}"
    filesys, _ = fs.filesystem(bucket)
    filesys.copy(fs.split(source)[1], fs.split(entry)[1], recursive=True)
    victim = next(p for p in sorted(fs.tree(entry)) if p.endswith("train/input_ids.bin"))
    good = fs.read_bytes(fs.join(entry, victim))
    fs.write_bytes(fs.join(entry, victim), bytes(b ^ 0xFF for b in good[:64]) + good[64:])
    prepared = prepare_dataset(setting["config"](f"{bucket}/damaged"))
    assert prepared.cache_hit
    with pytest.raises(WWMError) as err:
        prepared.train.batch(np.arange(4))
    line = str(err.value)
    assert "\n" not in line and victim in line and "sha256" in line and "twice" in line, line
    fs.write_bytes(fs.join(entry, victim), good)  # repaired: a new object version, copied again
    fresh = prepare_dataset(setting["config"](f"{bucket}/damaged"))
    _equal(_batches(fresh.train, 2), _batches(setting["local"].train, 2))


def test_remote_read_mode_gives_the_same_batches_from_any_step_within_its_cache_bound(setting, monkeypatch):
    from wwm.data import remote

    local = setting["local"]
    monkeypatch.setattr(remote, "MERGE_GAP", 0)  # only adjacent rows share a read: a corpus of 10^9 rows
    row_bytes = 32 * 2 + 4 + 4  # ids + word-start bits + piece-start bits (L = 32)
    cache_rows = 3 * B  # a bound of three global batches of rows: a MiB is the key's unit, so set it here
    prepared = prepare_dataset(setting["config"](setting["remote"], "data.remote_read=true",
                                                 "data.remote_prefetch_steps=2"))  # fmt: skip
    source = prepared.train.source
    source.cache.capacity = cache_rows * row_bytes
    assert prepared.train.prefetch_steps == 2
    _equal(_batches(prepared.train, 8), _batches(local.train, 8))
    _equal(_batches(prepared.train, 4, start=5, host=(1, 2)), _batches(local.train, 4, start=5, host=(1, 2)))
    _equal(list(prepared.validation_batches(B)), list(local.validation_batches(B)))
    stats = source.stats
    assert source.cache.peak <= source.cache.capacity and source.cache.size <= source.cache.capacity
    assert stats["rows_fetched"] > 0 and stats["hits"] > 0, stats  # read ahead: batches found their rows
    # A sorted sweep: adjacent rows merge into one ranged read per block file and part.
    monkeypatch.undo()
    sweep = prepare_dataset(setting["config"](setting["remote"], "data.remote_read=true"))
    everything = np.arange(len(local.train))
    got, want = sweep.train.batch(everything), local.train.batch(everything)
    assert all(got[k].tobytes() == want[k].tobytes() for k in want)
    parts = len(sweep.train.source.urls)
    assert sweep.train.source.stats["requests"] <= parts * 3 + parts, sweep.train.source.stats


def test_remote_read_prepare_workers_into_the_bucket(setting, bucket, monkeypatch, capsys):
    """`wwm prepare --worker i/n` into a bucket: worker 0 alone leaves no manifest; worker 1 finishes it,
    and the entry equals the one-machine bucket entry."""
    from wwm_cli import main

    monkeypatch.setenv("WWM_LOCAL_DIR", str(setting["root"] / "host-workers"))
    cache = f"{bucket}/workers"
    cfg = setting["root"] / "workers.yaml"
    config = setting["config"](cache)
    cfg.write_text(json.dumps({"data": {k: getattr(config.data, k) for k in (
        "source", "max_seq_len", "packing", "validation_fraction", "segment_bytes", "cache_dir")} | {
        "train_files": list(config.data.train_files)}, "tokenizer": {"path": config.tokenizer.path}}))  # fmt: skip
    entry = f"{cache}/data/{setting['built'].cache_path.rsplit('/', 1)[1]}"
    assert main(["prepare", "--no-progress", "--config", str(cfg), "--worker", "0/2"]) == 0
    assert not fs.exists(f"{entry}/manifest.json") and fs.exists(f"{entry}/segments/train-000000/done.json")
    assert main(["prepare", "--no-progress", "--json", "--config", str(cfg), "--worker", "1/2"]) == 0
    assert entry in capsys.readouterr().out
    one = setting["built"].cache_path
    assert sorted(fs.tree(entry)) == sorted(fs.tree(one))
    for rel in fs.tree(one):
        if Path(rel).name not in (segments.DONE_FILE, segments.BUILD_FILE):
            assert fs.read_bytes(fs.join(entry, rel)) == fs.read_bytes(fs.join(one, rel)), rel


@pytest.mark.slow
def test_remote_read_torch_train_from_a_bucket_cache_gives_the_local_losses(setting, tmp_path, monkeypatch):
    """`wwm train` (torch, 3 steps, a 1-layer BERT of width 16) with data.cache_dir in s3://: the local
    copy and remote mode both train the local cache's losses bit for bit."""
    from wwm_torch.train import run

    monkeypatch.setenv("WWM_LOCAL_DIR", str(tmp_path / "host"))
    tiny = ["tokenizer.word_policy=tokenizer", "model.hidden_size=16", "model.num_hidden_layers=1",
            "model.num_attention_heads=2", "model.intermediate_size=32", "model.max_position_embeddings=32",
            "model.hidden_dropout_prob=0.0", "model.attention_probs_dropout_prob=0.0",
            f"train.global_batch_size={B}", "train.max_steps=3", "train.log_every_steps=1", "train.dtype=float32",
            "eval.every_steps=1000", "checkpoint.every_steps=3", "checkpoint.export_hf_at_end=false",
            "logging.progress_bar=false", "train.framework=torch", "seed=0"]  # fmt: skip

    def losses(cache: str, name: str, *extra: str) -> list[tuple[int, float]]:
        out = tmp_path / name
        assert run(setting["config"](cache, *tiny, f"output_dir={out}", *extra)) == 0
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
        return [(r["step"], r["loss"]) for r in records if "loss" in r and "step" in r]

    expected = losses(str(setting["root"] / "cache"), "local")
    assert [s for s, _ in expected] == [1, 2, 3]
    assert losses(setting["remote"], "copy") == expected
    assert losses(setting["remote"], "remote", "data.remote_read=true") == expected


def test_remote_read_two_hosts_prepare_a_share_each_into_the_bucket(setting, bucket, monkeypatch):
    """`wwm train`'s preparation on 2 hosts (here two threads with a barrier): each builds its share of the
    segments into the bucket, and both read the one-machine entry's batches."""
    import threading

    monkeypatch.setenv("WWM_LOCAL_DIR", str(setting["root"] / "host-shares"))
    config = setting["config"](f"{bucket}/shares")
    wall = threading.Barrier(2, timeout=120)
    out: dict[int, object] = {}

    def host(h: int) -> None:
        try:
            out[h] = prepare_dataset(config, share=(h, 2), barrier=lambda name: wall.wait())
        except BaseException as err:  # reported below
            out[h] = err
            wall.abort()

    other = threading.Thread(target=host, args=(1,))
    other.start()
    host(0)
    other.join()
    assert not isinstance(out[0], BaseException) and not isinstance(out[1], BaseException), out
    assert out[0].cache_path == out[1].cache_path and fs.exists(f"{out[0].cache_path}/manifest.json")
    for prepared in out.values():
        _equal(_batches(prepared.train, 3, host=(0, 1)), _batches(setting["local"].train, 3, host=(0, 1)))


def test_remote_read_mode_under_a_groups_order_reads_whole_groups(setting, monkeypatch):
    """Order rule groups-8-2-4 (B = 8 = K*r): remote mode gives the local batches bit for bit, 1 and 2
    hosts, and reads each group it touches once per block file: at most (groups touched + the part
    boundaries inside them) x block files ranged reads, where feistel-6 reads about one per row and file
    (MERGE_GAP 0: a corpus of 10^9 rows, where no two rows of a batch lie close)."""
    from wwm.data import remote
    from wwm.data.order import GroupedOrder, parse_groups_rule

    rule, steps, ahead = "groups-8-2-4", 6, 2
    G = parse_groups_rule(rule)[0]
    monkeypatch.setattr(remote, "MERGE_GAP", 0)
    local = setting["local"].train

    def read(order_rule, host=(0, 1), start=0):
        prepared = prepare_dataset(setting["config"](setting["remote"], "data.remote_read=true",
                                                     f"data.remote_prefetch_steps={ahead}"))  # fmt: skip
        it = BatchIterator(prepared.train, B, 3, host_index=host[0], host_count=host[1], order_rule=order_rule,
                           start=DataPosition(0, start))  # fmt: skip
        return [b for b, _ in zip(it, range(steps), strict=False)], prepared.train.source

    def expected(order_rule, host=(0, 1), start=0):
        it = BatchIterator(local, B, 3, host_index=host[0], host_count=host[1], order_rule=order_rule,
                           start=DataPosition(0, start))  # fmt: skip
        return [b for b, _ in zip(it, range(steps), strict=False)]

    got, source = read(rule)
    _equal(got, expected(rule))
    assert source.group_rows == G
    _equal(read(rule, host=(1, 2), start=1)[0], expected(rule, host=(1, 2), start=1))
    # The reads: every group the read steps and the read-ahead touched, once per block file.
    n, files = len(local), len(source._part(0)[1])
    order = GroupedOrder(n, 3, 0, rule)
    ids = order(np.arange(min((steps + ahead + 1) * B, n)))
    groups = np.unique(ids // G)
    pieces = sum(len(np.unique(np.searchsorted(source.offsets, np.arange(g * G, min(g * G + G, n)), "right")))
                 for g in groups.tolist())  # fmt: skip  # a group across a part boundary: one read per part
    assert source.stats["requests"] <= pieces * files + len(source.urls), (source.stats, pieces, files)
    assert source.stats["rows_fetched"] <= pieces * G and source.stats["hits"] > 0, source.stats
    # A row cache smaller than two windows of this host's groups: named in a warning, same batches.
    small = prepare_dataset(setting["config"](setting["remote"], "data.remote_read=true")).train
    small.source.cache.capacity = 600  # bytes: ~8 rows of 72, a window holds 2 groups of 8
    with pytest.warns(WWMWarning, match="data.remote_cache_mb"):
        it = BatchIterator(small, B, 3, order_rule=rule)
    _equal([b for b, _ in zip(it, range(3), strict=False)], expected(rule)[:3])
    rows_read = steps * B
    feistel = read("feistel-6")[1]
    assert feistel.group_rows == 0  # another iterator's row order: rows again
    assert feistel.stats["requests"] >= rows_read * files // 2 > 2 * source.stats["requests"], (
        feistel.stats, source.stats)  # fmt: skip
