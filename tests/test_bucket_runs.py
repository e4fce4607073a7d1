"""Runs whose inputs and outputs live in a bucket (issue 23): the trainers against the S3 server (moto) on
127.0.0.1 that tests/conftest.py starts once per session. `pytest -k bucket` selects these tests.

Covered: a corpus (a folder with a .gz part and a jsonl part), a tokenizer and a pretrained model read
from s3:// give the local run's losses bit for bit in both trainers, and run.json's `inputs` record the
objects by size + ETag (a rewritten object is a changed input; nothing is re-read to tell); a bucket
without credentials or that does not exist stops in one line, exit 2, before any set-up.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os

import pytest

from wwm import fs
from wwm.config import load_config

# A 1-layer BERT of width 16 on blocks of 32: each run is a few seconds.
TINY = ["data.max_seq_len=32", "tokenizer.word_policy=tokenizer", "model.hidden_size=16",
        "model.num_hidden_layers=1", "model.num_attention_heads=2", "model.intermediate_size=32",
        "model.max_position_embeddings=32", "model.hidden_dropout_prob=0.0",
        "model.attention_probs_dropout_prob=0.0", "train.global_batch_size=8", "train.max_steps=3",
        "train.log_every_steps=1", "train.dtype=float32", "eval.every_steps=1000", "checkpoint.every_steps=3",
        "checkpoint.export_hf_at_end=false", "logging.progress_bar=false", "data.validation_fraction=0",
        "data.num_proc=1", "seed=0"]  # fmt: skip


def _losses(output_dir: str) -> list[tuple[int, float]]:
    with open(os.path.join(output_dir, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r and "step" in r]


@contextlib.contextmanager
def _compile_cache(framework: str, folder):
    """JAX: the second run loads the first one's compiled step from a persistent cache (half the time)."""
    if framework != "jax":
        yield
        return
    import jax

    values = {"jax_compilation_cache_dir": str(folder), "jax_persistent_cache_min_compile_time_secs": 0.0,
              "jax_persistent_cache_min_entry_size_bytes": 0}  # fmt: skip
    old = {key: getattr(jax.config, key) for key in values}
    try:
        for key, value in values.items():
            jax.config.update(key, value)
        yield
    finally:
        for key, value in old.items():
            jax.config.update(key, value)


@pytest.fixture(scope="module")
def corpus_parts(training_texts) -> dict[str, bytes]:
    """A corpus of three files (plain text, gzip, JSON lines) under one folder."""
    lines = [line for text in training_texts for line in text.splitlines() if line.strip()][:240]
    return {
        "a.txt": "\n".join(lines[:80]).encode() + b"\n",
        "b.txt.gz": gzip.compress("\n".join(lines[80:160]).encode() + b"\n", mtime=0),
        "sub/c.jsonl": "".join(json.dumps({"text": t}) + "\n" for t in lines[160:]).encode(),
    }


