"""The JAX trainer: schedules and AdamW against transformers/torch, the loss, device/host/accumulation
equivalence (8 simulated CPU devices and 2 processes, in subprocesses), exact resume after SIGKILL and
SIGTERM, NaN handling, evaluation and the Hugging Face export.

Subprocess runs use tests/jax_multihost_worker.py (XLA's device count must be set before jax loads).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from wwm.metrics_schema import TRAIN_RECORD_KEYS

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "jax_multihost_worker.py")
sys.path.insert(0, HERE)

import jax_multihost_worker as worker  # noqa: E402


def _spec(tmp_path, name: str, spec: dict) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    return str(path)


def _run_worker(spec_path: str, timeout: int = 900) -> None:
    proc = subprocess.run(
        [sys.executable, WORKER, spec_path], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _losses(out_dir) -> list[float]:
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, len(steps) + 1)), steps
    return [r["loss"] for r in records if "loss" in r]


def _params(out_dir) -> dict[str, np.ndarray]:
    with np.load(os.path.join(out_dir, "params.npz")) as f:
        return {k: f[k] for k in f.files}


def _max_param_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


# --------------------------------------------------------------------------------------------------
# Optimizer: schedule, decay mask and AdamW equal to the torch path
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_learning_rate_matches_transformers_schedules(schedule):
    import torch
    import transformers

    from wwm.config import OptimConfig
    from wwm_jax.optim import make_schedule

    warmup, total, peak = 7, 50, 3e-4
    ours = make_schedule(OptimConfig(learning_rate=peak, warmup_steps=warmup, schedule=schedule), total)
    make = {
        "linear": lambda o: transformers.get_linear_schedule_with_warmup(o, warmup, total),
        "cosine": lambda o: transformers.get_cosine_schedule_with_warmup(o, warmup, total),
        "constant": lambda o: transformers.get_constant_schedule_with_warmup(o, warmup),
    }[schedule]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    sched = make(opt)
    for k in range(total + 3):
        hf = opt.param_groups[0]["lr"]  # the rate used by optimizer update k
        assert float(ours(k)) == pytest.approx(hf, rel=1e-6, abs=1e-12), (k, float(ours(k)), hf)
        opt.step()
        sched.step()


@pytest.mark.parametrize("shape", ["1-sqrt", "linear"])
@pytest.mark.parametrize("warmup,decay", [(7, 13), (0, 1), (5, 45), (3, None)])
def test_wsd_schedule_matches_transformers_step_by_step(shape, warmup, decay):
    """optim.schedule wsd: ours equals the Trainer's `warmup_stable_decay` (get_wsd_schedule) at every update,
    built through the torch trainer's own TrainingArguments and create_scheduler."""
    import torch
    from transformers import Trainer

    from wwm.config import OptimConfig, RunConfig, TrainConfig
    from wwm_jax.optim import make_schedule
    from wwm_torch.trainer import training_arguments

    total, peak = 50, 3e-4
    optim = OptimConfig(
        learning_rate=peak, warmup_steps=warmup, schedule="wsd", decay_steps=decay, decay_shape=shape
    )
    ours = make_schedule(optim, total)
    config = RunConfig(optim=optim, train=TrainConfig(max_steps=total, global_batch_size=8))
    args = training_arguments(config, has_eval=False, world_size=1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    sched = Trainer.create_scheduler(type("T", (), {"args": args, "lr_scheduler": None})(), total, opt)
    stable = 0
    for k in range(total + 3):
        hf = opt.param_groups[0]["lr"]  # the rate used by optimizer update k
        assert float(ours(k)) == pytest.approx(hf, rel=1e-6, abs=1e-12), (k, float(ours(k)), hf)
        stable += hf == peak
        opt.step()
        sched.step()
    assert stable == total - warmup - (decay or total // 10) + 1  # the decay's first update is at the peak


def test_wsd_decay_longer_than_the_run_is_one_line_error():
    from wwm.config import OptimConfig
    from wwm.errors import WWMError
    from wwm_jax.optim import make_schedule

    with pytest.raises(
        WWMError, match=r"optim\.warmup_steps .* optim\.decay_steps .* exceed train\.max_steps"
    ):
        make_schedule(OptimConfig(warmup_steps=10, schedule="wsd", decay_steps=41), 50)


def test_weight_decay_mask_matches_hf_trainer():
    import jax
    import transformers
    from flax import nnx

    from wwm_jax import convert
    from wwm_jax.modeling import EncoderConfig, build_model
    from wwm_jax.optim import decay_mask

    for model_type in ("bert", "roberta"):
        hf = dict(worker.hf_config(), model_type=model_type, max_position_embeddings=66, pad_token_id=1)
        config = EncoderConfig.from_hf_dict(hf)
        torch_model = transformers.AutoModelForMaskedLM.from_config(transformers.AutoConfig.for_model(**hf))
        hf_decay = set(transformers.Trainer.get_decay_parameter_names(None, torch_model))
        # HF also lists the tied decoder copies; they are the embeddings (decayed) and the head bias (not).
        hf_decay = {k for k in hf_decay if ".decoder." not in k}
        mask = decay_mask(nnx.to_pure_dict(nnx.state(build_model(config), nnx.Param)))
        flat = {"/".join(str(getattr(k, "key", k)) for k in path): v
                for path, v in jax.tree_util.tree_leaves_with_path(mask)}  # fmt: skip
        ours = {e.hf_key for e in convert.name_table(config) if flat[e.flax_path]}
        assert ours == hf_decay, (model_type, ours ^ hf_decay)
        assert any("word_embeddings" in k for k in ours)
        assert not any("LayerNorm" in k or "layer_norm" in k or "bias" in k for k in ours)


def test_adamw_with_clipping_matches_torch():
    import jax
    import torch
    import transformers

    from wwm.config import OptimConfig
    from wwm_jax.optim import make_optimizer

    rng = np.random.default_rng(0)
    params = {"dense": {"kernel": rng.normal(size=(4, 3)).astype(np.float32),
                        "bias": rng.normal(size=(3,)).astype(np.float32)},
              "LayerNorm": {"scale": rng.normal(size=(3,)).astype(np.float32)}}  # fmt: skip
    grads = [
        jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32) * 3, params) for _ in range(4)
    ]
    optim = OptimConfig(learning_rate=1e-2, weight_decay=0.1, warmup_steps=2, max_grad_norm=1.0)
    tx, _ = make_optimizer(optim, 10)
    state, p = tx.init(params), params
    for g in grads:
        updates, state = tx.update(g, state, p)
        p = jax.tree.map(lambda a, u: a + u, p, updates)

    tp = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in
          (("k", params["dense"]["kernel"]), ("b", params["dense"]["bias"]), ("s", params["LayerNorm"]["scale"]))}  # fmt: skip
    opt = torch.optim.AdamW([{"params": [tp["k"]], "weight_decay": 0.1},
                             {"params": [tp["b"], tp["s"]], "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.98), eps=1e-6)  # fmt: skip
    sched = transformers.get_linear_schedule_with_warmup(opt, 2, 10)
    for g in grads:
        for name, value in (
            ("k", g["dense"]["kernel"]),
            ("b", g["dense"]["bias"]),
            ("s", g["LayerNorm"]["scale"]),
        ):
            tp[name].grad = torch.tensor(value)
        torch.nn.utils.clip_grad_norm_(list(tp.values()), 1.0)
        opt.step()
        sched.step()
    np.testing.assert_allclose(p["dense"]["kernel"], tp["k"].detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p["dense"]["bias"], tp["b"].detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p["LayerNorm"]["scale"], tp["s"].detach().numpy(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Loss and steps (in process, one device)
# --------------------------------------------------------------------------------------------------


def _tiny_state(accum: int = 1):
    from wwm.config import OptimConfig, ParallelConfig
    from wwm_jax import sharding as shd
    from wwm_jax.modeling import EncoderConfig, build_model
    from wwm_jax.optim import make_optimizer
    from wwm_jax.train import init_state

    class C:
        seed = 0
        parallel = ParallelConfig(mode="single")

    model = build_model(EncoderConfig.from_hf_dict(worker.hf_config()))
    tx, schedule = make_optimizer(OptimConfig(learning_rate=1e-3, warmup_steps=0), 10)
    mesh = shd.make_mesh(C.parallel)
    graphdef, state, _ = init_state(model, tx, mesh, C)
    return model, graphdef, state, tx, schedule


def test_loss_is_masked_token_mean_and_empty_batch_gives_zero():
    import functools

    import jax
    import jax.numpy as jnp
    import optax

    from wwm_jax.train_step import train_step

    model, graphdef, state, tx, schedule = _tiny_state()
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 128, size=(1, 4, 16)).astype(np.int32)
    labels = np.full_like(ids, -100)
    labels[0, :, 3:6] = ids[0, :, 3:6]
    batch = {"input_ids": ids, "labels": labels, "attention_mask": np.ones_like(ids)}
    step = jax.jit(
        functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=schedule, deterministic=True)
    )
    _, metrics = step(jax.tree.map(jnp.copy, state), batch)
    logits = model(ids[0])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, np.maximum(labels[0], 0))
    expected = float(jnp.sum(jnp.where(labels[0] != -100, ce, 0)) / 12)
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-6)
    assert int(metrics["masked_tokens"]) == 12

    empty = dict(batch, labels=np.full_like(ids, -100))
    new, metrics = step(jax.tree.map(jnp.copy, state), empty)
    assert float(metrics["loss"]) == 0.0 and float(metrics["grad_norm"]) == 0.0
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new.params))


