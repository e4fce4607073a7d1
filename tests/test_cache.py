"""The block cache: abandoned build folders are cleaned up (never a live one), `wwm cache list|prune`."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wwm.config import DataConfig, RunConfig, TokenizerConfig
from wwm.data import cache, prepare_dataset
from wwm_cli import main

ROOT = Path(__file__).resolve().parents[1]
KEY = "0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, wordpiece_tokenizer):
    path = tmp_path_factory.mktemp("wordpiece")
    wordpiece_tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture
def corpus(tmp_path, training_texts):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join([t for t in training_texts if t.isascii()][:60]) + "\n", encoding="utf-8")
    return path


def make_config(tmp_path, tokenizer_dir, corpus, **data) -> RunConfig:
    return RunConfig(
        data=DataConfig(source="files", train_files=(str(corpus),), max_seq_len=32,
                        cache_dir=str(tmp_path / "cache"), **data),
        tokenizer=TokenizerConfig(path=str(tokenizer_dir)),
        output_dir=str(tmp_path / "out"),
    )  # fmt: skip


def fake_build(root: Path, name: str, owner: dict | None, age_s: float = 0.0) -> Path:
    path = root / f".build-{KEY}-{name}"
    path.mkdir(parents=True)
    (path / "train-documents.arrow").write_bytes(b"x" * 1000)
    if owner is not None:
        (path / cache.OWNER_FILE).write_text(json.dumps(owner))
    if age_s:
        old = time.time() - age_s
        for p in path.iterdir():
            os.utime(p, (old, old))
        os.utime(path, (old, old))
    return path


def ended_build(root: Path) -> Path:
    """A build folder whose process has really ended (made by a child process that exited)."""
    code = f"from pathlib import Path; from wwm.data.cache import new_build_folder; print(new_build_folder(Path({str(root)!r}), {KEY!r}))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return Path(out.stdout.strip())


def test_the_next_build_removes_abandoned_build_folders_but_never_a_live_one(tmp_path, tokenizer_dir, corpus):
    config = make_config(tmp_path, tokenizer_dir, corpus)
    root = tmp_path / "cache" / "data"
    dead = ended_build(root)
    assert json.loads((dead / cache.OWNER_FILE).read_text())["pid"] != os.getpid()
    day = cache.STALE_AFTER_S + 60
    legacy = fake_build(root, "legacy", None, age_s=day)  # from a wwm that recorded no owner
    legacy_recent = fake_build(root, "legacyrecent", None)  # maybe an older wwm writing right now
    mine = {"pid": os.getpid(), **cache._machine(), "start_ticks": cache._start_ticks(os.getpid())}
    live = fake_build(root, "live", mine)
    far = {"pid": 1, "host": "another-host-of-the-job"}
    far_live = fake_build(root, "farlive", far)
    far_dead = fake_build(root, "fardead", far, age_s=day)
    reused = fake_build(root, "reused", {**mine, "start_ticks": -5})  # the pid now runs another process

    prepared = prepare_dataset(config)
    assert not prepared.cache_hit
    left = {p.name for p in root.iterdir()}
    assert left == {Path(prepared.cache_path).name, live.name, legacy_recent.name, far_live.name}
    for gone in (dead, legacy, far_dead, reused):
        assert not gone.exists()


def test_build_folder_states(tmp_path):
    root = tmp_path / "data"
    mine = cache.new_build_folder(root, KEY)
    assert not cache.build_folder(mine).stale and "is writing it" in cache.build_folder(mine).reason
    dead = ended_build(root)
    assert cache.build_folder(dead).stale and "has ended" in cache.build_folder(dead).reason
    # Another boot or container (or machine with the same host name): the pid means nothing, the idle time
    # decides.
    owner = {"pid": os.getpid(), **cache._machine(), "boot_id": "other"}
    assert not cache.build_folder(fake_build(root, "boot", owner)).stale
    old = cache.build_folder(fake_build(root, "oldboot", owner, age_s=cache.STALE_AFTER_S + 60))
    assert old.stale and "nothing written for 24 h" in old.reason
    container = {"pid": 1, **cache._machine(), "pid_ns": "pid:[1]"}  # pid 1 runs here, but means another
    assert not cache.build_folder(fake_build(root, "container", container)).stale


def _entries(capsys, cache_dir) -> dict:
    assert main(["cache", "list", "--cache-dir", str(cache_dir), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cache_list_and_prune_remove_only_superseded_entries_and_stale_builds(
    tmp_path, tokenizer_dir, corpus, capsys
):
    config = make_config(tmp_path, tokenizer_dir, corpus)
    first = prepare_dataset(config)
    with open(corpus, "a", encoding="utf-8") as f:  # the corpus changes: the next prepare builds anew
        f.write("one more line at the end of the corpus\n")
    second = prepare_dataset(config)
    other_tok = tmp_path / "tok2"
    shutil.copytree(tokenizer_dir, other_tok)
    longer = prepare_dataset(
        dataclasses.replace(
            config, data=dataclasses.replace(config.data, max_seq_len=48),
            tokenizer=TokenizerConfig(path=str(other_tok)),
        )
    )  # fmt: skip
    assert len({first.cache_path, second.cache_path, longer.cache_path}) == 3
    root = tmp_path / "cache" / "data"
    # Things that are not cache entries, which nothing may delete.
    (root / "notes.txt").write_text("mine")
    (root / "abcdefabcdefabcdefabcdef").mkdir()  # an entry's name, but no meta.json
    (root / "my-folder").mkdir()
    stale = ended_build(root)
    live = cache.new_build_folder(root, KEY)

    listed = _entries(capsys, tmp_path / "cache")
    status = {Path(e["path"]).name: (e["status"], e["reason"]) for e in listed["entries"]}
    first_key, second_key = Path(first.cache_path).name, Path(second.cache_path).name
    longer_key = Path(longer.cache_path).name
    assert status[first_key][0] == "superseded" and f"superseded by {second_key}" in status[first_key][1]
    assert status[second_key] == ("current", "") and status[longer_key] == ("current", "")
    assert set(status) == {first_key, second_key, longer_key}
    builds = {Path(b["path"]).name: b["status"] for b in listed["builds"]}
    assert builds == {stale.name: "stale", live.name: "building"}

    # An input of the longer entry (its tokenizer) is edited: that entry cannot be hit again.
    os.utime(other_tok / "tokenizer.json", (time.time() + 5, time.time() + 5))
    status = {Path(e["path"]).name: e for e in _entries(capsys, tmp_path / "cache")["entries"]}
    assert status[longer_key]["status"] == "superseded" and "was modified" in status[longer_key]["reason"]

    assert main(["cache", "prune", "--cache-dir", str(tmp_path / "cache"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove" in out and Path(first.cache_path).exists() and stale.exists()

    assert main(["cache", "prune", "--cache-dir", str(tmp_path / "cache"), "--json"]) == 0
    pruned = json.loads(capsys.readouterr().out)
    removed = {Path(r["path"]).name for r in pruned["removed"]}
    assert removed == {first_key, longer_key, stale.name}
    assert pruned["freed"] == sum(r["size"] for r in pruned["removed"]) > 0
    left = {p.name for p in root.iterdir()}
    assert left == {second_key, live.name, "notes.txt", "abcdefabcdefabcdefabcdef", "my-folder"}
    assert prepare_dataset(config).cache_hit  # the current entry still serves

    assert main(["cache", "prune", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "nothing to prune" in capsys.readouterr().out


def test_cache_command_finds_the_cache_of_a_config_and_reports_a_bad_folder(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"data:\n  cache_dir: {tmp_path / 'c'}\n")
    assert main(["cache", "list", "--config", str(config)]) == 0
    assert f"no cache entries in {tmp_path / 'c' / 'data'}" in capsys.readouterr().out
    assert main(["cache", "prune", "--cache-dir", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wwm cache: error: --cache-dir") and err.count("\n") == 1


def test_old_format_entries_are_superseded(tmp_path):
    entry = tmp_path / "data" / KEY
    entry.mkdir(parents=True)
    inputs = {"format": 0, "source": {"builtin": {"lang": "en"}}, "tokenizer": "abc", "max_seq_len": 8,
              "packing": "full_sentences", "word_policy": "tokenizer"}  # fmt: skip
    (entry / "meta.json").write_text(json.dumps({"inputs": inputs, "stats": {}}))
    entries, _ = cache.scan(tmp_path / "data")
    assert [e.superseded for e in entries] == [f"data format 0 (this wwm writes format {cache_format()})"]


def cache_format() -> int:
    from wwm.data.cache import DATA_FORMAT

    return DATA_FORMAT


def test_the_tokenizer_fingerprint_is_its_definition_not_the_last_calls_truncation_or_padding(
    tmp_path, wordpiece_tokenizer, bpe_tokenizer
):
    """The cache key and run.json's `inputs` hash the tokenizer's definition: the truncation and padding a
    transformers call leaves on the backend (or a saved file carries) are not part of it, else a resume that
    finds its data in the cache (no call made) is refused as a different tokenizer. Negative control: another
    vocabulary still changes it."""
    from wwm.data.tokenizer import load_tokenizer, tokenizer_fingerprint

    wordpiece_tokenizer.save_pretrained(tmp_path / "plain")
    plain = load_tokenizer(str(tmp_path / "plain"))
    before = tokenizer_fingerprint(plain)
    plain(["a few words to truncate"] * 2, truncation=True, max_length=4, padding="max_length")
    plain.backend_tokenizer.enable_truncation(max_length=3)  # as a call leaves it; saved with it too
    assert tokenizer_fingerprint(plain) == before
    plain.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "tokenizer.json").read_text())["truncation"] is not None
    assert tokenizer_fingerprint(load_tokenizer(str(tmp_path / "saved"))) == before
    assert tokenizer_fingerprint(bpe_tokenizer) != before
