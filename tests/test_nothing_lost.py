"""Nothing lost, round two (issue 21): one live run per folder, --overwrite that deletes only wwm's files,
no silent restart, inputs checked by content, a tokenizer that is not the pretrained model's, read-only
and special paths in one line.

Each scenario starts from what a hostile user did (two runs at once, a retrained tokenizer, a folder of
their own files...) and checks that the refusal is one line, exit status 2, and that no file changed.
The full-disk scenarios (real trainers on a small tmpfs) are in tests/test_disk_full.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wwm import rundir
from wwm.config import load_config
from wwm.errors import WWMError
from wwm.preflight import start_run
from wwm_cli import main

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "configs" / "tiny.yaml")
# A run of the tiny config that is quick even where nothing refuses it (today's main trains it).
QUICK = ["data.max_documents=300", "tokenizer.train.vocab_size=300", "train.max_steps=1",
         "train.global_batch_size=8", "logging.progress_bar=false", "checkpoint.export_hf_at_end=false"]  # fmt: skip


def _config(out, *overrides, framework="jax"):
    return load_config(None, [f"output_dir={out}", f"train.framework={framework}", *overrides])


def _claim(config, framework="jax", **kwargs):
    """`rundir.claim`, its lock released at once (these tests claim one folder several times)."""
    decision = rundir.claim(config, framework, **kwargs)
    getattr(decision, "close", lambda: None)()  # (a wwm before the lock had no close: the old-main check)
    return decision


def _snapshot(folder) -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def _trained(out, steps=3, checkpoint=True):
    """What a run that trained leaves: metrics records, a checkpoint, run.json's progress."""
    with open(os.path.join(out, "metrics.jsonl"), "a", encoding="utf-8") as f:
        for step in range(1, steps + 1):
            f.write(json.dumps({"step": step, "loss": 5.0}) + "\n")
    if checkpoint:
        os.makedirs(os.path.join(out, "checkpoints", str(steps)), exist_ok=True)
        record = json.loads(Path(out, "run.json").read_text())
        Path(out, "run.json").write_text(json.dumps({**record, "steps": steps}))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------------------------------------
# One live run per folder
# --------------------------------------------------------------------------------------------------

HOLDER = """
import sys
from wwm.config import load_config
from wwm.rundir import claim
run = claim(load_config(sys.argv[1], sys.argv[2:]), "jax")
print("holding", flush=True)
sys.stdin.readline()
run.close()
"""


