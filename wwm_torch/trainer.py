"""The Hugging Face Trainer, fed with the JAX path's global batches and trained on the JAX path's loss.

* `build_model`: BertForMaskedLM / RobertaForMaskedLM / ModernBertForMaskedLM from
  `ModelConfig.hf_config_dict` (the one place a fresh model's config is built) or from a pretrained
  safetensors directory.
* `training_arguments`: TrainingArguments derived from our config sections.
* `WWMTrainer`: a `transformers.Trainer` whose training order is `GlobalBatchDataset`'s (sequential),
  whose loss is the summed token cross-entropy over the masked positions of the whole global batch
  (all accumulation micro-batches and ranks) divided by that batch's number of masked positions,
  and whose evaluation reports token-weighted MLM loss, accuracy and perplexity.
* `MetricsCallback`: one `metrics.jsonl` record per optimizer step (the same keys as the JAX
  trainer), eval records, TensorBoard scalars, and a clear stop on a NaN/inf loss.

The loss, step by step (docs/torch_trainer.md): `get_batch_samples` counts the masked positions of
the step's micro-batches and all-reduces the count over ranks (N); `compute_loss` returns
`sum CE(local micro-batch) / N * world_size`. DDP averages gradients over ranks and accumulation sums
them, so the update uses the gradient of `sum CE(global batch) / N`. `loss_is_scaled_for_ga` tells
the Trainer not to divide by the accumulation steps again.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from wwm.errors import WWMError
from wwm.flops import flops_per_step, peak_flops
from wwm.masking import IGNORE_INDEX
from wwm.metrics_schema import dumps_record, truncate_after
from wwm_torch.collator import EXAMPLE_IDS_OUT

__all__ = [
    "MetricsCallback",
    "NonFiniteLossError",
    "StopCallback",
    "WWMTrainer",
    "build_model",
    "checkpoint_problem",
    "head_at_rows",
    "install_printing",
    "masked_lm_sums",
    "mlm_head",
    "newest_intact_checkpoint",
    "state_is_finite",
    "training_arguments",
]

SCHEDULES = {
    "linear": "linear",
    "cosine": "cosine",
    "constant": "constant_with_warmup",
    "wsd": "warmup_stable_decay",
}


def _scheduler_kwargs(optim: Any, max_steps: int) -> dict[str, Any]:
    """transformers' get_wsd_schedule arguments for schedule wsd (linear warmup, decay to 0)."""
    if optim.schedule != "wsd":
        return {}
    return {"num_decay_steps": optim.wsd_decay_steps(max_steps), "decay_type": optim.decay_shape,
            "warmup_type": "linear", "min_lr_ratio": 0.0}  # fmt: skip


class NonFiniteLossError(WWMError):
    """The loss of an optimizer step was NaN or infinite; training stopped before saving that step."""


# ---------------------------------------------------------------------------------------------- model
def torch_attention(name: str) -> str:
    """transformers' attn_implementation for `train.attn_implementation` `name` (one switch for both
    trainers, docs/models.md), or WWMError when it cannot run here (never a silent fallback)."""
    if name in ("auto", "sdpa"):
        return "sdpa"
    if name == "eager":
        return "eager"
    if name == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available():
            raise WWMError(
                "train.attn_implementation flash_attention_2 needs the flash-attn package and a CUDA GPU "
                f"(flash_attn installed: {importlib.util.find_spec('flash_attn') is not None}, CUDA: "
                f"{torch.cuda.is_available()}); use sdpa or eager"
            )
        return "flash_attention_2"
    if name == "blockwise":
        raise WWMError(
            "train.attn_implementation blockwise is the JAX trainer's memory-efficient attention; in torch "
            "use sdpa (its fused CPU/GPU kernels) or eager"
        )
    raise WWMError(f"unknown train.attn_implementation {name!r}; use auto, eager, sdpa or flash_attention_2")


