"""`wwm eval`: the unigram baseline by hand, both frameworks on a tiny trained JAX run (its checkpoint and
its HF export), a perturbed weight caught, and refusals (vocabulary, positions)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections import Counter

import numpy as np
import pytest

from wwm.data.builtin import builtin_sample_text
from wwm.masking import IGNORE_INDEX
from wwm.mlm_eval import UnigramBaseline, mlm_metrics, token_counts
from wwm_cli.main import main

# ---------------------------------------------------------------------------------------------- baseline


def test_unigram_baseline_hand_computed():
    # vocabulary of 8 ids, 0-4 special; ids past each row's length are padding and not counted
    ids = np.array([[2, 5, 5, 6, 3, 6], [2, 5, 3, 0, 0, 0]], np.int32)
    lengths = np.array([5, 3])
    counts = token_counts([(ids, lengths)], 8)
    assert counts.tolist() == [0, 0, 2, 2, 0, 3, 1, 0]
    baseline = UnigramBaseline.from_counts(counts, [0, 1, 2, 3, 4])
    # non-special: 5 (3 times), 6 (once), 7 (never); N = 4, V = 3: p = 4/7, 2/7, 1/7
    assert baseline.training_tokens == 4 and baseline.majority_id == 5
    got = baseline.score(np.array([5, 6, 7, 5]))
    want = -(2 * math.log(4 / 7) + math.log(2 / 7) + math.log(1 / 7)) / 4
    assert got["unigram_loss"] == pytest.approx(want, rel=1e-12)
    assert got["majority_accuracy"] == 0.5
    assert np.isneginf(baseline.log_probs[:5]).all()
    assert np.exp(baseline.log_probs[5:]).sum() == pytest.approx(1.0)


def test_mlm_metrics_are_token_weighted():
    m = mlm_metrics(ce_sum=6.0, correct=1, count=4)
    assert m == {"eval_loss": 1.5, "eval_accuracy": 0.25, "eval_perplexity": pytest.approx(math.exp(1.5))}
    assert mlm_metrics(0.0, 0, 0)["eval_loss"] == 0.0  # no masked token: no NaN


# ---------------------------------------------------------------------------------------------- a tiny run

WORDS = ["the", "of", "is", "and", "to", "a", "in", "function", "value", "list"]


def _write_config(tmp_path, tokenizer_dir: str, corpus: str, output_dir: str, steps: int = 12) -> str:
    path = tmp_path / "eval.yaml"
    path.write_text(
        f"""
seed: 0
output_dir: {output_dir}
data: {{source: files, train_files: [{corpus}], max_seq_len: 32, validation_fraction: 0.2,
        cache_dir: {tmp_path / "cache"}}}
tokenizer: {{path: {tokenizer_dir}}}
masking: {{mask_prob: 0.15, seed: 0}}
model: {{hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64,
         max_position_embeddings: 32}}
