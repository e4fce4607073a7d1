"""Packing tokenized documents into fixed-length blocks, with word ids renumbered per block.

Both modes frame every block with the tokenizer's own special tokens: ``CLS content SEP`` (BERT:
``[CLS] ... [SEP]``, RoBERTa: ``<s> ... </s>``), padded with PAD to ``max_seq_len`` = L, so a block holds
at most C = L - 2 content tokens.

``full_sentences`` (RoBERTa's FULL-SENTENCES)
    The documents form one stream, consecutive documents separated by one SEP token:
    ``d1 SEP d2 SEP d3 ...``. The stream is cut, from its start, into runs of C tokens, each framed as a
    block, except that a run never starts or ends with a separator: a separator that would open a run is
    skipped (the CLS already marks the start), and a run whose last token would be a separator ends one
    token early (the block's closing SEP ends the document; the block gets one PAD). So no block holds two
    SEP in a row. Besides those, only the last block of the stream is padded.
``doc_per_block``
    Each document on its own: a document of n tokens gives ceil(n / C) blocks, the last one padded.
    Nothing is dropped.
``packed_documents``
    Documents are cut into pieces of at most C tokens (a document of n tokens gives ceil(n / C) pieces,
    all of C tokens but the last), each piece framed by its own ``CLS piece SEP``. The framed pieces, in
    order, fill blocks best-fit over a window of ``PACK_WINDOW`` open blocks: a piece goes into the open
    block with the least room that still holds it (the oldest among equals), after the pieces already
    there; if none holds it, it opens a new block, and if ``PACK_WINDOW`` blocks are open already, the one
    with the least room (the oldest among equals) is first closed (padded). Blocks come out in the order
    they close; at the end the open ones close in the order they opened. Per token,
    ``segment_ids`` numbers the pieces of the block 1..k (CLS and SEP included), 0 for padding, and
    ``position_ids`` counts 0, 1, ... from each piece's CLS (0 for padding). The trainers let a token
    attend only to the tokens of its own piece.

Word ids: the tokens of a block get dense word ids 0..W-1 in order; special tokens (CLS, SEP, PAD and
separators) get -1. A word cut by a block boundary is a word on each side; a separator always ends a word,
so no word spans two documents. Documents longer than C tokens are counted (``long_documents``).

Everything is vectorized over a chunk of documents; the only Python loop runs once per block boundary
that falls on a separator.
"""

from __future__ import annotations

import bisect
import typing
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from wwm.config.sections import DataConfig
from wwm.errors import WWMError
from wwm.families import family

__all__ = [
    "PACKINGS",
    "PACKING_RULE",
    "PACK_WINDOW",
    "Blocks",
    "PackStats",
    "Packer",
    "SpecialIds",
    "model_position_ids",
    "piece_positions",
    "run_positions",
]

PACKINGS = typing.get_args(typing.get_type_hints(DataConfig)["packing"])  # the Literal's choices

# packed_documents: blocks open at once for best-fit placement. 64 leaves ~1% padding on WikiText-2 at
# L = 512 (next-fit, i.e. a window of 1: 18.9%; 16: 1.9%; 256: the same as 64); a document's pieces
# stay within ~64 blocks of where they arrived, and the packer holds at most 64 * L tokens.
PACK_WINDOW = 64
# Which rule made a packing's blocks, changed when its blocks change for the same inputs. The cache key
# carries it (old blocks are never reused) and so does each run's run.json (a run never resumes onto
# blocks packed by another rule). "1" is each packing's first rule; packed_documents was next-fit before.
PACKING_RULE = {"full_sentences": "1", "doc_per_block": "1", "packed_documents": f"best-fit-{PACK_WINDOW}"}

# Per-token word flag in the stream: a separator, a token outside words, a word's continuation, a start.
_SEPARATOR, _NO_WORD, _CONTINUE, _START = -2, -1, 0, 1


