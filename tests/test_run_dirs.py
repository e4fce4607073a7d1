"""Run directories hold one run: nothing a user made is overwritten, mixed or deleted without a flag.

wwm.rundir decides (framework-free, so these tests need no trainer); the CLI tests check that the
refusal comes as one line with exit status 2 before any heavy set-up, and leaves every file as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from wwm import rundir
from wwm.config import load_config
from wwm.errors import WWMError
from wwm.metrics_schema import dumps_record
from wwm.preflight import start_run
from wwm_cli import main

REPO = Path(__file__).resolve().parent.parent


def _config(out, *overrides, framework="jax"):
    return load_config(None, [f"output_dir={out}", f"train.framework={framework}", *overrides])


def _claim(config, framework, **kwargs):
    """`rundir.claim`, its lock released at once (these tests claim one folder many times in one process)."""
    with rundir.claim(config, framework, **kwargs) as decision:
        return decision


def _fake_training(out, steps=3):
    """What a run that trained leaves: metrics records and a checkpoint folder."""
    with open(os.path.join(out, "metrics.jsonl"), "a", encoding="utf-8") as f:
        for step in range(1, steps + 1):
            f.write(json.dumps({"step": step, "loss": 5.0}) + "\n")
    os.makedirs(os.path.join(out, "checkpoints", str(steps)), exist_ok=True)


def _snapshot(folder) -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def test_a_new_run_records_its_framework_and_config(tmp_path):
    out = tmp_path / "run"
    decision = _claim(_config(out), "jax")
    assert decision.status == "new" and decision.resume
    record = json.loads((out / "run.json").read_text())
    assert record["framework"] == "jax" and record["history"][0]["event"] == "started"
    assert load_config(out / "config.yaml").output_dir == str(out)


def test_the_same_config_resumes_and_max_steps_may_change(tmp_path):
    out = tmp_path / "run"
    _claim(_config(out), "jax")
    _fake_training(out)
    same = _claim(_config(out), "jax")
    assert same.status == "resume" and same.resume and same.changed == {}
    longer = _claim(_config(out, "train.max_steps=5000", "logging.progress_bar=false"), "jax")
    assert longer.status == "resume"
    assert set(longer.changed) == {"train.max_steps", "logging.progress_bar"}
    assert any("train.max_steps: 1000 -> 5000" in m for m in longer.messages)
    assert json.loads((out / "run.json").read_text())["history"][-1]["changed"]["train.max_steps"] == {
        "old": 1000,
        "new": 5000,
    }


@pytest.mark.parametrize(
    ("override", "shown"),
    [
        ("masking.mask_prob=0.2", "masking.mask_prob: 0.15 -> 0.2"),
        ("optim.learning_rate=0.001", "optim.learning_rate: 0.0005 -> 0.001"),
        ("data.max_seq_len=256", "data.max_seq_len: 128 -> 256"),
        ("train.global_batch_size=64", "train.global_batch_size: 32 -> 64"),
        ("seed=1", "seed: 0 -> 1"),
        ("train.dtype=bfloat16", 'train.dtype: "float32" -> "bfloat16"'),
        ("model.hidden_size=128", "model.hidden_size: 256 -> 128"),
        ("tokenizer.word_policy=whitespace", 'tokenizer.word_policy: "tokenizer" -> "whitespace"'),
    ],
)
def test_a_trajectory_change_refuses_naming_old_and_new_and_touches_nothing(tmp_path, override, shown):
    out = tmp_path / "run"
    _claim(_config(out), "jax")
    _fake_training(out)
    before = _snapshot(out)
    with pytest.raises(WWMError) as err:
        _claim(_config(out, override), "jax")
    message = str(err.value)
    assert shown in message and "\n" not in message
    assert "--overwrite" in message and "--allow-config-change" in message and "another output_dir" in message
    assert _snapshot(out) == before


def test_allow_config_change_resumes_and_records_the_change(tmp_path):
    out = tmp_path / "run"
    _claim(_config(out), "jax")
    _fake_training(out)
    decision = _claim(_config(out, "optim.learning_rate=0.001"), "jax", allow_changes=True)
    assert decision.status == "resume" and decision.resume
    last = json.loads((out / "run.json").read_text())["history"][-1]
    assert last["event"] == "resumed" and last["changed"]["optim.learning_rate"]["new"] == 0.001
    assert load_config(out / "config.yaml").optim.learning_rate == 0.001


def _set_rule(out, rule):
    """Make the run look as if an earlier wwm packed its blocks by `rule` (None: a record without one)."""
    record = json.loads((out / "run.json").read_text())
    record.pop("packing_rule", None) if rule is None else record.update(packing_rule=rule)
    (out / "run.json").write_text(json.dumps(record))


def test_a_run_packed_by_another_rule_refuses_to_resume_and_records_the_rule(tmp_path):
    """Same config, but this wwm packs packed_documents by another rule than the one that made the run's
    blocks (next-fit, before best-fit): resuming would train on other examples under the same example
    ids. Refused like any trajectory change; a packing whose rule did not change resumes."""
    from wwm.data.packing import PACKING_RULE

    out = tmp_path / "run"
    _claim(_config(out, "data.packing=packed_documents"), "jax")
    assert json.loads((out / "run.json").read_text())["packing_rule"] == PACKING_RULE["packed_documents"]
    _fake_training(out)
    _set_rule(out, None)  # a run from before the rule was recorded: rule "1" (next-fit)
    before = _snapshot(out)
    with pytest.raises(WWMError) as err:
        _claim(_config(out, "data.packing=packed_documents"), "jax")
    message = str(err.value)
    assert (
        f'data.packing_rule: "1" -> "{PACKING_RULE["packed_documents"]}"' in message and "\n" not in message
    )
    assert "--allow-config-change" in message and _snapshot(out) == before
    decision = _claim(_config(out, "data.packing=packed_documents"), "jax", allow_changes=True)
    assert decision.status == "resume"
    record = json.loads((out / "run.json").read_text())
    assert record["packing_rule"] == PACKING_RULE["packed_documents"]
    assert record["history"][-1]["changed"]["data.packing_rule"]["old"] == "1"
    # full_sentences is at its first rule: an old record without one resumes.
    other = tmp_path / "other"
    _claim(_config(other), "jax")
    _fake_training(other)
    _set_rule(other, None)
    assert _claim(_config(other), "jax").status == "resume"


def _set_order_rule(out, rule):
    record = json.loads((out / "run.json").read_text())
    record.pop("order_rule", None) if rule is None else record.update(order_rule=rule)
    (out / "run.json").write_text(json.dumps(record))


def test_order_rule_is_recorded_and_a_run_keeps_its_own_on_resume(tmp_path):
    """run.json records the order rule; a run started before feistel-6 (no rule recorded: rule "1")
    resumes under rule "1", so its batches stay those of the uninterrupted run; a rule this wwm does not
    know (a newer wwm's) refuses in one line unless --allow-config-change, which continues under this
    wwm's rule and records the change."""
    from wwm.data.order import ORDER_RULE

    out = tmp_path / "run"
    assert _claim(_config(out), "jax").order_rule == ORDER_RULE
    assert json.loads((out / "run.json").read_text())["order_rule"] == ORDER_RULE
    _fake_training(out)
    assert _claim(_config(out), "jax").order_rule == ORDER_RULE
    _set_order_rule(out, None)  # a run from before the rule was recorded
    decision = _claim(_config(out), "jax")
    assert decision.status == "resume" and decision.order_rule == "1"
    assert any("keeps its order rule '1'" in m for m in decision.messages)
    assert json.loads((out / "run.json").read_text())["order_rule"] == "1"
    _set_order_rule(out, "feistel-99")
    before = _snapshot(out)
    with pytest.raises(WWMError) as err:
        _claim(_config(out), "jax")
    message = str(err.value)
    assert f'data.order_rule: "feistel-99" -> "{ORDER_RULE}"' in message and "\n" not in message
    assert "--allow-config-change" in message and _snapshot(out) == before
    decision = _claim(_config(out), "jax", allow_changes=True)
    assert decision.order_rule == ORDER_RULE
    record = json.loads((out / "run.json").read_text())
    assert record["order_rule"] == ORDER_RULE
    assert record["history"][-1]["changed"]["data.order_rule"] == {"old": "feistel-99", "new": ORDER_RULE}
    # Nothing trained yet: a new run, under this wwm's rule, whatever the record says.
    fresh = tmp_path / "fresh"
    _claim(_config(fresh), "jax")
    _set_order_rule(fresh, "1")
    assert _claim(_config(fresh), "jax").order_rule == ORDER_RULE


def test_order_rule_groups_is_recorded_and_another_order_refuses_to_resume(tmp_path):
    """data.order: groups records groups-G-K-r in run.json and resumes under it; the same run resumed with
    data.order: rows, or other groups (another G, K or batch), refuses in one line naming
    data.order_rule unless --allow-config-change, which continues under the config's rule. Changing the
    group keys of a rows run changes nothing and resumes."""
    groups = ["data.order=groups", "data.order_group_rows=16", "data.order_window_groups=4",
              "train.global_batch_size=32"]  # fmt: skip
    out = tmp_path / "run"
    assert _claim(_config(out, *groups), "jax").order_rule == "groups-16-4-8"
    assert json.loads((out / "run.json").read_text())["order_rule"] == "groups-16-4-8"
    _fake_training(out)
    assert _claim(_config(out, *groups), "jax").order_rule == "groups-16-4-8"
    before = _snapshot(out)
    for other, new in (
        (["data.order=rows"], "feistel-6"),
        ([*groups, "data.order_group_rows=32"], "groups-32-4-8"),
    ):
        with pytest.raises(WWMError) as err:
            _claim(_config(out, *other), "jax")
        message = str(err.value)
        assert f'data.order_rule: "groups-16-4-8" -> "{new}"' in message and "\n" not in message, message
        assert "--allow-config-change" in message and _snapshot(out) == before
    config_file = out / rundir.CONFIG_FILE
    saved = config_file.read_bytes()
    config_file.unlink()  # run.json without the config file: the recorded rule is still compared
    with pytest.raises(WWMError, match=r'data\.order_rule: "groups-16-4-8" -> "feistel-6"'):
        _claim(_config(out, "data.order=rows"), "jax")
    config_file.write_bytes(saved)
    decision = _claim(_config(out, "data.order=rows"), "jax", allow_changes=True)
    assert decision.order_rule == "feistel-6"
    assert json.loads((out / "run.json").read_text())["order_rule"] == "feistel-6"
    rows = tmp_path / "rows"
    _claim(_config(rows), "jax")
    _fake_training(rows)
    assert _claim(_config(rows, "data.order_group_rows=64"), "jax").status == "resume"
    with pytest.raises(WWMError, match=r"data\.order_rule"):  # a row-ordered run asked for groups
        _claim(_config(rows, *groups), "jax")


def test_a_run_of_several_segments_from_before_segments_refuses_to_resume(tmp_path):
    """A run started before preparation in segments (no data_layout in run.json) whose corpus has several
    segments would get other blocks under the same example ids: refused in one line unless
    --allow-config-change. A corpus of one segment resumes (its blocks did not change)."""
    files = []
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("some text\n", encoding="utf-8")
        files.append(str(tmp_path / name))
    several = ("data.source=files", f"data.train_files=[{','.join(files)}]")
    out = tmp_path / "run"
    _claim(_config(out, *several), "jax")
    assert json.loads((out / "run.json").read_text())["data_layout"] == "segments"
    _fake_training(out)
    assert _claim(_config(out, *several), "jax").status == "resume"
    record = json.loads((out / "run.json").read_text())
    record.pop("data_layout")
    (out / "run.json").write_text(json.dumps(record))
    with pytest.raises(WWMError) as err:
        _claim(_config(out, *several), "jax")
    assert 'data.layout: "1" -> "segments"' in str(err.value) and "--allow-config-change" in str(err.value)
    assert _claim(_config(out, *several), "jax", allow_changes=True).status == "resume"
    one = tmp_path / "one"  # one file: one segment
    _claim(_config(one, "data.source=files", f"data.train_files=[{files[0]}]"), "jax")
    _fake_training(one)
    record = json.loads((one / "run.json").read_text())
    record.pop("data_layout")
    (one / "run.json").write_text(json.dumps(record))
    assert (
        _claim(_config(one, "data.source=files", f"data.train_files=[{files[0]}]"), "jax").status == "resume"
    )


def test_a_config_change_before_anything_was_trained_replaces_the_record(tmp_path):
    out = tmp_path / "run"
    _claim(_config(out), "jax")  # e.g. stopped during data preparation
    decision = _claim(_config(out, "masking.mask_prob=0.3"), "jax")
    assert decision.status == "new"
    assert load_config(out / "config.yaml").masking.mask_prob == 0.3


def test_a_run_of_the_other_framework_is_refused(tmp_path):
    out = tmp_path / "run"
    _claim(_config(out), "jax")
    with pytest.raises(
        WWMError, match=r"holds a jax run; a run directory holds one run \(this is a torch run\)"
    ):
        _claim(_config(out, framework="torch"), "torch")
    # also a run from before run.json existed, known by its recorded config or its checkpoint layout
    legacy = tmp_path / "legacy"
    os.makedirs(legacy / "checkpoints" / "checkpoint-3")
    (legacy / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    with pytest.raises(WWMError, match="holds a torch run"):
        _claim(_config(legacy), "jax")


def test_resume_false_over_a_run_refuses_and_overwrite_removes_only_run_files(tmp_path):
    out = tmp_path / "run"
    _claim(_config(out), "jax")
    _fake_training(out)
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(WWMError, match=r"checkpoint\.resume is false"):
        _claim(_config(out, "checkpoint.resume=false"), "jax")
    assert (out / "metrics.jsonl").exists()
    decision = _claim(_config(out, "checkpoint.resume=false"), "jax", overwrite=True)
    assert decision.status == "overwritten" and not decision.resume
    assert sorted(os.listdir(out)) == ["config.yaml", "notes.txt", "run.json"]
    assert (out / "notes.txt").read_text() == "my notes"


def test_a_folder_of_other_files_is_refused(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(WWMError, match="is not empty and holds no wwm run"):
        _claim(_config(out), "jax")
    assert os.listdir(out) == ["cat.jpg"]


def test_output_and_cache_paths_that_are_files_fail_in_one_line(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(WWMError, match=r"output_dir .* is a file, not a directory"):
        start_run(_config(a_file), "jax")
    with pytest.raises(WWMError, match=r"cannot be created: .* is a file"):
        start_run(_config(a_file / "run"), "jax")
    with pytest.raises(WWMError, match=r"data cache folder \(data.cache_dir\) .* is a file"):
        start_run(_config(tmp_path / "run", f"data.cache_dir={a_file}"), "jax")
    assert not (tmp_path / "run").exists()  # nothing written before the checks passed


def _pretrained_dir(tmp_path, **fields):
    path = tmp_path / "pretrained"
    path.mkdir()
    cfg = {"model_type": "bert", "vocab_size": 1000, "max_position_embeddings": 64, **fields}
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def test_a_pretrained_model_too_short_or_too_small_for_the_data_fails_before_work(tmp_path):
    path = _pretrained_dir(tmp_path)
    with pytest.raises(WWMError, match=r"data.max_seq_len is 128 but the model .* has 64 positions"):
        start_run(_config(tmp_path / "run", f"model.pretrained={path}"), "jax")
    with pytest.raises(
        WWMError,
        match=r"with tokenizer.train \(4000 tokens for 1000 embeddings\): a newly trained tokenizer's ids",
    ):
        start_run(
            _config(
                tmp_path / "run",
                f"model.pretrained={path}",
                "data.max_seq_len=64",
                "tokenizer.train.vocab_size=4000",
            ),
            "jax",
        )
    roberta = tmp_path / "r"
    roberta.mkdir()
    (roberta / "config.json").write_text(
        json.dumps(
            {"model_type": "roberta", "vocab_size": 9000, "max_position_embeddings": 66, "pad_token_id": 1}
        )
    )
    with pytest.raises(WWMError, match="has 64 positions"):  # RoBERTa's two offset slots are not usable
        start_run(_config(tmp_path / "run", f"model.pretrained={roberta}", "data.max_seq_len=65"), "jax")
    start_run(_config(tmp_path / "run", f"model.pretrained={roberta}", "data.max_seq_len=64"), "jax").close()


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_wwm_train_refuses_another_frameworks_run_in_one_line_and_changes_nothing(
    tmp_path, capsys, framework
):
    other = "torch" if framework == "jax" else "jax"
    out = tmp_path / "run"
    _claim(_config(out, framework=other), other)
    _fake_training(out)
    before = _snapshot(out)
    status = main(["train", "--framework", framework, "--config", str(REPO / "configs" / "tiny.yaml"),
                   f"output_dir={out}"])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2
    assert (
        err.count("\n") == 1
        and err.startswith("wwm train: error: output_dir")
        and f"holds a {other} run" in err
    )
    assert _snapshot(out) == before


def test_wwm_train_refuses_a_changed_config_and_resume_false(tmp_path, capsys):
    out = tmp_path / "run"
    tiny = str(REPO / "configs" / "tiny.yaml")
    _claim(load_config(tiny, [f"output_dir={out}"]), "jax")
    _fake_training(out)
    before = _snapshot(out)
    assert main(["train", "--config", tiny, f"output_dir={out}", "masking.mask_prob=0.3"]) == 2
    assert "masking.mask_prob: 0.15 -> 0.3" in capsys.readouterr().err
    assert main(["train", "--config", tiny, f"output_dir={out}", "checkpoint.resume=false"]) == 2
    assert "checkpoint.resume is false" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_shipped_configs_give_each_framework_its_own_run_directory():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        dirs = {fw: load_config(path, [f"train.framework={fw}"]).output_dir for fw in ("jax", "torch")}
        assert dirs["jax"] != dirs["torch"], path.name
        assert dirs["jax"].endswith("-jax") and dirs["torch"].endswith("-torch"), dirs


def test_an_unknown_placeholder_in_output_dir_is_refused():
    with pytest.raises(WWMError, match="placeholder other than"):
        load_config(None, ["output_dir=runs/{model}"])


def test_metrics_records_are_valid_json_without_nan():
    line = dumps_record({"step": 1, "loss": 2.0, "grad_norm": float("nan"), "mfu": float("inf")})
    assert json.loads(line) == {"step": 1, "loss": 2.0, "grad_norm": None, "mfu": None}
    assert "NaN" not in line and "Infinity" not in line


def test_normalize_permissions_gives_exports_ordinary_modes(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir(mode=0o700)
    (folder / "model.safetensors").write_bytes(b"x")
    os.chmod(folder / "model.safetensors", 0o600)
    umask = os.umask(0o022)
    try:
        rundir.normalize_permissions(str(folder))
    finally:
        os.umask(umask)
    assert os.stat(folder).st_mode & 0o777 == 0o755
    assert os.stat(folder / "model.safetensors").st_mode & 0o777 == 0o644


def test_a_record_being_written_by_another_process_is_not_taken_for_foreign_files(tmp_path):
    """Multi-process runs: process 0 writes run.json through a temporary file while another process reads
    the folder; that process must see a run starting, not somebody's files (a race seen in the
    2-process JAX test)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json.tmp-12345").write_text("{")
    assert rundir.decide(_config(out), "jax").status == "new"


def _events(folder):
    """The Event protos of every TensorBoard event file in `folder` (TFRecord framing, read by hand)."""
    import struct

    from tensorboardX.proto import event_pb2

    out = []
    for path in sorted(Path(folder).rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12 : i + 12 + n])
            out.append(event)
            i += 12 + n + 4
    return out


def test_a_resumed_run_tells_tensorboard_to_drop_the_steps_it_computes_again(tmp_path):
    """Resume from step 5 after a run that logged steps 1..7: TensorBoard must not show steps 6 and 7
    twice. Both trainers open their writer with purge_step = resumed step + 1 (a SessionLog START)."""
    pytest.importorskip("tensorboardX")
    from wwm.config import LoggingConfig
    from wwm_jax.metrics import MetricsWriter

    cfg = LoggingConfig(jsonl=False, tensorboard=True, progress_bar=False)
    first = MetricsWriter(str(tmp_path), cfg, total_steps=10, start_step=0, enabled=True)
    first.close()
    assert not [e for e in _events(tmp_path) if e.HasField("session_log")]
    resumed = MetricsWriter(str(tmp_path), cfg, total_steps=10, start_step=5, enabled=True)
    resumed.close()
    starts = [e for e in _events(tmp_path) if e.HasField("session_log")]
    assert [(e.step, e.session_log.status) for e in starts] == [(6, 1)]  # 1 = SessionLog.START