optim: {{learning_rate: 3.0e-3, warmup_steps: 2}}
train: {{framework: jax, global_batch_size: 8, max_steps: {steps}, log_every_steps: 6}}
checkpoint: {{every_steps: {steps}, export_hf_at_end: true}}
eval: {{every_steps: {steps}}}
logging: {{progress_bar: false, tensorboard: false}}
"""
    )
    return str(path)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, wordpiece_tokenizer):
    """A JAX run of 12 steps on a slice of the built-in corpus: (run dir, config file)."""
    from wwm.config import load_config
    from wwm_jax.train import run

    tmp = tmp_path_factory.mktemp("tiny_run")
    tokenizer_dir = str(tmp / "tokenizer")
    wordpiece_tokenizer.save_pretrained(tokenizer_dir)
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join(builtin_sample_text("en")[:300]) + "\n")
    config = _write_config(tmp, tokenizer_dir, str(corpus), str(tmp / "run"))
    assert run(load_config(config)) == 0
    return str(tmp / "run"), config


def _eval_json(capsys, *argv) -> tuple[int, dict]:
    capsys.readouterr()
    status = main(["eval", *argv, "--json"])
    return status, json.loads(capsys.readouterr().out)


def _trainer_eval(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if "eval_loss" in r][-1]


@pytest.mark.slow  # the 12-step training run of the fixture
def test_eval_both_frameworks_agree_on_a_jax_run(tiny_run, capsys):
    run_dir, config = tiny_run
    status, out = _eval_json(capsys, "--model", run_dir, "--config", config, "--framework", "both")
    assert status == 0, out
    assert out["rel_loss_diff"] <= 1e-5
    assert set(out) == {"jax", "torch", "rel_loss_diff", "unigram_loss", "majority_accuracy"}
    assert out["jax"]["accuracy"] == out["torch"]["accuracy"]
    # the run's checkpoint scores what the trainer's own evaluation measured at that step
    trainer = _trainer_eval(run_dir)
    assert out["jax"]["loss"] == pytest.approx(trainer["eval_loss"], rel=1e-5)
    assert out["jax"]["accuracy"] == pytest.approx(trainer["eval_accuracy"])
    # the HF export: the same model, the same figures
    status, export = _eval_json(capsys, "--model", os.path.join(run_dir, "hf"), "--config", config,
                                "--framework", "torch")  # fmt: skip
    assert status == 0 and "jax" not in export
    assert export["torch"]["loss"] == pytest.approx(out["torch"]["loss"], rel=1e-6)


@pytest.mark.slow  # the 12-step training run of the fixture
def test_eval_fails_when_one_framework_gets_a_perturbed_weight(tiny_run, capsys, monkeypatch):
    import torch

    from wwm_cli import evaluate

    run_dir, config = tiny_run
    load = evaluate.load_torch

    def perturbed(hf_dir):
        model = load(hf_dir)
        with torch.no_grad():
            weight = model.bert.encoder.layer[0].output.dense.weight
            weight[0, :] += 0.05  # one row of one matrix
        return model

    monkeypatch.setattr(evaluate, "load_torch", perturbed)
    status, out = _eval_json(capsys, "--model", os.path.join(run_dir, "hf"), "--config", config)
    assert status == 1, out
    assert out["rel_loss_diff"] > 1e-5


@pytest.mark.slow  # the 12-step training run of the fixture
def test_eval_unigram_baseline_of_the_run_data(tiny_run, capsys, wordpiece_tokenizer):
    """The baseline counted here from the corpus text itself (the tokenizer's ids of each training
    document, no blocks) equals the command's."""
    from wwm.config import load_config
    from wwm.data import prepare_dataset
    from wwm_cli.evaluate import eval_config, masked_validation_rows

    run_dir, config_path = tiny_run
    config = eval_config(load_config(config_path), os.path.join(run_dir, "hf"))
    prepared = prepare_dataset(config)
    rows = masked_validation_rows(prepared, config)
    targets = np.concatenate([r["labels"][r["labels"] != IGNORE_INDEX] for r in rows])

    train_docs = prepared.train.input_ids[prepared.train.input_ids != prepared.specials.pad]
    special = set(wordpiece_tokenizer.all_special_ids)
    counts = Counter(int(t) for t in train_docs.tolist() if int(t) not in special)
    n, v = sum(counts.values()), len(wordpiece_tokenizer) - len(special)
    want_loss = -np.mean([math.log((counts.get(int(t), 0) + 1) / (n + v)) for t in targets])
    majority = max(counts, key=lambda t: (counts[t], -t))
    status, out = _eval_json(capsys, "--model", run_dir, "--config", config_path, "--framework", "jax")
    assert status == 0
    assert out["unigram_loss"] == pytest.approx(want_loss, rel=1e-9)
    assert out["majority_accuracy"] == pytest.approx(float(np.mean(targets == majority)))


