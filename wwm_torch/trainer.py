"""The Hugging Face Trainer, fed with the JAX path's global batches and trained on the JAX path's loss.

* `training_arguments`: TrainingArguments derived from our config sections.
* `WWMTrainer`: a `transformers.Trainer` whose training order is `GlobalBatchDataset`'s (sequential),
  whose loss is the summed token cross-entropy over the masked positions of the whole global batch
  (all accumulation micro-batches and ranks) divided by that batch's number of masked positions,
  and whose evaluation reports token-weighted MLM loss, accuracy and perplexity.

The other jobs of the torch side have their own modules: the model (`wwm_torch.model`: build, attention
choice, packed inputs, the MLM head at rows), the callbacks (`wwm_torch.callbacks`: stop, metrics,
printing, epoch) and the checkpoints (`wwm_torch.checkpoints`: integrity and fallback).

The loss, step by step (docs/torch_trainer.md): `get_batch_samples` counts the masked positions of
the step's micro-batches and all-reduces the count over ranks (N); `compute_loss` returns
`sum CE(local micro-batch) / N * world_size`. DDP averages gradients over ranks and accumulation sums
them, so the update uses the gradient of `sum CE(global batch) / N`. `loss_is_scaled_for_ga` tells
the Trainer not to divide by the accumulation steps again.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from wwm.config import OptimConfig, RunConfig
from wwm.errors import RESUME_HINT, DiskFull, WWMError, is_disk_full
from wwm.masking import IGNORE_INDEX
from wwm_torch.callbacks import MetricsCallback, NonFiniteLossError, StopCallback, install_printing
from wwm_torch.checkpoints import checkpoint_problem, complete_checkpoints, newest_intact_checkpoint
from wwm_torch.collator import EXAMPLE_IDS_OUT
from wwm_torch.model import build_model, head_at_rows, mlm_head, packed_inputs, torch_attention

# The names this module held before the torch side was split by job stay importable from it (their homes:
# wwm_torch.model, wwm_torch.callbacks, wwm_torch.checkpoints).
__all__ = [
    "SCHEDULES",
    "MetricsCallback",
    "NonFiniteLossError",
    "StepStats",
    "StopCallback",
    "WWMTrainer",
    "build_model",
    "checkpoint_problem",
    "complete_checkpoints",
    "head_at_rows",
    "install_printing",
    "masked_lm_sums",
    "mlm_head",
    "newest_intact_checkpoint",
    "packed_inputs",
    "state_is_finite",
    "torch_attention",
    "training_arguments",
]


SCHEDULES = {
    "linear": "linear",
    "cosine": "cosine",
    "constant": "constant_with_warmup",
    "wsd": "warmup_stable_decay",
}


def _scheduler_kwargs(optim: OptimConfig, max_steps: int) -> dict[str, Any]:
    """transformers' get_wsd_schedule arguments for schedule wsd (linear warmup, decay to 0)."""
    if optim.schedule != "wsd":
        return {}
    return {"num_decay_steps": optim.wsd_decay_steps(max_steps), "decay_type": optim.decay_shape,
            "warmup_type": "linear", "min_lr_ratio": 0.0}  # fmt: skip


