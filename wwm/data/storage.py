"""Packed blocks on disk: raw little-endian arrays read back as numpy memmaps.

A split folder holds

* ``input_ids.bin``: (N, L) token ids, uint16 when the vocabulary has at most 65536 entries, else int32;
* ``word_ids.bin``: (N, L) word ids, int16 when L <= 32767, else int32 (-1 for special and pad tokens);
* ``lengths.bin``: (N,) int32, the non-pad tokens of each block (padding is always at the end);
* ``segment_ids.bin`` (``packed_documents`` only): (N, L) piece numbers 0..k, int16 when L <= 32767;
* ``meta.json``: N, L, the dtypes and the format version.

Row i is the block with example id i. Reading a batch is one fancy-index per array, and the OS page cache
shares the data between the processes of a host; nothing needs a framework. Batches are always handed out
as int32.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from wwm.data.packing import Blocks, piece_positions

__all__ = ["STORAGE_FORMAT", "BlockDataset", "BlockWriter"]

STORAGE_FORMAT = 1
_ARRAYS = ("input_ids", "word_ids", "lengths")
_SEGMENTS = "segment_ids"  # written only for blocks that have them, so other packings' files are unchanged


def storage_dtypes(vocab_size: int, max_seq_len: int, segments: bool = False) -> dict[str, str]:
    dtypes = {
        "input_ids": "<u2" if vocab_size <= 1 << 16 else "<i4",
        "word_ids": "<i2" if max_seq_len <= (1 << 15) - 1 else "<i4",
        "lengths": "<i4",
    }
    if segments:
        dtypes[_SEGMENTS] = dtypes["word_ids"]
    return dtypes


class BlockWriter:
    """Appends blocks to the files of one split folder; ``close`` writes meta.json."""

    def __init__(
        self, directory: str | os.PathLike, max_seq_len: int, vocab_size: int, segments: bool = False
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_seq_len = max_seq_len
        self.dtypes = storage_dtypes(vocab_size, max_seq_len, segments)
        self.count = 0
        self._files = {name: open(self.directory / f"{name}.bin", "wb") for name in self.dtypes}

    def write(self, blocks: Blocks) -> None:
        if not len(blocks):
            return
        if (blocks.segment_ids is not None) != (_SEGMENTS in self.dtypes):
            raise ValueError("blocks with and without segment ids cannot share a split folder")
        for name in self.dtypes:
            array = np.ascontiguousarray(getattr(blocks, name), dtype=self.dtypes[name])
            self._files[name].write(array.tobytes())
        self.count += len(blocks)

    def close(self, extra: dict[str, Any] | None = None) -> None:
        for f in self._files.values():
            f.close()
        meta = {
            "format": STORAGE_FORMAT,
            "num_examples": self.count,
            "max_seq_len": self.max_seq_len,
            "dtypes": self.dtypes,
            **(extra or {}),
        }
        (self.directory / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


class BlockDataset:
    """Random access to packed blocks (memmapped files, or arrays in memory).

    ``dataset[indices]`` / ``dataset.batch(indices)`` returns a dict of int32 arrays: ``input_ids`` (b, L),
    ``word_ids`` (b, L), ``attention_mask`` (b, L) and ``example_ids`` (b,) int64 (= the indices); with
    segment ids (``packed_documents``) also ``segment_ids`` (b, L) and ``position_ids`` (b, L), the
    per-piece positions (``wwm.data.packing.piece_positions``).
    """

    def __init__(
        self,
        input_ids: np.ndarray,
        word_ids: np.ndarray,
        lengths: np.ndarray,
        path: str | None = None,
        pad_token_id: int = 0,
        segment_ids: np.ndarray | None = None,
    ) -> None:
        if input_ids.ndim != 2 or word_ids.shape != input_ids.shape or lengths.shape != input_ids.shape[:1]:
            raise ValueError(
                f"inconsistent block arrays: input_ids {input_ids.shape}, word_ids {word_ids.shape}, "
                f"lengths {lengths.shape}"
            )
        if segment_ids is not None and segment_ids.shape != input_ids.shape:
            raise ValueError(f"segment_ids {segment_ids.shape} do not match input_ids {input_ids.shape}")
        self.segment_ids = segment_ids
        self.input_ids = input_ids
        self.word_ids = word_ids
        self.lengths = lengths
        self.path = path
        self.pad_token_id = pad_token_id  # for the filler rows of a padded last batch

    @classmethod
    def open(cls, directory: str | os.PathLike, pad_token_id: int | None = None) -> BlockDataset:
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != STORAGE_FORMAT:
            raise ValueError(f"{directory} holds blocks of format {meta.get('format')}, not {STORAGE_FORMAT}")
        n, L = int(meta["num_examples"]), int(meta["max_seq_len"])
        arrays = {}
        for name in meta["dtypes"]:
            shape = (n, L) if name != "lengths" else (n,)
            dtype = np.dtype(meta["dtypes"][name])
            if n == 0:
                arrays[name] = np.zeros(shape, dtype=dtype)
            else:
                arrays[name] = np.memmap(directory / f"{name}.bin", dtype=dtype, mode="r", shape=shape)
        pad = meta.get("pad_token_id", 0) if pad_token_id is None else pad_token_id
        return cls(
            arrays["input_ids"], arrays["word_ids"], arrays["lengths"], path=str(directory), pad_token_id=pad,
            segment_ids=arrays.get(_SEGMENTS),
        )  # fmt: skip

    @classmethod
    def from_blocks(cls, blocks: Blocks, pad_token_id: int = 0) -> BlockDataset:
        return cls(blocks.input_ids, blocks.word_ids, blocks.lengths, pad_token_id=pad_token_id,
                   segment_ids=blocks.segment_ids)  # fmt: skip

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def max_seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"example ids outside [0, {len(self)})")
        # Read in ascending order (sequential pages), then restore the requested order.
        order = np.argsort(indices, kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        rows = indices[order]
        input_ids = np.asarray(self.input_ids[rows], dtype=np.int32)[inverse]
        word_ids = np.asarray(self.word_ids[rows], dtype=np.int32)[inverse]
        lengths = np.asarray(self.lengths[rows], dtype=np.int32)[inverse]
        attention_mask = (np.arange(self.max_seq_len)[None, :] < lengths[:, None]).astype(np.int32)
        out = {
            "input_ids": input_ids,
            "word_ids": word_ids,
            "attention_mask": attention_mask,
            "example_ids": indices.copy(),
        }
        if self.segment_ids is not None:
            out.update(segment_batch(np.asarray(self.segment_ids[rows], dtype=np.int32)[inverse]))
        return out

    __getitem__ = batch

    def as_blocks(self) -> Blocks:
        return Blocks(
            np.asarray(self.input_ids, dtype=np.int32),
            np.asarray(self.word_ids, dtype=np.int32),
            np.asarray(self.lengths, dtype=np.int32),
            None if self.segment_ids is None else np.asarray(self.segment_ids, dtype=np.int32),
        )


def segment_batch(segment_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The batch keys of packed documents: ``segment_ids`` and their per-piece ``position_ids``."""
    return {"segment_ids": segment_ids, "position_ids": piece_positions(segment_ids)}