def test_micro_batches_are_strided_rows():
    from wwm_jax.train_step import to_micro_batches

    rows = np.arange(8)[:, None] * np.ones((1, 3), int)
    mb = to_micro_batches(rows, 4)
    assert mb.shape == (4, 2, 3)
    assert mb[:, :, 0].tolist() == [[0, 4], [1, 5], [2, 6], [3, 7]]
    # Two hosts holding rows 0-3 and 4-7 split the same way: host h's micro-batch a is rows a+4h, ...
    assert np.concatenate([to_micro_batches(rows[:4], 2), to_micro_batches(rows[4:], 2)], 1)[:, :, 0].tolist() == [
        [0, 2, 4, 6], [1, 3, 5, 7]]  # fmt: skip


def test_mfu_formula_and_peak_table():
    from wwm.flops import flops_per_step
    from wwm_jax.metrics import peak_flops_per_device

    assert flops_per_step(100, 2, 8, 4, 16) == 6 * 100 * 16 + 12 * 2 * 8 * 4 * 16
    assert peak_flops_per_device(None, "NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_per_device(None, "TPU v5 lite") == 197e12
    assert peak_flops_per_device(None, "TPU v4") == 275e12
    assert peak_flops_per_device(None, "cpu") is None
    assert peak_flops_per_device(5e12, "cpu") == 5e12


def test_mfu_counts_window_limited_attention_on_local_layers():
    """ModernBERT: a local layer's query sees 2w + 1 keys, not L; both frameworks' configs give the same
    windows (the flops of a step are the same whichever trainer logs them)."""
    import transformers

    from wwm.flops import attention_windows, flops_per_step
    from wwm_jax.modernbert import ModernBertConfig

    ours = ModernBertConfig(num_hidden_layers=4, local_attention=128)  # global every 3rd: layers 0 and 3
    theirs = transformers.ModernBertConfig(num_hidden_layers=4, local_attention=128)
    assert attention_windows(ours) == attention_windows(theirs) == (None, 64, 64, None)
    assert attention_windows(transformers.BertConfig()) is None
    n, length, h, t = 1000, 8192, 768, 8192
    got = flops_per_step(n, 4, length, h, t, windows=attention_windows(ours))
    assert got == 6 * n * t + 12 * h * t * (2 * length + 2 * 129)
    assert got < flops_per_step(n, 4, length, h, t)  # all-global counting: twice the local layers' keys
    assert flops_per_step(n, 2, 100, h, t, windows=(None, 64)) == 6 * n * t + 12 * h * t * (
        100 + 100
    )  # 2w+1 > L


def _train_in_process(tmp_path, **run):
    from wwm.masking import MaskingConfig, WholeWordMasker
    from wwm_jax.train import train

    run = {"output_dir": str(tmp_path / "run"), **run}
    masker = WholeWordMasker(MaskingConfig(), mask_token_id=4, vocab_size=128, special_token_ids=range(5))
    return train(worker.make_config(run), train_dataset=worker.synthetic_dataset(),
                 val_dataset=worker.synthetic_dataset(n=40, seed=1), masker=masker,
                 hf_config=worker.hf_config())  # fmt: skip


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    from wwm.errors import WWMError

    # An absurd learning rate: update 1 sends the weights to ~1e30, the loss of step 2 is not finite.
    with pytest.raises(WWMError, match=r"at step 2: stopping.*checkpoints/1"):
        _train_in_process(tmp_path, lr=1e30, steps=5, every_steps=1)
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["1"]


def test_eval_metrics_and_hf_export_load_in_transformers(tmp_path):
    import torch
    import transformers
    from flax import nnx

    summary = _train_in_process(tmp_path, steps=2, eval_every=1, export=True, tensorboard=True)
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [1, 2]
    for r in evals:
        assert r["eval_perplexity"] == pytest.approx(np.exp(r["eval_loss"]))
        assert 0.0 <= r["eval_accuracy"] <= 1.0
    assert all(set(r) == TRAIN_RECORD_KEYS for r in records if "loss" in r)
    assert os.listdir(tmp_path / "run" / "tensorboard")

    hf = transformers.AutoModelForMaskedLM.from_pretrained(summary["hf_dir"]).eval()
    ids = np.random.default_rng(0).integers(5, 128, size=(2, 12))
    model = nnx.merge(summary["graphdef"], summary["state"].params)
    with torch.no_grad():
        theirs = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(ids)), theirs, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# Devices, accumulation and hosts (subprocesses)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eight_device_runs(tmp_path_factory):
    """One 8-device process: one device (reference), 4 accumulation steps, a 2x2x2 mesh with 2
    accumulation steps, and pmap-style data parallel over 8 devices, on the same global batches without
    dropout; and one device vs a 4x1x2 mesh with dropout."""
    tmp = tmp_path_factory.mktemp("devices")
    runs = {
        "single": {"mode": "single"},
        "accum4": {"mode": "single", "accum": 4},
        "mesh222": {"mode": "sharded", "mesh": [2, 2, 2], "accum": 2},
        "pmap8": {"mode": "pmap"},
        # dropout on: jax's partitionable threefry draws the same masks however the batch is sharded
        "single_dropout": {"mode": "single", "dropout": 0.1, "steps": 2},
        "mesh412_dropout": {"mode": "sharded", "mesh": [4, 1, 2], "dropout": 0.1, "steps": 2},
    }
    spec = {"devices": 8, "runs": [{"output_dir": str(tmp / k), "steps": 3, **v} for k, v in runs.items()]}
    _run_worker(_spec(tmp, "spec", spec))
    return {k: str(tmp / k) for k in runs}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["accum4", "mesh222", "pmap8", "mesh412_dropout"])
