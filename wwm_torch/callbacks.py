"""Trainer callbacks: stopping on a signal, the metrics of every step, printing, and the masking epoch.

* `StopCallback`: on SIGTERM/SIGINT, save the step just finished and stop (all ranks at the same step).
* `MetricsCallback`: one `metrics.jsonl` record per optimizer step (the JAX trainer's keys), eval records,
  TensorBoard scalars, and a clear stop (`NonFiniteLossError`) on a NaN/inf loss or gradient norm.
* `install_printing` (`ProgressBar`, `Printer`): the console every `log_every_steps` steps.
* `EpochCallback`: keeps the whole-word masking collator in step with the epoch (any Trainer).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from wwm import flops
from wwm.errors import WWMError
from wwm.metrics_schema import dumps_record, truncate_after
from wwm_torch.checkpoints import complete_checkpoints

if TYPE_CHECKING:
    from wwm_torch.trainer import WWMTrainer

__all__ = [
    "EpochCallback",
    "MetricsCallback",
    "NonFiniteLossError",
    "Printer",
    "ProgressBar",
    "StopCallback",
    "install_printing",
]


class NonFiniteLossError(WWMError):
    """The loss of an optimizer step was NaN or infinite; training stopped before saving that step."""


# ---------------------------------------------------------------------------------------------- stopping
class StopCallback(TrainerCallback):
    """On SIGTERM/SIGINT (wwm.signals.StopRequest), save a checkpoint of the step just finished and stop.

    With several processes the flag is all-reduced each step, so all ranks stop at the same step (the
    save is collective)."""

    def __init__(self, stop: Any, run_dir: Any = None) -> None:
        self.stop = stop
        self.run_dir = run_dir  # wwm.rundir.RunDir: its lock lost -> stop without saving
        self.stopped_at: int | None = None

    def _requested(self, args) -> tuple[bool, bool]:
        flags = [self.stop.signal is not None, self.run_dir is not None and self.run_dir.lock_lost()]
        if args.world_size > 1:
            import torch.distributed as dist

            t = torch.tensor([int(f) for f in flags], device=args.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flags = [bool(v) for v in t.tolist()]
        return flags[0], flags[1]

    def on_step_end(self, args, state, control, **kwargs):
        signalled, lost = self._requested(args)  # every step on every rank: collective
        if lost:
            if self.run_dir.lock is not None:
                self.run_dir.check_lock()
            raise WWMError(f"rank 0 lost the lock on output_dir {self.run_dir.path}; stopping")
        if state.global_step < state.max_steps and signalled:
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control

    def on_save(self, args, state, control, **kwargs):
        if self.run_dir is not None:
            self.run_dir.checkpointed(state.global_step)  # run.json: how far the run got (rank 0 writes)
        return control


# ---------------------------------------------------------------------------------------------- metrics
class MetricsCallback(TrainerCallback):
    """Per-step records in `<output_dir>/metrics.jsonl` and TensorBoard; stops on a NaN/inf loss.

    A training record: {"step", "loss", "learning_rate", "grad_norm", "masked_tokens",
    "tokens_per_s", "step_time_s", "mfu"} (the JAX trainer's keys); step 1 is the first optimizer
    update, loss is the loss of that update's global batch, learning_rate the rate that update used,
    grad_norm the norm before clipping, tokens count padding. An eval record: {"step", "eval_loss",
    "eval_accuracy", "eval_perplexity"}. TensorBoard gets every `log_every_steps`-th step and every
    eval. Only the main process writes.
    """

    def __init__(
        self,
        trainer: WWMTrainer,  # its step_metrics() after each step
        output_dir: str,
        *,
        jsonl: bool = True,
        tensorboard: bool = True,
        log_every_steps: int = 1,
        peak_flops: float | None = None,
    ):
        self.trainer = trainer
        self.output_dir = output_dir
        self.jsonl = jsonl
        self.tensorboard = tensorboard
        self.log_every_steps = log_every_steps
        # The configured value, else the wwm.flops table's entry for this GPU, else None (CPUs: no MFU).
        self.peak_flops = flops.peak_flops(
            torch.cuda.get_device_name() if torch.cuda.is_available() else None, peak_flops
        )
        self.records: list[dict[str, Any]] = []  # this run's training records (for the summary)
        self.last_eval: dict[str, Any] | None = None
        self._n_params: int | None = None
        self.pending: dict[str, Any] | None = None
        self._file = None
        self._writer = None

    # -------------------------------------------------------------- writers
    def _open(self, state) -> None:
        if not state.is_world_process_zero or self._file is not None or self._writer is not None:
            return
        os.makedirs(self.output_dir, exist_ok=True)
        if self.jsonl:
            path = os.path.join(self.output_dir, "metrics.jsonl")
            # local: the run folder or a bucket run's staging folder (wwm.fs.sync copies it)
            self._file = open(path, "a", encoding="utf-8")
            self._truncate_after(path, state.global_step)
        if self.tensorboard:
            # On resume, purge_step hides the points an earlier process logged after the checkpoint (they
            # are computed again; TensorBoard would show both).
            purge = state.global_step + 1 if state.global_step else None
            self._writer = _summary_writer(os.path.join(self.output_dir, "tensorboard"), purge)

    def _truncate_after(self, path: str, step: int) -> None:
        """On resume, drop records of steps after the checkpoint (they are computed again)."""
        self._file.close()
        truncate_after(path, step)
        # local: the run folder or a bucket run's staging folder (wwm.fs.sync copies it)
        self._file = open(path, "a", encoding="utf-8")

    def _write(self, record: dict[str, Any], prefix: str, *, scalars: bool = True) -> None:
        if self._file is not None:
            self._file.write(dumps_record(record) + "\n")
            self._file.flush()
        if self._writer is not None and scalars:
            step = record["step"]
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and value is not None:
                    tag = key[len("eval_") :] if key.startswith("eval_") else key
                    self._writer.add_scalar(f"{prefix}/{tag}", value, step)
            self._writer.flush()

    # -------------------------------------------------------------- events
    def on_train_begin(self, args, state, control, **kwargs):
        self._open(state)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        m = self.trainer.step_metrics()
        if not math.isfinite(m["loss"]):
            checkpoints = complete_checkpoints(args.output_dir)
            last = checkpoints[-1] if checkpoints else "none (no checkpoint was saved yet)"
            raise NonFiniteLossError(
                f"the loss is {m['loss']} at step {state.global_step} (global batch of {m['masked_tokens']} masked "
                f"tokens); training stopped before saving this step. The last good checkpoint: {last}. Lower "
                "optim.learning_rate, keep optim.max_grad_norm, or use train.dtype=float32."
            )
        mfu = None
        if self.peak_flops:
            cfg = self.trainer.model.config
            if self._n_params is None:
                self._n_params = sum(p.numel() for p in self.trainer.model.parameters())
            rows = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            per_step = flops.flops_per_step(
                self._n_params, cfg.num_hidden_layers, m["tokens"] // rows, cfg.hidden_size, m["tokens"],
                windows=flops.attention_windows(cfg),
            )  # fmt: skip
            mfu = per_step / m["step_time_s"] / (self.peak_flops * args.world_size)
        self.pending = {
            "step": state.global_step,
            "loss": m["loss"],
            "learning_rate": None,
            "grad_norm": None,
            "masked_tokens": m["masked_tokens"],
            "tokens_per_s": m["tokens_per_s"],
            "step_time_s": m["step_time_s"],
            "mfu": mfu,
        }
        self.trainer.step_record = dict(self.pending)  # WWMTrainer.log hands it to the trackers
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "eval_loss" in logs:
            record = {"step": state.global_step}
            record.update({k: logs[k] for k in ("eval_loss", "eval_accuracy", "eval_perplexity")})
            self._write(record, "eval")
            self.last_eval = record
        elif self.pending is not None and "learning_rate" in logs and "train_runtime" not in logs:
            record, self.pending = self.pending, None
            record["learning_rate"] = float(logs["learning_rate"])
            grad_norm = logs.get("grad_norm")
            if grad_norm is not None and not math.isfinite(grad_norm):
                # The loss was finite but the update made the parameters NaN: stop before the save.
                checkpoints = complete_checkpoints(args.output_dir)
                raise NonFiniteLossError(
                    f"the gradient norm is {grad_norm} at step {state.global_step}; training stopped before "
                    f"saving this step. The last good checkpoint: {checkpoints[-1] if checkpoints else 'none'}. "
                    "Lower optim.learning_rate, keep optim.max_grad_norm, or use train.dtype=float32."
                )
            record["grad_norm"] = None if grad_norm is None else float(grad_norm)
            every = record["step"] % self.log_every_steps == 0 or record["step"] == state.max_steps
            self._write(record, "train", scalars=every)
            self.records.append(record)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.close()
        return control

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# ---------------------------------------------------------------------------------------------- printing
# The Trainer's end-of-training speed figures time the whole train() call, start-up included (loading a
# checkpoint, skipping to the data position): the summary's tokens/s, after the first step, replaces them.
_WHOLE_CALL = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos")


def _worth_printing(logs: dict[str, Any], step: int, every: int) -> bool:
    return "eval_loss" in logs or "train_runtime" in logs or step % every == 0 or step == 1


def _printed(logs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in logs.items() if k not in _WHOLE_CALL and k != "epoch"}


class ProgressBar(ProgressCallback):
    """transformers' progress bar, printing the train logs every `every` steps only (logging_steps is 1)."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = every

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and _worth_printing(logs, state.global_step, self.every):
            super().on_log(args, state, control, logs=_printed(logs), **kwargs)


class Printer(PrinterCallback):
    """transformers' log printer (no progress bar), every `every` steps."""

    def __init__(self, every: int) -> None:
        self.every = every

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and _worth_printing(logs, state.global_step, self.every):
            super().on_log(args, state, control, logs=dict(_printed(logs), step=state.global_step), **kwargs)


def install_printing(trainer: Trainer, every: int, progress_bar: bool) -> None:
    """Replace the Trainer's per-log printing (every step here) with printing every `every` steps."""
    trainer.pop_callback(PrinterCallback)
    trainer.pop_callback(ProgressCallback)
    trainer.add_callback(ProgressBar(every) if progress_bar else Printer(every))


def _summary_writer(logdir: str, purge_step: int | None = None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the tensorboard package is missing: tensorboardX writes the same event files
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            return None
    return SummaryWriter(logdir, purge_step=purge_step)


# ---------------------------------------------------------------------------------------------- masking epoch
class EpochCallback(TrainerCallback):
    """Tells the collator which epoch starts, since the epoch is part of every mask's key.

        collator = WholeWordMaskingCollator(tokenizer, config)
        trainer = Trainer(..., data_collator=collator, callbacks=[EpochCallback(collator)])

    A plain Trainer never tells its collator the epoch (it calls `set_epoch` on the data loader,
    whose sampler and dataset hear of it, never the collate function), so without this every epoch
    would mask each example the same way. The Trainer calls `on_epoch_begin` before it creates the
    epoch's data-loader iterator, and each worker receives its copy of the collator then, so this
    works with `dataloader_num_workers > 0`. Persistent workers keep the copy of the first epoch:
    they are refused (give each feature an `epoch` field instead, as the `wwm_torch` trainer does).
    """

    def __init__(self, collator) -> None:
        self.collator = collator

    def on_train_begin(self, args, state, control, **kwargs):
        if args.dataloader_persistent_workers and args.dataloader_num_workers > 0:
            raise WWMError(
                "EpochCallback cannot reach persistent data-loader workers (their collator copies keep the "
                "first epoch's masks): set dataloader_persistent_workers=False, or give each feature an "
                "'epoch' field"
            )
        # Before any batch, an evaluation at the start included (a resumed run: its epoch).
        self.collator.set_epoch(int(state.epoch or 0))
        return control

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.set_epoch(int(state.epoch or 0))
        return control
