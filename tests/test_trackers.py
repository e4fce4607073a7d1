"""Experiment trackers (`logging.report_to`, issue 21): wandb and MLflow in both trainers, offline.

JAX logs through the trackers' Python APIs (wwm.trackers), torch through the Trainer's own integrations
(WandbCallback, MLflowCallback) into the runs wwm opened; both give each tracker the same keys. No
network: wandb in offline mode (its run file read back here, a LevelDB-style log of protobuf records),
MLflow's local file store in <output_dir>/mlruns. A resumed wwm run continues the same tracker runs.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import struct
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import jax_multihost_worker as worker  # noqa: E402
from torch_ddp_worker import make_config, make_prepared  # noqa: E402

pytest.importorskip("wandb")
pytest.importorskip("mlflow")

# The keys both trainers give each tracker (mfu: none on a CPU; torch adds the Trainer's epoch & co).
TRAIN = {"loss", "learning_rate", "grad_norm", "masked_tokens", "tokens_per_s", "step_time_s"}
EVAL = {"eval_loss", "eval_accuracy", "eval_perplexity"}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                        "WANDB_CONFIG_DIR": tmp_path / "wandb-config", "WANDB_CACHE_DIR": tmp_path / "wandb-cache",
                        "WANDB_DATA_DIR": tmp_path / "wandb-data", "WANDB_DISABLE_GIT": "true"}.items():  # fmt: skip
        monkeypatch.setenv(name, str(value))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)


def _wandb_records(path: str):
    """The records of a wandb run file: ':W&B' + magic + version, then 32 KiB blocks of chunks (crc, length,
    type 1 full / 2 first / 3 middle / 4 last), each record a wandb_internal_pb2.Record."""
    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if n == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def _wandb_history(out: str) -> tuple[set[str], list[dict], set[str]]:
    """(the run ids, every history row, the keys logged) of the offline wandb runs in `out`/wandb."""
    ids, rows = set(), []
    for path in sorted(glob.glob(os.path.join(out, "wandb", "offline-run-*", "run-*.wandb"))):
        ids.add(os.path.basename(path)[4:-6])
        for record in _wandb_records(path):
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                )
    keys = {k for row in rows for k in row if not k.startswith("_")}
    return ids, rows, keys


def _mlflow_metrics(out: str) -> tuple[list[str], dict[str, list[int]]]:
    """(the run ids, metric key -> the steps logged) of the MLflow file store in `out`/mlruns."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri="file://" + os.path.join(out, "mlruns"))
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    history = {}
    for run in runs:
        for key in run.data.metrics:
            history[key] = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
    return [r.info.run_id for r in runs], history


@pytest.mark.slow
def test_jax_and_torch_report_the_same_keys_to_wandb_and_mlflow_and_resume_their_runs(
    tmp_path, offline, tokenizer_dir
):
    from wwm.config import LoggingConfig
    from wwm.masking import MaskingConfig, WholeWordMasker
    from wwm_jax.train import train
    from wwm_torch.train import run

    trackers = LoggingConfig(report_to=("wandb", "mlflow"), progress_bar=False)
    out = str(tmp_path / "jax")
    for steps in (2, 4):  # the second call resumes from the checkpoint of step 2
        config = worker.make_config({"output_dir": out, "steps": steps, "every_steps": 2, "eval_every": 2})
        config = dataclasses.replace(config, logging=trackers)
        masker = WholeWordMasker(MaskingConfig(), mask_token_id=4, vocab_size=128, special_token_ids=range(5))
        summary = train(config, train_dataset=worker.synthetic_dataset(), val_dataset=worker.synthetic_dataset(n=40, seed=1),
                        masker=masker, hf_config=worker.hf_config())  # fmt: skip
        assert summary["status"] == "done"
    record = json.load(open(os.path.join(out, "run.json")))
    ids, rows, jax_wandb = _wandb_history(out)
    assert ids == {record["trackers"]["wandb"]}  # one wandb run, continued
    assert sorted(r["train/global_step"] for r in rows if "train/loss" in r) == [1, 2, 3, 4]
    run_ids, jax_mlflow = _mlflow_metrics(out)
    assert run_ids == [record["trackers"]["mlflow"]]
    assert jax_mlflow["loss"] == [1, 2, 3, 4] and jax_mlflow["eval_loss"] == [2, 4]
    assert set(jax_mlflow) == TRAIN | EVAL
    assert jax_wandb == {f"train/{k}" for k in TRAIN} | {f"eval/{k[5:]}" for k in EVAL} | {
        "train/global_step"
    }

    spec = {"output_dir": str(tmp_path / "torch"), "tokenizer_dir": tokenizer_dir, "seed": 0,
            "blocks": {"n": 40, "length": 32, "validation": 12}, "masking": {"mask_prob": 0.15, "seed": 3},
            "sections": {"model": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
                         "train": dict(framework="torch", global_batch_size=8, max_steps=2, attn_implementation="eager"),
                         "checkpoint": dict(every_steps=2, export_hf_at_end=False), "eval": dict(every_steps=2),
                         "logging": dict(progress_bar=False, report_to=["wandb", "mlflow"])}}  # fmt: skip
    assert run(make_config(spec), prepared=make_prepared(spec)) == 0
    _, _, torch_wandb = _wandb_history(spec["output_dir"])
    _, torch_mlflow = _mlflow_metrics(spec["output_dir"])
    assert set(jax_mlflow) <= set(torch_mlflow) and jax_wandb <= torch_wandb
    assert torch_mlflow["loss"] == [1, 2] and torch_mlflow["eval_loss"] == [2]
    # The torch record's loss is the global-batch loss of metrics.jsonl, not the Trainer's running mean.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri="file://" + os.path.join(spec["output_dir"], "mlruns"))
    (run_id,) = _mlflow_metrics(spec["output_dir"])[0]
    logged = {m.step: m.value for m in client.get_metric_history(run_id, "loss")}
    jsonl = [json.loads(line) for line in open(os.path.join(spec["output_dir"], "metrics.jsonl"))]
    assert logged == {r["step"]: pytest.approx(r["loss"]) for r in jsonl if "loss" in r}


@pytest.fixture(scope="module")
def tokenizer_dir(wordpiece_tokenizer, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tokenizer"))
    wordpiece_tokenizer.save_pretrained(path)
    return path
