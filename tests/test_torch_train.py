"""The PyTorch path: the Hugging Face Trainer sees the JAX path's batches and masks, and trains on its loss.

Tiny models (hidden 16-32) on synthetic blocks (tests/torch_ddp_worker.py), float32 on CPU, eager
attention. Subprocess runs (torchrun with 2 processes, SIGKILL and resume) are marked slow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from torch_ddp_worker import make_config, make_prepared, synthetic_blocks
from transformers import TrainerCallback

from wwm.data.loader import BatchIterator, DataPosition
from wwm.masking import MaskingConfig, WholeWordMasker
from wwm.metrics_schema import EVAL_RECORD_KEYS, TRAIN_RECORD_KEYS
from wwm_torch import WholeWordMaskingCollator
from wwm_torch.train import build_trainer, run
from wwm_torch.trainer import NonFiniteLossError, build_model, masked_lm_sums

WORKER = os.path.join(os.path.dirname(__file__), "torch_ddp_worker.py")


@pytest.fixture(scope="module")
def tokenizer_dir(wordpiece_tokenizer, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tokenizer"))
    wordpiece_tokenizer.save_pretrained(path)
    return path


def _spec(tmp_path, tokenizer_dir, name="run", *, dropout=0.0, blocks=(40, 32, 12), **sections):
    model = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    train = dict(framework="torch", global_batch_size=8, max_steps=6, attn_implementation="eager")
    train.update(sections.pop("train", {}))
    model.update(sections.pop("model", {}))
    spec = {
        "output_dir": str(tmp_path / name),
        "tokenizer_dir": tokenizer_dir,
        "seed": 0,
        "blocks": {"n": blocks[0], "length": blocks[1], "validation": blocks[2]},
        "masking": {"mask_prob": 0.15, "seed": 3},
        "sections": {
            "model": model,
            "train": train,
            "optim": dict(learning_rate=1e-3, warmup_steps=2),
            "checkpoint": dict(every_steps=3),
            "eval": dict(every_steps=3),
            "logging": dict(progress_bar=False, tensorboard=False),
            **sections,
        },
    }
    return spec


def _train(spec, *, on_batch=None, callbacks=()):
    trainer, _, _ = build_trainer(make_config(spec), make_prepared(spec), on_batch=on_batch)
    for callback in callbacks:
        trainer.add_callback(callback)
    trainer.train()
    return trainer


def _records(output_dir):
    with open(os.path.join(output_dir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if "loss" in r], [r for r in rows if "eval_loss" in r]


def _reference_batches(spec, steps):
    """Global batches 0..steps-1 straight from BatchIterator + WholeWordMasker (the JAX path's inputs)."""
    prepared = make_prepared(spec)
    masker = WholeWordMasker.from_tokenizer(prepared.tokenizer, MaskingConfig(**spec["masking"]))
    iterator = iter(
        BatchIterator(prepared.train, spec["sections"]["train"]["global_batch_size"], spec["seed"])
    )
    out = []
    for _ in range(steps):
        b = next(iterator)
        m = masker(
            b["input_ids"], b["word_ids"], b["example_ids"], b["epoch"], attention_mask=b["attention_mask"]
        )
        out.append((b["epoch"], b["example_ids"], m.input_ids, m.labels))
    return out


# ------------------------------------------------------------------------------------------ batches
def test_order_rule_of_the_run_orders_the_torch_batches(tmp_path, tokenizer_dir):
    """build_trainer(order_rule=...) (run passes the run's RunDir.order_rule): the Trainer's global batches
    follow that rule, as the JAX trainer's do; a run started before feistel-6 keeps rule "1"."""
    spec = _spec(
        tmp_path, tokenizer_dir, model=dict(hidden_size=16, num_hidden_layers=1, intermediate_size=32)
    )
    prepared = make_prepared(spec)
    for rule in ("1", "groups-4-2-4", "feistel-6"):
        trainer, _, _ = build_trainer(make_config(spec), prepared, order_rule=rule)
        dataset = trainer.train_dataset
        reference = iter(BatchIterator(prepared.train, 8, spec["seed"], order_rule=rule))
        for step in range(6):  # 40 blocks, B = 8: epochs 0 and 1
            np.testing.assert_array_equal(
                dataset.global_batch(step)["example_ids"], next(reference)["example_ids"]
            )
    old = BatchIterator(prepared.train, 8, spec["seed"], order_rule="1").batch_at(DataPosition(0, 0))
    assert not np.array_equal(dataset.global_batch(0)["example_ids"], old["example_ids"])


@pytest.mark.parametrize("workers", [0, 2])
def test_each_optimizer_step_sees_the_jax_global_batch_and_masks(tmp_path, tokenizer_dir, workers):
    # 40 blocks, global batch 8: 5 steps per epoch; 11 steps cover epochs 0, 1 and 2. Accumulation 2.
    spec = _spec(
        tmp_path,
        tokenizer_dir,
        model=dict(hidden_size=16, num_hidden_layers=1, intermediate_size=32),
        train=dict(max_steps=11, grad_accum_steps=2, dataloader_num_workers=workers),
        checkpoint=dict(every_steps=100),
        eval=dict(every_steps=100),
    )
    by_step: dict[int, dict] = {}
    micro_batches: list[int] = []

    class CountMicroBatches(TrainerCallback):
        def on_substep_end(self, args, state, control, **kwargs):
            micro_batches.append(state.global_step)

    _train(spec, on_batch=lambda step, rows: by_step.setdefault(step, rows), callbacks=[CountMicroBatches()])
    reference = _reference_batches(spec, 11)
    assert {epoch for epoch, *_ in reference} == {0, 1, 2}
    assert sorted(by_step) == list(range(1, 12))
    assert len(micro_batches) == 11  # one on_substep_end per step: 2 micro-batches a step
    for step, (_, example_ids, input_ids, labels) in enumerate(reference, start=1):
        rows = by_step[step]
        np.testing.assert_array_equal(rows["example_ids"], example_ids)
        np.testing.assert_array_equal(rows["input_ids"], input_ids)
        np.testing.assert_array_equal(rows["labels"], labels)
        assert (labels != -100).any()
    # Epochs reshuffle: the same example gets another mask in another epoch.
    assert not np.array_equal(reference[0][1], reference[5][1])


def test_collator_masks_each_row_with_its_own_epoch(wordpiece_tokenizer):
    tok = wordpiece_tokenizer
    blocks = synthetic_blocks(tok, 6, 24, seed=5)
    batch = blocks.batch(np.arange(6))
    epochs = [0, 1, 1, 0, 2, 2]
    features = [
        {
            "input_ids": batch["input_ids"][i],
            "word_ids": batch["word_ids"][i],
            "attention_mask": batch["attention_mask"][i],
            "example_id": int(batch["example_ids"][i]),
            "epoch": epochs[i],
        }
        for i in range(6)
    ]
    config = MaskingConfig(mask_prob=0.3, seed=7)
    collator = WholeWordMaskingCollator(tok, config, return_tensors="np", return_example_ids=True)
    collator.set_epoch(9)  # per-row epochs win
    out = collator(features)
    assert set(out) == {"input_ids", "attention_mask", "labels", "example_ids"}
    np.testing.assert_array_equal(out["example_ids"], batch["example_ids"])
    masker = WholeWordMasker.from_tokenizer(tok, config)
    for i, epoch in enumerate(epochs):
        ref = masker(
            batch["input_ids"][i : i + 1],
            batch["word_ids"][i : i + 1],
            batch["example_ids"][i : i + 1],
            epoch,
            attention_mask=batch["attention_mask"][i : i + 1],
        )
        np.testing.assert_array_equal(out["input_ids"][i], ref.input_ids[0])
        np.testing.assert_array_equal(out["labels"][i], ref.labels[0])
    assert not np.array_equal(
        collator(features)["labels"], collator([dict(f, epoch=0) for f in features])["labels"]
    )


# ------------------------------------------------------------------------------------------ loss
def test_loss_is_the_global_batch_masked_mean_whatever_the_accumulation(tmp_path, tokenizer_dir):
    runs = {}
    for accum in (1, 4):
        spec = _spec(
            tmp_path, tokenizer_dir, f"accum{accum}", train=dict(max_steps=4, grad_accum_steps=accum)
        )
        trainer = _train(spec)
        runs[accum] = (trainer, _records(spec["output_dir"])[0])
    losses = {a: np.array([r["loss"] for r in rec]) for a, (_, rec) in runs.items()}
    assert len(losses[1]) == 4
    np.testing.assert_allclose(losses[4], losses[1], rtol=2e-6, atol=0)
    masked = {a: [r["masked_tokens"] for r in rec] for a, (_, rec) in runs.items()}
    assert masked[1] == masked[4]
    params = {
        a: {k: v.detach().numpy() for k, v in t.model.state_dict().items()} for a, (t, _) in runs.items()
    }
    for key, value in params[1].items():
        np.testing.assert_allclose(params[4][key], value, rtol=0, atol=1e-6, err_msg=key)

    # Step 1's loss is sum CE over the masked positions of global batch 0 / their number, at the initial weights.
    from transformers import set_seed

    config = make_config(spec)
    prepared = make_prepared(spec)
    set_seed(0)
    model = build_model(config.model, prepared.tokenizer, 32, "eager").eval()
    _, _, input_ids, labels = _reference_batches(spec, 1)[0]
    attention = (BatchIterator(prepared.train, 8, 0).__iter__().__next__())["attention_mask"]
    with torch.no_grad():
        logits = model(
            input_ids=torch.as_tensor(input_ids).long(), attention_mask=torch.as_tensor(attention)
        ).logits
    ce, n, _ = masked_lm_sums(logits, torch.as_tensor(labels).long())
    assert runs[1][1][0]["masked_tokens"] == int(n)
    assert runs[1][1][0]["loss"] == pytest.approx(float(ce) / int(n), rel=1e-6)


def test_a_batch_without_masked_tokens_gives_zero_loss_and_gradient(tmp_path, tokenizer_dir):
    spec = _spec(tmp_path, tokenizer_dir, train=dict(max_steps=1))
    trainer, _, _ = build_trainer(make_config(spec), make_prepared(spec))
    model = trainer.model.train()
    inputs = {
        "input_ids": torch.randint(5, 100, (2, 16)),
        "attention_mask": torch.ones(2, 16, dtype=torch.long),
        "labels": torch.full((2, 16), -100),
    }
    for count in (None, torch.tensor(0.0, dtype=torch.float64)):
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(inputs), num_items_in_batch=count)
        loss.backward()
        assert torch.isfinite(loss) and loss.item() == 0.0
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ------------------------------------------------------------------------------------------ logging, eval
def test_metrics_jsonl_has_every_step_and_fixed_mask_evaluation(tmp_path, tokenizer_dir):
    spec = _spec(
        tmp_path, tokenizer_dir, train=dict(max_steps=6), logging=dict(progress_bar=False, tensorboard=True)
    )
    trainer = _train(spec)
    train, evals = _records(spec["output_dir"])
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert all(set(r) == TRAIN_RECORD_KEYS for r in train)
    assert train[0]["learning_rate"] == 0.0 and train[2]["learning_rate"] == pytest.approx(1e-3)  # HF warmup
    assert all(r["grad_norm"] > 0 and r["masked_tokens"] > 0 and r["tokens_per_s"] > 0 for r in train)
    assert [r["step"] for r in evals] == [3, 6] and all(set(r) == EVAL_RECORD_KEYS for r in evals)
    assert os.listdir(os.path.join(spec["output_dir"], "tensorboard"))

    # Evaluation: epoch-0 masks of the validation blocks, token-weighted; the same twice.
    again = trainer.evaluate()
    assert again == trainer.evaluate()
    assert again["eval_loss"] == pytest.approx(evals[-1]["eval_loss"], rel=1e-9)
    prepared = make_prepared(spec)
    masker = WholeWordMasker.from_tokenizer(prepared.tokenizer, MaskingConfig(**spec["masking"]))
    b = prepared.validation.batch(np.arange(len(prepared.validation)))
    m = masker(b["input_ids"], b["word_ids"], b["example_ids"], 0, attention_mask=b["attention_mask"])
    model = trainer.model.eval()
    with torch.no_grad():
        logits = model(
            input_ids=torch.as_tensor(m.input_ids).long(), attention_mask=torch.as_tensor(b["attention_mask"])
        ).logits
    ce, n, correct = masked_lm_sums(logits, torch.as_tensor(m.labels).long())
    assert again["eval_loss"] == pytest.approx(float(ce) / int(n), rel=1e-5)
    assert again["eval_accuracy"] == pytest.approx(int(correct) / int(n))
    assert again["eval_perplexity"] == pytest.approx(np.exp(again["eval_loss"]))


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, tokenizer_dir):
    class Poison(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == 2:  # step 3 starts
                with torch.no_grad():
                    next(model.parameters()).fill_(float("nan"))

    spec = _spec(tmp_path, tokenizer_dir, train=dict(max_steps=6), checkpoint=dict(every_steps=2))
    with pytest.raises(NonFiniteLossError, match="at step 3") as err:
        _train(spec, callbacks=[Poison()])
    checkpoints = os.path.join(spec["output_dir"], "checkpoints")
    assert "checkpoint-2" in str(err.value)
    assert sorted(os.listdir(checkpoints)) == ["checkpoint-2"]
    weights = load_file(os.path.join(checkpoints, "checkpoint-2", "model.safetensors"))
    assert all(np.isfinite(w).all() for w in weights.values())
    assert [r["step"] for r in _records(spec["output_dir"])[0]] == [1, 2]


# ------------------------------------------------------------------------------------------ checkpoints, interchange
def test_checkpoints_are_hf_directories_and_interchange_with_jax(tmp_path, tokenizer_dir):
    pytest.importorskip("jax")
    from transformers import AutoModelForMaskedLM

    from wwm_jax import convert
    from wwm_jax.modeling import EncoderConfig
    from wwm_jax.modeling import build_model as build_jax_model

    spec = _spec(tmp_path, tokenizer_dir, train=dict(max_steps=3))
    config, prepared = make_config(spec), make_prepared(spec)
    assert run(config, prepared=prepared) == 0
    ckpt = os.path.join(spec["output_dir"], "checkpoints", "checkpoint-3")
    files = set(os.listdir(ckpt))
    assert {"model.safetensors", "config.json", "optimizer.pt", "scheduler.pt", "trainer_state.json"} <= files
    assert "rng_state.pth" in files and "tokenizer.json" in files
    export = os.path.join(spec["output_dir"], "hf")
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(os.listdir(export))

    ids = np.asarray(prepared.validation.batch(np.arange(4))["input_ids"], dtype=np.int64)
    mask = np.asarray(prepared.validation.batch(np.arange(4))["attention_mask"], dtype=np.int64)

    def torch_logits(model):
        with torch.no_grad():
            return model.eval()(
                input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask)
            ).logits.numpy()

    # torch checkpoint -> JAX
    for directory in (ckpt, export):
        jax_model = convert.load_hf(directory)
        hf_model = AutoModelForMaskedLM.from_pretrained(directory, attn_implementation="eager")
        np.testing.assert_allclose(
            np.asarray(jax_model(ids, mask)), torch_logits(hf_model), atol=2e-5, rtol=1e-5
        )

    # JAX export -> torch (AutoModelForMaskedLM and our model.pretrained)
    d = config.model.hf_config_dict(prepared.tokenizer, 32)
    jax_model = build_jax_model(EncoderConfig.from_hf_dict(d), seed=4)
    exported = str(tmp_path / "from_jax")
    convert.save_hf(jax_model, exported, tokenizer_dir=tokenizer_dir)
    ours = build_model(
        dataclasses.replace(config.model, pretrained=exported), prepared.tokenizer, 32, "eager"
    )
    np.testing.assert_allclose(torch_logits(ours), np.asarray(jax_model(ids, mask)), atol=2e-5, rtol=1e-5)