def _place(parts: dict[str, bytes], root: str) -> None:
    for relative, data in parts.items():
        fs.write_bytes(fs.join(root, relative), data)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_bucket_run_from_s3_inputs_into_s3_resumes_on_a_clean_machine_as_the_local_run(
    framework, s3_bucket, corpus_parts, wordpiece_tokenizer, tmp_path, monkeypatch
):
    """Items 2-5 and 7 in one run of each trainer against the S3 server:

    * inputs: data.train_files (a folder: text, .gz, jsonl), tokenizer.path and model.pretrained in s3://
      (the corpus streamed through wwm.fs, tokenizer and model as local copies); run.json's `inputs`
      record the objects by size and ETag;
    * output_dir in s3://: the run writes a local staging folder; each checkpoint is mirrored with its
      commit marker; run.json (naming the bucket), config.yaml and metrics.jsonl reach the bucket; the lease
      is gone after the run;
    * a clean machine (the staging folder and the local copies deleted): the same command pulls the newest
      complete checkpoint and continues. Steps 1-6 equal a local 6-step run from local files bit for bit
      (constant learning rate, so that the longer second command does not change the schedule);
    * torch: the bucket's newest checkpoint made unreadable: a clean machine falls back to the one before
      it, trains steps 5-6 again to the same losses, and the unreadable copy ends in the bucket's
      corrupt-checkpoints/ (never deleted);
    * a second run into the folder while another holds its lease: one line naming the holder.
    """
    import shutil

    import torch
    import transformers

    from wwm.errors import WWMError
    from wwm.fs import mirror as mirrors
    from wwm.locks import lock_for

    if framework == "jax":
        from wwm_jax.train import run
    else:
        from wwm_torch.train import run

    monkeypatch.setenv("WWM_LOCAL_DIR", str(tmp_path / "host"))
    local = tmp_path / "local"
    _place(corpus_parts, f"file://{local}/corpus")
    wordpiece_tokenizer.save_pretrained(local / "tokenizer")
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=len(wordpiece_tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32, pad_token_id=wordpiece_tokenizer.pad_token_id))  # fmt: skip
    model.save_pretrained(local / "pretrained")
    inputs = f"{s3_bucket}/inputs"
    _place(corpus_parts, f"{inputs}/corpus")
    for name in ("tokenizer", "pretrained"):
        fs.upload_tree(str(local / name), f"{inputs}/{name}")

    def config(where: str, out: str, steps: int, cache: str):
        return load_config(None, [*TINY, f"train.framework={framework}", "data.source=files",
                                  f"data.train_files=[{where}/corpus]", f"tokenizer.path={where}/tokenizer",
                                  f"model.pretrained={where}/pretrained", f"data.cache_dir={tmp_path / cache}",
                                  "optim.schedule=constant", "optim.warmup_steps=0", "checkpoint.every_steps=2",
                                  "checkpoint.keep=2", f"output_dir={out}", f"train.max_steps={steps}"])  # fmt: skip

    url = f"{s3_bucket}/runs/a"
    with _compile_cache(framework, tmp_path / "xla"):
        assert run(config(str(local), str(local / "run"), 6, "cache-local")) == 0
        expected = _losses(str(local / "run"))
        assert [s for s, _ in expected] == [1, 2, 3, 4, 5, 6]

        assert run(config(inputs, url, 4, "cache-s3")) == 0
        listing = fs.tree(url)
        assert {"run.json", "config.yaml", "metrics.jsonl"} <= set(listing), sorted(listing)
        first = "checkpoint-4" if framework == "torch" else "4"
        assert mirrors.remote_complete(f"{url}/checkpoints/{first}")
        assert not any(n.startswith("run.lock") for n in listing)  # the lease is released at the end
        record = json.loads(fs.read_text(f"{url}/run.json"))
        assert record["steps"] == 4 and f"output_dir: {url}" in fs.read_text(f"{url}/config.yaml")
        files = record["inputs"]["files"]["train"]
        assert [e[0] for e in files] == [f"{inputs}/corpus/{p}" for p in ("a.txt", "b.txt.gz", "sub/c.jsonl")]
        for (where, size, version, digest), data in zip(files, corpus_parts.values(), strict=True):
            assert size == len(data) and version.startswith("etag:") and digest == version, where

        shutil.rmtree(tmp_path / "host")  # a clean machine: nothing of the run or its inputs on this disk
        shutil.rmtree(tmp_path / "cache-s3")
        assert run(config(inputs, url, 6, "cache-s3")) == 0
    record = json.loads(fs.read_text(f"{url}/run.json"))
    assert [e["event"] for e in record["history"]] == ["started", "resumed"] and record["steps"] == 6
    metrics = [json.loads(line) for line in fs.read_text(f"{url}/metrics.jsonl").splitlines() if line.strip()]
    assert [(r["step"], r["loss"]) for r in metrics if "loss" in r] == expected  # bit for bit
    names = {"jax": ["4", "6"], "torch": ["checkpoint-4", "checkpoint-6"]}[framework]
    assert sorted(n for n in fs.listdir(f"{url}/checkpoints") if not n.startswith(".")) == names

    if framework == "torch":  # the bucket's newest copy unreadable (its sizes intact): the one before it
        weights = f"{url}/checkpoints/checkpoint-6/model.safetensors"
        garbage = os.urandom(fs.size(weights))
        fs.write_bytes(weights, garbage)
        shutil.rmtree(tmp_path / "host")
        assert run(config(inputs, url, 6, "cache-s3")) == 0
        history = json.loads(fs.read_text(f"{url}/run.json"))["history"]
        assert [e["event"] for e in history] == ["started", "resumed", "resumed"]
        metrics = [json.loads(x) for x in fs.read_text(f"{url}/metrics.jsonl").splitlines() if x.strip()]
        assert [(r["step"], r["loss"]) for r in metrics if "loss" in r] == expected  # 5-6 again, the same
        aside = fs.listdir(f"{url}/corrupt-checkpoints")
        assert len(aside) == 1 and aside[0].startswith("checkpoint-6-"), aside
        assert fs.read_bytes(f"{url}/corrupt-checkpoints/{aside[0]}/model.safetensors") == garbage
        assert fs.read_bytes(weights) != garbage  # step 6 saved again and uploaded whole (same sizes)
        assert mirrors.remote_complete(f"{url}/checkpoints/checkpoint-6")

    holder = lock_for(url, "run.lock", f"output_dir {url}", command="another wwm train")
    holder.acquire()
    try:
        with pytest.raises(WWMError) as err:
            run(config(inputs, url, 8, "cache-s3"))
        assert "\n" not in str(err.value) and "another wwm train" in str(err.value)
    finally:
        holder.release()