@dataclass(frozen=True)
class SpecialIds:
    """The token ids a block needs, from the tokenizer (cls falls back to bos, sep to eos)."""

    cls: int
    sep: int
    pad: int
    mask: int
    vocab_size: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> SpecialIds:
        found = {
            "cls": _first_id(tokenizer, "cls_token_id", "bos_token_id"),
            "sep": _first_id(tokenizer, "sep_token_id", "eos_token_id"),
            "pad": _first_id(tokenizer, "pad_token_id"),
            "mask": _first_id(tokenizer, "mask_token_id"),
        }
        missing = [name for name, value in found.items() if value is None]
        if missing:
            names = {"cls": "cls_token (or bos_token)", "sep": "sep_token (or eos_token)"}
            listed = ", ".join(names.get(m, f"{m}_token") for m in missing)
            raise WWMError(
                f"the tokenizer lacks {listed}, which masked-LM blocks need; add them with "
                "tokenizer.add_special_tokens({...}) and save it again, or train one with "
                "`wwm train-tokenizer` (it has [CLS] [SEP] [PAD] [MASK] or <s> </s> <pad> <mask>)"
            )
        return cls(vocab_size=len(tokenizer), **found)

    @property
    def all(self) -> tuple[int, ...]:
        return (self.cls, self.sep, self.pad, self.mask)


def _first_id(tokenizer, *names: str) -> int | None:
    for name in names:
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return None


class Blocks(NamedTuple):
    """Packed blocks: (n, L) int32 token ids, (n, L) int32 word ids, (n,) int32 non-pad lengths, and for
    ``packed_documents`` only (None otherwise) (n, L) int32 segment ids (0 padding, 1..k the pieces)."""

    input_ids: np.ndarray
    word_ids: np.ndarray
    lengths: np.ndarray
    segment_ids: np.ndarray | None = None

    @staticmethod
    def empty(max_seq_len: int, segments: bool = False) -> Blocks:
        z = np.zeros((0, max_seq_len), dtype=np.int32)
        return Blocks(z, z.copy(), np.zeros(0, dtype=np.int32), z.copy() if segments else None)

    @staticmethod
    def concat(parts: list[Blocks], max_seq_len: int) -> Blocks:
        if not parts:
            return Blocks.empty(max_seq_len)
        segments = None if parts[0].segment_ids is None else np.concatenate([p.segment_ids for p in parts])
        arrays = (np.concatenate([getattr(p, name) for p in parts]) for name in Blocks._fields[:3])
        return Blocks(*arrays, segments)

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.lengths.shape[0])