def test_readme_plain_trainer_with_our_collator(tmp_path, wordpiece_tokenizer):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from wwm.config import ModelConfig

    tok = wordpiece_tokenizer
    texts = [
        "the quick brown fox jumps over the lazy dog",
        "whole word masking masks every piece of a word",
    ] * 4
    ds = Dataset.from_dict(dict(tok(texts, return_special_tokens_mask=True)))
    model = build_model(
        ModelConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32), tok, 32
    )
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, report_to="none", use_cpu=True
    )
    from wwm_torch.callbacks import EpochCallback

    collator = WholeWordMaskingCollator(tok, MaskingConfig(mask_prob=0.15))
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=collator,
                      callbacks=[EpochCallback(collator)])  # fmt: skip
    result = trainer.train()
    assert np.isfinite(result.training_loss)


# ------------------------------------------------------------------------------------------ processes (slow)
def _launch(spec_path, nproc=1, *, node=None, env=None, **kwargs):
    """The worker on `nproc` processes (torchrun --standalone), or as node k of 2 (`node`: (k, port); one
    process per node, torchrun's static rendezvous on 127.0.0.1)."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    )
    if node is not None:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
               f"--node_rank={node[0]}", "--master_addr=127.0.0.1", f"--master_port={node[1]}", WORKER,
               spec_path]  # fmt: skip
    elif nproc == 1:
        cmd = [sys.executable, WORKER, spec_path]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            WORKER,
            spec_path,
        ]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs
    )


def _write_spec(tmp_path, spec, name):
    path = str(tmp_path / f"{name}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(spec, f)
    return path


def _finish(proc, timeout=240):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.mark.slow
def test_torchrun_two_processes_give_the_losses_of_one(tmp_path, tokenizer_dir):
    runs = {}
    for nproc in (1, 2):
        spec = _spec(
            tmp_path, tokenizer_dir, f"p{nproc}", train=dict(max_steps=5), checkpoint=dict(every_steps=5)
        )
        _finish(_launch(_write_spec(tmp_path, spec, f"p{nproc}"), nproc))
        runs[nproc] = (
            _records(spec["output_dir"]),
            load_file(os.path.join(spec["output_dir"], "hf", "model.safetensors")),
        )
    (train1, eval1), w1 = runs[1]
    (train2, eval2), w2 = runs[2]
    assert [r["step"] for r in train2] == [1, 2, 3, 4, 5]
    assert [r["masked_tokens"] for r in train2] == [r["masked_tokens"] for r in train1]
    np.testing.assert_allclose([r["loss"] for r in train2], [r["loss"] for r in train1], rtol=2e-6)
    np.testing.assert_allclose([r["grad_norm"] for r in train2], [r["grad_norm"] for r in train1], rtol=1e-5)
    np.testing.assert_allclose([r["eval_loss"] for r in eval2], [r["eval_loss"] for r in eval1], rtol=2e-6)
    for key in w1:
        np.testing.assert_allclose(w2[key], w1[key], atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_bucket_torchrun_two_nodes_resume_from_s3_on_clean_disks(tmp_path, tokenizer_dir, s3_bucket):
    """torchrun on two nodes (one process each, each node its own WWM_LOCAL_DIR disk) with output_dir in the
    S3 server: 3 steps, both nodes' staging folders deleted, the same run to 5 steps resumes from the
    bucket's checkpoint-3 (node 1 pulls the lead's weights/optimizer/state merged with its own RNG state)
    and its losses are a local one-process run's (rtol 2e-6, the DDP-vs-one-process test's tolerance;
    constant learning rate, so the longer second command keeps the schedule)."""
    import glob
    import shutil
    import socket

    from wwm import fs

    url = f"{s3_bucket}/runs/ddp"
    sections = dict(optim=dict(learning_rate=1e-3, warmup_steps=0, schedule="constant"),
                    checkpoint=dict(every_steps=3))  # fmt: skip
    nodes = [str(tmp_path / f"node-{k}") for k in (0, 1)]

    def two_nodes(max_steps):
        spec = _spec(tmp_path, tokenizer_dir, blocks=(40, 32, 0), train=dict(max_steps=max_steps), **sections)
        spec["output_dir"] = url
        path = _write_spec(tmp_path, spec, f"bucket-{max_steps}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        procs = [_launch(path, node=(k, port), env={"WWM_LOCAL_DIR": nodes[k]}) for k in (0, 1)]
        return [_finish(p) for p in procs]

    two_nodes(3)
    ckpt = fs.tree(f"{url}/checkpoints/checkpoint-3")
    assert {"process-0/model.safetensors", "process-0/optimizer.pt", "process-0/trainer_state.json",
            "process-0/rng_state_0.pth", "process-1/rng_state_1.pth", ".wwm-commit-0-of-2.json",
            ".wwm-commit-1-of-2.json"} <= set(ckpt)  # fmt: skip
    assert not [
        n for n in ckpt if n.startswith("process-1/") and "rng_state" not in n
    ]  # one copy of the rest
    for folder in nodes:  # clean machines
        shutil.rmtree(folder)
    out = two_nodes(5)
    assert "resuming from" in out[0] and "checkpoint-3" in out[0], out[0][-3000:]
    pulled = glob.glob(os.path.join(nodes[1], "runs", "*", "checkpoints", "checkpoint-3"))
    assert len(pulled) == 1 and {"model.safetensors", "trainer_state.json", "rng_state_1.pth"} <= set(
        os.listdir(pulled[0])
    )
    rows = [json.loads(line) for line in fs.read_text(f"{url}/metrics.jsonl").splitlines()]
    train = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5]
    assert {".wwm-commit-0-of-2.json", ".wwm-commit-1-of-2.json"} <= set(
        fs.tree(f"{url}/checkpoints/checkpoint-5")
    )
    assert json.loads(fs.read_text(f"{url}/run.json"))["history"][-1]["event"] == "resumed"

    spec = _spec(tmp_path, tokenizer_dir, "one", blocks=(40, 32, 0), train=dict(max_steps=5), **sections)
    _train(spec)
    reference, _ = _records(spec["output_dir"])
    np.testing.assert_allclose([r["loss"] for r in train], [r["loss"] for r in reference], rtol=2e-6)


def _wait_for_new_step(proc, metrics: str, after: int, timeout: float = 180) -> int:
    """Wait until metrics.jsonl has a step >= `after`; return the newest step."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-4000:]
        steps = [json.loads(x).get("step", 0) for x in open(metrics, encoding="utf-8") if x.strip()]
        if steps and max(steps) >= after:
            return max(steps)
        time.sleep(0.05)
    raise TimeoutError(f"step {after} not reached")