def packed_inputs(model: torch.nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
    """Packed documents: `segment_ids` (B, L) (0 padding, 1..k pieces) and per-piece `position_ids`
    -> what a transformers BERT/RoBERTa honours: a (B, 1, L, L) additive float mask, block-diagonal (a
    token sees its own piece; transformers' create_bidirectional_mask passes a 4D mask through as is,
    eager adds it to the scores, sdpa hands it to scaled_dot_product_attention), and the position rows
    (`model_position_ids`: RoBERTa's count from pad_token_id + 1). Other inputs pass unchanged."""
    if "segment_ids" not in inputs:
        return inputs
    from wwm.data.packing import model_position_ids

    inputs = dict(inputs)
    seg = inputs.pop("segment_ids")
    positions = inputs.pop("position_ids")
    cfg = model.config
    if getattr(cfg, "_attn_implementation", None) == "flash_attention_2":
        raise WWMError("packed documents with flash_attention_2 are not wired yet; use sdpa or eager")
    keep = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] != 0)  # (B, L, L)
    dtype = model.dtype
    mask = torch.zeros(keep.shape, dtype=dtype, device=seg.device).masked_fill(~keep, torch.finfo(dtype).min)
    inputs["attention_mask"] = mask[:, None]  # (B, 1, L, L)
    inputs["position_ids"] = model_position_ids(positions, seg, cfg.model_type, cfg.pad_token_id)
    return inputs


def build_model(
    model_config: Any, tokenizer: Any, max_seq_len: int, attn_implementation: str = "sdpa", *, seed: int = 0
):
    """A masked-LM model: loaded from `model_config.pretrained`, or fresh from `model_config` with the
    weights `wwm.initial_weights.initial_state(config dict, seed)` (the JAX trainer's, bit for bit)."""
    from transformers import AutoConfig, AutoModelForMaskedLM

    attn_implementation = torch_attention(attn_implementation)

    if model_config.pretrained:
        path = model_config.pretrained
        if not os.path.isdir(path):
            raise WWMError(f"model.pretrained {path!r} is not a directory (a Hugging Face model directory)")
        try:
            model = AutoModelForMaskedLM.from_pretrained(
                path, use_safetensors=True, attn_implementation=attn_implementation
            )
        except OSError as err:
            raise WWMError(
                f"could not load the masked-LM model in {path!r} (safetensors weights and config.json needed): {err}"
            ) from err
        if model.config.vocab_size < len(tokenizer):
            raise WWMError(
                f"the model in {path!r} has {model.config.vocab_size} token embeddings but the tokenizer has "
                f"{len(tokenizer)} tokens; use the model's own tokenizer (tokenizer.path: {path})"
            )
        return model
    from wwm.initial_weights import initial_state, with_tied

    hf_config = model_config.hf_config_dict(tokenizer, max_seq_len)
    d = dict(hf_config)
    model_type = d.pop("model_type")
    architectures = d.pop("architectures")
    config = AutoConfig.for_model(model_type, **d)
    config.architectures = architectures
    model = AutoModelForMaskedLM.from_config(config, attn_implementation=attn_implementation)
    # Strict: every tensor of the state dict, the tied decoder copies given as their (shared) sources.
    state = with_tied(initial_state(hf_config, seed), hf_config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model


# ---------------------------------------------------------------------------------------------- args
def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def training_arguments(config: Any, *, has_eval: bool, world_size: int | None = None) -> TrainingArguments:
    """TrainingArguments from our RunConfig-like `config` (sections train, optim, checkpoint, eval, logging)."""
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
        report_to="none",  # MetricsCallback writes metrics.jsonl and TensorBoard with the JAX trainer's keys
        disable_tqdm=not log.progress_bar,
        # Without CUDA, several processes need use_cpu (accelerate's MULTI_CPU, gloo): otherwise
        # transformers 5.24 initializes a process group but neither wraps the model in DDP nor reduces.
        use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if world > 1 and not torch.cuda.is_available() else None,
        ddp_find_unused_parameters=False,  # every parameter takes part in the masked-LM loss
    )


