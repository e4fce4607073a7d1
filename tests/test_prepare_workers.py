"""Preparation split by the input (docs/data.md "Segments", docs/scale.md): the same manifest and blocks,
byte for byte, for one machine, any number of workers (`wwm prepare --worker i/n`), a resumed worker and
Ray tasks; segment boundaries that depend on nothing but the input."""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from wwm.config import load_config
from wwm.data import cache, prepare_dataset, segments
from wwm.data.sources import SourceStats, iter_documents
from wwm.errors import WWMError
from wwm_cli import main

WORDS = "the cat sat on a mat while 日本語 と café naïve über alpha beta gamma delta epsilon".split()
SEGMENT_BYTES = 4096


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, wordpiece_tokenizer):
    path = tmp_path_factory.mktemp("tok")
    wordpiece_tokenizer.save_pretrained(str(path))
    return path


def _corpus(folder: Path, big_lines: int = 400) -> list[Path]:
    """Three small files (one empty) and one cut into byte ranges: long lines, blank lines, CRLF."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, lines in (("a.txt", 40), ("b.txt", 7), ("c.txt", 0), ("d.txt", big_lines)):
        text = []
        for i in range(lines):
            n = int(rng.integers(0, 90)) if i % 50 else 900  # now and then a line of several blocks
            text.append(" ".join(rng.choice(WORDS, n)))
        end = "\r\n" if name == "b.txt" else "\n"
        (folder / name).write_text(end.join(text) + (end if text else ""), encoding="utf-8")
        files.append(folder / name)
    return files


def _config(corpus: list[Path], tokenizer_dir: Path, cache_dir: Path, *extra: str):
    return load_config(None, [
        "data.source=files", f"data.train_files=[{','.join(map(str, corpus))}]", f"tokenizer.path={tokenizer_dir}",
        "data.max_seq_len=32", "data.packing=packed_documents", "data.validation_fraction=0.1",
        f"data.segment_bytes={SEGMENT_BYTES}", f"data.cache_dir={cache_dir}", *extra,
    ])  # fmt: skip


def _same_entries(a: Path, b: Path) -> None:
    """Two cache entries hold the same manifest and blocks, byte for byte (done.json and build.json record
    when and how fast they were built)."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel.name not in (segments.DONE_FILE, segments.BUILD_FILE):
            assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


def _cli(*args: str) -> int:
    return main(["prepare", "--no-progress", *args])


def _cli_config(tmp_path: Path, corpus: list[Path], tokenizer_dir: Path, cache_dir: Path) -> list[str]:
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps({"data": {
        "source": "files", "train_files": [str(p) for p in corpus], "max_seq_len": 32,
        "packing": "packed_documents", "validation_fraction": 0.1, "segment_bytes": SEGMENT_BYTES,
        "cache_dir": str(cache_dir)}, "tokenizer": {"path": str(tokenizer_dir)}}))  # fmt: skip
    return ["--config", str(path)]