def test_bucket_rewritten_object_is_a_changed_input_for_resume_and_cache(s3_bucket, tmp_path, monkeypatch):
    """Item 5: the resume check and the data cache key see a bucket object by size + ETag (not read
    again); a rewritten object of the same size is a changed input, an untouched one is not."""
    from wwm import rundir
    from wwm.data.sources import source_fingerprint

    monkeypatch.setenv("WWM_LOCAL_DIR", str(tmp_path / "host"))
    url = f"{s3_bucket}/corpus/part.txt"
    fs.write_text(url, "one two three\nfour five six\n")
    config = load_config(None, [f"output_dir={tmp_path / 'out'}", "data.source=files",
                                f"data.train_files=[{s3_bucket}/corpus]"])  # fmt: skip
    changes, entries = rundir.input_changes(None, config)
    assert changes == {} and entries["train"][0][:2] == [url, 28]
    record = {"inputs": {"files": entries}}
    key = source_fingerprint(config.data)
    assert rundir.input_changes(record, config)[0] == {}
    assert source_fingerprint(config.data) == key

    fs.write_text(url, "one two three\nfour five SIX\n")  # same size, other bytes
    changes, _ = rundir.input_changes(record, config)
    assert list(changes) == [f"content of {url}"]
    old, new = changes[f"content of {url}"]
    assert old.startswith("etag:") and new.startswith("etag:") and old != new
    assert source_fingerprint(config.data) != key


def _no_credentials_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k == "AWS_ENDPOINT_URL"}
    env.update(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), WWM_STORAGE_RETRIES="1")  # fmt: skip
    return env


