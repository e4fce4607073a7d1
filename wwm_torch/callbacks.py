"""Trainer callbacks that keep the whole-word masking collator in step with training."""

from __future__ import annotations

from transformers import TrainerCallback


class EpochCallback(TrainerCallback):
    """Tells the collator which epoch starts, since the epoch is part of every mask's key.

    Data-loader workers receive a copy of the collator each time an epoch's iterator is created,
    so this works with `dataloader_num_workers > 0` as long as `dataloader_persistent_workers` is
    off (the Trainer's default).
    """

    def __init__(self, collator) -> None:
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.set_epoch(int(state.epoch or 0))
        return control
