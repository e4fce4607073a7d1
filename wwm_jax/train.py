"""The JAX trainer: `wwm train --framework jax --config FILE` calls `run(config)`.

`run` prepares the data and hands it to `train`, the loop:
  mesh and shardings (sharding.py) -> model and AdamW state (optim.py), restored from the newest checkpoint
  when there is one (checkpoint.py) -> for each step: this host's rows of the global batch, masked on the
  host, become global arrays -> `train_step` (train_step.py) -> metrics (metrics.py), checkpoints, evals
  -> final checkpoint, Hugging Face export and a summary.
docs/jax_trainer.md describes the design, the launch on TPU pods and GPU hosts, and the guarantees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from wwm.attention import implementation
from wwm.errors import WWMError
from wwm.flops import attention_windows, flops_per_step
from wwm.metrics_schema import truncate_after
from wwm.signals import StopRequest
from wwm_jax import sharding as shd
from wwm_jax.attention import check_kernel, set_kernel
from wwm_jax.checkpoint import Checkpointer
from wwm_jax.metrics import MetricsWriter, peak_flops_per_device
from wwm_jax.modeling import logical_axes, num_params
from wwm_jax.optim import make_optimizer
from wwm_jax.train_step import (
    PACKED_KEYS,
    TrainState,
    compile_steps,
    from_micro_batches,
    masked_bound,
    to_micro_batches,
)

if TYPE_CHECKING:
    from wwm.config import RunConfig
    from wwm_jax.convert import AnyConfig, AnyModel


def run(
    config: RunConfig,
    *,
    overwrite: bool = False,
    allow_changes: bool = False,
    restart: bool = False,
    on_batch=None,
) -> int:
    """Lock and claim the run directory, prepare the data, train, export. Returns the exit status.

    `overwrite`: replace the run in output_dir; `allow_changes`: resume it under changed settings;
    `restart`: train it again from step 0, keeping its history (wwm.rundir; `wwm train --overwrite /
    --allow-config-change / --restart-from-scratch`); `on_batch`: see `train`. A SIGTERM or Ctrl-C
    before the first step stops at once (nothing to save), one line, the signal's exit status."""
    shd.initialize_distributed(config.parallel.distributed)  # before anything touches a device
    from wwm.signals import Stopped

    with StopRequest("wwm train", immediate=True) as stop:  # the loop switches it to saving first
        try:
            return _run(config, overwrite, allow_changes, restart, on_batch, stop)
        except Stopped as stopped:
            if jax.process_index() == 0:
                print(stopped.message(), file=sys.stderr, flush=True)
            return stopped.exit_status


