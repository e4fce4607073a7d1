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

Word ids: the tokens of a block get dense word ids 0..W-1 in order; special tokens (CLS, SEP, PAD and
separators) get -1. A word cut by a block boundary is a word on each side; a separator always ends a word,
so no word spans two documents. Documents longer than C tokens are counted (``long_documents``).

Everything is vectorized over a chunk of documents; the only Python loop runs once per block boundary
that falls on a separator.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from wwm.config.sections import DataConfig
from wwm.errors import WWMError

__all__ = ["PACKINGS", "Blocks", "PackStats", "Packer", "SpecialIds"]

PACKINGS = typing.get_args(typing.get_type_hints(DataConfig)["packing"])  # the Literal's choices

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
    """Packed blocks: (n, L) int32 token ids, (n, L) int32 word ids, (n,) int32 non-pad lengths."""

    input_ids: np.ndarray
    word_ids: np.ndarray
    lengths: np.ndarray

    @staticmethod
    def empty(max_seq_len: int) -> Blocks:
        z = np.zeros((0, max_seq_len), dtype=np.int32)
        return Blocks(z, z.copy(), np.zeros(0, dtype=np.int32))

    @staticmethod
    def concat(parts: list[Blocks], max_seq_len: int) -> Blocks:
        if not parts:
            return Blocks.empty(max_seq_len)
        return Blocks(*(np.concatenate(arrays) for arrays in zip(*parts, strict=True)))

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

    def merge(self, other: PackStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


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

    def __init__(self, max_seq_len: int, packing: str, specials: SpecialIds) -> None:
        if packing not in PACKINGS:
            raise WWMError(f"unknown data.packing {packing!r}; use one of {', '.join(PACKINGS)}")
        if max_seq_len < 3:
            raise WWMError(f"max_seq_len must be at least 3 (CLS, a token, SEP); got {max_seq_len}")
        self.max_seq_len = max_seq_len
        self.content = max_seq_len - 2
        self.packing = packing
        self.specials = specials
        self.stats = PackStats()
        self._ids = np.zeros(0, dtype=np.int32)  # full_sentences: the stream not yet cut into blocks
        self._flags = np.zeros(0, dtype=np.int8)
        self._started = False  # a document was seen: the next one is preceded by a separator
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
        return self._count(self._stream_blocks(ids, flags, lengths))

    def finish(self) -> Blocks:
        """The last, padded block of the stream (full_sentences), if any tokens are left."""
        self._finished = True
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
        C = self.content
        doc_start = np.cumsum(lengths) - lengths
        pieces = -(-lengths // C)
        piece_doc = np.repeat(np.arange(lengths.shape[0]), pieces)
        first_piece = np.cumsum(pieces) - pieces
        piece_index = np.arange(piece_doc.shape[0]) - first_piece[piece_doc]
        piece_start = doc_start[piece_doc] + C * piece_index
        piece_len = np.minimum(C, doc_start[piece_doc] + lengths[piece_doc] - piece_start)
        index = np.minimum(piece_start[:, None] + np.arange(C)[None, :], ids.shape[0] - 1)
        return self._frame(ids[index], flags[index], piece_len)

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
