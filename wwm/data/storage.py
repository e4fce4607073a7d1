"""Packed blocks on disk in ~2.1 bytes per token: raw little-endian arrays read back as numpy memmaps.

A split folder (storage format 2, docs/data.md "Storage and example ids") holds

* ``input_ids.bin``: (N, L) token ids, uint16 when the vocabulary has at most 65536 entries, else int32;
* ``word_starts.bin``: (N, ceil(L/8)) uint8, one bit per token (little bit order): the token starts a
  word. Word ids are a running count of word starts: ``word_ids = cumsum(starts) - 1`` on the tokens
  that belong to words, -1 elsewhere. The tokens that belong to no word are those past the block's
  length and those whose id is in ``meta["non_word_ids"]`` (the tokenizer's special tokens), except at
  the positions listed in ``word_exceptions.bin`` ((E,) int64 row * L + column, sorted; written only when
  E > 0, e.g. for a tokenizer whose special ids are not known to the writer);
* ``piece_starts.bin`` (``packed_documents`` only): (N, ceil(L/8)) uint8, one bit per token: the token
  starts a document piece. Segment ids are ``cumsum(starts)`` inside the block's length, 0 after it;
* ``lengths.bin``: (N,) uint16 (int32 when L > 65535), the non-pad tokens of each block, written only when
  they cannot be read off the ids (a block ends with SEP, then PAD only, so its length is 1 + the position
  of its last non-PAD token, unless PAD = SEP);
* ``meta.json``: N, L, the dtypes, the pad and non-word ids, which of the optional files exist, and the
  format version.

So a token costs 2 bytes + 1 bit (+ 1 bit with packed documents): at most 2.25 bytes for vocabularies of
at most 65536 tokens and L a multiple of 8. The writer checks that every chunk reads back exactly as
written. Row i is the block with example id i; reading a batch is one fancy-index per file and a few
vectorized numpy passes, and the OS page cache shares the data between the processes of a host; nothing
needs a framework. Batches are always handed out as int32, bit-identical to storage format 1's
(4 bytes a token: uint16 ids + int16 word ids, + int16 segment ids), which this wwm refuses in one line.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from wwm.data.packing import Blocks, piece_positions
from wwm.errors import WWMError

__all__ = ["STORAGE_FORMAT", "BlockDataset", "BlockWriter", "split_bytes"]

STORAGE_FORMAT = 2  # 1: input_ids, word_ids, lengths (+ segment_ids) as full arrays, 4-6 bytes a token
_IDS, _WORDS, _PIECES, _LENGTHS, _EXCEPTIONS = (
    "input_ids", "word_starts", "piece_starts", "lengths", "word_exceptions",
)  # fmt: skip


def storage_dtypes(vocab_size: int, max_seq_len: int) -> dict[str, str]:
    return {
        _IDS: "<u2" if vocab_size <= 1 << 16 else "<i4",
        _LENGTHS: "<u2" if max_seq_len <= 0xFFFF else "<i4",
        _EXCEPTIONS: "<i8",
    }


def _bytes_per_row(max_seq_len: int) -> int:
    return -(-max_seq_len // 8)


class _NonWord:
    """Membership of token ids in the non-word set, as a lookup table (ids past its end: not in it)."""

    def __init__(self, ids: Iterable[int]) -> None:
        ids = sorted({int(i) for i in ids if i is not None and int(i) >= 0})
        self.ids = ids
        self._table = np.zeros((ids[-1] + 2) if ids else 1, dtype=bool)
        self._table[ids] = True

    def __call__(self, input_ids: np.ndarray) -> np.ndarray:
        if len(self.ids) <= 8:  # a few comparisons beat a gather (4x on (256, 128) ids)
            out = np.zeros(input_ids.shape, dtype=bool)
            for i in self.ids:
                out |= input_ids == i
            return out
        return self._table.take(np.minimum(input_ids, self._table.size - 1))


def _ends(input_ids: np.ndarray, pad: int) -> np.ndarray:
    """(n,) 1 + the position of each row's last token that is not PAD (0 for an all-PAD row)."""
    not_pad = input_ids != pad
    L = input_ids.shape[1]
    last = L - 1 - np.argmax(not_pad[:, ::-1], axis=1)
    return np.where(not_pad.any(axis=1), last + 1, 0).astype(np.int64)


def _running_count(starts: np.ndarray) -> np.ndarray:
    return np.cumsum(starts, axis=1, dtype=np.int32)