def _run(config, overwrite: bool, allow_changes: bool, restart: bool, on_batch, stop: StopRequest) -> int:
    from wwm.data import prepare_dataset
    from wwm.data.tokenizer import tokenizer_fingerprint
    from wwm.preflight import local_inputs, start_run

    several = jax.process_count() > 1
    lead = jax.process_index() == 0
    run_dir = start_run(config, "jax", overwrite=overwrite, allow_changes=allow_changes, restart=restart,
                        lead=lead, share=shd.broadcast_json if several else None,
                        process=(jax.process_index(), jax.process_count()))  # fmt: skip
    _bucket_barrier(run_dir)
    config = local_inputs(config, run_dir)  # bucket inputs as local copies; a bucket output_dir's staging
    with run_dir:  # the lock is released however the run ends
        trackers = _open_trackers(config, run_dir, lead)
        try:
            if several:
                # Every process prepares its share of the segments (data.cache_dir shared by the hosts), then
                # all read all of them (docs/data.md, "Segments"); no host prepares the whole corpus.
                data = prepare_dataset(config, share=(jax.process_index(), jax.process_count()),
                                       barrier=multihost_utils.sync_global_devices)  # fmt: skip
                if config.data.streaming and lead:
                    print(f"wwm: data.streaming on {jax.process_count()} processes: each reads and tokenizes the "
                          "whole stream and keeps its rows (the batches are the one-process ones); to split that "
                          "work, prepare the data instead (wwm prepare --worker i/n, or streaming: false)",
                          flush=True)  # fmt: skip
            else:
                data = prepare_dataset(config, progress=config.logging.progress_bar)
            cache_path = getattr(data, "cache_path", None)  # None: streamed (or a stand-in's) data
            cache_key = os.path.basename(cache_path) if cache_path else None
            run_dir.prepared(tokenizer_fingerprint(data.tokenizer), cache_key)
            if config.model.pretrained:
                hf_config = None
            else:
                hf_config = config.model.hf_config_dict(data.tokenizer, config.data.max_seq_len)
            summary = train(
                config,
                train_dataset=data.train,
                val_dataset=data.validation,
                masker=data.masker(),
                hf_config=hf_config,
                tokenizer=data.tokenizer,
                run_dir=run_dir,
                on_batch=on_batch,
                trackers=trackers,
                stop=stop,
            )
        except BaseException:
            if trackers is not None:
                trackers.close("failed")
            raise
        if trackers is not None:
            trackers.close(summary.status)
    if lead:
        print(format_summary(summary), flush=True)
    if summary.status == "stopped":
        return summary.exit_status
    return 0 if summary.status == "done" else 1


def _open_trackers(config, run_dir, lead: bool):
    """The external experiment trackers (wandb, MLflow) of `logging.report_to`, opened on the lead."""
    from wwm.trackers import EXTERNAL, Trackers

    if not lead or not any(n in EXTERNAL for n in config.logging.report_to):
        return None
    return Trackers(config, run_dir).start()


# ----------------------------------------------------------------------------------------------------
# Model and state
# ----------------------------------------------------------------------------------------------------


def make_model(config: RunConfig, hf_config: dict | None, vocab_size: int | None = None) -> AnyModel:
    """The model to train: `model.pretrained`, or a fresh one of `hf_config` whose weights are
    `wwm.initial_weights.initial_state(hf_config, seed)`, the torch trainer's too (bit-identical).
    `vocab_size`: the tokenizer's; with `model.extend_vocab` a pretrained model with fewer token
    embeddings grows to it (`wwm.initial_weights.extend_vocab`, as the torch trainer does)."""
    from wwm_jax import convert

    dtype = jnp.bfloat16 if config.train.dtype == "bfloat16" else jnp.float32
    if config.model.pretrained:
        # The checkpoint's config.json as the section continues it (ModernBERT's context extension); with
        # model.extend_vocab a tokenizer with more tokens grows the embeddings (the torch trainer's numbers).
        path = config.model.pretrained
        hf = config.model.continue_config(convert.read_config_dict(path), config.data.max_seq_len)
        state = convert.read_hf_weights(path)
        if config.model.extend_vocab and vocab_size and int(hf["vocab_size"]) < vocab_size:
            from wwm.initial_weights import extend_vocab

            state = extend_vocab(state, vocab_size)
            hf = {**hf, "vocab_size": vocab_size}
        model, info = convert.model_from_hf_state(
            state, convert.config_from_hf_dict(hf), dtype=dtype, seed=config.seed
        )
        if info.fresh_head:
            convert.logger.info(
                "%s has no masked-LM head; initialised a fresh one (seed %d)", path, config.seed
            )
    else:
        from wwm.initial_weights import initial_state

        state = initial_state(hf_config, config.seed)
        model, _ = convert.model_from_hf_state(state, convert.config_from_hf_dict(hf_config), dtype=dtype)
    # train.attn_implementation -> the JAX kernel (wwm/attention.py); refused here, before any step, when it
    # cannot run.
    mc = model.config
    dropout = getattr(mc, "attention_probs_dropout_prob", getattr(mc, "attention_dropout", 0.0))
    kernel = check_kernel(implementation(config.train.attn_implementation, "jax"), attention_dropout=dropout)
    return set_kernel(model, kernel.name)


