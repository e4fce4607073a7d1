"""Trainer callbacks that keep the whole-word masking collator in step with training."""

from __future__ import annotations

from transformers import TrainerCallback

from wwm.errors import WWMError


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
