"""Batches for the trainers: ``BatchIterator``, ``DataPosition``, ``masked_batches``, ``validation_batches``.

The contract shared by the JAX and the PyTorch trainer (docs/data.md):

* ``BatchIterator(dataset, global_batch_size, seed, host_index=h, host_count=H, start=position)`` yields,
  for each global step, this host's rows ``[h*B/H, (h+1)*B/H)`` of the global batch as a dict of numpy
  arrays: ``input_ids`` (b, L) int32, ``word_ids`` (b, L) int32, ``attention_mask`` (b, L) int32,
  ``example_ids`` (b,) int64, ``valid`` (b,) bool (False only for the filler rows of a padded last
  validation batch), and the ints ``epoch`` and ``step`` (the step within the epoch).
* Batches are not masked: call ``WholeWordMasker(input_ids, word_ids, example_ids, epoch,
  attention_mask=...)`` (or use ``masked_batches``), so that the mask depends only on (seed, epoch, example).
* ``iterator.position`` is the ``DataPosition`` of the next batch; save ``position.to_dict()`` in a
  checkpoint and pass ``start=DataPosition.from_dict(...)`` to resume with exactly the batches an
  uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from wwm.data import order as _order
from wwm.data.packing import Blocks
from wwm.data.storage import segment_batch
from wwm.errors import WWMError

__all__ = ["BatchIterator", "DataPosition", "masked_batches", "validation_batches"]


@dataclass(frozen=True)
class DataPosition:
    """Where a run is in its data: the next batch is global step ``step`` of epoch ``epoch``."""

    epoch: int = 0
    step: int = 0

    def __post_init__(self) -> None:
        for name in ("epoch", "step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise WWMError(f"DataPosition.{name} must be a non-negative integer; got {value!r}")

    def to_dict(self) -> dict[str, int]:
        return {"epoch": int(self.epoch), "step": int(self.step)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataPosition:
        try:
            return cls(epoch=int(data["epoch"]), step=int(data["step"]))
        except (KeyError, TypeError, ValueError) as err:
            raise WWMError(f"not a saved data position (need 'epoch' and 'step'): {data!r}") from err


def _is_streaming(dataset: Any) -> bool:
    return hasattr(dataset, "iter_chunks")


def _has_segments(dataset: Any) -> bool:
    if _is_streaming(dataset):
        return dataset.config.data.packing == "packed_documents"
    return bool(getattr(dataset, "has_segments", False))


class BatchIterator:
    """This host's slice of each global batch, epoch after epoch (see the module docstring).

    ``dataset``: a ``BlockDataset`` (random access: the epoch order is a permutation of all examples by
    ``order_rule``, see ``wwm.data.order``; each batch computes the example ids of this host's rows only) or a ``StreamingBlocks`` (stream order through a shuffle buffer of
    ``shuffle_buffer`` blocks, seeded by (seed, epoch); every host reads the stream and keeps its rows).
    ``epochs``: stop after this many epochs (None: never stop). ``shuffle=False`` keeps the stored order.
    ``drop_last=False`` also yields the last, incomplete global batch, padded with filler rows
    (``valid`` False, attention_mask 0, example id 0) so that every batch has the same shape.
    """

    def __init__(
        self,
        dataset: Any,
        global_batch_size: int,
        seed: int,
        *,
        host_index: int = 0,
        host_count: int = 1,
        start: DataPosition | None = None,
        epochs: int | None = None,
        shuffle: bool = True,
        drop_last: bool = True,
        shuffle_buffer: int | None = None,
        order_rule: str = _order.ORDER_RULE,
    ) -> None:
        self.rows = _order.host_rows(global_batch_size, host_index, host_count)
        _order._check_seed_epoch(seed, 0)
        self.order_rule = _order.check_order_rule(order_rule)
        self.dataset = dataset
        self.global_batch_size = int(global_batch_size)
        self.seed = int(seed)
        self.host_index, self.host_count = host_index, host_count
        self.epochs = epochs
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.streaming = _is_streaming(dataset)
        if shuffle_buffer is None:
            shuffle_buffer = getattr(dataset, "shuffle_buffer", 10_000)
        self.shuffle_buffer = int(shuffle_buffer) if shuffle else 0
        self.max_seq_len = int(dataset.max_seq_len)
        # packed_documents: batches also carry segment_ids and position_ids (docs/data.md).
        self.segments = _has_segments(dataset)
        self.position = start if start is not None else DataPosition()
        self._order_cache: _order.EpochOrder | None = None  # the order of the last epoch used
        self._ahead: tuple[int, int] | None = None  # (epoch, step) read ahead up to (remote mode)
        # Under a groups-G-K-r rule remote mode reads whole groups (G = 0: rows as before), and reads ahead
        # at least a window (K*G/B steps), so that the next window's groups arrive while this one trains.
        self._window_steps = 0
        if shuffle and not self.streaming and hasattr(dataset, "read_groups"):
            G = window_rows = 0
            if self.order_rule.startswith(_order.GROUPS_PREFIX):
                G, K, _ = _order.parse_groups_rule(self.order_rule)
                self._window_steps = max(K * G // self.global_batch_size, 1)
                window_rows = -(-K // host_count) * G  # this host's groups of a window (H | K: K/H)
            dataset.read_groups(G, window_rows)
        if not self.streaming:
            n = len(dataset)
            if self.steps_per_epoch == 0:
                raise WWMError(
                    f"the dataset has {n} examples, fewer than one global batch of {global_batch_size}; "
                    "lower the batch size or add data"
                )

    @property
    def steps_per_epoch(self) -> int | None:
        """Global batches per epoch (None for a stream, whose length is known only at its end)."""
        if self.streaming:
            return None
        n, B = len(self.dataset), self.global_batch_size
        return n // B if self.drop_last else -(-n // B)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch, step = self.position.epoch, self.position.step
        while self.epochs is None or epoch < self.epochs:
            batches = self._streaming_epoch(epoch, step) if self.streaming else self._epoch(epoch, step)
            seen = False
            for batch in batches:
                seen = True
                self.position = DataPosition(epoch, batch["step"] + 1)
                yield batch
            if not seen and step == 0:
                raise WWMError(
                    f"epoch {epoch} gave no batch: the data holds fewer examples than one global batch of "
                    f"{self.global_batch_size}; lower the batch size or add data"
                )
            epoch, step = epoch + 1, 0
            self.position = DataPosition(epoch, 0)

    def __len__(self) -> int:
        """Batches per epoch (random-access datasets only)."""
        if self.streaming:
            raise TypeError("a streaming dataset has no known length")
        return int(self.steps_per_epoch)

    # ------------------------------------------------------------------ random access
    def batch_at(self, position: DataPosition) -> dict[str, Any]:
        """This host's rows of the global batch at `position`, without iterating (random access only).

        The same batch that iteration yields there: the example ids of this host's rows (O(B/H) under
        order rule feistel-6; rule "1" sorts the epoch's keys once and caches them), then one
        `dataset.batch`, so readers that jump around (data-loader workers) read only their own rows.
        """
        if self.streaming:
            raise WWMError("a streamed dataset has no random access: iterate the BatchIterator instead")
        if not 0 <= position.step < self.steps_per_epoch:
            raise IndexError(
                f"step {position.step} outside the epoch's {self.steps_per_epoch} global batches"
            )
        return self._host_batch(position.epoch, position.step)

    def _example_ids(self, epoch: int, positions: np.ndarray) -> np.ndarray:
        """The example ids at these positions of the epoch's order (positions < N)."""
        if not self.shuffle:
            return positions
        if self._order_cache is None or self._order_cache.epoch != epoch:
            self._order_cache = _order.EpochOrder(len(self.dataset), self.seed, epoch, self.order_rule)
        return self._order_cache.ids(positions)

    def _epoch(self, epoch: int, first_step: int) -> Iterator[dict[str, Any]]:
        for step in range(first_step, self.steps_per_epoch):
            yield self._host_batch(epoch, step)

    def _host_batch(self, epoch: int, step: int) -> dict[str, Any]:
        # This host's rows of global batch `step`: positions [step*B + lo, step*B + hi) of the epoch's
        # order; positions past the end (a padded last batch) are filler rows.
        positions = step * self.global_batch_size + np.arange(self.rows.start, self.rows.stop, dtype=np.int64)
        valid = positions < len(self.dataset)
        ids = np.zeros(positions.size, dtype=np.int64)
        ids[valid] = self._example_ids(epoch, positions[valid])
        if valid.all():
            batch = self.dataset.batch(ids)
        else:
            batch = self._filler(ids.size)
            if valid.any():
                real = self.dataset.batch(ids[valid])
                for key, value in real.items():
                    batch[key][valid] = value
        batch["valid"] = valid
        batch["epoch"] = epoch
        batch["step"] = step
        ahead = int(getattr(self.dataset, "prefetch_steps", 0))
        if ahead:  # remote mode (wwm.data.remote): the rows of the next steps, read in the background
            self._read_ahead(epoch, step, max(ahead, self._window_steps))
        return batch

    def _read_ahead(self, epoch: int, step: int, ahead: int) -> None:
        """Ask the dataset for the rows of the steps up to ``step + ahead``, in one call for several steps
        once less than half of them are left, so that nearby rows of those steps share reads."""
        horizon = step
        if self._ahead is not None and self._ahead[0] == epoch and self._ahead[1] > step:
            horizon = self._ahead[1]
        last = min(step + ahead, self.steps_per_epoch - 1)
        if horizon - step > ahead // 2 or last <= horizon:
            return
        B, N = self.global_batch_size, len(self.dataset)
        positions = (np.arange(horizon + 1, last + 1, dtype=np.int64)[:, None] * B
                     + np.arange(self.rows.start, self.rows.stop, dtype=np.int64)[None, :]).ravel()  # fmt: skip
        self.dataset.prefetch(self._example_ids(epoch, positions[positions < N]))
        self._ahead = (epoch, last)

    def _filler(self, rows: int) -> dict[str, np.ndarray]:
        L = self.max_seq_len
        pad = int(getattr(self.dataset, "pad_token_id", None) or 0)
        filler = {
            "input_ids": np.full((rows, L), pad, dtype=np.int32),
            "word_ids": np.full((rows, L), -1, dtype=np.int32),
            "attention_mask": np.zeros((rows, L), dtype=np.int32),
            "example_ids": np.zeros(rows, dtype=np.int64),
        }
        if self.segments:  # filler rows are all padding: segment 0, position 0
            filler["segment_ids"] = np.zeros((rows, L), dtype=np.int32)
            filler["position_ids"] = np.zeros((rows, L), dtype=np.int32)
        return filler

    # ------------------------------------------------------------------ streaming
    def _stream_rows(self, epoch: int) -> Iterator[tuple]:
        """(input_ids, word_ids, length, example_id, segment_ids or None) of each block, through the
        shuffle buffer."""
        capacity = self.shuffle_buffer
        buffer: list[tuple[np.ndarray, np.ndarray, int, int]] = []
        t = 0
        slots = np.zeros(0, dtype=np.int64)
        for blocks, first_id in self.dataset.iter_chunks():
            for i in range(len(blocks)):
                row = (
                    blocks.input_ids[i].copy(),
                    blocks.word_ids[i].copy(),
                    int(blocks.lengths[i]),
                    first_id + i,
                    None if blocks.segment_ids is None else blocks.segment_ids[i].copy(),
                )
                if capacity <= 1:
                    yield row
                    continue
                if len(buffer) < capacity:
                    buffer.append(row)
                    continue
                k = t % 4096
                if k == 0:  # draw the next 4096 slots at once
                    ts = np.arange(t, t + 4096, dtype=np.int64)
                    keys = _order.order_keys(ts, self.seed, epoch, _order.BUFFER_STREAM)
                    slots = (keys % np.uint32(capacity)).astype(np.int64)
                j = int(slots[k])
                t += 1
                yield buffer[j]
                buffer[j] = row
        if buffer:
            order = np.argsort(_order.order_keys(np.arange(len(buffer)), self.seed, epoch, _order.BUFFER_STREAM),
                               kind="stable")  # fmt: skip
            for j in order:
                yield buffer[j]

    def _streaming_epoch(self, epoch: int, first_step: int) -> Iterator[dict[str, Any]]:
        B = self.global_batch_size
        lo, hi = self.rows.start, self.rows.stop
        pending: list[tuple[np.ndarray, np.ndarray, int, int]] = []
        index = 0  # position in the global batch being filled
        step = 0
        for row in self._stream_rows(epoch):
            if step >= first_step and lo <= index < hi:
                pending.append(row)
            index += 1
            if index == B:
                if step >= first_step:
                    yield self._stack(pending, hi - lo, epoch, step)
                pending, index, step = [], 0, step + 1
        if index and not self.drop_last and step >= first_step:
            yield self._stack(pending, hi - lo, epoch, step)

    def _stack(self, rows: list, size: int, epoch: int, step: int) -> dict[str, Any]:
        batch = self._filler(size)
        valid = np.zeros(size, dtype=bool)
        if rows:
            n = len(rows)
            valid[:n] = True
            batch["input_ids"][:n] = np.stack([r[0] for r in rows])
            batch["word_ids"][:n] = np.stack([r[1] for r in rows])
            lengths = np.array([r[2] for r in rows])
            batch["attention_mask"][:n] = np.arange(self.max_seq_len)[None, :] < lengths[:, None]
            batch["example_ids"][:n] = [r[3] for r in rows]
            if self.segments:
                segments = segment_batch(np.stack([r[4] for r in rows]).astype(np.int32))
                for key, value in segments.items():
                    batch[key][:n] = value
        batch["valid"] = valid
        batch["epoch"] = epoch
        batch["step"] = step
        return batch