def _dropout_off(mc: AnyConfig) -> bool:
    """Whether the model config (EncoderConfig or ModernBertConfig) has every dropout at 0."""
    names = ("hidden_dropout_prob", "attention_probs_dropout_prob",  # BERT, RoBERTa
             "embedding_dropout", "mlp_dropout", "attention_dropout")  # ModernBERT  # fmt: skip
    return all(getattr(mc, n, 0) == 0 for n in names)


def _global_array(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    # Every process holds the same host value; each device takes its shard (works across hosts).
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def init_state(model, tx, mesh, config) -> tuple[Any, TrainState, TrainState]:
    """(graphdef, state placed on the mesh, the state's shardings)."""
    graphdef, params_state = nnx.split(model)
    params = jax.tree.map(np.asarray, nnx.to_pure_dict(params_state))  # nested dict, float32
    specs = shd.param_specs(logical_axes(model), params, mesh, config.parallel.rules, config.parallel.mode)
    param_sh = shd.named(mesh, specs)
    replicated = NamedSharding(mesh, P())
    abstract_opt = jax.eval_shape(tx.init, params)
    opt_sh = optax.tree_map_params(
        tx, lambda _, s: s, abstract_opt, param_sh, transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, NamedSharding),
    )  # fmt: skip
    shardings = TrainState(step=replicated, params=param_sh, opt_state=opt_sh, rng=replicated)
    params = jax.tree.map(_global_array, params, param_sh)
    opt_state = jax.jit(tx.init, out_shardings=opt_sh)(params)
    state = TrainState(
        step=_global_array(np.zeros((), np.int32), replicated),
        params=params,
        opt_state=opt_state,
        rng=_global_array(np.asarray(jax.random.key_data(jax.random.PRNGKey(config.seed))), replicated),
    )
    return graphdef, state, shardings


def host_params(state: TrainState) -> dict:
    """The parameters as numpy arrays on every process (all processes must call this)."""
    if jax.process_count() == 1:
        return jax.device_get(state.params)
    return multihost_utils.process_allgather(state.params, tiled=True)


def export_hf(graphdef, params: dict, out_dir: str, tokenizer=None) -> str:
    """Write a Hugging Face directory (model + tokenizer) that AutoModelForMaskedLM loads; the
    tokenizer's model_max_length is the model's usable positions (pipelines truncate to it). Written
    into a temporary folder beside `out_dir` and renamed into place: a kill or a full disk never leaves
    a half-written export under its name."""
    import shutil

    from wwm.files import normalize_permissions
    from wwm.preflight import usable_positions
    from wwm_jax import convert

    model = nnx.merge(graphdef, jax.tree.map(np.asarray, params))
    out_dir = os.path.abspath(out_dir)
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        convert.save_hf(model, tmp)
        if tokenizer is not None:
            # local: this export's temporary folder
            with open(os.path.join(tmp, "config.json"), encoding="utf-8") as f:
                positions = usable_positions(json.load(f))
            save_tokenizer(tokenizer, tmp, positions)
        normalize_permissions(tmp)
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)  # the previous export (this run's: a resumed run exports again)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def save_tokenizer(tokenizer, out_dir: str, model_max_length: int) -> None:
    """`tokenizer.save_pretrained(out_dir)` with `model_max_length` set, the shared tokenizer untouched."""
    previous = tokenizer.model_max_length
    tokenizer.model_max_length = model_max_length
    try:
        tokenizer.save_pretrained(out_dir)
    finally:
        tokenizer.model_max_length = previous


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------