# ---------------------------------------------------------------------------------------------- args
def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def training_arguments(
    config: RunConfig, *, has_eval: bool, world_size: int | None = None
) -> TrainingArguments:
    """TrainingArguments from our `config` (sections train, optim, checkpoint, eval, logging)."""
    train, optim, ckpt, ev, log = config.train, config.optim, config.checkpoint, config.eval, config.logging
    world = world_size or _world_size()
    per_step = train.grad_accum_steps * world
    if train.global_batch_size % per_step:
        raise WWMError(
            f"train.global_batch_size ({train.global_batch_size}) must be divisible by train.grad_accum_steps "
            f"({train.grad_accum_steps}) times the number of processes ({world})"
        )
    eval_batch = ev.batch_size or train.global_batch_size
    return TrainingArguments(
        output_dir=os.path.join(config.output_dir, "checkpoints"),
        seed=config.seed,
        data_seed=config.seed,
        max_steps=train.max_steps,
        per_device_train_batch_size=train.global_batch_size // per_step,
        per_device_eval_batch_size=max(1, -(-eval_batch // world)),
        gradient_accumulation_steps=train.grad_accum_steps,
        average_tokens_across_devices=True,
        learning_rate=optim.learning_rate,
        weight_decay=optim.weight_decay,
        adam_beta1=optim.beta1,
        adam_beta2=optim.beta2,
        adam_epsilon=optim.eps,
        optim="adamw_torch",
        lr_scheduler_type=SCHEDULES[optim.schedule],
        lr_scheduler_kwargs=_scheduler_kwargs(optim, train.max_steps),
        warmup_steps=int(optim.warmup_steps),
        max_grad_norm=optim.max_grad_norm if optim.max_grad_norm is not None else 0.0,
        bf16=train.dtype == "bfloat16",
        torch_compile=train.torch_compile,
        dataloader_num_workers=train.dataloader_num_workers,
        # Forking a process in which JAX runs (its thread pools) can deadlock the child: start the
        # workers fresh in that case (the dataset and the collator pickle).
        dataloader_multiprocessing_context=(
            "spawn" if train.dataloader_num_workers > 0 and "jax" in sys.modules else None
        ),
        dataloader_drop_last=False,
        remove_unused_columns=False,  # word_ids, example_id and epoch must reach the collator
        logging_strategy="steps",
        logging_steps=1,  # every step's grad norm and learning rate reach MetricsCallback
        logging_nan_inf_filter=False,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=ev.every_steps if has_eval else None,
        save_strategy="steps",
        save_steps=ckpt.every_steps,
        save_total_limit=ckpt.keep,
        # MetricsCallback writes metrics.jsonl and TensorBoard with the JAX trainer's keys; wandb and MLflow go
        # through the Trainer's own integrations, into the runs wwm.trackers opened (resumable ids).
        report_to=[name for name in log.report_to if name != "tensorboard"] or "none",
        disable_tqdm=not log.progress_bar,
        # Without CUDA, several processes need use_cpu (accelerate's MULTI_CPU, gloo): otherwise
        # transformers 5.24 initializes a process group but neither wraps the model in DDP nor reduces.
        use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if world > 1 and not torch.cuda.is_available() else None,
        ddp_find_unused_parameters=False,  # every parameter takes part in the masked-LM loss
    )


# ---------------------------------------------------------------------------------------------- loss
def masked_lm_sums(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum of token cross-entropies, number of masked positions, number predicted right), float32.

    `logits`: (B, L, V) for every position, or (M, V) for the masked positions only (the head ran
    only there). Only the masked positions (labels != IGNORE_INDEX) enter the softmax, so a batch with no
    masked token gives (0, 0, 0) and no NaN.
    """
    masked = labels != IGNORE_INDEX
    picked = (logits if logits.dim() == 2 else logits[masked]).float()  # (M, V)
    targets = labels[masked]
    ce = F.cross_entropy(picked, targets, reduction="sum")
    correct = (picked.argmax(-1) == targets).sum()
    return ce, masked.sum(), correct


@dataclass
class StepStats:
    """Sums over the micro-batches of the current optimizer step, on this rank."""

    ce: torch.Tensor | float = 0.0
    tokens: torch.Tensor | float = 0.0  # positions of the micro-batches, padding included
    masked: torch.Tensor | float = 0.0  # this step's global count (all ranks), from get_batch_samples
    started: float = 0.0


class WWMTrainer(Trainer):
    """`transformers.Trainer` with the JAX path's order, loss and evaluation (module docstring).

    `on_batch(step, rows)`: called once per optimizer step, before its forward passes, with this
    process's rows of the step's global batch as the model receives them ({"input_ids", "labels",
    "attention_mask"} (b, L) and "example_ids" (b,) numpy arrays, the micro-batches concatenated in
    order) — the JAX trainer's hook of the same name (`wwm parity` records batches with it).
    `masked_head=False`: the MLM head at every position (benchmarks compare the two).
    """

    loss_is_scaled_for_ga = True  # compute_loss already divides by the step's global masked count

    def __init__(self, *args: Any, on_batch: Any = None, masked_head: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_batch = on_batch
        self.masked_head = masked_head
        self.step_stats = StepStats()
        self.step_record: dict[str, Any] | None = None  # MetricsCallback's record of the finished step
        self._staging: str | None = None
        # Each node saves into a folder of its own disk (a bucket output_dir with torchrun: wwm.runstore), so
        # each node's local rank 0 renames its ranks' files into place; otherwise the world main process.
        self.node_disks = False

    # ---------------------------------------------------------------- logs
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """A training log carries the step's metrics.jsonl values (our loss over the global batch, masked
        tokens, tokens/s, step time, MFU), so that the Trainer's integrations (wandb, MLflow) log the keys
        of wwm.metrics_schema, as the JAX trainer does."""
        record = self.step_record
        if record is not None and "learning_rate" in logs and "train_runtime" not in logs:
            extra = {k: v for k, v in record.items() if k not in ("step", "learning_rate", "grad_norm")}
            logs.update({k: v for k, v in extra.items() if v is not None})
            self.step_record = None
        super().log(logs, start_time)

    # ---------------------------------------------------------------- checkpoints
    def _get_output_dir(self, trial: Any) -> str:
        return self._staging if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """The Trainer's checkpoint, written into `checkpoints/.saving-checkpoint-<step>/` and renamed to
        `checkpoint-<step>` when every rank has written its files (as orbax does for JAX): a kill or a full
        disk never leaves a half-written checkpoint under a checkpoint's name. Never saves a state with a
        NaN/inf parameter or optimizer moment. A full disk: the partial files are removed, DiskFull (exit
        75) names the newest intact checkpoint."""
        from transformers.trainer_utils import rotate_checkpoints

        step = self.state.global_step
        if not state_is_finite(self.model, self.optimizer):
            raise NonFiniteLossError(
                f"the parameters or optimizer state hold NaN/inf at step {step}: not saving them; the newest "
                "checkpoint stays the last good one. Lower optim.learning_rate or check the data"
            )
        run_dir = super()._get_output_dir(trial)
        name = f"checkpoint-{step}"
        staging = os.path.join(run_dir, f".saving-{name}")
        # node_disks (a bucket output_dir, wwm.runstore): each node's own folder, renamed by its local rank 0
        lead = self.args.should_save or (self.node_disks and self.args.local_process_index == 0)
        if lead:
            shutil.rmtree(staging, ignore_errors=True)
            os.makedirs(staging)
        self.accelerator.wait_for_everyone()
        self._staging = staging
        try:
            super()._save_checkpoint(model, trial)
        except Exception as err:
            full = is_disk_full(
                err, run_dir
            )  # before the partial files go (torch.save says "iostream error")
            if lead:
                shutil.rmtree(staging, ignore_errors=True)
            if not full:
                raise
            newest = complete_checkpoints(run_dir)
            raise DiskFull(
                f"no space left on the disk of {run_dir} while saving the checkpoint of step {step}; its partial "
                f"files were removed and the newest intact checkpoint is {newest[-1] if newest else 'none yet'}. "
                f"Free space (or move output_dir), {RESUME_HINT}"
            ) from None
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()
        if lead:
            final = os.path.join(run_dir, name)
            if os.path.isdir(final):  # the same step saved again (steps after a resumed checkpoint)
                shutil.rmtree(final)
            os.replace(os.path.join(staging, name), final)
            shutil.rmtree(staging, ignore_errors=True)
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)  # fmt: skip
        self.accelerator.wait_for_everyone()

    # ---------------------------------------------------------------- order
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return torch.utils.data.SequentialSampler(dataset)

    # ---------------------------------------------------------------- loss
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        started = time.perf_counter()
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.on_batch is not None and batch_samples:
            keys = ("input_ids", "labels", "attention_mask", EXAMPLE_IDS_OUT, "segment_ids", "position_ids")
            rows = {k: np.concatenate([b[k].cpu().numpy() for b in batch_samples]) for k in keys
                    if k in batch_samples[0]}  # fmt: skip
            rows["example_ids"] = rows.pop(EXAMPLE_IDS_OUT, None)
            self.on_batch(self.state.global_step + 1, rows)
        count = torch.zeros((), dtype=torch.float64, device=device)
        for batch in batch_samples:
            count += batch["labels"].ne(IGNORE_INDEX).sum().to(device)
        if self.args.world_size > 1:
            count = self.accelerator.reduce(count, reduction="sum")
        self.step_stats = StepStats(ce=0.0, tokens=0.0, masked=count, started=started)
        return batch_samples, count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        inputs.pop(EXAMPLE_IDS_OUT, None)
        labels = inputs.pop("labels")
        outputs = self._forward_masked_head(model, inputs, labels)
        ce, masked, _ = masked_lm_sums(outputs.logits, labels)
        if num_items_in_batch is None:  # outside the training loop: this batch alone
            num_items_in_batch = masked
        denominator = torch.clamp(
            torch.as_tensor(num_items_in_batch, device=ce.device, dtype=ce.dtype), min=1
        )
        loss = ce / denominator * self.args.world_size  # DDP averages gradients over ranks
        if model.training:
            stats = self.step_stats
            stats.ce = stats.ce + ce.detach()
            stats.tokens = stats.tokens + inputs["input_ids"].numel()  # padding included, as in JAX
        return (loss, outputs) if return_outputs else loss

    def _forward_masked_head(self, model, inputs: dict[str, Any], labels: torch.Tensor):
        """The model's outputs with the MLM head run only at the masked positions: logits (M, V)
        (`masked_head=False`: (B, L, V); masked_lm_sums takes either)."""
        inputs = packed_inputs(self.model, inputs)
        if not self.masked_head:
            return model(**inputs)
        with head_at_rows(self.model, labels != IGNORE_INDEX):
            return model(**inputs)

    def step_metrics(self) -> dict[str, float]:
        """The finished step's loss, masked-token count and token count over all ranks."""
        stats = self.step_stats
        device = self.args.device
        sums = torch.stack(
            [torch.as_tensor(stats.ce, dtype=torch.float64, device=device),
             torch.as_tensor(stats.tokens, dtype=torch.float64, device=device)]
        )  # fmt: skip
        if self.args.world_size > 1:
            sums = self.accelerator.reduce(sums, reduction="sum")
        masked = float(stats.masked)
        ce, tokens = (float(v) for v in sums.tolist())
        elapsed = time.perf_counter() - stats.started
        return {
            "loss": ce / max(masked, 1.0),
            "masked_tokens": int(masked),
            "tokens": int(tokens),
            "step_time_s": elapsed,
            "tokens_per_s": tokens / elapsed if elapsed > 0 else float("nan"),
        }

    # ---------------------------------------------------------------- evaluation
    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Token-weighted MLM loss, accuracy and perplexity over the validation set (fixed masks).

        Each rank takes a contiguous share of the validation rows; sums are all-reduced, so the figures
        do not depend on the number of processes or the batch size.
        """
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise WWMError(
                "evaluation needs a validation set (data.validation_fraction or data.validation_files)"
            )
        world, rank = self.args.world_size, self.args.process_index
        n = len(dataset)
        lo, hi = n * rank // world, n * (rank + 1) // world
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, range(lo, hi)),
            batch_size=self.args.per_device_eval_batch_size,
            collate_fn=self.data_collator,
            shuffle=False,
        )
        model = self.model
        was_training = model.training
        model.eval()
        device = self.args.device
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # ce, masked, correct
        with torch.no_grad():
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items() if k != EXAMPLE_IDS_OUT}
                labels = batch.pop("labels")
                with self.accelerator.autocast():
                    logits = self._forward_masked_head(model, batch, labels).logits
                ce, masked, correct = masked_lm_sums(logits, labels)
                sums += torch.stack([ce.double(), masked.double(), correct.double()])
        if world > 1:
            sums = self.accelerator.reduce(sums, reduction="sum")
        model.train(was_training)
        ce, masked, correct = sums.tolist()
        loss = ce / max(masked, 1.0)
        metrics = {
            f"{metric_key_prefix}_loss": loss,
            f"{metric_key_prefix}_accuracy": correct / max(masked, 1.0),
            f"{metric_key_prefix}_perplexity": math.exp(min(loss, 700.0)),
            f"{metric_key_prefix}_masked_tokens": int(masked),
        }
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def state_is_finite(model: torch.nn.Module, optimizer: Any = None) -> bool:
    """Whether every parameter and every floating-point optimizer-state tensor is finite."""
    tensors = list(model.parameters())
    if optimizer is not None:
        for per_param in optimizer.state.values():
            tensors += [v for v in per_param.values() if torch.is_tensor(v) and v.is_floating_point()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)