def validation_batches(
    dataset: Any, global_batch_size: int, *, host_index: int = 0, host_count: int = 1
) -> BatchIterator:
    """One pass over a validation set in stored order, with epoch 0 for every batch, so that the masker
    (keyed by seed, epoch and example id) gives the same masks at every evaluation. The last global batch
    is padded with filler rows (``valid`` False)."""
    return BatchIterator(
        dataset,
        global_batch_size,
        0,
        host_index=host_index,
        host_count=host_count,
        epochs=1,
        shuffle=False,
        drop_last=False,
    )


def masked_batches(batches: Any, masker: Any) -> Iterator[dict[str, Any]]:
    """Apply a ``WholeWordMasker`` to each batch: ``input_ids`` become the masked inputs and ``labels``
    (int32, -100 where not masked) are added; ``original_input_ids`` keeps the unmasked ids."""
    for batch in batches:
        masked = masker(
            batch["input_ids"],
            batch["word_ids"],
            batch["example_ids"],
            batch["epoch"],
            attention_mask=batch["attention_mask"],
        )
        out = dict(batch)
        out["original_input_ids"] = batch["input_ids"]
        out["input_ids"] = masked.input_ids.astype(np.int32, copy=False)
        out["labels"] = masked.labels.astype(np.int32, copy=False)
        yield out


def blocks_of(batch: dict[str, np.ndarray]) -> Blocks:
    """The (unmasked) blocks of a batch, for inspection."""
    lengths = batch["attention_mask"].sum(1).astype(np.int32)
    return Blocks(batch["input_ids"], batch["word_ids"], lengths)