@dataclass
class PackStats:
    documents: int = 0  # documents with at least one token
    empty_documents: int = 0  # documents that gave no token
    tokens: int = 0  # text tokens (framing special tokens and separators not included)
    words: int = 0  # words of the documents (before cutting at block boundaries)
    long_documents: int = 0  # documents longer than a block's content (split over several blocks)
    blocks: int = 0
    padding: int = 0  # PAD tokens in blocks
    pieces: int = 0  # packed_documents: document pieces in blocks (each with its own CLS and SEP)

    def merge(self, other: PackStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def run_positions(segment_ids, xp=np):
    """(b, L) segment ids -> (b, L) int32 positions counting 0, 1, ... from the first token of each run of
    equal ids (padding runs count too). The one home of the rule: `piece_positions` (numpy) and the Flax
    ModernBERT's default positions (`xp=jax.numpy`) both call it."""
    b, L = segment_ids.shape
    index = xp.broadcast_to(xp.arange(L, dtype=xp.int32), (b, L))
    starts = xp.concatenate([xp.ones((b, 1), bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    return index - xp.maximum.accumulate(xp.where(starts, index, 0), axis=1)


def piece_positions(segment_ids: np.ndarray) -> np.ndarray:
    """(b, L) segment ids -> (b, L) int32 positions counting 0, 1, ... from each piece's first token (its
    CLS); 0 for padding (segment 0)."""
    seg = np.asarray(segment_ids)
    return np.where(seg > 0, run_positions(seg), 0).astype(np.int32)


def model_position_ids(positions, segment_ids, model_type: str, pad_token_id: int):
    """Per-piece positions (``piece_positions``) -> the position-embedding rows the model of `model_type`
    looks up, as transformers computes them for the piece alone in a padded block (the family record's
    `position_rows`: BERT and ModernBERT the position itself; RoBERTa ``pad_token_id + 1 + position``, and
    ``pad_token_id`` on padding, its zero row). Plain arithmetic: numpy, jax.numpy and torch arrays work."""
    return family(model_type).position_rows(positions, segment_ids, pad_token_id)


def word_flags(word_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per-token int8 flag of documents laid out flat: 1 starts a word, 0 continues one, -1 no word."""
    n = word_ids.shape[0]
    eligible = word_ids >= 0
    start = eligible.copy()
    if n:
        start[1:] &= word_ids[1:] != word_ids[:-1]
        doc_start = np.cumsum(lengths) - lengths
        doc_start = doc_start[lengths > 0]
        start[doc_start] = eligible[doc_start]
    return np.where(eligible, start.astype(np.int8), np.int8(_NO_WORD))


class Packer:
    """Packs documents into blocks. Feed chunks with ``add``; call ``finish`` once at the end.

    ``add(input_ids, word_ids, lengths)`` takes the documents of a chunk laid out flat: ``input_ids`` and
    ``word_ids`` (T,) integer arrays (word ids local to each document, -1 for special tokens), ``lengths``
    (D,) tokens per document. It returns the blocks completed so far; the packed stream does not depend on
    how the documents are cut into chunks.
    """

    def __init__(
        self, max_seq_len: int, packing: str, specials: SpecialIds, window: int = PACK_WINDOW
    ) -> None:
        if packing not in PACKINGS:
            raise WWMError(f"unknown data.packing {packing!r}; use one of {', '.join(PACKINGS)}")
        if max_seq_len < 3:
            raise WWMError(f"max_seq_len must be at least 3 (CLS, a token, SEP); got {max_seq_len}")
        self.max_seq_len = max_seq_len
        self.content = max_seq_len - 2
        self.packing = packing
        self.specials = specials
        if window < 1:
            raise ValueError(f"window must be at least 1 (1 is next-fit); got {window}")
        self.window = window  # packed_documents' open blocks (PACK_WINDOW; tests vary it, 1 is next-fit)
        self.stats = PackStats()
        self._ids = np.zeros(0, dtype=np.int32)  # full_sentences: the stream not yet cut into blocks
        self._flags = np.zeros(0, dtype=np.int8)
        self._started = False  # a document was seen: the next one is preceded by a separator
        # packed_documents: the pieces waiting in open blocks (their tokens in _ids/_flags, in arrival
        # order): content lengths, the opening number of their block, their offset in it.
        self._open_lengths = np.zeros(0, dtype=np.int64)
        self._open_block = np.zeros(0, dtype=np.int64)
        self._open_offset = np.zeros(0, dtype=np.int64)
        self._bins: list[tuple[int, int]] = []  # open blocks as (room left, opening number), sorted
        self._opened = 0  # blocks opened so far
        self._finished = False

    # ------------------------------------------------------------------ public
    def add(self, input_ids: np.ndarray, word_ids: np.ndarray, lengths: np.ndarray) -> Blocks:
        if self._finished:
            raise RuntimeError("Packer.add after finish")
        ids = np.asarray(input_ids, dtype=np.int32).ravel()
        wids = np.asarray(word_ids, dtype=np.int32).ravel()
        lengths = np.asarray(lengths, dtype=np.int64).ravel()
        if ids.shape != wids.shape or int(lengths.sum()) != ids.shape[0]:
            raise ValueError(
                f"input_ids ({ids.shape[0]}), word_ids ({wids.shape[0]}) and sum(lengths) "
                f"({int(lengths.sum())}) must agree"
            )
        flags = word_flags(wids, lengths)
        nonempty = lengths > 0
        self.stats.documents += int(nonempty.sum())
        self.stats.empty_documents += int((~nonempty).sum())
        self.stats.tokens += int(ids.shape[0])
        self.stats.words += int((flags == _START).sum())
        self.stats.long_documents += int((lengths > self.content).sum())
        lengths = lengths[nonempty]
        if self.packing == "doc_per_block":
            return self._count(self._doc_blocks(ids, flags, lengths))
        if self.packing == "packed_documents":
            return self._count(self._packed_blocks(ids, flags, lengths, final=False))
        return self._count(self._stream_blocks(ids, flags, lengths))

    def finish(self) -> Blocks:
        """The last, padded block of the stream (full_sentences), if any tokens are left."""
        self._finished = True
        if self.packing == "packed_documents":
            return self._count(
                self._packed_blocks(self._ids[:0], self._flags[:0], np.zeros(0, np.int64), True)
            )
        ids, flags = self._ids, self._flags
        if ids.size and flags[0] == _SEPARATOR:
            ids, flags = ids[1:], flags[1:]
        self._ids, self._flags = ids[:0], flags[:0]
        if not ids.size:
            return Blocks.empty(self.max_seq_len)
        pad = self.content - ids.size
        content_ids = np.concatenate([ids, np.full(pad, self.specials.pad, dtype=np.int32)])[None]
        content_flags = np.concatenate([flags, np.full(pad, _NO_WORD, dtype=np.int8)])[None]
        return self._count(self._frame(content_ids, content_flags, np.array([ids.size])))

    # ------------------------------------------------------------------ internals
    def _count(self, blocks: Blocks) -> Blocks:
        self.stats.blocks += len(blocks)
        if blocks.segment_ids is not None:
            self.stats.pieces += int(blocks.segment_ids.max(axis=1, initial=0).sum())
        self.stats.padding += int(len(blocks) * self.max_seq_len - blocks.lengths.sum())
        return blocks

    def _stream_blocks(self, ids: np.ndarray, flags: np.ndarray, lengths: np.ndarray) -> Blocks:
        n_docs = lengths.shape[0]
        if n_docs:
            sep_before = np.ones(n_docs, dtype=np.int64)
            if not self._started:
                sep_before[0] = 0
                self._started = True
            shift = np.repeat(np.cumsum(sep_before), lengths)
            new_ids = np.empty(ids.shape[0] + int(sep_before.sum()), dtype=np.int32)
            new_flags = np.empty(new_ids.shape[0], dtype=np.int8)
            token_at = np.arange(ids.shape[0]) + shift
            new_ids[token_at] = ids
            new_flags[token_at] = flags
            doc_start = np.cumsum(lengths + sep_before) - lengths
            sep_at = (doc_start - 1)[sep_before == 1]
            new_ids[sep_at] = self.specials.sep
            new_flags[sep_at] = _SEPARATOR
            stream_ids = np.concatenate([self._ids, new_ids])
            stream_flags = np.concatenate([self._flags, new_flags])
        else:
            stream_ids, stream_flags = self._ids, self._flags

        C = self.content
        is_sep = stream_flags == _SEPARATOR
        starts: list[np.ndarray] = []
        sizes: list[np.ndarray] = []
        p = 0
        while (k := (stream_ids.shape[0] - p) // C) > 0:
            candidates = p + C * np.arange(k)
            opens, closes = is_sep[candidates], is_sep[candidates + C - 1]
            hits = opens | closes
            if not hits.any():
                starts.append(candidates)
                sizes.append(np.full(k, C))
                p = int(candidates[-1]) + C
                break
            j = int(np.argmax(hits))
            starts.append(candidates[:j])
            sizes.append(np.full(j, C))
            if opens[j]:  # drop the separator that would open a block
                p = int(candidates[j]) + 1
            else:  # the block's SEP closes the document: end the block one token early
                starts.append(candidates[j : j + 1])
                sizes.append(np.array([C - 1]))
                p = int(candidates[j]) + C
        self._ids, self._flags = stream_ids[p:], stream_flags[p:]
        begin = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
        if not begin.size:
            return Blocks.empty(self.max_seq_len)
        index = begin[:, None] + np.arange(C)[None, :]
        return self._frame(stream_ids[index], stream_flags[index], np.concatenate(sizes))

    def _doc_blocks(self, ids: np.ndarray, flags: np.ndarray, lengths: np.ndarray) -> Blocks:
        if not lengths.size:
            return Blocks.empty(self.max_seq_len)
        piece_start, piece_len = self._pieces(lengths)
        index = np.minimum(piece_start[:, None] + np.arange(self.content)[None, :], ids.shape[0] - 1)
        return self._frame(ids[index], flags[index], piece_len)

    def _pieces(self, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, length) of the pieces of documents laid out flat: ceil(n / C) pieces of a document of n
        tokens, all of C tokens but the last."""
        C = self.content
        doc_start = np.cumsum(lengths) - lengths
        pieces = -(-lengths // C)
        piece_doc = np.repeat(np.arange(lengths.shape[0]), pieces)
        first_piece = np.cumsum(pieces) - pieces
        piece_index = np.arange(piece_doc.shape[0]) - first_piece[piece_doc]
        piece_start = doc_start[piece_doc] + C * piece_index
        piece_len = np.minimum(C, doc_start[piece_doc] + lengths[piece_doc] - piece_start)
        return piece_start, piece_len

    def _packed_blocks(self, ids: np.ndarray, flags: np.ndarray, lengths: np.ndarray, final: bool) -> Blocks:
        """packed_documents: the blocks closed by placing the pieces of these documents (``final``: and
        the open ones), in closing order. Pieces of still open blocks wait in ``_ids``/``_open_*``."""
        L = self.max_seq_len
        _, new_len = self._pieces(lengths)
        new_block, new_offset, closed = self._place(new_len + 2, final)
        piece_len = np.concatenate([self._open_lengths, new_len])  # content tokens per piece
        block = np.concatenate([self._open_block, new_block])
        offset = np.concatenate([self._open_offset, new_offset])
        ids = np.concatenate([self._ids, ids])
        flags = np.concatenate([self._flags, flags])
        first = np.cumsum(piece_len) - piece_len  # each piece's first token in ids
        closed_at = np.asarray(closed, dtype=np.int64)  # opening numbers, in closing order
        by_number = np.argsort(closed_at)
        sorted_numbers = closed_at[by_number]
        slot = np.minimum(np.searchsorted(sorted_numbers, block), max(len(closed) - 1, 0))
        is_closed = sorted_numbers[slot] == block if len(closed) else np.zeros(block.shape, dtype=bool)
        keep = np.flatnonzero(~is_closed)
        take = _gather(first[keep], piece_len[keep])
        self._ids, self._flags = ids[take], flags[take]
        self._open_lengths, self._open_block, self._open_offset = piece_len[keep], block[keep], offset[keep]
        if not len(closed):
            return Blocks.empty(L, segments=True)
        out = np.flatnonzero(is_closed)
        row = by_number[slot[out]]  # the closed block's output row: its rank in closing order
        order = np.lexsort((offset[out], row))  # pieces by (row, offset)
        out, row = out[order], row[order]
        take = _gather(first[out], piece_len[out])
        return self._frame_pieces(ids[take], flags[take], piece_len[out], row, offset[out], len(closed))

    def _place(self, sizes: np.ndarray, final: bool) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Best-fit placement of framed pieces of ``sizes`` tokens (the module doc's rule): per piece its
        block's opening number and its offset there, and the opening numbers of the blocks closed, in
        closing order. The one sequential rule: a Python loop over pieces, O(log window) each."""
        L, bins = self.max_seq_len, self._bins
        block = np.empty(sizes.shape[0], dtype=np.int64)
        offset = np.empty(sizes.shape[0], dtype=np.int64)
        closed: list[int] = []
        for i, size in enumerate(sizes.tolist()):
            j = bisect.bisect_left(bins, (size, -1))  # the least room >= size, the oldest among equals
            if j < len(bins):
                room, number = bins.pop(j)
            else:
                if len(bins) == self.window:
                    closed.append(bins.pop(0)[1])  # the least room, the oldest among equals
                room, number = L, self._opened
                self._opened += 1
            block[i], offset[i] = number, L - room
            bisect.insort(bins, (room - size, number))
        if final:
            closed += sorted(number for _, number in bins)
            bins.clear()
        return block, offset, closed

    def _frame_pieces(self, ids, flags, piece_len, block, offset, k) -> Blocks:
        """Blocks of framed pieces ``CLS piece SEP`` at (block, offset), word ids renumbered per block."""
        L, sp = self.max_seq_len, self.specials
        size = piece_len + 2
        piece_of = np.repeat(np.arange(piece_len.shape[0]), piece_len)  # (T,) the piece of each token
        first = np.cumsum(piece_len) - piece_len
        within = np.arange(ids.shape[0]) - first[piece_of]  # position in the piece's content
        rows, cols = block[piece_of], offset[piece_of] + 1 + within
        input_ids = np.full((k, L), sp.pad, dtype=np.int32)
        input_ids[block, offset] = sp.cls
        input_ids[block, offset + size - 1] = sp.sep
        input_ids[rows, cols] = ids
        # Word starts: a word's first token, and a piece's first token (a word cut between pieces).
        starts = np.zeros((k, L), dtype=bool)
        eligible = np.zeros((k, L), dtype=bool)
        eligible[rows, cols] = flags >= 0
        starts[rows, cols] = (flags == _START) | (within == 0)
        starts &= eligible
        word_ids = np.where(eligible, np.cumsum(starts, axis=1, dtype=np.int32) - 1, -1).astype(np.int32)
        # Segment ids: piece number within its block, over its framed span.
        number = np.arange(piece_len.shape[0]) - np.searchsorted(block, block, side="left") + 1
        span = np.repeat(np.arange(piece_len.shape[0]), size)
        span_col = offset[span] + np.arange(span.shape[0]) - (np.cumsum(size) - size)[span]
        segment_ids = np.zeros((k, L), dtype=np.int32)
        segment_ids[block[span], span_col] = number[span]
        lengths = np.zeros(k, dtype=np.int64)
        np.maximum.at(lengths, block, offset + size)
        return Blocks(input_ids, word_ids, lengths.astype(np.int32), segment_ids)

    def _frame(self, content_ids: np.ndarray, content_flags: np.ndarray, n: np.ndarray) -> Blocks:
        """Blocks ``CLS content[:n] SEP PAD...`` with word ids renumbered 0..W-1 per block."""
        k, C = content_ids.shape
        L = self.max_seq_len
        sp = self.specials
        n = np.asarray(n, dtype=np.int64)
        valid = np.arange(C)[None, :] < n[:, None]
        eligible = valid & (content_flags >= 0)
        starts = eligible & (content_flags == _START)
        starts[:, 0] |= eligible[:, 0]  # a word cut by the block boundary starts again here
        content_wids = np.where(eligible, np.cumsum(starts, axis=1, dtype=np.int32) - 1, -1)

        input_ids = np.full((k, L), sp.pad, dtype=np.int32)
        input_ids[:, 0] = sp.cls
        input_ids[:, 1 : C + 1] = np.where(valid, content_ids, sp.pad)
        input_ids[np.arange(k), n + 1] = sp.sep
        word_ids = np.full((k, L), -1, dtype=np.int32)
        word_ids[:, 1 : C + 1] = content_wids
        return Blocks(input_ids, word_ids, (n + 2).astype(np.int32))


def _gather(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices of the runs [start, start + length) laid end to end."""
    total = int(lengths.sum())
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total, dtype=np.int64)