def test_segments_of_a_text_file_hold_its_documents_once_whatever_the_range_size(tmp_path):
    (path,) = [p for p in _corpus(tmp_path) if p.name == "d.txt"]
    data = load_config(None, ["data.source=files", f"data.train_files=[{path}]"]).data
    whole = list(iter_documents(data, "train", SourceStats()))
    size = path.stat().st_size
    for cut_bytes in (4096, 5000, 12345, 1 << 30):
        cut = load_config(None, ["data.source=files", f"data.train_files=[{path}]",
                                 f"data.segment_bytes={cut_bytes}"]).data  # fmt: skip
        plan = segments.plan(cut)
        if cut_bytes > size:  # a file no larger than data.segment_bytes is one segment
            assert plan == [segments.Segment(0, "train", str(path))]
        else:
            assert len(plan) == -(-size // cut_bytes) and plan[0].start == 0 and plan[-1].stop == size
            assert [s.start for s in plan[1:]] == [s.stop for s in plan[:-1]]
        stats = SourceStats()
        assert [d for s in plan for d in segments.documents(cut, s, stats)] == whole
        assert stats.documents == len(whole) and stats.files == [str(path)]


def test_segments_follow_data_encoding_and_name_an_undecodable_byte_by_its_file_offset(tmp_path):
    """data.encoding (issue 21) and byte ranges: a Latin-1 file cut in segments gives the whole file's
    documents; UTF-16 (whose newline is not the byte 0x0A alone) is never cut; with on_decode_error: error
    a bad byte in a later segment is named by its offset in the file."""
    lines = [f"café naïve über {i} " * 5 for i in range(300)]
    latin = tmp_path / "latin.txt"
    latin.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    utf16 = tmp_path / "utf16.txt"
    utf16.write_text("\n".join(lines) + "\n", encoding="utf-16")

    def data(path, *extra):
        return load_config(None, ["data.source=files", f"data.train_files=[{path}]", *extra]).data

    for path, encoding in ((latin, "latin-1"), (utf16, "utf-16")):
        whole = list(iter_documents(data(path, f"data.encoding={encoding}"), "train", SourceStats()))
        cut = data(path, f"data.encoding={encoding}", "data.segment_bytes=4096")
        plan = segments.plan(cut)
        if encoding == "utf-16":
            assert plan == [segments.Segment(0, "train", str(path))]
        else:
            assert len(plan) == -(-path.stat().st_size // 4096) > 1
        assert [d for s in plan for d in segments.documents(cut, s, SourceStats())] == whole == lines
    raw = latin.read_bytes().replace(b"\xe9", b"e").replace(b"\xef", b"i").replace(b"\xfc", b"u")
    bad = raw.index(b"\n", 9000) + 3
    (tmp_path / "bad.txt").write_bytes(raw[:bad] + b"\xff" + raw[bad:])
    cut = data(tmp_path / "bad.txt", "data.on_decode_error=error", "data.segment_bytes=4096")
    with pytest.raises(WWMError) as err:
        for seg in segments.plan(cut):
            list(segments.documents(cut, seg, SourceStats()))
    assert f"at byte offset {bad:,} (line " in str(err.value) and "of the segment from byte" in str(err.value)


def test_workers_0_2_and_1_2_give_the_manifest_and_blocks_of_one_machine(tmp_path, tokenizer_dir, capsys):
    corpus = _corpus(tmp_path / "corpus")
    one = prepare_dataset(_config(corpus, tokenizer_dir, tmp_path / "one"))
    args = _cli_config(tmp_path, corpus, tokenizer_dir, tmp_path / "two")
    assert _cli(*args, "--worker", "1/2") == 0
    assert "the last worker (or `wwm prepare --finalize`) writes the manifest" in capsys.readouterr().out
    entry = Path(one.cache_path.replace(str(tmp_path / "one"), str(tmp_path / "two")))
    assert not (entry / segments.MANIFEST_FILE).exists()  # half the segments: never read
    assert _cli(*args, "--worker", "0/2") == 0
    _same_entries(Path(one.cache_path), entry)
    plan = segments.plan(one.config.data)
    assert len(plan) > 8 and sum(s.start > 0 for s in plan) > 3  # files and byte ranges
    # The workers' data is the machine's, and so are its batches.
    two = prepare_dataset(_config(corpus, tokenizer_dir, tmp_path / "two"))
    assert two.cache_hit and len(two.train) == len(one.train) > 0
    ids = np.arange(len(one.train))
    for key, value in one.train.batch(ids).items():
        np.testing.assert_array_equal(two.train.batch(ids)[key], value)
    # Streaming packs segment by segment too: the same blocks in the same order.
    streamed = prepare_dataset(_config(corpus, tokenizer_dir, tmp_path / "s", "data.streaming=true"))
    np.testing.assert_array_equal(
        np.concatenate([b.input_ids for b in streamed.train]), one.train.batch(ids)["input_ids"]
    )


@pytest.mark.slow
def test_a_sigkilled_worker_resumes_from_its_markers(tmp_path, tokenizer_dir, capsys):
    """A worker killed with SIGKILL keeps the segments it finished (their done markers); run again, it
    builds only the others, removes the work folder the kill left, and the result is the one machine's."""
    corpus = _corpus(tmp_path / "corpus", big_lines=1500)
    args = _cli_config(tmp_path, corpus, tokenizer_dir, tmp_path / "cache")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    worker = subprocess.Popen([sys.executable, "-m", "wwm_cli", "prepare", "--no-progress", *args, "--worker", "0/1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.time() + 120
    done: list[Path] = []
    while len(done) < 3 and worker.poll() is None and time.time() < deadline:
        time.sleep(0.05)
        done = list((tmp_path / "cache").glob(f"data/*/segments/*/{segments.DONE_FILE}"))
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert len(done) >= 3, worker.stderr.read().decode()[-2000:]
    entry = done[0].parent.parent.parent
    total = len(segments.plan(_config(corpus, tokenizer_dir, tmp_path).data))
    finished = len(list(entry.glob(f"segments/*/{segments.DONE_FILE}")))
    assert not (entry / segments.MANIFEST_FILE).exists() and 3 <= finished < total
    capsys.readouterr()
    assert _cli(*args, "--worker", "0/1", "--json") == 0
    assert not list(entry.glob(f"segments/{cache.BUILD_PREFIX}*"))  # the killed worker's folder is gone
    one = prepare_dataset(_config(corpus, tokenizer_dir, tmp_path / "one"))
    _same_entries(Path(one.cache_path), entry)
    summary = json.loads(capsys.readouterr().out)
    assert summary["cache_path"] == str(entry)


def test_finalize_names_the_segments_not_prepared_and_workers_need_a_trained_tokenizer(
    tmp_path, tokenizer_dir, capsys
):
    corpus = _corpus(tmp_path / "corpus", big_lines=100)
    args = _cli_config(tmp_path, corpus, tokenizer_dir, tmp_path / "cache")
    assert _cli(*args, "--worker", "0/3") == 0
    capsys.readouterr()
    assert _cli(*args, "--finalize") == 2
    err = capsys.readouterr().err
    assert "are not prepared yet (train-000001" in err and "worker k mod n" in err and "\n" not in err.strip()
    assert _cli(*args, "--worker", "1/3") == 0 and _cli(*args, "--worker", "2/3") == 0
    assert "cache            miss (built)" in capsys.readouterr().out  # the last worker wrote the manifest
    assert _cli(*args, "--finalize") == 0 and "cache            hit" in capsys.readouterr().out
    assert _cli(*args, "--worker", "3/3") == 2 and "--worker '3/3' is not i/n" in capsys.readouterr().err
    # A tokenizer to train: the workers would all train it; it is trained once first.
    trained = tmp_path / "trained.yaml"
    trained.write_text(json.dumps({"data": {"source": "files", "train_files": [str(p) for p in corpus],
                                            "cache_dir": str(tmp_path / "cache")},
                                   "tokenizer": {"train": {"kind": "wordpiece", "vocab_size": 300}},
                                   "output_dir": str(tmp_path / "out")}))  # fmt: skip
    assert _cli("--config", str(trained), "--worker", "0/2") == 2
    assert "--tokenizer-only" in capsys.readouterr().err
    assert _cli("--config", str(trained), "--tokenizer-only") == 0
    assert _cli("--config", str(trained), "--worker", "0/1") == 0


def test_an_unfinished_entry_is_listed_and_pruned_only_when_stale(tmp_path, tokenizer_dir, capsys):
    corpus = _corpus(tmp_path / "corpus", big_lines=100)
    args = _cli_config(tmp_path, corpus, tokenizer_dir, tmp_path / "cache")
    assert _cli(*args, "--worker", "0/2") == 0
    root = tmp_path / "cache" / "data"
    (entry,) = [p for p in root.iterdir() if p.is_dir()]
    entries, builds = cache.scan(root)
    assert entries == [] and [b.path for b in builds] == [entry] and not builds[0].stale
    assert "segment(s) prepared" in builds[0].reason
    assert cache.prune(root) == [] and entry.exists()  # workers may come back
    old = time.time() - cache.STALE_AFTER_S - 60
    for path in [entry, *entry.rglob("*")]:
        os.utime(path, (old, old))
    (stale,) = cache.scan(root)[1]
    assert stale.stale and [p for p, _, _ in cache.prune(root)] == [entry] and not entry.exists()


@pytest.mark.slow
def test_ray_workers_in_local_mode_give_the_blocks_of_one_machine(tmp_path, tokenizer_dir, capsys):
    """`wwm prepare --ray`: the segments as Ray tasks on a Ray instance started here (Ray's local mode:
    a raylet and worker processes on 127.0.0.1), then the manifest: one machine's bytes."""
    pytest.importorskip("ray")
    corpus = _corpus(tmp_path / "corpus", big_lines=100)
    args = _cli_config(tmp_path, corpus, tokenizer_dir, tmp_path / "ray")
    assert _cli(*args, "--worker", "1/3") == 0  # a third done before: Ray runs only the others
    capsys.readouterr()
    assert _cli(*args, "--ray") == 0
    out = capsys.readouterr().out
    assert "cache            miss (built)" in out
    one = prepare_dataset(_config(corpus, tokenizer_dir, tmp_path / "one"))
    entry = Path(one.cache_path.replace(str(tmp_path / "one"), str(tmp_path / "ray")))
    _same_entries(Path(one.cache_path), entry)