# ---------------------------------------------------------------------------------------------- loss
def mlm_head(model: torch.nn.Module) -> torch.nn.Module:
    """The module of a masked-LM model whose input is the hidden states (..., H) on their way to the logits.

    BertForMaskedLM `cls`, RobertaForMaskedLM `lm_head`: hidden -> logits. ModernBertForMaskedLM: `head`
    (dense, act, norm), whose output goes straight to `decoder` (`logits = decoder(head(hidden))`), so rows
    taken at its input give the logits of those rows. (transformers' own `sparse_prediction` gathers the
    same rows but only when `labels` are passed, and then also computes its mean loss: not used.)"""
    names = ("head",) if type(model).__name__ == "ModernBertForMaskedLM" else ("cls", "lm_head")
    for name in names:
        head = getattr(model, name, None)
        if head is not None:
            return head
    raise WWMError(f"{type(model).__name__} has no MLM head the trainer knows (cls, lm_head, or head)")


@contextlib.contextmanager
def head_at_rows(model: torch.nn.Module, rows: torch.Tensor):
    """Within the block, `model(...)` runs its MLM head on `hidden[rows]` (M, H) instead of every
    position (B, L, H), so the logits are (M, V): the loss needs no other position's logits.

    Why a scoped forward pre-hook and not `head(encoder(...)[rows])` at the call site: the forward must
    go through `model` as the Trainer wrapped it (DDP, FSDP, torch.compile): DDP prepares its gradient
    all-reduce in its own forward, and calling the unwrapped encoder would skip that. The hook exists
    only inside this block (registered on entry, removed on exit)."""
    handle = mlm_head(model).register_forward_pre_hook(lambda module, args: (args[0][rows], *args[1:]))
    try:
        yield
    finally:
        handle.remove()


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


# ---------------------------------------------------------------------------------------------- stopping
class StopCallback(TrainerCallback):
    """On SIGTERM/SIGINT (wwm.signals.StopRequest), save a checkpoint of the step just finished and stop.

    With several processes the flag is all-reduced each step, so all ranks stop at the same step (the
    save is collective)."""

    def __init__(self, stop: Any) -> None:
        self.stop = stop
        self.stopped_at: int | None = None

    def _requested(self, args) -> bool:
        flag = self.stop.signal is not None
        if args.world_size > 1:
            import torch.distributed as dist

            t = torch.tensor([int(flag)], device=args.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item())
        return flag

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step < state.max_steps and self._requested(args):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control


# ---------------------------------------------------------------------------------------------- logging
def peak_flops_per_device(configured: float | None = None) -> float | None:
    """The configured value, else the wwm.flops table's entry for this GPU, else None (CPUs: no MFU)."""
    return peak_flops(torch.cuda.get_device_name() if torch.cuda.is_available() else None, configured)


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
        trainer: WWMTrainer,
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
        self.peak_flops = peak_flops_per_device(peak_flops)
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
            flops = flops_per_step(
                self._n_params, cfg.num_hidden_layers, m["tokens"] // rows, cfg.hidden_size, m["tokens"]
            )
            mfu = flops / m["step_time_s"] / (self.peak_flops * args.world_size)
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


def _worth_printing(logs: dict[str, Any], step: int, every: int) -> bool:
    return "eval_loss" in logs or "train_runtime" in logs or step % every == 0 or step == 1


class ProgressBar(ProgressCallback):
    """transformers' progress bar, printing the train logs every `every` steps only (logging_steps is 1)."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = every

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and _worth_printing(logs, state.global_step, self.every):
            super().on_log(args, state, control, logs=logs, **kwargs)


class Printer(PrinterCallback):
    """transformers' log printer (no progress bar), every `every` steps."""

    def __init__(self, every: int) -> None:
        self.every = every

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and _worth_printing(logs, state.global_step, self.every):
            logs = {k: v for k, v in logs.items() if k not in ("epoch", "total_flos")}
            super().on_log(args, state, control, logs=dict(logs, step=state.global_step), **kwargs)


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