@pytest.mark.slow
def test_resume_after_sigkill_sigterm_and_ctrl_c_continues_exactly(tmp_path, tokenizer_dir):
    # Dropout on: the resumed run must also restore the RNG state.
    full = _spec(tmp_path, tokenizer_dir, "full", dropout=0.1, train=dict(max_steps=12))
    _finish(_launch(_write_spec(tmp_path, full, "full")))
    expected, expected_eval = _records(full["output_dir"])

    killed = _spec(tmp_path, tokenizer_dir, "killed", dropout=0.1, train=dict(max_steps=12))
    proc = _launch(_write_spec(tmp_path, dict(killed, sleep_after_step=0.5), "killed"))
    metrics = os.path.join(killed["output_dir"], "metrics.jsonl")
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and any(
            json.loads(x).get("step") == 4 for x in open(metrics, encoding="utf-8")
        ):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    checkpoints = os.listdir(os.path.join(killed["output_dir"], "checkpoints"))
    assert "checkpoint-3" in checkpoints and "checkpoint-12" not in checkpoints

    # A checkpoint cut short by the kill (no trainer_state.json) is never resumed from.
    partial = os.path.join(killed["output_dir"], "checkpoints", "checkpoint-99")
    os.makedirs(partial)
    open(os.path.join(partial, "config.json"), "w").close()

    # SIGTERM, then Ctrl-C (SIGINT): each saves the step it stands at and exits (0, then 130); each
    # rerun resumes from that step.
    stops = []
    for signum, status in ((signal.SIGTERM, 0), (signal.SIGINT, 130)):
        before = max(r["step"] for r in _records(killed["output_dir"])[0])
        proc = _launch(_write_spec(tmp_path, dict(killed, sleep_after_step=0.5), f"stop{signum}"))
        at = _wait_for_new_step(proc, metrics, after=before + 1)  # this process is training
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == status, out[-4000:]
        assert "saved step" in out and "Traceback" not in out, out[-4000:]
        saved = max(
            int(n.split("-")[1]) for n in os.listdir(os.path.join(killed["output_dir"], "checkpoints"))
        )
        assert at <= saved < 12, (at, saved)
        assert max(r["step"] for r in _records(killed["output_dir"])[0]) == saved
        stops.append(saved)
    out = _finish(_launch(_write_spec(tmp_path, killed, "resume")))
    assert "resuming from" in out and f"checkpoint-{stops[-1]}" in out
    resumed, resumed_eval = _records(killed["output_dir"])
    assert [r["step"] for r in resumed] == list(range(1, 13))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in expected]  # identical, not close
    assert [r["grad_norm"] for r in resumed] == [r["grad_norm"] for r in expected]
    assert [r["eval_loss"] for r in resumed_eval] == [r["eval_loss"] for r in expected_eval]
    w_full = load_file(os.path.join(full["output_dir"], "hf", "model.safetensors"))
    w_resumed = load_file(os.path.join(killed["output_dir"], "hf", "model.safetensors"))
    assert all(np.array_equal(w_full[k], w_resumed[k]) for k in w_full)


