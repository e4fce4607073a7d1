"""`wwm train --framework torch`: the Hugging Face Trainer on the JAX path's batches and loss.

    run(load_config("configs/tiny.yaml")) -> 0

Launch on several processes with torchrun (docs/torch_trainer.md); each process runs `run(config)`.
"""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace
from typing import Any

logger = logging.getLogger(__name__)

_SECTIONS = ("model", "optim", "train", "checkpoint", "eval", "logging")


def sections(config: Any) -> SimpleNamespace:
    """The trainer sections of `config`, with each missing section at its defaults."""
    from wwm import train_config as tc

    defaults = {
        "model": tc.ModelConfig,
        "optim": tc.OptimConfig,
        "train": tc.TrainConfig,
        "checkpoint": tc.CheckpointConfig,
        "eval": tc.EvalConfig,
        "logging": tc.LoggingConfig,
    }
    values = {name: getattr(config, name, None) or defaults[name]() for name in _SECTIONS}
    return SimpleNamespace(
        seed=config.seed, output_dir=config.output_dir, data=config.data, masking=config.masking, **values
    )


def has_validation(data: Any) -> bool:
    return bool(data.validation_fraction > 0 or data.validation_files)


def build_trainer(config: Any, prepared: Any = None, *, record_batches: bool = False):
    """(trainer, args, prepared): everything `run` trains with, for tests and custom scripts."""
    from transformers import set_seed
    from transformers.trainer_utils import IntervalStrategy

    from wwm.data import prepare_dataset
    from wwm_torch.collator import WholeWordMaskingCollator
    from wwm_torch.data import GlobalBatchDataset, ValidationDataset
    from wwm_torch.trainer import (
        MetricsCallback,
        WWMTrainer,
        build_model,
        install_printing,
        training_arguments,
    )

    c = sections(config)
    has_eval = prepared.validation is not None if prepared is not None else has_validation(c.data)
    args = training_arguments(c, has_eval=has_eval)
    if prepared is None:
        with args.main_process_first(desc="prepare the data"):  # rank 0 builds the cache, the others read it
            prepared = prepare_dataset(config, progress=args.process_index == 0 and c.logging.progress_bar)
    if prepared.validation is None and args.eval_strategy != IntervalStrategy.NO:
        args.eval_strategy = IntervalStrategy.NO
    tokenizer = prepared.tokenizer
    set_seed(c.seed)
    model = build_model(c.model, tokenizer, c.data.max_seq_len, c.train.attn_implementation)
    collator = WholeWordMaskingCollator(tokenizer, c.masking, return_example_ids=True)
    train_dataset = GlobalBatchDataset(prepared.train, c.train.global_batch_size, c.seed, c.train.max_steps)
    eval_dataset = None
    if prepared.validation is not None:
        eval_batch = c.eval.batch_size or c.train.global_batch_size
        limit = c.eval.max_batches * eval_batch if c.eval.max_batches else None
        eval_dataset = ValidationDataset(prepared.validation, limit)
    trainer = WWMTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        record_batches=record_batches,
    )
    trainer.add_callback(
        MetricsCallback(trainer, c.output_dir, jsonl=c.logging.jsonl, tensorboard=c.logging.tensorboard)
    )
    install_printing(trainer, c.train.log_every_steps, c.logging.progress_bar)
    return trainer, args, prepared


def run(config: Any, *, prepared: Any = None, callbacks: tuple = ()) -> int:
    """Train (or resume from the newest checkpoint), export `<output_dir>/hf`, return 0.

    `prepared`: the data (`wwm.data.PreparedData` or any object with train, validation, tokenizer);
    None runs `prepare_dataset(config)`. `callbacks`: extra TrainerCallbacks.
    """
    from wwm.config import save_config
    from wwm_torch.trainer import MetricsCallback, _checkpoints

    c = sections(config)
    trainer, args, prepared = build_trainer(config, prepared)
    for callback in callbacks:
        trainer.add_callback(callback)
    resume = bool(c.checkpoint.resume and _checkpoints(args.output_dir))
    if args.process_index == 0:
        os.makedirs(c.output_dir, exist_ok=True)
        try:
            save_config(config, os.path.join(c.output_dir, "config.yaml"))
        except Exception as err:
            logger.warning("could not save the run config: %s", err)
        n_params = sum(p.numel() for p in trainer.model.parameters())
        where = f"resuming from {_checkpoints(args.output_dir)[-1]}" if resume else "from scratch"
        print(
            f"wwm torch: {type(trainer.model).__name__} with {n_params / 1e6:.2f}M parameters, "
            f"{len(prepared.train) if hasattr(prepared.train, '__len__') else '?'} training blocks, "
            f"global batch {c.train.global_batch_size} = {args.world_size} process(es) x "
            f"{args.per_device_train_batch_size} x {args.gradient_accumulation_steps} accumulation, "
            f"{c.train.max_steps} steps, {where}",
            flush=True,
        )
    try:
        trainer.train(resume_from_checkpoint=True if resume else None)
    finally:
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, MetricsCallback):
                callback.close()
    if c.checkpoint.export_hf_at_end:
        export = os.path.join(c.output_dir, "hf")
        trainer.save_model(export)  # main process only; with the tokenizer (processing_class)
        if args.process_index == 0:
            print(f"wwm torch: exported the model and tokenizer to {export}", flush=True)
    return 0


__all__ = ["build_trainer", "has_validation", "run", "sections"]