def test_devices_and_accumulation_match_one_device(eight_device_runs, name):
    ref, other = eight_device_runs["single"], eight_device_runs[name]
    if name == "mesh412_dropout":
        ref = eight_device_runs["single_dropout"]
    np.testing.assert_allclose(_losses(other), _losses(ref), rtol=2e-6)
    # 1e-5 (wwm parity's PARAM_ATOL): AdamW divides by sqrt(v) + eps, so a parameter whose gradient is
    # of the order of eps (a rare token's embedding row) turns float-rounding differences of the sharded
    # reductions into update differences; measured: 2.9e-6 on one element of one rare token's row after
    # 3 steps on mesh (2,2,2), every other parameter within 1.2e-7.
    assert _max_param_diff(_params(other), _params(ref)) < 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(eight_device_runs, tmp_path):
    """2 processes x 2 CPU devices (gloo), mesh data=2 x tensor=2: each loads only its own rows."""
    port = _free_port()
    run = {
        "output_dir": str(tmp_path / "mh"),
        "mode": "sharded",
        "mesh": [-1, 1, 2],
        "steps": 3,
        "every_steps": 2,
    }
    procs = []
    for i in range(2):
        spec = {
            "devices": 2,
            "distributed": {"process_id": i, "num_processes": 2, "port": port},
            "runs": [run],
        }
        procs.append(subprocess.Popen([sys.executable, WORKER, _spec(tmp_path, f"p{i}", spec)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))  # fmt: skip
    for p in procs:
        out, _ = p.communicate(timeout=900)
        assert p.returncode == 0, out[-3000:]
    ref = eight_device_runs["single"]
    np.testing.assert_allclose(_losses(run["output_dir"]), _losses(ref), rtol=2e-6)
    # 1e-5 as for the devices above (AdamW's sqrt(v) + eps): measured 1.2e-6 on one element of the MLM
    # head's transform kernel (batches of order rule feistel-6), every other parameter within 1e-7.
    assert _max_param_diff(_params(run["output_dir"]), _params(ref)) < 1e-5
    assert sorted(os.listdir(tmp_path / "mh" / "checkpoints")) == ["2", "3"]


@pytest.mark.slow
def test_two_processes_prepare_half_each_inside_train_and_train_the_one_process_losses(
    tmp_path, wordpiece_tokenizer
):
    """`wwm train` on 2 JAX processes (gloo): each prepares its share of the segments (every other one)
    into the shared cache, a barrier, then both read all of them: the losses of one process that prepared
    everything itself."""
    import numpy as np

    from wwm.data import segments

    wordpiece_tokenizer.save_pretrained(str(tmp_path / "tok"))
    rng = np.random.default_rng(0)
    words = "the cat sat on a mat while dogs ran far away over green hills".split()
    files = []
    for name, lines in (("a.txt", 30), ("b.txt", 5), ("c.txt", 120)):
        path = tmp_path / name
        path.write_text(
            "\n".join(" ".join(rng.choice(words, int(rng.integers(1, 60)))) for _ in range(lines)) + "\n"
        )
        files.append(str(path))
    # No validation split: its routing is the worker tests' (byte for byte); here an eval step would only
    # add a compilation to each of the three processes.
    data = {"source": "files", "train_files": files, "max_seq_len": 32, "segment_bytes": 4096,
            "validation_fraction": 0.0}  # fmt: skip
    run = {"mode": "sharded", "mesh": [-1, 1, 1], "steps": 3, "batch": 8, "tokenizer": str(tmp_path / "tok")}
    port = _free_port()
    procs = []
    for i in range(2):
        spec = {"devices": 1, "distributed": {"process_id": i, "num_processes": 2, "port": port},
                "runs": [{**run, "output_dir": str(tmp_path / "mh"), "data": {**data, "cache_dir": str(tmp_path / "shared")}}]}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, WORKER, _spec(tmp_path, f"p{i}", spec)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))  # fmt: skip
    from wwm_jax.train import run as train_run  # the reference: one process, one device, its own cache

    alone = {**run, "mode": "single", "output_dir": str(tmp_path / "one"),
             "data": {**data, "cache_dir": str(tmp_path / "alone")}}  # fmt: skip
    assert train_run(worker.make_config(alone)) == 0
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    np.testing.assert_allclose(_losses(tmp_path / "mh"), _losses(tmp_path / "one"), rtol=2e-6)
    (entry,) = (tmp_path / "shared" / "data").iterdir()
    plan = [
        segments.Segment.from_dict(e["segment"])
        for e in json.loads((entry / "manifest.json").read_text())["segments"]
    ]
    built_by = [
        json.loads((entry / "segments" / s.name / "done.json").read_text())["built_by"]["pid"] for s in plan
    ]
    assert len(plan) > 4 and built_by == [
        procs[k % 2].pid for k in range(len(plan))
    ]  # nobody prepared it all