def test_two_concurrent_runs_one_refused_naming_the_live_owner_the_others_files_untouched(tmp_path, capsys):
    """Issue 21 item 1: a second `wwm train` into a folder that a live run holds exits 2 in one line naming
    that run's process, before any work, and changes none of its files; once the first is gone, the
    folder is free again."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, TINY, f"output_dir={out}", "seed=0", *QUICK],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "holding"
        (out / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')  # the live run is training
        before = _snapshot(out)
        status = main(["train", "--config", TINY, f"output_dir={out}", "seed=0", *QUICK])  # the same command
        err = _one_line_error(capsys)
        assert status == 2 and "is in use by a live run" in err and f"pid {holder.pid} on" in err
        assert main(["train", "--config", TINY, f"output_dir={out}", "seed=1", "--overwrite", *QUICK]) == 2
        assert "is in use by a live run" in _one_line_error(capsys)
        assert _snapshot(out) == before
    finally:
        holder.communicate("\n", timeout=60)
    assert not (out / rundir.LOCK_FILE).exists()  # released on exit


def test_a_dead_owners_lock_is_taken_over_a_live_one_never(tmp_path):
    from wwm import locks

    out = tmp_path / "run"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = {**locks.owner_record(run_id="x", command="killed -9"), "pid": int(gone.stdout)}
    out.mkdir()
    (out / rundir.LOCK_FILE).write_text(json.dumps(dead))
    decision = rundir.claim(_config(out), "jax")
    try:
        assert any("took the lock of a run that is gone over" in m for m in decision.messages)
        assert json.loads((out / rundir.LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(locks.LockHeld, match=f"pid {os.getpid()} on"):  # held by a live process: us
            rundir.claim(_config(out), "jax")
    finally:
        decision.close()
    assert not (out / rundir.LOCK_FILE).exists()


def test_a_lock_of_another_machine_is_taken_only_after_its_lease_runs_out(tmp_path):
    """Another machine's pid means nothing here: its owner refreshes the lock every heartbeat; watched for
    the lease by our own clock, a refreshed lock is live (refused), a silent one abandoned (taken)."""
    from wwm import locks

    path = tmp_path / "run.lock"
    far = {"pid": 1, "host": "another-host", "boot_id": "b", "pid_ns": "p", "run_id": "far", "started": 0}
    path.write_text(json.dumps(far))

    def refreshing(seconds):  # the owner on the other machine touches its lock meanwhile
        os.utime(path, (os.path.getmtime(path) + 1, os.path.getmtime(path) + 1))

    lock = locks.LocalLock(
        str(path), "output_dir x", heartbeat_s=3, lease_s=9, wait=refreshing, say=lambda t: None
    )
    with pytest.raises(locks.LockHeld, match=r"pid 1 on another-host .*refreshed"):
        lock.acquire()
    lock = locks.LocalLock(
        str(path), "output_dir x", heartbeat_s=3, lease_s=9, wait=lambda s: None, say=lambda t: None
    )
    lock.acquire()
    try:
        assert "another-host" in lock.took_over and json.loads(path.read_text())["pid"] == os.getpid()
        assert lock.refresh() and not lock.lost
        path.write_text(json.dumps(far))  # somebody took it over from us: we must stop writing
        assert not lock.refresh() and lock.lost
    finally:
        lock.release()
    assert json.loads(path.read_text())["run_id"] == "far"  # not ours any more: left alone


def test_several_processes_lock_once_and_all_get_the_leads_decision(tmp_path):
    """Multi-host JAX / torchrun: only the lead takes the lock and reads the folder; `share` (a broadcast)
    hands its decision, or its one-line refusal, to the others."""
    out = tmp_path / "run"
    box = {}

    def lead_share(value):
        box["value"] = value
        return value

    lead = rundir.claim(_config(out), "jax", lead=True, share=lead_share)
    try:
        other = rundir.claim(_config(out), "jax", lead=False, share=lambda value: box["value"])
        assert other.status == lead.status == "new" and other.lock is None and not other.lead
        with pytest.raises(WWMError, match="in use by a live run"):  # a second job: its lead is refused...
            rundir.claim(_config(out), "jax", lead=True, share=lead_share)
        with pytest.raises(WWMError, match="in use by a live run"):  # ...and so is every one of its processes
            rundir.claim(_config(out), "jax", lead=False, share=lambda value: box["value"])
    finally:
        lead.close()


# --------------------------------------------------------------------------------------------------
# --overwrite deletes only what wwm wrote
# --------------------------------------------------------------------------------------------------


def test_overwrite_on_a_folder_of_user_files_is_refused_and_deletes_nothing(tmp_path, capsys):
    """Issue 21 item 2: --overwrite on a folder that holds no run deleted the user's config.yaml,
    tokenizer/ and hf/ (a model.safetensors was lost). A folder without a run record is refused even
    with --overwrite; with one, only what run.json lists goes."""
    out = tmp_path / "mine"
    (out / "hf").mkdir(parents=True)
    (out / "hf" / "model.safetensors").write_bytes(b"weights that took a week")
    (out / "tokenizer").mkdir()
    (out / "tokenizer" / "vocab.txt").write_text("[PAD]\n")
    (out / "config.yaml").write_text("my: own config\n")
    before = _snapshot(out)
    assert main(["train", "--config", TINY, f"output_dir={out}", "--overwrite", *QUICK]) == 2
    assert "holds no wwm run record" in _one_line_error(capsys)
    with pytest.raises(WWMError, match="holds no wwm run record"):
        _claim(_config(out), overwrite=True)
    assert _snapshot(out) == before
    # A run folder: --overwrite removes what the run recorded (here without hf/: export off), nothing else.
    run = tmp_path / "run"
    _claim(_config(run, "checkpoint.export_hf_at_end=false", "logging.report_to=[]"))
    assert "hf" not in json.loads((run / "run.json").read_text())["artifacts"]
    _trained(run)
    (run / "hf").mkdir()
    (run / "hf" / "model.safetensors").write_bytes(b"the user's own export")
    (run / "notes.txt").write_text("mine")
    decision = _claim(_config(run), overwrite=True)
    assert decision.status == "overwritten"
    assert sorted(os.listdir(run)) == ["config.yaml", "hf", "notes.txt", "run.json"]
    assert (run / "hf" / "model.safetensors").read_bytes() == b"the user's own export"


# --------------------------------------------------------------------------------------------------
# No silent restart
# --------------------------------------------------------------------------------------------------


def test_a_run_without_its_checkpoints_refuses_on_every_attempt_and_restarts_only_when_asked(tmp_path):
    """Issue 21 item 3: the "no readable checkpoint" guard worked once (the corrupt checkpoints were moved
    aside, and the rerun trained from step 0, recorded as "resumed"); deleting checkpoints/ gave the same
    silent restart. Now every attempt refuses, until --restart-from-scratch (history kept) or --overwrite."""
    out = tmp_path / "run"
    _claim(_config(out))
    _trained(out, steps=4)
    (out / "corrupt-checkpoints").mkdir()
    os.rename(out / "checkpoints" / "4", out / "corrupt-checkpoints" / "4-20260101")  # what a resume did
    before = _snapshot(out)
    for _ in range(2):
        with pytest.raises(
            WWMError, match=r"trained 4 step\(s\) but has no checkpoint .*--restart-from-scratch"
        ):
            _claim(_config(out))
    assert _snapshot(out) == before
    other = tmp_path / "deleted"
    _claim(_config(other))
    _trained(other, steps=4)
    import shutil

    shutil.rmtree(other / "checkpoints")
    with pytest.raises(WWMError, match="has no checkpoint to resume from"):
        _claim(_config(other))
    decision = _claim(_config(out), restart=True)
    assert decision.status == "restarted" and not decision.resume
    record = json.loads((out / "run.json").read_text())
    assert [e["event"] for e in record["history"]] == ["started", "restarted from scratch"]
    assert record["history"][-1]["previous_steps"] == 4 and "steps" not in record
    moved = out / record["history"][-1]["moved_to"]
    assert (moved / "metrics.jsonl").read_text().count("\n") == 4  # the earlier attempt, kept
    assert (out / "corrupt-checkpoints").is_dir() and not (out / "metrics.jsonl").exists()
    # A run stopped before its first checkpoint had nothing to lose: it simply starts again.
    early = tmp_path / "early"
    _claim(_config(early))
    _trained(early, steps=2, checkpoint=False)
    assert _claim(_config(early)).status == "resume"


# --------------------------------------------------------------------------------------------------
# Inputs by content
# --------------------------------------------------------------------------------------------------


def test_a_tokenizer_retrained_in_place_or_an_edited_corpus_refuses_to_resume_naming_the_file(
    tmp_path, wordpiece_tokenizer, bpe_tokenizer, capsys
):
    """Issue 21 item 4: a tokenizer retrained in place resumed with only train.max_steps reported, so the
    embeddings indexed other wordpieces. run.json records the tokenizer's content hash and every corpus
    file's; a change refuses like any trajectory change, naming the file. A touched file with the same
    bytes is no change."""
    tok = tmp_path / "tok"
    wordpiece_tokenizer.save_pretrained(tok)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the first document\nthe second document\n", encoding="utf-8")
    out = tmp_path / "run"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"output_dir: {out}\ndata: {{source: files, train_files: [{corpus}], cache_dir: {tmp_path}/c, "
                   "max_seq_len: 16}\nmodel: {hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, "
                   f"intermediate_size: 64, max_position_embeddings: 16}}\ntokenizer: {{path: {tok}}}\n"
                   "train: {global_batch_size: 2, max_steps: 1}\nlogging: {progress_bar: false}\n")  # fmt: skip
    run = rundir.claim(load_config(cfg), "jax")
    from wwm.data.tokenizer import load_tokenizer, tokenizer_fingerprint

    if hasattr(run, "prepared"):  # what a trainer records once the data are prepared
        run.prepared(tokenizer_fingerprint(load_tokenizer(str(tok))), "0" * 24)
    getattr(run, "close", lambda: None)()
    _trained(out)
    os.utime(corpus)  # touched, same bytes: resumes
    assert _claim(load_config(cfg, ["train.max_steps=2000"])).status == "resume"
    bpe_tokenizer.save_pretrained(tok)  # retrained in place
    before = _snapshot(out)
    assert main(["train", "--config", str(cfg)]) == 2
    err = _one_line_error(capsys)
    assert f"content of the tokenizer {tok}: " in err and "--allow-config-change" in err
    wordpiece_tokenizer.save_pretrained(tok)
    corpus.write_text("the first document\nthe second document, edited\n", encoding="utf-8")
    with pytest.raises(WWMError, match=f"content of {corpus}: "):
        _claim(load_config(cfg))
    assert _snapshot(out) == before
    decision = _claim(load_config(cfg), allow_changes=True)
    record = json.loads((out / "run.json").read_text())
    assert f"content of {corpus}" in record["history"][-1]["changed"] and decision.status == "resume"
    ((path, size, _, digest),) = record["inputs"]["files"]["train"]
    assert (path, size) == (str(corpus), corpus.stat().st_size) and digest == rundir.file_digest(str(corpus))


# --------------------------------------------------------------------------------------------------
# A tokenizer that is not the pretrained model's
# --------------------------------------------------------------------------------------------------


def test_a_tokenizer_of_another_model_is_refused_before_any_work(
    tmp_path, bert_uncased_path, bpe_tokenizer, capsys
):
    """Issue 21 item 4: a RoBERTa BPE (pad 1) with bert-base-uncased weights (pad 0) trained in both
    frameworks without a word. The pretrained folder's own tokenizer, or else its config.json and its
    embedding rows, decide; model.extend_vocab lets a tokenizer that only adds tokens grow the model."""
    bpe = tmp_path / "bpe"
    bpe_tokenizer.save_pretrained(bpe)
    run = ["data.max_seq_len=64", "model.max_position_embeddings=64", "tokenizer.train=null",
           f"model.pretrained={bert_uncased_path}"]  # fmt: skip
    for framework in ("jax", "torch"):
        status = main(["train", "--config", TINY, "--framework", framework, f"output_dir={tmp_path / 'o'}",
                       *QUICK, *run, f"tokenizer.path={bpe}"])  # fmt: skip
        err = _one_line_error(capsys)
        assert status == 2 and "is not the tokenizer of model.pretrained" in err
    assert not (tmp_path / "o").exists()
    start_run(_config(tmp_path / "ok", *run, f"tokenizer.path={bert_uncased_path}"), "jax").close()
    bare = tmp_path / "bare"  # no tokenizer files: config.json (pad_token_id 0) and the embedding rows decide
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        os.symlink(os.path.join(bert_uncased_path, name), bare / name)
    with pytest.raises(
        WWMError, match=r"pad_token_id is 0 in the model's config.json and 1 in the tokenizer"
    ):
        start_run(
            _config(tmp_path / "o", *run[:3], f"model.pretrained={bare}", f"tokenizer.path={bpe}"), "jax"
        )
    from transformers import AutoTokenizer

    grown = AutoTokenizer.from_pretrained(bert_uncased_path)
    grown.add_tokens(["wwmnewtoken", "anotherone"])
    grown.save_pretrained(tmp_path / "grown")
    with pytest.raises(WWMError, match=r"30524 tokens but the model has 30522 .*model.extend_vocab: true"):
        start_run(_config(tmp_path / "o", *run, f"tokenizer.path={tmp_path / 'grown'}"), "jax")
    start_run(
        _config(tmp_path / "o", *run, f"tokenizer.path={tmp_path / 'grown'}", "model.extend_vocab=true"),
        "jax",
    ).close()


def test_extend_vocab_grows_the_embeddings_alike_in_both_trainers(tmp_path, wordpiece_tokenizer):
    """model.extend_vocab: both trainers grow a pretrained model's embeddings and decoder bias to the
    tokenizer, each new row the mean of the old, bit for bit the same."""
    import numpy as np
    import torch
    import transformers

    from wwm.initial_weights import extend_vocab
    from wwm_jax.train import make_model
    from wwm_torch.model import build_model

    torch.manual_seed(0)
    small = transformers.BertConfig(vocab_size=len(wordpiece_tokenizer), hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)  # fmt: skip
    model = transformers.BertForMaskedLM(small)
    with torch.no_grad():
        model.cls.predictions.bias.normal_()
    model.save_pretrained(tmp_path / "pretrained")
    config = load_config(None, [f"model.pretrained={tmp_path / 'pretrained'}", "model.extend_vocab=true",
                                "data.max_seq_len=32"])  # fmt: skip
    rows = len(wordpiece_tokenizer) + 3

    class Grown:  # the tokenizer with three tokens added: only its length matters here
        def __len__(self):
            return rows

    grown_torch = build_model(config.model, Grown(), 32)
    grown_jax = make_model(config, None, rows)
    torch_rows = grown_torch.bert.embeddings.word_embeddings.weight.detach().numpy()
    jax_rows = np.asarray(grown_jax.bert.embeddings.word_embeddings.embedding[...])
    assert torch_rows.shape == jax_rows.shape == (rows, 16)
    np.testing.assert_array_equal(torch_rows, jax_rows)
    mean = torch_rows[:-3].astype(np.float64).mean(0).astype(np.float32)
    np.testing.assert_array_equal(torch_rows[-3:], np.stack([mean] * 3))
    bias = grown_torch.cls.predictions.bias.detach().numpy()
    np.testing.assert_array_equal(bias, np.asarray(grown_jax.cls.predictions.bias[...]))
    assert bias.shape == (rows,) and bias[-1] == np.float32(bias[:-3].astype(np.float64).mean())
    assert (
        grown_torch.cls.predictions.decoder.weight.data_ptr()
        == grown_torch.bert.embeddings.word_embeddings.weight.data_ptr()
    )
    assert extend_vocab({"lm_head.bias": np.array([1.0, 3.0], np.float32)}, 4)["lm_head.bias"].tolist() == [
        1,
        3,
        2,
        2,
    ]


# --------------------------------------------------------------------------------------------------
# Read-only and special paths
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder where nothing can be written: a read-only tmpfs as root (root ignores permission bits),
    else a folder without write permission."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path, "Permission denied"
        path.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)],
                             capture_output=True).returncode == 0  # fmt: skip
    if not mounted:
        pytest.skip("root without mount permission: no read-only folder to test with")
    try:
        yield path, "Read-only file system"
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_read_only_and_special_paths_fail_in_one_line(tmp_path, read_only_dir, wordpiece_tokenizer, capsys):
    """Issue 21 item 5: `wwm prepare` with a read-only cache gave an OSError traceback; output_dir under
    /proc a FileNotFoundError traceback from rundir.apply. Each is one line naming the path and the fix."""
    ro, reason = read_only_dir
    tok = tmp_path / "tok"
    wordpiece_tokenizer.save_pretrained(tok)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{max_documents: 50, cache_dir: {ro / 'cache'}}}\ntokenizer: {{path: {tok}}}\n")
    assert main(["prepare", "--config", str(cfg), "--no-progress"]) == 2
    err = _one_line_error(capsys)
    assert f"the data cache folder {ro / 'cache'}" in err and reason in err
    status = main(["train", "--config", TINY, "output_dir=/proc/wwm-test-run", *QUICK])
    err = _one_line_error(capsys)
    assert status == 2 and "/proc/wwm-test-run" in err and "special file system" in err
    status = main(["train", "--config", TINY, f"output_dir={ro / 'run'}", *QUICK])
    assert status == 2 and f"output_dir {ro / 'run'}" in _one_line_error(capsys)


# --------------------------------------------------------------------------------------------------
# Rough edges
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_sigterm_before_the_first_step_stops_in_one_line(framework, tmp_path, monkeypatch, capsys):
    """A SIGTERM during the set-up (here: the data preparation) exited 143 without a word; now the run stops
    at once (there is nothing to save), says so, and exits as a SIGTERM-stop does (0: rerun resumes)."""
    import signal

    import wwm.data

    def preempted(config, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the signal should have stopped the set-up")

    monkeypatch.setattr(wwm.data, "prepare_dataset", preempted)
    config = _config(tmp_path / "run", "tokenizer.train={}", framework=framework)
    run = __import__(f"wwm_{framework}.train", fromlist=["run"]).run
    assert run(config) == 0
    err = capsys.readouterr().err
    assert "SIGTERM before the first training step: stopped; nothing was trained" in err
    assert not (tmp_path / "run" / rundir.LOCK_FILE).exists()


def test_a_tokenizer_folder_without_tokenizer_files_says_so(tmp_path):
    """It used to load as a tokenizer of its 5 special tokens ("every vocabulary id is special")."""
    from wwm.data.tokenizer import load_tokenizer

    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizerFast"}')
    with pytest.raises(WWMError, match=r"holds no tokenizer files \(tokenizer.json, vocab.txt"):
        load_tokenizer(str(tmp_path))