# ------------------------------------------------------------------------------------------ trust
def test_a_nan_gradient_norm_with_a_finite_loss_stops_before_saving(tmp_path, tokenizer_dir):
    class PoisonGradients(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == 2:  # step 3: the forward pass (the loss) is fine, the gradient is NaN
                param = next(model.parameters())
                self.handle = param.register_hook(lambda grad: grad * float("nan"))
            elif state.global_step == 3:
                self.handle.remove()

    spec = _spec(tmp_path, tokenizer_dir, train=dict(max_steps=6), checkpoint=dict(every_steps=1))
    with pytest.raises(NonFiniteLossError, match="gradient norm is nan at step 3") as err:
        _train(spec, callbacks=[PoisonGradients()])
    assert "checkpoint-2" in str(err.value)
    checkpoints = os.path.join(spec["output_dir"], "checkpoints")
    assert sorted(os.listdir(checkpoints)) == ["checkpoint-1", "checkpoint-2"]
    assert [r["step"] for r in _records(spec["output_dir"])[0]] == [1, 2]


def test_a_corrupt_newest_checkpoint_falls_back_and_another_model_is_refused(tmp_path, tokenizer_dir, capfd):
    from wwm.errors import WWMError

    spec = _spec(tmp_path, tokenizer_dir, train=dict(max_steps=4), checkpoint=dict(every_steps=2, keep=3))
    assert run(make_config(spec), prepared=make_prepared(spec)) == 0
    checkpoints = os.path.join(spec["output_dir"], "checkpoints")
    optimizer = os.path.join(checkpoints, "checkpoint-4", "optimizer.pt")
    with open(optimizer, "r+b") as f:  # cut short, as a full disk leaves it
        f.truncate(os.path.getsize(optimizer) // 2)
    capfd.readouterr()
    longer = dict(spec, sections=dict(spec["sections"], train=dict(spec["sections"]["train"], max_steps=6)))
    assert run(make_config(longer), prepared=make_prepared(longer)) == 0
    out, err = capfd.readouterr()
    assert "checkpoint-4 is unreadable (optimizer.pt:" in err and "Traceback" not in err
    assert "resuming from" in out and "checkpoint-2" in out
    assert [r["step"] for r in _records(spec["output_dir"])[0]] == [1, 2, 3, 4, 5, 6]
    (moved,) = os.listdir(os.path.join(spec["output_dir"], "corrupt-checkpoints"))
    assert moved.startswith("checkpoint-4-")

    smaller = dict(
        longer, sections=dict(longer["sections"], model=dict(longer["sections"]["model"], hidden_size=16))
    )
    with pytest.raises(WWMError, match=r"checkpoint-6 holds another model \(.*shape") as error:
        run(make_config(smaller), prepared=make_prepared(smaller), allow_changes=True)
    assert "\n" not in str(error.value)


def test_the_export_loads_elsewhere_with_the_models_length_and_ordinary_modes(tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer

    spec = _spec(tmp_path, tokenizer_dir, train=dict(max_steps=1), model=dict(max_position_embeddings=200))
    old = os.umask(0o022)
    try:
        assert run(make_config(spec), prepared=make_prepared(spec)) == 0
    finally:
        os.umask(old)
    hf = os.path.join(spec["output_dir"], "hf")
    assert AutoTokenizer.from_pretrained(hf).model_max_length == 200  # the model's positions
    for name in os.listdir(hf):
        assert os.stat(os.path.join(hf, name)).st_mode & 0o777 == 0o644, name
    assert os.stat(hf).st_mode & 0o777 == 0o755
    # No pickle in an export (issue 21: the Trainer's save_model wrote training_args.bin); no temporary left.
    assert not [n for n in os.listdir(hf) if n.endswith((".bin", ".pt", ".pth", ".pkl"))], os.listdir(hf)
    assert sorted(os.listdir(spec["output_dir"])) == [
        "checkpoints",
        "config.yaml",
        "hf",
        "metrics.jsonl",
        "run.json",
    ]
    for line in open(os.path.join(spec["output_dir"], "metrics.jsonl"), encoding="utf-8"):
        json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl"))