def _prefetch(items: Iterator, size: int = 2) -> Iterator:
    """Run `items` (host-side masking and stacking) in a thread, `size` batches ahead of the device."""
    q: queue.Queue = queue.Queue(maxsize=size)
    done = object()
    stop = threading.Event()

    def worker():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as err:  # re-raised in the consumer
            q.put(err)

    thread = threading.Thread(target=worker, daemon=True, name="wwm-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def masked_host_batches(batches, masker, accum: int) -> Iterator[tuple[dict, np.ndarray, dict]]:
    """(this host's masked rows in (A, b/A, L) micro-batch layout, their example ids (b,), the data
    position after the batch)."""
    for batch in batches:
        position = batches.position.to_dict()  # set by the iterator before it yields this batch
        m = masker(
            batch["input_ids"], batch["word_ids"], batch["example_ids"], batch["epoch"],
            attention_mask=batch["attention_mask"],
        )  # fmt: skip
        rows = {
            "input_ids": m.input_ids.astype(np.int32),
            "labels": m.labels.astype(np.int32),
            "attention_mask": batch["attention_mask"].astype(np.int32),
        }
        for key in PACKED_KEYS:  # packed_documents only
            if key in batch:
                rows[key] = batch[key].astype(np.int32)
        yield {k: to_micro_batches(v, accum) for k, v in rows.items()}, batch["example_ids"], position


# ----------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------


def _stop_requested(stop: StopRequest, run_dir) -> tuple[bool, bool]:
    """(a SIGTERM/SIGINT asked the run to stop, the lead lost the run's lock), on any host: saves are
    collective, so every host must stop at the same step."""
    flags = np.array([stop.signal is not None, run_dir is not None and run_dir.lock_lost()], np.int32)
    if jax.process_count() > 1:
        flags = np.any(multihost_utils.process_allgather(flags), axis=0)
    return bool(flags[0]), bool(flags[1])


def evaluate(eval_fn, params, val_dataset, masker, mesh, config: RunConfig, host) -> dict[str, float]:
    """MLM loss, accuracy and perplexity on the validation split with its fixed (epoch 0) masks."""
    from wwm.data import validation_batches
    from wwm.mlm_eval import mlm_metrics

    size = config.eval.batch_size or config.train.global_batch_size
    batches = validation_batches(val_dataset, size, host_index=host[0], host_count=host[1])
    rows = ({k: v[0] for k, v in r.items()} for r, _, _ in masked_host_batches(batches, masker, 1))
    # islice stops before the next batch is read and masked
    return mlm_metrics(**eval_sums(eval_fn, params, itertools.islice(rows, config.eval.max_batches), mesh))


def eval_sums(eval_fn, params, rows: Iterable[dict], mesh) -> dict[str, float]:
    """{"ce_sum", "correct", "count"} summed over batches of this host's masked (M, L) rows
    (`wwm eval` feeds the same batches to both frameworks through this)."""
    totals = {"ce_sum": 0.0, "correct": 0, "count": 0}
    for batch in rows:
        out = jax.device_get(eval_fn(params, shd.global_arrays(batch, mesh, 0)))
        for key in totals:
            totals[key] += out[key].item()
    return totals


def _check_batch(config: RunConfig, mesh) -> None:
    B, A = config.train.global_batch_size, config.train.grad_accum_steps
    rows = mesh.shape["data"] * mesh.shape["fsdp"]
    if (B // A) % rows:
        raise WWMError(
            f"train.global_batch_size / train.grad_accum_steps = {B // A} rows per micro-batch is not divisible "
            f"by the {rows} data-parallel devices (mesh data x fsdp); change the batch size or the mesh"
        )
    eval_size = config.eval.batch_size or B
    if eval_size % rows:
        raise WWMError(f"eval.batch_size ({eval_size}) must be divisible by the {rows} data-parallel devices")


@dataclasses.dataclass
class StepSetup:
    """Everything a training step needs, built once from the config by `build_step`: the trainer's loop
    and `wwm bench train` use the same one."""

    mesh: Any
    graphdef: Any
    state: TrainState  # fresh (step 0), placed on the mesh
    shardings: TrainState
    step_fn: Any  # (state, global batch) -> (state, metrics)
    eval_fn: Any  # (params, global batch) -> sums
    model_config: AnyConfig
    n_params: int
    flops_per_step: float  # model FLOPs of one optimizer step (wwm.flops)


def build_step(
    config: RunConfig, hf_config: dict | None, masker, seq_len: int, *, full_head: bool = False
) -> StepSetup:
    """Mesh, model, AdamW state and the compiled steps for `config`. `full_head`: the MLM head at every
    position instead of the masked ones only (benchmarks compare the two)."""
    mesh = shd.make_mesh(config.parallel)
    _check_batch(config, mesh)
    model = make_model(config, hf_config, masker.vocab_size)
    tx, schedule = make_optimizer(config.optim, config.train.max_steps)
    graphdef, state, shardings = init_state(model, tx, mesh, config)
    mc = model.config
    deterministic = _dropout_off(mc)
    # The MLM head runs only at the masked positions (at most this many per row; more: the full head).
    max_masked = None if full_head else masked_bound(masker.config, seq_len)
    step_fn, eval_fn = compile_steps(graphdef, tx, schedule, shardings, mesh, config.parallel.mode,
                                     deterministic=deterministic, max_masked=max_masked)  # fmt: skip
    n_params = num_params(model)
    tokens = config.train.global_batch_size * seq_len
    flops = flops_per_step(n_params, mc.num_hidden_layers, seq_len, mc.hidden_size, tokens,
                           windows=attention_windows(mc))  # fmt: skip
    return StepSetup(mesh, graphdef, state, shardings, step_fn, eval_fn, mc, n_params, flops)


def _restore(ckpt: Checkpointer, state: TrainState, resume: bool, lead: bool):
    """(state, the data position of the next batch, the restored step or None)."""
    from wwm.data import DataPosition

    restored = ckpt.restore_latest(state, lead=lead) if resume else None
    if restored is None:
        return state, DataPosition(), None
    step, state, meta = restored
    return state, DataPosition.from_dict(meta["data_position"]), step


def _check_finite(metrics: dict[str, float], step: int, ckpt: Checkpointer) -> None:
    """Stop on a NaN/inf loss or gradient norm (a finite loss with a NaN gradient norm has already made
    the parameters NaN), before anything of this step is written or saved."""
    bad = next((k for k in ("loss", "grad_norm") if not math.isfinite(metrics[k])), None)
    if bad is None:
        return
    good = ckpt.latest_step()
    where = f"{ckpt.directory}/{good}" if good is not None else "none (no checkpoint was saved)"
    raise WWMError(
        f"the {bad.replace('_', ' ')} is {metrics[bad]} at step {step}: stopping. The last good checkpoint is "
        f"{where}; lower optim.learning_rate or check the data"
    )


def _export_at_end(
    config: RunConfig, setup: StepSetup, state: TrainState, tokenizer, lead: bool
) -> str | None:
    if not config.checkpoint.export_hf_at_end:
        return None
    params = host_params(state)  # every process takes part in the gather
    if not lead:
        return None
    return export_hf(setup.graphdef, params, os.path.join(config.output_dir, "hf"), tokenizer)


@dataclasses.dataclass
class RunSummary:
    """What `train` returns: how the run ended and what it left. `summary["loss"]` reads `summary.loss`
    (callers written against the dict this was keep working)."""

    start_step: int  # the step the run started (or resumed) at
    steps: int  # the last step done
    params: int  # parameters of the model
    checkpoint_dir: str
    status: Literal["done", "stopped", "failed"] = "done"
    exit_status: int | None = None  # stopped: the process's exit status (SIGTERM 0, Ctrl-C 130)
    loss: float | None = None  # the last step's training loss
    eval: dict[str, float] | None = None  # the last evaluation (eval_loss, eval_accuracy, eval_perplexity)
    hf_dir: str | None = None  # the Hugging Face export (done runs, the lead process)
    tokens_per_s: float | None = None  # after the first (compiling) step
    wall_s: float = 0.0
    devices: int = 0
    state: TrainState | None = None  # the final train state (on the mesh)
    graphdef: Any = None  # with `state.params`: nnx.merge(graphdef, params) is the model

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)


@dataclasses.dataclass
class _Loop:
    """One run's loop state inside `train`: the step, the data position, the records, the summary."""

    config: RunConfig
    setup: StepSetup
    ckpt: Checkpointer
    writer: MetricsWriter
    state: TrainState
    step: int
    pos: dict
    summary: RunSummary
    tokens: int  # tokens per step, padding included
    peak: float | None
    run_dir: Any = None
    timed_tokens: int = 0
    timed_s: float = 0.0

    def save(self) -> None:
        meta = {"step": self.step, "data_position": self.pos, "seed": self.config.seed,
                "rng": "dropout key = fold_in(fold_in(PRNGKey(seed), step), micro_batch)"}  # fmt: skip
        self.ckpt.save(self.step, self.state, meta)
        if self.run_dir is not None:
            self.run_dir.checkpointed(self.step)  # run.json: how far the run got

    def train_step(self, rows: dict, pos: dict) -> None:
        """One optimizer step on a global batch; stops (WWMError) on a non-finite loss or gradient norm
        before anything of the step is written; writes the step's metrics record."""
        t0 = time.perf_counter()
        self.state, metrics = self.setup.step_fn(self.state, shd.global_arrays(rows, self.setup.mesh, 1))
        metrics = {k: v.item() for k, v in jax.device_get(metrics).items()}
        dt = time.perf_counter() - t0
        self.step, self.pos = self.step + 1, pos
        try:
            _check_finite(metrics, self.step, self.ckpt)
        except WWMError:
            self.summary.status, self.summary.steps = "failed", self.step
            raise
        if self.step > self.summary.start_step + 1:  # the first step compiles
            self.timed_tokens, self.timed_s = self.timed_tokens + self.tokens, self.timed_s + dt
        n_devices = self.setup.mesh.devices.size
        mfu = self.setup.flops_per_step / dt / (self.peak * n_devices) if self.peak else None
        record = {"step": self.step, "loss": metrics["loss"], "learning_rate": metrics["learning_rate"],
                  "grad_norm": metrics["grad_norm"], "masked_tokens": int(metrics["masked_tokens"]),
                  "tokens_per_s": self.tokens / dt, "step_time_s": dt, "mfu": mfu}  # fmt: skip
        tc = self.config.train
        self.writer.train(record, log=self.step % tc.log_every_steps == 0 or self.step == tc.max_steps)
        self.summary.steps, self.summary.loss = self.step, metrics["loss"]

    def checkpoint_and_eval(self, evaluate_now) -> None:
        """The saves and evaluations that fall on this step."""
        c = self.config
        if self.step % c.checkpoint.every_steps == 0:
            self.save()
        if evaluate_now is not None and (
            self.step % c.eval.every_steps == 0 or self.step == c.train.max_steps
        ):
            self.summary.eval = evaluate_now(self.state.params)
            self.writer.eval({"step": self.step, **self.summary.eval})

    def stop_if_asked(self, stop: StopRequest) -> bool:
        """On SIGTERM/SIGINT (any host): save this step and end the loop. When another process took the
        run's lock over (it judged this run gone), stop without writing anything more (WWMError)."""
        signalled, lost = _stop_requested(stop, self.run_dir)  # every step on every host: collective
        if lost:
            self.summary.status, self.summary.steps = "failed", self.step
            if self.run_dir.lock is not None:
                self.run_dir.check_lock()
            raise WWMError(f"process 0 lost the lock on output_dir {self.config.output_dir}; stopping")
        if self.step >= self.config.train.max_steps or not signalled:
            return False
        self.save()
        self.writer.message(f"{stop.name or 'a signal on another host'}: saved step {self.step} to "
                            f"{self.ckpt.directory}; exiting (run the same command to resume)")  # fmt: skip
        self.summary.status, self.summary.exit_status = "stopped", stop.exit_status
        return True


def train(
    config: RunConfig,
    *,
    train_dataset,
    val_dataset,
    masker,
    hf_config: dict | None,
    tokenizer=None,
    run_dir=None,
    on_batch=None,
    trackers=None,
    stop: StopRequest | None = None,
) -> RunSummary:
    """Train to `train.max_steps` (resuming from the newest checkpoint if allowed). Returns its summary.

    `run_dir`: the `wwm.rundir.RunDir` that `run` claimed; None claims `config.output_dir` here (and
    releases its lock at the end). `trackers`: the open `wwm.trackers.Trackers` (None: opened here on
    the lead when `logging.report_to` lists wandb or mlflow, and closed at the end). `stop`: the
    `run`'s StopRequest, switched here from stopping at once to saving a checkpoint first (None: one of
    this call's own).
    `on_batch(step, rows)`: called before each optimizer step with this process's rows of the step's
    global batch, as fed to the model: {"input_ids", "labels", "attention_mask"} (b, L) int32 and
    "example_ids" (b,), rows in order (`wwm parity` records batches with it).
    """
    if run_dir is not None:
        return _train(config, train_dataset, val_dataset, masker, hf_config, tokenizer, run_dir, on_batch, trackers,
                      stop)  # fmt: skip
    from wwm import fs
    from wwm.rundir import claim

    several = jax.process_count() > 1
    share = shd.broadcast_json if several else None
    if fs.is_remote(config.output_dir):  # a bucket: claimed in this host's staging folder (wwm.runstore)
        from wwm.preflight import local_inputs
        from wwm.runstore import start_bucket_run

        rd = start_bucket_run(config, "jax", lead=jax.process_index() == 0, share=share,
                              process=(jax.process_index(), jax.process_count()))  # fmt: skip
        _bucket_barrier(rd)
        config = local_inputs(config, rd)
    else:
        rd = claim(config, "jax", lead=jax.process_index() == 0, share=share)
    with rd:
        own = _open_trackers(config, rd, jax.process_index() == 0) if trackers is None else None
        try:
            summary = _train(config, train_dataset, val_dataset, masker, hf_config, tokenizer, rd, on_batch,
                             trackers or own)  # fmt: skip
        except BaseException:
            if own is not None:
                own.close("failed")
            raise
        if own is not None:
            own.close(summary.status)
        return summary


def _bucket_barrier(run_dir) -> None:
    """Several processes with a bucket output_dir: every process's last uploads are done before the lead
    publishes the run's end and releases the folder's lease (wwm.runstore.RunStore.close)."""
    store = getattr(run_dir, "store", None)
    if store is not None and jax.process_count() > 1:
        from jax.experimental import multihost_utils

        store.barrier = lambda: multihost_utils.sync_global_devices("wwm-bucket-run-closed")


def _train(config, train_dataset, val_dataset, masker, hf_config, tokenizer, run_dir, on_batch, trackers,
           stop=None):  # fmt: skip
    from wwm.data import BatchIterator

    t_start = time.perf_counter()
    tc, out_dir = config.train, config.output_dir
    lead = jax.process_index() == 0
    setup = build_step(config, hf_config, masker, train_dataset.max_seq_len)
    # A gs:// output_dir (checkpoint.gcs_direct): orbax writes the bucket's checkpoints itself, every
    # process its shards into the same step. Otherwise a bucket output_dir with several processes: each
    # host saves and restores its own part of each checkpoint on its own disk (wwm_jax.checkpoint, "per
    # process"); the mirror carries the parts.
    store = getattr(run_dir, "store", None)
    direct = store is not None and store.direct
    per_process = store is not None and jax.process_count() > 1 and not direct
    remote = store.url("checkpoints") if direct else None
    ckpt = Checkpointer(out_dir, config.checkpoint, per_process=per_process, remote=remote)
    state, position, latest = _restore(ckpt, setup.state, run_dir.resume, lead)
    start = int(jax.device_get(state.step))
    if lead:
        os.makedirs(out_dir, exist_ok=True)
        truncate_after(os.path.join(out_dir, "metrics.jsonl"), start)
    writer = MetricsWriter(out_dir, config.logging, total_steps=tc.max_steps, start_step=start, enabled=lead,
                           trackers=trackers)  # fmt: skip
    for text in run_dir.messages:
        writer.message(f"wwm: {text}")
    if latest is not None:
        writer.message(f"resumed from {ckpt.directory}/{latest} (data position {position.to_dict()})")

    host = shd.host_share(setup.mesh, tc.global_batch_size)
    batches = BatchIterator(train_dataset, tc.global_batch_size, config.seed, host_index=host[0],
                            host_count=host[1], start=position, order_rule=run_dir.order_rule)  # fmt: skip
    stream = _prefetch(masked_host_batches(batches, masker, tc.grad_accum_steps))

    def evaluate_now(params) -> dict[str, float]:
        return evaluate(setup.eval_fn, params, val_dataset, masker, setup.mesh, config, host)

    summary = RunSummary(start_step=start, steps=start, params=setup.n_params, checkpoint_dir=ckpt.directory)
    loop = _Loop(config, setup, ckpt, writer, state, start, position.to_dict(), summary,
                 tokens=tc.global_batch_size * train_dataset.max_seq_len,
                 peak=peak_flops_per_device(config.logging.peak_flops_per_device), run_dir=run_dir)  # fmt: skip
    with contextlib.nullcontext(stop) if stop is not None else StopRequest("wwm train") as stop:
        stop.immediate = False  # from here on a signal saves the step in flight, then stops
        try:
            while loop.step < tc.max_steps:
                rows, example_ids, pos = next(stream)
                if on_batch is not None:
                    on_batch(loop.step + 1, {**{k: from_micro_batches(v) for k, v in rows.items()},
                                             "example_ids": example_ids})  # fmt: skip
                loop.train_step(rows, pos)
                loop.checkpoint_and_eval(evaluate_now if val_dataset is not None else None)
                if loop.stop_if_asked(stop):
                    break
            if summary.status == "done":
                loop.save()
                summary.hf_dir = _export_at_end(config, setup, loop.state, tokenizer, lead)
        finally:
            writer.close()
            ckpt.close()
    summary.tokens_per_s = loop.timed_tokens / loop.timed_s if loop.timed_s else None
    summary.wall_s, summary.devices = time.perf_counter() - t_start, setup.mesh.devices.size
    summary.state, summary.graphdef = loop.state, setup.graphdef
    return summary


def format_summary(summary: RunSummary) -> str:
    lines = [f"JAX training {summary.status}: step {summary.steps} "
             f"(started at {summary.start_step}), {summary.params:,} parameters, "
             f"{summary.devices} device(s), {summary.wall_s:.1f} s"]  # fmt: skip
    if summary.loss is not None:
        lines.append(f"  final train loss {summary.loss:.4f}")
    if summary.eval:
        e = summary.eval
        lines.append(f"  eval loss {e['eval_loss']:.4f}, accuracy {e['eval_accuracy']:.4f}, "
                     f"perplexity {e['eval_perplexity']:.2f}")  # fmt: skip
    if summary.tokens_per_s:
        lines.append(f"  {summary.tokens_per_s:,.0f} tokens/s (after the first, compiling step)")
    lines.append(f"  checkpoints: {summary.checkpoint_dir}")
    if summary.hf_dir:
        lines.append(f"  Hugging Face export: {summary.hf_dir}")
    return "\n".join(lines)


__all__ = ["RunSummary", "export_hf", "format_summary", "run", "train"]