class BlockWriter:
    """Appends blocks to the files of one split folder; ``close`` writes meta.json.

    ``pad_token_id``: the blocks' padding token; ``non_word_ids``: token ids that never belong to a word
    (the tokenizer's special tokens). Both only make the files smaller: any blocks read back exactly.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        max_seq_len: int,
        vocab_size: int,
        segments: bool = False,
        *,
        pad_token_id: int = 0,
        non_word_ids: Iterable[int] = (),
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_seq_len = max_seq_len
        self.segments = segments
        self.pad_token_id = int(pad_token_id)
        self.non_word = _NonWord(non_word_ids)
        self.dtypes = storage_dtypes(vocab_size, max_seq_len)
        self.count = 0
        self.exceptions = 0
        self.lengths_derived = True  # every block so far has its length read off its ids
        names = [_IDS, _WORDS, _LENGTHS, _EXCEPTIONS] + ([_PIECES] if segments else [])
        # local: a local block folder (prepared in the cache or a staging folder)
        self._files = {name: open(self.directory / f"{name}.bin", "wb") for name in names}

    def write(self, blocks: Blocks) -> None:
        if not len(blocks):
            return
        if (blocks.segment_ids is not None) != self.segments:
            raise ValueError("blocks with and without segment ids cannot share a split folder")
        ids = np.asarray(blocks.input_ids)
        if ids.min() < 0 or ids.max() > np.iinfo(self.dtypes[_IDS]).max:
            raise ValueError(f"token ids outside the range of {self.dtypes[_IDS]}")
        words = np.asarray(blocks.word_ids, dtype=np.int64)
        lengths = np.asarray(blocks.lengths, dtype=np.int64)
        n, L = ids.shape
        inside = np.arange(L)[None, :] < lengths[:, None]
        # Word starts: a token of a word whose id exceeds every earlier word id of the block.
        eligible = words >= 0
        before = np.maximum.accumulate(np.where(eligible, words, -1), axis=1)
        before = np.concatenate([np.full((n, 1), -1), before[:, :-1]], axis=1)
        starts = eligible & (words > before)
        if not np.array_equal(np.where(eligible, _running_count(starts) - 1, -1), words):
            raise ValueError(
                "word ids must number each block's words 0, 1, 2, ... in order (-1 outside words)"
            )
        exceptions = np.flatnonzero((inside & ~self.non_word(ids)) != eligible) + self.count * L
        if self.segments:
            seg = np.asarray(blocks.segment_ids, dtype=np.int64)
            previous = np.concatenate([np.zeros((n, 1), np.int64), seg[:, :-1]], axis=1)
            piece_starts = (seg > 0) & (seg != previous)
            if not np.array_equal(np.where(inside, _running_count(piece_starts), 0), seg):
                raise ValueError("segment ids must number each block's pieces 1, 2, ... up to its length")
            self._files[_PIECES].write(np.packbits(piece_starts, axis=1, bitorder="little").tobytes())
        self.lengths_derived &= bool(np.array_equal(_ends(ids, self.pad_token_id), lengths))
        self._files[_IDS].write(np.ascontiguousarray(ids, dtype=self.dtypes[_IDS]).tobytes())
        self._files[_WORDS].write(np.packbits(starts, axis=1, bitorder="little").tobytes())
        self._files[_LENGTHS].write(lengths.astype(self.dtypes[_LENGTHS]).tobytes())
        self._files[_EXCEPTIONS].write(exceptions.astype(self.dtypes[_EXCEPTIONS]).tobytes())
        self.exceptions += exceptions.size
        self.count += n

    def close(self, extra: dict[str, Any] | None = None) -> None:
        for f in self._files.values():
            f.close()
        if self.lengths_derived:  # read off the ids: the file is not needed
            (self.directory / f"{_LENGTHS}.bin").unlink()
        if not self.exceptions:
            (self.directory / f"{_EXCEPTIONS}.bin").unlink()
        meta = {
            "format": STORAGE_FORMAT,
            "num_examples": self.count,
            "max_seq_len": self.max_seq_len,
            "dtypes": self.dtypes,
            "pad_token_id": self.pad_token_id,
            "non_word_ids": self.non_word.ids,
            "segments": self.segments,
            "lengths": "derived" if self.lengths_derived else "stored",
            "word_exceptions": self.exceptions,
            **(extra or {}),
        }
        # local: a local block folder (prepared in the cache or a staging folder)
        (self.directory / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


class _Arrays:
    """Blocks as full arrays (in memory, or any array-likes)."""

    def __init__(self, input_ids, word_ids, lengths, segment_ids) -> None:
        self.input_ids, self.word_ids, self.lengths = input_ids, word_ids, lengths
        self.segment_ids = segment_ids
        self.n, self.L = int(input_ids.shape[0]), int(input_ids.shape[1])

    def rows(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        seg = None if self.segment_ids is None else np.asarray(self.segment_ids[rows], dtype=np.int32)
        return (np.asarray(self.input_ids[rows], dtype=np.int32), np.asarray(self.word_ids[rows], dtype=np.int32),
                np.asarray(self.lengths[rows], dtype=np.int32), seg)  # fmt: skip


class _Stored:
    """A storage-format-2 split folder, memory-mapped; ``rows`` decodes sorted rows."""

    def __init__(self, directory: Path | None, meta: dict[str, Any]) -> None:
        n, L = int(meta["num_examples"]), int(meta["max_seq_len"])
        self.n, self.L = n, L
        self.pad = int(meta["pad_token_id"])
        self.non_word = _NonWord(meta["non_word_ids"])
        dtypes = meta["dtypes"]
        self.segments = bool(meta["segments"])

        def open_(name: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
            if not np.prod(shape):
                return np.zeros(shape, dtype=dtype)
            if directory is None:  # remote mode (wwm.data.remote): the caller gives the rows it fetched
                return np.empty(shape if name == _EXCEPTIONS else (0, *shape[1:]), dtype=dtype)
            return np.memmap(directory / f"{name}.bin", dtype=dtype, mode="r", shape=shape)

        packed = (n, _bytes_per_row(L))
        self.input_ids = open_(_IDS, dtypes[_IDS], (n, L))
        self.word_starts = open_(_WORDS, "u1", packed)
        self.piece_starts = open_(_PIECES, "u1", packed) if self.segments else None
        self.stored_lengths = open_(_LENGTHS, dtypes[_LENGTHS], (n,)) if meta["lengths"] == "stored" else None
        count = int(meta["word_exceptions"])
        self.exceptions = open_(_EXCEPTIONS, dtypes[_EXCEPTIONS], (count,)) if count else None

    @classmethod
    def remote(cls, meta: dict[str, Any]) -> _Stored:
        """The layout of a split folder in a bucket, without its rows (``over`` gives them)."""
        _check_format(meta, "a prepared split in the bucket")
        return cls(None, meta)

    def over(self, arrays: dict[str, Any]) -> _Stored:
        """This split with its per-row files replaced by array-likes indexed by row (remote mode: the
        rows it fetched), decoded by the same ``rows``."""
        out = copy.copy(self)
        out.input_ids = arrays[_IDS]
        out.word_starts = arrays[_WORDS]
        out.piece_starts = arrays.get(_PIECES)
        out.stored_lengths = arrays.get(_LENGTHS)
        return out

    def rows(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        L = self.L
        ids = np.asarray(self.input_ids[rows], dtype=np.int32)  # (b, L)
        if self.stored_lengths is not None:
            lengths = np.asarray(self.stored_lengths[rows], dtype=np.int32)
        else:
            lengths = _ends(ids, self.pad).astype(np.int32)
        inside = np.arange(L)[None, :] < lengths[:, None]
        eligible = inside & ~self.non_word(ids)
        if self.exceptions is not None:  # the few tokens the id rule gets wrong: flip them
            lo = np.searchsorted(self.exceptions, rows * L)
            hi = np.searchsorted(self.exceptions, rows * L + L)
            which = np.repeat(np.arange(rows.size), hi - lo)
            flat = np.asarray(self.exceptions[_ranges(lo, hi)], dtype=np.int64)
            eligible[which, flat - rows[which] * L] ^= True
        starts = np.unpackbits(self.word_starts[rows], axis=1, count=L, bitorder="little").astype(bool)
        words = np.where(eligible, _running_count(starts) - 1, -1).astype(np.int32)
        seg = None
        if self.piece_starts is not None:
            pieces = np.unpackbits(self.piece_starts[rows], axis=1, count=L, bitorder="little")
            seg = np.where(inside, _running_count(pieces), 0).astype(np.int32)
        return ids, words, lengths, seg


class _Parts:
    """Split folders read as one: rows [offsets[p], offsets[p+1]) are part p's rows 0, 1, ... (the
    segments of a prepared split, docs/data.md "Segments"). Parts are opened on first use, and at most
    ``OPEN_PARTS`` stay open (each holds a few memory maps)."""

    OPEN_PARTS = 256

    def __init__(self, folders: list[Path], counts: list[int], max_seq_len: int, segments: bool) -> None:
        self.folders = folders
        self.offsets = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))])
        self.n, self.L, self.segments = int(self.offsets[-1]), int(max_seq_len), segments
        self._open: dict[int, _Stored] = {}

    def part(self, p: int) -> _Stored:
        stored = self._open.pop(p, None)
        if stored is None:
            stored = _open_stored(self.folders[p])
            if (stored.n, stored.L, stored.segments) != (int(self.offsets[p + 1] - self.offsets[p]), self.L,
                                                         self.segments):  # fmt: skip
                raise WWMError(
                    f"{self.folders[p]} holds {stored.n} blocks of {stored.L} tokens, not what its manifest "
                    "says; the prepared data was modified: build it again with `wwm prepare --rebuild`"
                )
            if len(self._open) >= self.OPEN_PARTS:
                self._open.pop(next(iter(self._open)))  # the least recently used
        self._open[p] = stored
        return stored

    @property
    def input_ids(self) -> np.ndarray:
        return np.concatenate([self.part(p).input_ids for p in range(len(self.folders))])

    def rows(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        if not rows.size:
            empty = np.zeros((0, self.L), np.int32)
            return empty, empty.copy(), np.zeros(0, np.int32), empty.copy() if self.segments else None
        part = np.searchsorted(self.offsets, rows, side="right") - 1  # rows are sorted: parts in order
        starts = np.flatnonzero(np.diff(part, prepend=-1))  # each part's first index in rows
        ends = np.append(starts[1:], rows.size)
        pieces = [self.part(int(part[a])).rows(rows[a:b] - self.offsets[part[a]])
                  for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]  # fmt: skip
        return tuple(None if x[0] is None else np.concatenate(x) for x in zip(*pieces, strict=True))


def _open_stored(directory: Path) -> _Stored:
    # local: a local block folder (the cache, or a local copy of a bucket's)
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    _check_format(meta, directory)
    return _Stored(directory, meta)


def _check_format(meta: dict[str, Any], where: Any) -> None:
    if meta.get("format") != STORAGE_FORMAT:
        raise WWMError(
            f"{where} holds blocks of storage format {meta.get('format')} (an older wwm; this one "
            f"reads format {STORAGE_FORMAT}); build them again with `wwm prepare --rebuild`, and "
            "`wwm cache prune` removes the old entry"
        )


def _layout(meta: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(name, dtype, bytes per row) of a split folder's per-row files, in the order remote mode reads them."""
    L, dtypes = int(meta["max_seq_len"]), meta["dtypes"]
    files = [(_IDS, dtypes[_IDS], L * np.dtype(dtypes[_IDS]).itemsize), (_WORDS, "u1", _bytes_per_row(L))]
    if meta["segments"]:
        files.append((_PIECES, "u1", _bytes_per_row(L)))
    if meta["lengths"] == "stored":
        files.append((_LENGTHS, dtypes[_LENGTHS], np.dtype(dtypes[_LENGTHS]).itemsize))
    return files


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The indices [lo_i, hi_i) of every i, laid end to end."""
    sizes = hi - lo
    return np.repeat(lo - (np.cumsum(sizes) - sizes), sizes) + np.arange(int(sizes.sum()))


class BlockDataset:
    """Random access to packed blocks (a storage folder memory-mapped, or arrays in memory).

    ``dataset[indices]`` / ``dataset.batch(indices)`` returns a dict of int32 arrays: ``input_ids`` (b, L),
    ``word_ids`` (b, L), ``attention_mask`` (b, L) and ``example_ids`` (b,) int64 (= the indices); with
    segment ids (``packed_documents``) also ``segment_ids`` (b, L) and ``position_ids`` (b, L), the
    per-piece positions (``wwm.data.packing.piece_positions``).

    The attributes ``word_ids``, ``lengths`` and ``segment_ids`` of an opened folder decode every block
    (for inspection of small sets); training reads rows with ``batch``.
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
        self._source: _Arrays | _Stored | _Parts = _Arrays(input_ids, word_ids, lengths, segment_ids)
        self.has_segments = segment_ids is not None
        self.path = path
        self.pad_token_id = pad_token_id  # for the filler rows of a padded last batch

    @classmethod
    def open(cls, directory: str | os.PathLike, pad_token_id: int | None = None) -> BlockDataset:
        """A split folder, memory-mapped."""
        stored = _open_stored(Path(directory))
        return cls._over(stored, str(directory), stored.pad if pad_token_id is None else pad_token_id)

    @classmethod
    def open_parts(
        cls,
        folders: list[str | os.PathLike],
        counts: list[int],
        max_seq_len: int,
        *,
        segments: bool,
        pad_token_id: int,
        path: str | None = None,
    ) -> BlockDataset:
        """Split folders of ``counts`` blocks each, read as one dataset (part p's row r is example
        ``sum(counts[:p]) + r``); a part is opened when a batch first needs it."""
        parts = _Parts([Path(f) for f in folders], counts, max_seq_len, segments)
        return cls._over(parts, path, pad_token_id)

    @classmethod
    def _over(cls, source: Any, path: str | None, pad_token_id: int) -> BlockDataset:
        dataset = cls.__new__(cls)
        dataset._source = source
        dataset.has_segments = source.segments
        dataset.path = path
        dataset.pad_token_id = pad_token_id
        return dataset

    @classmethod
    def from_blocks(cls, blocks: Blocks, pad_token_id: int = 0) -> BlockDataset:
        return cls(blocks.input_ids, blocks.word_ids, blocks.lengths, pad_token_id=pad_token_id,
                   segment_ids=blocks.segment_ids)  # fmt: skip

    def __len__(self) -> int:
        return self._source.n

    @property
    def max_seq_len(self) -> int:
        return self._source.L

    @property
    def input_ids(self) -> np.ndarray:
        """(N, L) token ids as stored (a memmap for an opened folder)."""
        return self._source.input_ids

    @property
    def word_ids(self) -> np.ndarray:
        return self._source.word_ids if isinstance(self._source, _Arrays) else self.as_blocks().word_ids

    @property
    def lengths(self) -> np.ndarray:
        return self._source.lengths if isinstance(self._source, _Arrays) else self.as_blocks().lengths

    @property
    def segment_ids(self) -> np.ndarray | None:
        if isinstance(self._source, _Arrays):
            return self._source.segment_ids
        return self.as_blocks().segment_ids

    def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"example ids outside [0, {len(self)})")
        # Read in ascending order (sequential pages), then restore the requested order.
        order = np.argsort(indices, kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        input_ids, word_ids, lengths, segment_ids = (
            None if a is None else a[inverse] for a in self._source.rows(indices[order])
        )
        attention_mask = (np.arange(self.max_seq_len)[None, :] < lengths[:, None]).astype(np.int32)
        out = {
            "input_ids": input_ids,
            "word_ids": word_ids,
            "attention_mask": attention_mask,
            "example_ids": indices.copy(),
        }
        if self.has_segments:
            out.update(segment_batch(segment_ids))
        return out

    __getitem__ = batch

    def as_blocks(self) -> Blocks:
        """Every block, decoded (int32 arrays)."""
        return Blocks(*self._source.rows(np.arange(len(self), dtype=np.int64)))

    @property
    def prefetch_steps(self) -> int:
        """Global steps that ``BatchIterator`` reads ahead (remote mode, ``wwm.data.remote``; else 0)."""
        return int(getattr(self._source, "prefetch_steps", 0))

    def prefetch(self, indices: np.ndarray) -> None:
        """Start reading these example ids in the background (remote mode; elsewhere nothing to do)."""
        if self.prefetch_steps:
            self._source.prefetch(np.sort(np.asarray(indices, dtype=np.int64)))

    def read_groups(self, group_rows: int, window_rows: int = 0) -> None:
        """The order reads groups of ``group_rows`` adjacent rows, ``window_rows`` of them a window on this
        host (``BatchIterator`` under a groups-G-K-r rule): remote mode then fetches whole groups
        (``wwm.data.remote.RemoteParts.read_groups``); a memory map or a local copy has nothing to do."""
        if hasattr(self._source, "read_groups"):
            self._source.read_groups(group_rows, window_rows)

    @property
    def source(self) -> Any:
        """What the rows come from (a memory map, parts, or remote mode's reader with its ``stats``)."""
        return self._source

    def disk_bytes(self) -> int | None:
        """Bytes of the folder's block files (None for blocks in memory); meta.json adds < 1 KB."""
        if hasattr(self._source, "disk_bytes"):
            return self._source.disk_bytes()
        if isinstance(self._source, _Parts):
            return sum(split_bytes(f) for f in self._source.folders)
        return None if self.path is None else split_bytes(self.path)


def split_bytes(directory: str | os.PathLike) -> int:
    """Bytes of a split folder's block files (``*.bin``; meta.json, < 1 KB, not counted)."""
    return sum(p.stat().st_size for p in Path(directory).glob("*.bin"))


def segment_batch(segment_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The batch keys of packed documents: ``segment_ids`` and their per-piece ``position_ids``."""
    return {"segment_ids": segment_ids, "position_ids": piece_positions(segment_ids)}
