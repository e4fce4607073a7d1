"""Map-style torch datasets that give the Hugging Face Trainer exactly the JAX path's global batches.

The JAX trainer reads `wwm.data.BatchIterator(blocks, global_batch_size, seed)`: global batch k (k
counted from 0 over all epochs) is a pure function of (seed, epoch, step). `GlobalBatchDataset` lays
those batches end to end: item `p` is row `p % G` of global batch `p // G`, a feature dict with the
row's `input_ids`, `word_ids`, `attention_mask`, `example_id` and `epoch`. Read with a sequential
sampler (the `wwm_torch` trainer does), the Trainer's micro-batches over accumulation steps and
ranks are contiguous slices of the positions, so optimizer step k (from 0) consumes exactly
positions [k*G, (k+1)*G): global batch k. The collator masks each row with its own `epoch` field, so
masks do not depend on which process (data-loader worker or rank) builds the batch.

Resuming is a replay: the Trainer skips the first positions of the sequential sampler (no item is
read), and an item depends only on its position, so the resumed run sees what the full run saw.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from wwm.data.loader import BatchIterator, DataPosition
from wwm.data.order import ORDER_RULE
from wwm.errors import WWMError

__all__ = ["GlobalBatchDataset", "ValidationDataset", "row_feature"]


def row_feature(batch: dict[str, Any], row: int, epoch: int) -> dict[str, Any]:
    """One row of a BatchIterator batch as a collator feature (packed documents: with its segment_ids and
    position_ids, which the collator passes through and the trainer turns into the model's mask)."""
    feature = {
        "input_ids": batch["input_ids"][row],
        "word_ids": batch["word_ids"][row],
        "attention_mask": batch["attention_mask"][row],
        "example_id": int(batch["example_ids"][row]),
        "epoch": int(epoch),
    }
    for key in ("segment_ids", "position_ids"):
        if key in batch:
            feature[key] = batch[key][row]
    return feature


class GlobalBatchDataset(torch.utils.data.Dataset):
    """`num_steps` global batches of `BatchIterator(blocks, global_batch_size, seed)`, end to end.

    Random-access data: each global batch is read directly (`BatchIterator.batch_at`, the epoch order
    cached), so data-loader workers that take every W-th batch read only their own. A stream is read
    through one cached iterator; a jump backwards restarts it from the start.
    """

    def __init__(
        self, blocks: Any, global_batch_size: int, seed: int, num_steps: int, order_rule: str | None = None
    ) -> None:
        if num_steps < 1:
            raise WWMError(f"num_steps must be >= 1; got {num_steps}")
        self.blocks = blocks
        self.global_batch_size = int(global_batch_size)
        self.seed = int(seed)
        self.num_steps = int(num_steps)
        self.order_rule = order_rule or ORDER_RULE  # the run's epoch order (wwm.data.order)
        probe = self._batches()
        self.steps_per_epoch = probe.steps_per_epoch  # None for a stream
        self._reset()

    def _batches(self, start: DataPosition | None = None) -> BatchIterator:
        return BatchIterator(
            self.blocks, self.global_batch_size, self.seed, start=start, order_rule=self.order_rule
        )

    def _reset(self) -> None:
        self._iterator = None
        self._next_step = 0  # global step the cached iterator yields next
        self._cached_step = -1
        self._cached: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:  # data-loader workers start with an empty cache
        state = dict(self.__dict__)
        state.update(_iterator=None, _next_step=0, _cached_step=-1, _cached=None)
        return state

    def __len__(self) -> int:
        return self.num_steps * self.global_batch_size

    def position(self, step: int) -> DataPosition:
        """The data position (epoch, step within the epoch) of global step `step` (from 0)."""
        if self.steps_per_epoch is None:
            raise WWMError("a streamed dataset has no known epoch length")
        return DataPosition(*divmod(int(step), self.steps_per_epoch))

    def global_batch(self, step: int) -> dict[str, Any]:
        """Global batch `step` (from 0 over all epochs), as BatchIterator yields it for one host."""
        if step == self._cached_step:
            return self._cached
        if self.steps_per_epoch is not None:
            if self._iterator is None:
                self._iterator = self._batches()
            batch = self._iterator.batch_at(self.position(step))
            self._cached_step, self._cached = step, batch
            return batch
        if (
            self._iterator is None
            or step < self._next_step
            or (self.steps_per_epoch is not None and step - self._next_step > 2)
        ):
            start = self.position(step) if self.steps_per_epoch is not None else DataPosition()
            self._iterator = iter(self._batches(start))
            self._next_step = step if self.steps_per_epoch is not None else 0
        while self._next_step <= step:
            batch = next(self._iterator)
            self._next_step += 1
        self._cached_step, self._cached = step, batch
        return batch

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"position {index} outside [0, {len(self)})")
        step, row = divmod(index, self.global_batch_size)
        batch = self.global_batch(step)
        return row_feature(batch, row, batch["epoch"])


class ValidationDataset(torch.utils.data.Dataset):
    """The validation blocks in stored order, every row with epoch 0: fixed masks at every evaluation.

    `limit`: only the first `limit` blocks (eval.max_batches * eval batch size).
    """

    def __init__(self, blocks: Any, limit: int | None = None) -> None:
        if not hasattr(blocks, "batch"):  # a stream: read it once, in stored order (validation is small)
            blocks = _materialize(blocks, limit)
        self.blocks = blocks
        n = len(blocks)
        self.size = n if limit is None else min(n, int(limit))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < self.size:
            raise IndexError(f"validation example {index} outside [0, {self.size})")
        batch = self.blocks.batch(np.asarray([index], dtype=np.int64))
        return row_feature(batch, 0, 0)


def _materialize(stream: Any, limit: int | None) -> Any:
    from wwm.data.loader import validation_batches
    from wwm.data.storage import BlockDataset

    ids, words, lengths = [], [], []
    for batch in validation_batches(stream, 256):
        valid = batch["valid"]
        ids.append(batch["input_ids"][valid])
        words.append(batch["word_ids"][valid])
        lengths.append(batch["attention_mask"][valid].sum(1))
        if limit is not None and sum(len(x) for x in ids) >= limit:
            break
    return BlockDataset(np.concatenate(ids), np.concatenate(words), np.concatenate(lengths).astype(np.int32))