def _checkpoints(folder: str) -> list[str]:
    """The checkpoint-<step> folders in `folder`, oldest first."""
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        if name.startswith("checkpoint-") and name[len("checkpoint-") :].isdigit():
            found.append((int(name[len("checkpoint-") :]), os.path.join(folder, name)))
    return [path for _, path in sorted(found)]


def complete_checkpoints(folder: str) -> list[str]:
    """The checkpoints that were completely written (the Trainer writes trainer_state.json last)."""
    return [path for path in _checkpoints(folder) if os.path.isfile(os.path.join(path, "trainer_state.json"))]


def _safetensors_problem(path: str, expected: dict[str, tuple[int, ...]]) -> str | None:
    """Why a .safetensors file is unreadable (header, length), or None. Shapes that differ from
    `expected` (name -> shape) raise WWMError: the file belongs to another model."""
    import struct

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return "truncated header"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return "truncated header"
        try:
            header = json.loads(f.read(n))
        except ValueError:
            return "corrupt header"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        return f"{size} bytes where the header describes {8 + n + end} (truncated)"
    for name, info in header.items():
        if name in expected and tuple(info["shape"]) != expected[name]:
            raise WWMError(
                f"checkpoint {os.path.dirname(path)} holds another model ({name}: shape {tuple(info['shape'])} "
                f"there, {expected[name]} in this config); resume it with the config it was trained with, or "
                "use another output_dir"
            )
    return None


def checkpoint_problem(path: str, model: torch.nn.Module) -> str | None:
    """Why a complete Trainer checkpoint cannot be resumed from (a truncated or corrupt file), or None.

    Every torch.save file (optimizer, scheduler, RNG states) is a zip archive whose members carry CRCs:
    `testzip` reads them all, so a file cut short by a full disk or flipped bits are found before the
    Trainer half-loads the checkpoint."""
    import zipfile

    try:
        with open(os.path.join(path, "trainer_state.json"), encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError) as err:
        return f"trainer_state.json: {err}"
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    weights = [n for n in os.listdir(path) if n.endswith(".safetensors")]
    if not weights:
        return "no model.safetensors"
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if name.endswith(".safetensors"):
            problem = _safetensors_problem(full, expected)
        elif name.endswith((".pt", ".pth", ".bin")):
            try:
                with zipfile.ZipFile(full) as z:
                    bad = z.testzip()
                problem = f"member {bad} is corrupt" if bad else None
            except (OSError, zipfile.BadZipFile) as err:
                problem = str(err)
        else:
            continue
        if problem:
            return f"{name}: {problem}"
    return None


def newest_intact_checkpoint(folder: str, model: torch.nn.Module, *, lead: bool = True) -> str | None:
    """The newest complete checkpoint that reads back whole, or None when there is none. A corrupt one is
    skipped with a one-line warning and moved (lead process) to <output_dir>/corrupt-checkpoints/;
    when every one is corrupt: WWMError (never a silent restart from scratch)."""
    from wwm.rundir import corrupt_destination

    complete = complete_checkpoints(folder)
    for path in reversed(complete):
        problem = checkpoint_problem(path, model)
        if problem is None:
            return path
        aside = corrupt_destination(folder, os.path.basename(path))
        print(f"wwm: warning: checkpoint {path} is unreadable ({problem}); moved to {aside}, trying the one "
              "before", file=sys.stderr, flush=True)  # fmt: skip
        if lead:
            os.makedirs(os.path.dirname(aside), exist_ok=True)
            os.replace(path, aside)
    if complete:
        raise WWMError(
            f"no checkpoint in {folder} can be read ({len(complete)} tried); restore them from a backup, or pass "
            "--overwrite to start this run over"
        )
    return None