@pytest.mark.slow  # the 12-step training run of the fixture
def test_eval_text_report(tiny_run, capsys):
    run_dir, config = tiny_run
    assert main(["eval", "--model", run_dir, "--config", config, "--framework", "jax"]) == 0
    text = capsys.readouterr().out
    assert "JAX run checkpoint" in text and "unigram" in text and "jax " in text and "torch " not in text
    assert (
        main(["eval", "--model", run_dir, "--config", config, "--framework", "jax", "eval.max_batches=1"])
        == 0
    )
    text = capsys.readouterr().out  # says how much of the split it evaluated (issue 21)
    assert re.search(r"data +\d+ validation blocks of \d+ \(eval.max_batches\) in 1 batches", text), text


@pytest.mark.slow  # the 12-step training run of the fixture
def test_eval_refuses_another_tokenizer(tiny_run, tmp_path, capsys, bert_uncased_path):
    run_dir, config = tiny_run
    model = tmp_path / "model"
    shutil.copytree(os.path.join(run_dir, "hf"), model)
    for name in os.listdir(model):
        if name.startswith(("tokenizer", "special_tokens", "vocab")):
            os.remove(model / name)
    for name in os.listdir(bert_uncased_path):
        if name.startswith(("tokenizer", "special_tokens", "vocab")):
            shutil.copy(os.path.join(bert_uncased_path, name), model / name)
    capsys.readouterr()
    assert main(["eval", "--model", str(model), "--config", config]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "30522 tokens" in err[0] and "token embeddings" in err[0]


@pytest.mark.slow  # the 12-step training run of the fixture
def test_eval_refuses_longer_sequences_than_the_model(tiny_run, capsys):
    run_dir, config = tiny_run
    capsys.readouterr()
    assert main(["eval", "--model", run_dir, "--config", config, "data.max_seq_len=64"]) == 2
    assert "data.max_seq_len=32" in capsys.readouterr().err


def test_eval_refuses_a_folder_that_is_no_model(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["eval", "--model", str(tmp_path), "--config", "configs/tiny.yaml"]) == 2
    assert "neither a Hugging Face directory" in capsys.readouterr().err


@pytest.mark.slow  # the 12-step training run of the fixture
def test_bucket_eval_reads_a_bucket_runs_newest_complete_checkpoint(tiny_run, s3_bucket, tmp_path, capsys,
                                                                     monkeypatch):  # fmt: skip
    """`wwm eval --model s3://.../run` of a run in a bucket (no hf/ export) scores its newest checkpoint
    with every commit marker, as `wwm eval` of the same run on a local disk does; a checkpoint without its
    markers (an upload cut short) is not used."""
    from wwm import fs
    from wwm.fs import mirror

    monkeypatch.setenv("WWM_LOCAL_DIR", str(tmp_path / "host"))
    run_dir, config = tiny_run
    status, local = _eval_json(capsys, "--model", run_dir, "--config", config, "--framework", "jax")
    assert status == 0, local
    url = f"{s3_bucket}/runs/tiny"
    for name in ("run.json", "config.yaml"):
        fs.copy(os.path.join(run_dir, name), f"{url}/{name}")
    steps = sorted(n for n in os.listdir(os.path.join(run_dir, "checkpoints")) if n.isdigit())
    assert steps, os.listdir(os.path.join(run_dir, "checkpoints"))
    for step in steps:
        mirror.upload_folder(os.path.join(run_dir, "checkpoints", step), f"{url}/checkpoints/{step}")
    # a newer step whose upload never finished (no marker) is not a checkpoint yet
    fs.copy(os.path.join(run_dir, "run.json"), f"{url}/checkpoints/{int(steps[-1]) + 12}/partial.bin")
    status, remote = _eval_json(capsys, "--model", url, "--config", config, "--framework", "jax")
    assert status == 0, remote
    assert remote["jax"] == local["jax"]
    # negative control: the only checkpoint's markers gone -> no checkpoint and no export: one line, exit 2
    for step in steps:
        for name in fs.listdir(f"{url}/checkpoints/{step}"):
            if name.startswith(mirror.MARKER_PREFIX):
                fs.remove(f"{url}/checkpoints/{step}/{name}")
    capsys.readouterr()
    assert main(["eval", "--model", url, "--config", config, "--framework", "jax", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no checkpoint" in err, err