@pytest.mark.slow
def test_bucket_no_credentials_or_no_bucket_stop_wwm_train_in_one_line(s3_bucket, tmp_path, capsys):
    """Item 6: `wwm train` with a corpus in a bucket it cannot read stops in one line naming the URL, what
    failed and the fix, exit 2, before any set-up (no output_dir, no data cache, the trainer not even
    imported)."""
    import subprocess
    import sys

    from wwm_cli import main

    fs.write_text(f"{s3_bucket}/corpus/a.txt", "one two three\n")
    out, cache = tmp_path / "out", tmp_path / "cache"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"output_dir: {out}\ndata: {{source: files, train_files: [{s3_bucket}/corpus], cache_dir: {cache}}}\n"
                   "tokenizer: {train: {kind: wordpiece, vocab_size: 300}}\ntrain: {framework: jax}\n")  # fmt: skip
    code = "import sys; from wwm_cli import main; s = main(sys.argv[1:]); assert 'jax' not in sys.modules; sys.exit(s)"
    proc = subprocess.run([sys.executable, "-c", code, "train", "--config", str(cfg)], env=_no_credentials_env(tmp_path),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip()
    assert "\n" not in line and f"{s3_bucket}/corpus" in line and "data.train_files" in line, line
    assert "no usable credentials" in line and "AWS_ACCESS_KEY_ID" in line, line

    missing = "s3://wwm-no-such-bucket/corpus"
    for override in (f"data.train_files=[{missing}]", f"model.pretrained={missing}", f"output_dir={missing}"):
        assert main(["train", "--config", str(cfg), override]) == 2, override
        line = capsys.readouterr().err.strip()
        assert "\n" not in line and "wwm-no-such-bucket" in line and "does not exist" in line, line
        assert "aws s3 mb s3://wwm-no-such-bucket" in line, line
    assert main(["train", "--config", str(cfg), f"data.cache_dir={missing.rsplit('/', 1)[0]}/cache"]) == 2
    line = capsys.readouterr().err.strip()  # a bucket cache_dir is checked like output_dir (issue 24)
    assert "\n" not in line and "data.cache_dir" in line and "wwm-no-such-bucket" in line, line
    assert not out.exists() and not cache.exists()


@pytest.mark.slow
def test_bucket_output_dir_refusals_and_overwrite_delete_only_the_runs_files(
    s3_bucket, tmp_path, monkeypatch
):
    """Item 4 at the claim (no training): a trained run in a bucket folder refuses a changed setting in one
    line; --overwrite deletes the bucket's recorded artifacts and nothing else (a user's file stays)
    (--restart-from-scratch: test_bucket_restart_from_scratch_moves_the_attempt_aside_in_the_bucket)."""
    from wwm.errors import WWMError
    from wwm.preflight import start_run

    monkeypatch.setenv("WWM_LOCAL_DIR", str(tmp_path / "host"))
    url = f"{s3_bucket}/runs/b"

    def config(*extra):
        return load_config(None, [f"output_dir={url}", "train.framework=torch", f"data.cache_dir={tmp_path}/c",
                                  "tokenizer.train.vocab_size=300", *extra])  # fmt: skip

    with start_run(config(), "torch") as first:
        assert first.status == "new" and first.path != url
    assert {"run.json", "config.yaml"} <= set(fs.listdir(url))
    fs.write_text(f"{url}/metrics.jsonl", '{"step": 1, "loss": 5.0}\n')  # what a run that trained leaves
    fs.write_text(f"{url}/notes.txt", "the user's own file\n")
    with pytest.raises(WWMError) as err:
        start_run(config("seed=7"), "torch")
    assert "\n" not in str(err.value) and "seed" in str(err.value) and url in str(err.value)
    with start_run(config("seed=7"), "torch", overwrite=True) as again:
        assert again.status == "overwritten"
    assert (
        not fs.exists(f"{url}/metrics.jsonl") and fs.read_text(f"{url}/notes.txt") == "the user's own file\n"
    )
    assert json.loads(fs.read_text(f"{url}/run.json"))["history"][-1]["event"] == "started"
    assert not fs.exists(f"{url}/run.lock")

    fs.write_text(f"{url}/run.json", "{not json")  # an unreadable record: refused in one line, kept
    with pytest.raises(WWMError, match="unreadable"):
        start_run(config("seed=7"), "torch")
    assert fs.read_text(f"{url}/run.json") == "{not json"
    other = f"{s3_bucket}/runs/theirs"  # a folder of the user's files without a run record: refused
    fs.write_text(f"{other}/data.csv", "a,b\n")
    with pytest.raises(WWMError, match="holds no wwm run record"):
        start_run(
            load_config(None, [f"output_dir={other}", f"data.cache_dir={tmp_path}/c"]),
            "torch",
            overwrite=True,
        )
    assert fs.listdir(other) == ["data.csv"]


@pytest.mark.slow
def test_bucket_fill_mask_model_from_s3_equals_the_local_directory(s3_bucket, wordpiece_tokenizer, tmp_path,
                                                                  monkeypatch, capsys):  # fmt: skip
    """`wwm fill-mask --model s3://...` (an HF directory, or a run's hf/ export) gives the local
    directory's numbers; a bucket folder with neither is one line, exit 2."""
    import torch
    import transformers

    from wwm_cli.main import main

    monkeypatch.setenv("WWM_LOCAL_DIR", str(tmp_path / "host"))
    local = str(tmp_path / "model")
    torch.manual_seed(0)
    transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=len(wordpiece_tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32)).save_pretrained(local)  # fmt: skip
    wordpiece_tokenizer.save_pretrained(local)
    fs.upload_tree(local, f"{s3_bucket}/model")
    fs.upload_tree(local, f"{s3_bucket}/run/hf")
    fs.write_text(f"{s3_bucket}/run/run.json", "{}")
    text = f"the {wordpiece_tokenizer.mask_token} of the function is returned."
    results = []
    for where in (local, f"{s3_bucket}/model", f"{s3_bucket}/run"):
        capsys.readouterr()
        assert main(["fill-mask", "--model", where, "--framework", "torch", "--json", text]) == 0
        results.append(json.loads(capsys.readouterr().out)["texts"])
    assert results[1] == results[0] and results[2] == results[0]
    assert main(["fill-mask", "--model", f"{s3_bucket}/inputs", "--json", text]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and f"{s3_bucket}/inputs" in line and "config.json" in line, line


def test_bucket_tokenizer_path_loads_through_a_local_copy(
    s3_bucket, wordpiece_tokenizer, tmp_path, monkeypatch
):
    """`load_tokenizer` (what `wwm prepare`, the trainers and `wwm eval` use for tokenizer.path) reads a
    bucket folder through `wwm.fs.fetch`: the same vocabulary and special tokens as the local folder."""
    from wwm.data.tokenizer import load_tokenizer

    monkeypatch.setenv("WWM_LOCAL_DIR", str(tmp_path / "host"))
    wordpiece_tokenizer.save_pretrained(tmp_path / "tokenizer")
    fs.upload_tree(str(tmp_path / "tokenizer"), f"{s3_bucket}/tokenizer")
    loaded = load_tokenizer(f"{s3_bucket}/tokenizer")
    assert loaded.get_vocab() == wordpiece_tokenizer.get_vocab()
    assert (
        loaded.mask_token == wordpiece_tokenizer.mask_token
        and loaded.pad_token_id == wordpiece_tokenizer.pad_token_id
    )


def test_bucket_checkpoint_upload_failing_for_good_stops_the_run_in_one_line(
    s3_server, tmp_path, monkeypatch
):
    """Item 6, mid-run: the bucket disappears under a run (a real failure of the S3 server: NoSuchBucket is
    not retried). The trainers' per-step check (`RunDir.lock_lost` / `check_lock`) then stops the run with
    one line that says the local checkpoints are intact; closing the run does not raise it twice."""
    from wwm.errors import WWMError
    from wwm.preflight import start_run

    monkeypatch.setenv("WWM_LOCAL_DIR", str(tmp_path / "host"))
    monkeypatch.setenv("WWM_STORAGE_RETRIES", "1")
    from conftest import _new_bucket

    bucket = _new_bucket("s3")
    url = f"{bucket}/run"
    config = load_config(None, [f"output_dir={url}", "train.framework=torch", f"data.cache_dir={tmp_path}/c",
                                "tokenizer.train.vocab_size=300"])  # fmt: skip
    run_dir = start_run(config, "torch")
    assert not run_dir.lock_lost()
    os.makedirs(os.path.join(run_dir.path, "checkpoints", "checkpoint-2"))
    with open(os.path.join(run_dir.path, "checkpoints", "checkpoint-2", "model.safetensors"), "wb") as f:
        f.write(b"weights")
    filesys, _ = fs.filesystem(bucket)
    fs.remove(f"{bucket}/run", recursive=True)
    filesys.rmdir(bucket.removeprefix("s3://"))
    run_dir.checkpointed(2)
    assert run_dir.store.mirror.wait(30)
    assert run_dir.lock_lost()
    with pytest.raises(WWMError) as err:
        run_dir.check_lock()
    line = str(err.value)
    assert "\n" not in line and "checkpoint-2" in line and "does not exist" in line, line
    assert "intact" in line and run_dir.path in line, line
    run_dir.close()  # said once: no second error on the way out
    assert os.path.isfile(os.path.join(run_dir.path, "checkpoints", "checkpoint-2", "model.safetensors"))


@pytest.mark.slow
def test_bucket_output_dir_trained_tokenizer_goes_to_the_staging_folder(
    training_texts, tmp_path, monkeypatch
):
    """`wwm prepare` with tokenizer.train and a bucket output_dir trains the tokenizer into the run's
    staging folder on this host (where the trainer's run finds it and uploads it at the end), never into
    a local folder named after the URL."""
    from wwm.data.tokenizer import prepare_tokenizer

    monkeypatch.setenv("WWM_LOCAL_DIR", str(tmp_path / "host"))
    monkeypatch.chdir(tmp_path)
    url = "s3://some-bucket/runs/t"
    config = load_config(None, [f"output_dir={url}", "tokenizer.train.vocab_size=300"])
    tokenizer, where = prepare_tokenizer(config, lambda: training_texts[:200], {"documents": "test"})
    assert where == os.path.join(fs.staging_dir(url), "tokenizer") and len(tokenizer) == 300
    assert os.path.isfile(os.path.join(where, "tokenizer.json")) and not os.path.exists(tmp_path / "s3:")


def test_bucket_restart_from_scratch_moves_the_attempt_aside_in_the_bucket(tmp_path, monkeypatch):
    """`--restart-from-scratch` on a bucket output_dir does what it does in a local folder
    (docs/run_directories.md): the earlier attempt's metrics.jsonl, checkpoints/, tensorboard/ and hf/ go to
    `previous/<time>/` in the bucket (the checkpoints still complete there, with their markers; one saved on
    this host and never uploaded goes up too), corrupt-checkpoints/, the tokenizer, run.json and a user's
    file stay, run.json's history records the restart; the staging folder keeps nothing of the attempt, and
    another host's staging folder of the earlier attempt is emptied (its checkpoint never resumed)."""
    import uuid

    from wwm.errors import WWMError
    from wwm.fs import mirror as mirrors
    from wwm.preflight import start_run

    url = f"memory://wwm-test-{uuid.uuid4().hex[:12]}/runs/r"

    def config():
        return load_config(None, [f"output_dir={url}", "train.framework=jax", f"data.cache_dir={tmp_path}/c",
                                  "tokenizer.train.vocab_size=300", "checkpoint.every_steps=2"])  # fmt: skip

    def checkpoint(where: str, step: int) -> str:
        folder = os.path.join(where, str(step))
        os.makedirs(os.path.join(folder, "state"))
        with open(os.path.join(folder, "state", "data"), "wb") as f:
            f.write(os.urandom(64 + step))
        return folder

    hosts = {name: str(tmp_path / name) for name in ("host1", "host2")}
    monkeypatch.setenv("WWM_LOCAL_DIR", hosts["host1"])
    with start_run(config(), "jax") as first:  # an attempt that trained 6 steps, uploaded up to step 4
        staging = first.path
        for step in (2, 4):
            mirrors.upload_folder(checkpoint(str(tmp_path / "saved"), step), f"{url}/checkpoints/{step}")
    checkpoint(os.path.join(staging, "checkpoints"), 6)  # saved here, killed before its upload
    metrics = "".join(json.dumps({"step": s, "loss": 5.0 - s / 10}) + "\n" for s in range(1, 7))
    with open(os.path.join(staging, "metrics.jsonl"), "w") as f:
        f.write(metrics)
    fs.write_text(f"{url}/metrics.jsonl", metrics[: metrics.index('{"step": 5')])  # synced up to step 4
    fs.write_text(f"{url}/tensorboard/events.out", "events")
    fs.write_text(f"{url}/hf/config.json", "{}")
    fs.write_text(f"{url}/corrupt-checkpoints/2-x/state/data", "unreadable")
    fs.write_text(f"{url}/notes.txt", "the user's own file\n")
    record = json.loads(fs.read_text(f"{url}/run.json"))
    fs.write_text(f"{url}/run.json", json.dumps(dict(record, steps=4)))
    monkeypatch.setenv("WWM_LOCAL_DIR", hosts["host2"])  # another host that resumed the attempt once
    with start_run(config(), "jax") as other:
        assert other.status == "resume"
        assert sorted(os.listdir(os.path.join(other.path, "checkpoints"))) == ["2", "4"]

    with pytest.raises(WWMError, match="exclude each other"):
        start_run(config(), "jax", restart=True, overwrite=True)
    monkeypatch.setenv("WWM_LOCAL_DIR", hosts["host1"])
    with start_run(config(), "jax", restart=True) as again:
        assert again.status == "restarted" and not again.resume and again.path == staging
    event = json.loads(fs.read_text(f"{url}/run.json"))["history"][-1]
    assert event["event"] == "restarted from scratch" and event["previous_steps"] == 6, event
    moved = f"{url}/{event['moved_to']}"
    assert event["moved_to"].startswith("previous/")
    listing = {relative.split("/")[0] for relative in fs.tree(url)}  # files (memory:// keeps empty folders)
    assert listing == {"run.json", "config.yaml", "corrupt-checkpoints", "notes.txt", "previous"}, listing
    assert fs.read_text(f"{moved}/metrics.jsonl") == metrics  # the longer copy (this host's)
    assert fs.read_text(f"{moved}/tensorboard/events.out") == "events"
    assert fs.exists(f"{moved}/hf/config.json")
    assert sorted(fs.listdir(f"{moved}/checkpoints")) == ["2", "4", "6"]
    assert all(mirrors.remote_complete(f"{moved}/checkpoints/{s}") for s in ("2", "4", "6"))
    assert not fs.exists(f"{url}/run.lock") and set(os.listdir(staging)) <= {".wwm-staging.json", "run.json",
                                                                              "config.yaml"}  # fmt: skip

    monkeypatch.setenv("WWM_LOCAL_DIR", hosts["host2"])  # its staging folder holds the old attempt's step 4
    with start_run(config(), "jax") as later:
        assert later.status == "new" and not os.path.exists(os.path.join(later.path, "checkpoints"))
    history = [e["event"] for e in json.loads(fs.read_text(f"{url}/run.json"))["history"]]
    assert history == ["started", "resumed", "restarted from scratch", "started"], history


@pytest.mark.slow
def test_bucket_jax_orbax_writes_gs_directly_and_resumes_from_committed_steps(
    gcs_bucket, corpus_parts, wordpiece_tokenizer, tmp_path, monkeypatch
):
    """JAX with a gs:// output_dir (checkpoint.gcs_direct, the default) against the GCS emulator: orbax
    writes each checkpoint into the bucket itself (commit_success.txt in every step) and the lead commits it
    with wwm's marker; nothing of it is in the staging folder. checkpoint.keep applies by the marker. A step
    that orbax finished but wwm never committed (killed between the two) does not count: a clean machine
    resumes from the committed step before it, removes the uncommitted one, and steps 5-6 trained again
    equal the uninterrupted run's bit for bit (the mirror path's resume equals a local run:
    test_bucket_run_from_s3_inputs_into_s3_resumes_on_a_clean_machine_as_the_local_run)."""
    import shutil

    from wwm.fs import mirror as mirrors
    from wwm_jax.train import run

    monkeypatch.setenv("WWM_LOCAL_DIR", str(tmp_path / "host"))
    local = tmp_path / "local"
    _place(corpus_parts, f"file://{local}/corpus")
    wordpiece_tokenizer.save_pretrained(local / "tokenizer")

    def config(out: str, steps: int):
        return load_config(None, [*TINY, "train.framework=jax", "data.source=files",
                                  f"data.train_files=[{local}/corpus]", f"tokenizer.path={local}/tokenizer",
                                  f"data.cache_dir={tmp_path / 'cache'}", "optim.schedule=constant",
                                  "optim.warmup_steps=0", "checkpoint.every_steps=2", "checkpoint.keep=2",
                                  f"output_dir={out}", f"train.max_steps={steps}"])  # fmt: skip

    url = f"{gcs_bucket}/runs/direct"
    root = f"{url}/checkpoints"
    with _compile_cache("jax", tmp_path / "xla"):
        assert run(config(url, 6)) == 0  # uninterrupted
        steps = sorted(n for n in fs.listdir(root) if n.isdigit())
        assert steps == ["4", "6"], steps  # keep=2, by wwm's rule
        for step in steps:
            names = set(fs.listdir(f"{root}/{step}"))
            assert {"commit_success.txt", "state", "meta", ".wwm-commit-0-of-1.json"} <= names, names
            assert mirrors.remote_complete(f"{root}/{step}")
        staging = fs.staging_dir(url)
        assert os.path.isdir(staging) and not os.path.exists(os.path.join(staging, "checkpoints"))
        expected = [(r["step"], r["loss"]) for r in _bucket_metrics(url)]
        assert [s for s, _ in expected] == [1, 2, 3, 4, 5, 6]

        fs.remove(f"{root}/6/.wwm-commit-0-of-1.json")  # orbax finished step 6, wwm never committed it
        shutil.rmtree(tmp_path / "host")  # a clean machine
        assert run(config(url, 6)) == 0
    record = json.loads(fs.read_text(f"{url}/run.json"))
    assert [e["event"] for e in record["history"]] == ["started", "resumed"] and record["steps"] == 6
    metrics = _bucket_metrics(url)
    assert [r["step"] for r in metrics] == [1, 2, 3, 4, 5, 6]  # cut back to step 4, then 5-6 again
    assert [(r["step"], r["loss"]) for r in metrics] == expected  # bit for bit
    assert sorted(n for n in fs.listdir(root) if n.isdigit()) == ["4", "6"]
    assert mirrors.remote_complete(f"{root}/6")  # saved again and committed


def _bucket_metrics(url: str) -> list[dict]:
    records = [json.loads(line) for line in fs.read_text(f"{url}/metrics.jsonl").splitlines() if line.strip()]
    return [r for r in records if "loss" in r]