# --------------------------------------------------------------------------------------------------
# Exact resume
# --------------------------------------------------------------------------------------------------


def _start(spec_path: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, WORKER, spec_path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip


def _wait_for_step(proc: subprocess.Popen, out_dir: str, step: int, timeout: float = 120) -> None:
    path = os.path.join(out_dir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        if os.path.exists(path):
            with open(path) as f:
                if any(json.loads(line).get("step", 0) >= step for line in f if line.strip()):
                    return
        time.sleep(0.02)
    raise TimeoutError(f"step {step} not reached")


@pytest.mark.slow
def test_resume_after_sigkill_and_sigterm_is_bit_identical(tmp_path):
    """Dropout on, 18 steps, checkpoints every 3. The interrupted run is SIGKILLed after step 7 (and
    resumes from its newest checkpoint), then SIGTERMed a few steps later (saves where it stands and
    exits 0), then Ctrl-C'd (SIGINT: saves where it stands, exits 130), then finishes. Its per-step losses and final parameters equal the uninterrupted run's bit
    for bit. A half-written checkpoint folder (as a kill during a save leaves) is ignored and cleaned up.

    The trainer prefetches two batches, so a signal can land up to two steps after the step the test
    saw: the assertions allow for that instead of racing it."""
    base = {"steps": 18, "every_steps": 3, "dropout": 0.1, "keep": 2, "warmup": 2}
    ref = str(tmp_path / "ref")
    _run_worker(_spec(tmp_path, "ref", {"devices": 1, "runs": [dict(base, output_dir=ref)]}))

    out = str(tmp_path / "resumed")
    slow = _spec(tmp_path, "slow", {"devices": 1, "runs": [dict(base, output_dir=out, slow_s=0.25)]})
    proc = _start(slow)
    _wait_for_step(proc, out, 7)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpts = os.path.join(out, "checkpoints")
    killed_at = max(int(d) for d in os.listdir(ckpts) if d.isdigit())
    assert {"3", "6"} <= set(os.listdir(ckpts)) and killed_at in (6, 9)
    # What a kill in the middle of saving the next checkpoint leaves: orbax's temporary folder, never renamed.
    partial = os.path.join(ckpts, f"{killed_at + 3}.orbax-checkpoint-tmp-1234567890")
    os.makedirs(os.path.join(partial, "state"))
    with open(os.path.join(partial, "state", "partial"), "wb") as f:
        f.write(b"\0" * 10)

    proc = _start(slow)
    _wait_for_step(proc, out, killed_at + 4)  # resumed from killed_at; some steps again
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, text[-3000:]
    assert "SIGTERM: saved step" in text, text[-3000:]
    saved = max(int(d) for d in os.listdir(ckpts) if d.isdigit())
    assert killed_at + 4 <= saved < 18
    assert not os.path.exists(partial)

    # Ctrl-C (SIGINT): the same save of the step it stands at, and the shell's exit status 130.
    proc = _start(slow)
    _wait_for_step(proc, out, saved + 2)
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=600)
    assert proc.returncode == 130, text[-3000:]
    assert "SIGINT (Ctrl-C): saved step" in text and "Traceback" not in text, text[-3000:]
    interrupted = max(int(d) for d in os.listdir(ckpts) if d.isdigit())
    assert saved + 2 <= interrupted < 18

    _run_worker(_spec(tmp_path, "finish", {"devices": 1, "runs": [dict(base, output_dir=out)]}))
    assert _losses(out) == _losses(ref)  # exact float equality
    a, b = _params(out), _params(ref)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # keep: 2 -> the two newest of the saves (every 3 steps, the signal saves, the final one).
    assert sorted(os.listdir(ckpts), key=int) == [str(max(interrupted, 15)), "18"]


def test_run_builds_the_model_from_the_tokenizer_and_exports_it(
    tmp_path, wordpiece_tokenizer, monkeypatch, capsys
):
    """`run(config)`: the model's HF config from ModelConfig.hf_config_dict(tokenizer), the data's masker,
    the export with the tokenizer, the summary and the exit status (data preparation stubbed out)."""
    import torch
    import transformers

    import wwm.data
    from wwm.masking import WholeWordMasker
    from wwm_jax.train import run

    # bfloat16 compute here: the option runs end to end (parameters and the export stay float32).
    config = worker.make_config(
        {"output_dir": str(tmp_path / "run"), "steps": 2, "export": True, "dtype": "bfloat16"}
    )

    class Prepared:  # the parts of PreparedData that run() uses
        train = worker.synthetic_dataset()
        validation = worker.synthetic_dataset(n=40, seed=1)
        tokenizer = wordpiece_tokenizer  # [PAD]=0 ... [MASK]=4, like the synthetic blocks

        def masker(self):
            return WholeWordMasker.from_tokenizer(self.tokenizer)

    monkeypatch.setattr(wwm.data, "prepare_dataset", lambda config, **kwargs: Prepared())
    assert run(config) == 0
    out = capsys.readouterr().out
    assert "JAX training done: step 2" in out and "Hugging Face export" in out
    hf_dir = tmp_path / "run" / "hf"
    model = transformers.AutoModelForMaskedLM.from_pretrained(hf_dir)
    assert model.config.vocab_size == len(wordpiece_tokenizer) and model.config.hidden_size == 32
    assert model.bert.embeddings.word_embeddings.weight.dtype == torch.float32
    losses = [
        json.loads(line)["loss"] for line in open(tmp_path / "run" / "metrics.jsonl") if '"loss"' in line
    ]
    assert len(losses) == 2 and all(np.isfinite(losses))
    exported = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert exported.mask_token_id == 4
    # pipelines truncate to model_max_length: it must be the model's positions, not the tokenizer's default
    assert (
        exported.model_max_length
        == model.config.max_position_embeddings
        != wordpiece_tokenizer.model_max_length
    )
    umask = os.umask(0)
    os.umask(umask)
    for name in os.listdir(hf_dir):
        assert os.stat(hf_dir / name).st_mode & 0o777 == 0o666 & ~umask, name


# --------------------------------------------------------------------------------------------------
# Checkpoints you can trust
# --------------------------------------------------------------------------------------------------


def _truncate_files(folder) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(max(0, os.path.getsize(os.path.join(root, name)) // 3))


def test_a_corrupt_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, capfd):
    _train_in_process(tmp_path, steps=4, every_steps=2, keep=3)
    ckpts = tmp_path / "run" / "checkpoints"
    _truncate_files(ckpts / "4")  # what a full disk or a copy cut short leaves
    capfd.readouterr()
    summary = _train_in_process(tmp_path, steps=6, every_steps=2, keep=3)
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if "is unreadable" in line]
    assert len(warnings) == 1 and f"{ckpts}/4 is unreadable" in warnings[0] and "Traceback" not in err
    assert summary["start_step"] == 2 and summary["steps"] == 6 and summary["status"] == "done"
    assert _losses(tmp_path / "run")[:2] and len(_losses(tmp_path / "run")) == 6  # steps 1..6, once each
    (moved,) = os.listdir(tmp_path / "run" / "corrupt-checkpoints")  # kept for inspection, not deleted
    assert moved.startswith("4-")
    assert sorted(os.listdir(ckpts), key=int) == ["2", "4", "6"]


def test_no_readable_checkpoint_is_an_error_not_a_silent_restart(tmp_path):
    from wwm.errors import WWMError

    _train_in_process(tmp_path, steps=2, every_steps=1, keep=2)
    for step in ("1", "2"):
        _truncate_files(tmp_path / "run" / "checkpoints" / step)
    with pytest.raises(WWMError, match=r"no checkpoint in .* can be read \(2 tried\).*--overwrite"):
        _train_in_process(tmp_path, steps=4, every_steps=1, keep=2)


def test_a_checkpoint_of_another_model_is_refused_in_one_line(tmp_path, monkeypatch):
    from wwm.errors import WWMError

    _train_in_process(tmp_path, steps=2, every_steps=2)
    smaller = dict(worker.hf_config(), hidden_size=16, intermediate_size=32)
    monkeypatch.setattr(worker, "hf_config", lambda: smaller)
    with pytest.raises(
        WWMError, match=r"checkpoints/2 holds another model \(parameter .*: \(.*\) there"
    ) as err:
        _train_in_process(tmp_path, steps=4, every_steps=2)
    assert "\n" not in str(err.value)


def test_a_nan_gradient_norm_with_a_finite_loss_stops_and_saves_nothing(tmp_path, monkeypatch):
    import jax
    import jax.numpy as jnp

    import wwm_jax.train as jt
    from wwm.errors import WWMError

    real = jt.compile_steps

    def poisoned_compile(*args, **kwargs):
        step_fn, eval_fn = real(*args, **kwargs)

        def step(state, batch):
            state, metrics = step_fn(state, batch)
            if int(state.step) == 2:  # the update of step 2 made the parameters NaN, the loss was finite
                state = state.replace(params=jax.tree.map(lambda p: p * jnp.nan, state.params))
                metrics = dict(metrics, grad_norm=jnp.float32(jnp.nan))
            return state, metrics

        return step, eval_fn

    monkeypatch.setattr(jt, "compile_steps", poisoned_compile)
    with pytest.raises(WWMError, match=r"the grad norm is nan at step 2: stopping.*checkpoints/1"):
        _train_in_process(tmp_path, steps=4, every_steps=1)
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["1"]


def test_the_checkpointer_never_saves_non_finite_state(tmp_path):
    import jax.numpy as jnp

    from wwm.config import CheckpointConfig
    from wwm_jax.checkpoint import Checkpointer, NonFiniteStateError
    from wwm_jax.train_step import TrainState

    ckpt = Checkpointer(str(tmp_path), CheckpointConfig())
    state = TrainState(step=jnp.int32(1), params={"w": jnp.array([1.0, jnp.inf])}, opt_state=(),
                       rng=jnp.zeros(2, jnp.uint32))  # fmt: skip
    with pytest.raises(NonFiniteStateError, match="NaN/inf at step 1"):
        ckpt.save(1, state, {})
    assert ckpt.latest_step() is None
    ckpt.close()


@pytest.mark.slow  # 4.9 s alone (three train() set-ups)
def test_order_rule_of_the_run_orders_the_jax_batches(tmp_path):
    """A run that resumes under order rule "1" (started before feistel-6), or a groups-G-K-r run, is fed
    its rule's batches (the first global batch, then the test stops the run before its first step)."""
    from wwm.data import BatchIterator
    from wwm.masking import MaskingConfig, WholeWordMasker
    from wwm.rundir import RunDir
    from wwm_jax.train import train

    class Seen(Exception):
        pass

    def stop(step, rows):
        raise Seen(rows["example_ids"])

    config = worker.make_config({"output_dir": str(tmp_path / "run"), "steps": 2, "every_steps": 10})
    data = worker.synthetic_dataset()
    masker = WholeWordMasker(MaskingConfig(), mask_token_id=4, vocab_size=128, special_token_ids=range(5))
    B = config.train.global_batch_size
    for rule in ("1", "groups-4-2-2", "feistel-6"):
        run_dir = RunDir(str(tmp_path / rule), "jax", "new", False, order_rule=rule)
        with pytest.raises(Seen) as seen:
            train(config, train_dataset=data, val_dataset=None, masker=masker, hf_config=worker.hf_config(),
                  run_dir=run_dir, on_batch=stop)  # fmt: skip
        expected = next(iter(BatchIterator(data, B, config.seed, order_rule=rule)))["example_ids"]
        np.testing.assert_array_equal(seen.value.args[0], expected)
    assert rule == "feistel-6" and not np.array_equal(
        expected, next(iter(BatchIterator(data, B, config.seed, order_rule="1")))["example_ids"]
    )
