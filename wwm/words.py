"""Word boundaries for whole-word masking: a per-token word id for every sequence.

Every function here returns, for one sequence of L tokens, an int32 array ``word_ids`` of shape (L,):
-1 for special and pad tokens, and 0, 1, 2, ... for the words of the text in order of appearance, so that
a word is a maximal run of consecutive positions with the same non-negative id. Ids are dense
(0..W-1), non-decreasing, and two adjacent different words always get different ids, also across the two
sequences of a pair. ``wwm.masking`` relies on exactly this.

Policies (``POLICIES``):

``tokenizer`` (default)
    The fast tokenizer's pre-tokenizer words (``Encoding.word_ids``): BERT semantics, punctuation is a
    word of its own, "stop-believing." is four words. Every CJK ideograph is its own word for BERT.
``whitespace``
    Whitespace-delimited words, as fairseq's ``--mask-whole-words``: "stop-believing." is one word.
    Computed from the text and the token offsets, so it works for WordPiece, byte-level BPE ("Ġ", also
    when one character is split into several byte tokens that share its offsets) and Metaspace /
    SentencePiece ("▁", whose offsets include the leading space).
``vocab``
    A begin-of-word flag per vocabulary entry (``begin_of_word_table``), for ids that come without text
    or offsets: WordPiece tokens not starting with "##", byte-level BPE tokens starting with "Ġ" (or
    another whitespace byte), Metaspace tokens starting with "▁". ``word_ids_from_begin_table`` turns
    (B, L) ids into word ids with O(B*L) numpy.
``segmenter`` (old name ``cjk``, still accepted)
    The ``tokenizer`` policy, except that between two adjacent tokens of which either is in a script
    written without spaces (Chinese ideographs, Japanese kana, Thai, Lao, Khmer, Myanmar, Tibetan) a new
    word starts iff the two tokens lie in different words of a segmenter: jieba for Chinese, fugashi
    (MeCab + UniDic) for Japanese, pythainlp, laonlp, khmer-nltk, pyidaungsu, botok for the others,
    decided per document (``SEGMENTERS``, ``segmenter="auto"``; Vietnamese on request: pyvi,
    underthesea). A token belongs to the segmenter word that holds its first character; a token is
    never split.

Two ways to have no token straddle a word: ``pre_segment=True`` cuts the text at segmenter words before
a fast tokenizer (``pre_segment_pieces``), and a word-structured slow tokenizer (BertJapaneseTokenizer:
``is_word_structured``) gives its own words.

The package core imports numpy only: tokenizers, transformers and the segmenters are imported inside
functions. See docs/words.md for the design.
"""

from __future__ import annotations

import json
import logging
import os
import re
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain, pairwise
from typing import Any

import numpy as np

from wwm.errors import WWMError

__all__ = [
    "POLICIES",
    "POLICY_ALIASES",
    "SEGMENTERS",
    "Segmenter",
    "begin_of_word_table",
    "cjk_char_mask",
    "fugashi_segmenter",
    "is_word_structured",
    "jieba_segmenter",
    "named_segmenter",
    "pre_segment_pieces",
    "pythainlp_segmenter",
    "require_segmenter",
    "segmenter_fingerprint",
    "tokenize_with_word_ids",
    "word_ids_for_encoding",
    "word_ids_from_begin_table",
]

POLICIES = ("tokenizer", "whitespace", "vocab", "segmenter")
#: Old policy names that still work: ``cjk`` is ``segmenter`` (it also segments Thai now).
POLICY_ALIASES = {"cjk": "segmenter"}

#: Segmenters of policy ``segmenter`` by name. ``auto`` picks one per text run (see ``_auto_plan``);
#: ``none`` segments nothing (the words of policy ``tokenizer``).
SEGMENTERS = (
    "auto",
    "jieba",
    "fugashi",
    "pythainlp",
    "laonlp",
    "khmernltk",
    "pyidaungsu",
    "botok",
    "pyvi",
    "underthesea",
    "none",
)

#: A segmenter maps a text to the (start, end) character spans of its words, sorted and not overlapping.
#: Characters that no span covers are words of one character each.
Segmenter = Callable[[str], list[tuple[int, int]]]

_EXTRA = 'pip install "wwm[cjk]"'

# Chinese ideographs, as BERT's `_is_chinese_char`, then Japanese kana (Hiragana, Katakana, Katakana
# phonetic extensions, half-width Katakana). Hangul is left out: Korean separates words with spaces.
_HAN_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
_KANA_RANGES = ((0x3040, 0x309F), (0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))
_CJK_RANGES = _HAN_RANGES + _KANA_RANGES
# Kana that mark a text as Japanese: the kana blocks without the two punctuation marks Chinese text
# also uses, the Katakana middle dot "・" (in transliterated names) and the double hyphen "゠".
_KANA_LETTER_RANGES = (
    (0x3040, 0x309F),
    (0x30A1, 0x30FA),
    (0x30FC, 0x30FF),
    (0x31F0, 0x31FF),
    (0xFF66, 0xFF9F),
)
_THAI_RANGES = ((0x0E00, 0x0E7F),)
# The other scripts written without spaces between words, each with a segmenter of its own.
_LAO_RANGES = ((0x0E80, 0x0EFF),)
_KHMER_RANGES = ((0x1780, 0x17FF), (0x19E0, 0x19FF))
_MYANMAR_RANGES = ((0x1000, 0x109F), (0xA9E0, 0xA9FF), (0xAA60, 0xAA7F))
_TIBETAN_RANGES = ((0x0F00, 0x0FFF),)
_SCRIPT_RANGES = {
    "cjk": _CJK_RANGES,
    "kana": _KANA_LETTER_RANGES,
    "thai": _THAI_RANGES,
    "lao": _LAO_RANGES,
    "khmer": _KHMER_RANGES,
    "myanmar": _MYANMAR_RANGES,
    "tibetan": _TIBETAN_RANGES,
}
# `auto`'s segmenter for each script that has one of its own (Han and kana: jieba or fugashi, by document).
_SCRIPT_SEGMENTER = {
    "thai": "pythainlp",
    "lao": "laonlp",
    "khmer": "khmernltk",
    "myanmar": "pyidaungsu",
    "tibetan": "botok",
}
# A document is Japanese (all its Han and kana go to fugashi) when kana letters are at least this share of
# its Han and kana characters; below it (a Chinese text that quotes a kana name) Chinese rules apply.
JAPANESE_KANA_SHARE = 0.1

# Where `auto` cuts a non-Thai stretch that holds kana into sentences (each goes to fugashi if it holds
# kana, else to jieba): after a run of sentence-ending marks or line breaks.
_SENTENCE_END = re.compile(r"[。．｡！？!?\n]+")

# Every code point for which str.isspace() is true lies below U+3001.
_WHITESPACE_CODEPOINTS = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)
_WHITESPACE_TABLE = np.zeros(0x3002, dtype=bool)  # index min(code point, 0x3001): True for whitespace
_WHITESPACE_TABLE[_WHITESPACE_CODEPOINTS] = True

# A separator between the texts of a batch when they are laid out as one string: neither whitespace nor
# CJK, and no segmenter span covers it.
_SEP = "\x00"


# --------------------------------------------------------------------------------------------------
# Character tables
# --------------------------------------------------------------------------------------------------


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _whitespace_mask(codepoints: np.ndarray) -> np.ndarray:
    return _WHITESPACE_TABLE[np.minimum(codepoints, 0x3001)]


def cjk_char_mask(text: str) -> np.ndarray:
    """Bool array of len(text): True where the character is a CJK ideograph or Japanese kana."""
    return _cjk_mask(_codepoints(text))


def _in_ranges(codepoints: np.ndarray, ranges: tuple[tuple[int, int], ...]) -> np.ndarray:
    mask = np.zeros(codepoints.shape, dtype=bool)
    for lo, hi in ranges:
        mask |= (codepoints >= lo) & (codepoints <= hi)
    return mask


def _cjk_mask(codepoints: np.ndarray) -> np.ndarray:
    return _in_ranges(codepoints, _CJK_RANGES)


def _segment_ids(n: int, spans: np.ndarray) -> np.ndarray:
    """Segment id of every position 0..n (n+1 entries; position n is a sentinel with an id of its own).

    ``spans`` (S, 2) are sorted, non-overlapping [start, end) spans; an uncovered position is a segment
    of its own.
    """
    begins = np.zeros(n + 1, dtype=bool)
    begins[0] = True
    begins[n] = True
    if len(spans):
        starts, ends = spans[:, 0], spans[:, 1]
        begins[starts] = True
        begins[ends] = True
        depth = np.cumsum(np.bincount(starts, minlength=n + 1) - np.bincount(ends, minlength=n + 1))
        begins |= depth == 0
    else:
        begins[:] = True
    return np.cumsum(begins)


def _check_spans(spans: Any, n: int, what: str) -> np.ndarray:
    try:
        arr = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    except (TypeError, ValueError) as err:
        raise WWMError(
            f"the segmenter returned {what} that are not (start, end) pairs of integers; "
            "make it return a list of (start, end) character spans"
        ) from err
    arr = arr[arr[:, 1] > arr[:, 0]]
    if len(arr) and (arr.min() < 0 or arr.max() > n or (len(arr) > 1 and np.any(arr[1:, 0] < arr[:-1, 1]))):
        raise WWMError(
            f"the segmenter returned {what} out of order, overlapping or outside the text of length {n}; "
            "make it return sorted, non-overlapping (start, end) character spans within the text"
        )
    return arr


# --------------------------------------------------------------------------------------------------
# Segmenters
# --------------------------------------------------------------------------------------------------


def _aligned_spans(text: str, words: Any) -> Any:
    """(start, end) spans of word strings found in order in ``text`` (words a segmenter dropped or
    changed are skipped: their characters become words of one character). Two fast paths give the same
    spans as the search: the words spell the text, or they spell it without its whitespace."""
    words = list(words)
    joined = "".join(words)
    # (words that spell the text without its whitespace hold no whitespace themselves)
    if joined == text or joined == "".join(text.split()):
        lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        keep = (lengths > 0) & ~np.fromiter(map(str.isspace, words), dtype=bool, count=len(words))
        ends = np.cumsum(lengths)
        starts = ends - lengths
        if joined != text:  # positions in the text without its whitespace -> in the text
            index = np.flatnonzero(~_whitespace_mask(_codepoints(text)))
            return np.stack([index[starts[keep]], index[ends[keep] - 1] + 1], axis=1)
        return np.stack([starts[keep], ends[keep]], axis=1)
    spans, pos = [], 0
    for word in words:
        if not word or word.isspace():
            continue
        start = pos if text.startswith(word, pos) else text.find(word, pos)
        if start < 0:
            continue
        pos = start + len(word)
        spans.append((start, pos))
    return spans


# Segmenter results per distinct input, for the segmenters whose words of a text are the same whatever
# the text around it: a run of one script (pythainlp, laonlp, khmer-nltk, pyidaungsu and botok are given
# runs), a block of jieba's own split (Han and alphanumerics between the rest: jieba cuts each alone).
_SPAN_CACHE_SIZE = 1 << 16  # entries per segmenter and process; cleared when full
_SPAN_CACHES: dict[str, dict[str, np.ndarray]] = {}


def _cached(name: str, segment: Callable[[str], Any]) -> Callable[[str], np.ndarray]:
    """``segment`` with its results kept per distinct text (exact: the same text gives the same words)."""
    cache = _SPAN_CACHES.setdefault(name, {})

    def cached(text: str) -> np.ndarray:
        spans = cache.get(text)
        if spans is None:
            spans = _check_spans(segment(text), len(text), "spans")
            spans.setflags(write=False)
            if len(cache) >= _SPAN_CACHE_SIZE:
                cache.clear()
            cache[text] = spans
        return spans

    cached.checked = True  # type: ignore[attr-defined]  # its spans are checked once, when made
    return cached


def jieba_segmenter() -> Segmenter:
    """Chinese words: jieba's default (HMM) mode, with its startup log silenced."""
    try:
        import jieba
    except ImportError as err:
        raise WWMError(
            "policy 'segmenter' segments Chinese words with jieba, which is not installed; "
            f"install it with `{_EXTRA}` (or `pip install jieba`), or pass segmenter=..."
        ) from err
    jieba.setLogLevel(logging.WARNING)
    block = _cached("jieba", lambda text: [(start, end) for _word, start, end in jieba.tokenize(text)])
    blocks = jieba.re_han_default  # jieba.cut splits the text with this and cuts each block alone

    def segment(text: str) -> Any:
        parts, at = [], 0
        for piece in blocks.split(text):
            if piece:
                parts.append(block(piece) + at)
                at += len(piece)
        return np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)

    segment.checked = True  # type: ignore[attr-defined]  # (its blocks' spans are)
    return segment


_TAGGERS: dict[str, Any] = {}


def fugashi_segmenter() -> Segmenter:
    """Japanese words: MeCab (fugashi) with the UniDic 2.1.2 dictionary of unidic-lite, as cl-tohoku's
    Japanese BERT models. unidic-lite is named explicitly, so an installed full ``unidic`` changes
    nothing. wwm gives it one sentence at a time (as cl-tohoku ran MeCab on sentences), and keeps its
    results per distinct sentence."""
    try:
        import fugashi
        import unidic_lite
    except ImportError as err:
        raise WWMError(
            "policy 'segmenter' segments Japanese words with fugashi and unidic-lite, which are not "
            f"installed; install them with `{_EXTRA}` (or `pip install fugashi unidic-lite`), or set the "
            "segmenter to 'jieba' or 'none'"
        ) from err
    tagger = _TAGGERS.get(unidic_lite.DICDIR)
    if tagger is None:  # loading the dictionary takes a while: once per process
        dicdir = unidic_lite.DICDIR
        tagger = fugashi.Tagger(f'-d "{dicdir}" -r "{os.path.join(dicdir, "mecabrc")}"')
        _TAGGERS[dicdir] = tagger

    def segment(text: str) -> list[tuple[int, int]]:
        clean = text.replace("\x00", " ")  # MeCab reads C strings: a NUL would end the text
        return _aligned_spans(clean, [word.surface for word in tagger(clean)])

    return _cached("fugashi", segment)


def pythainlp_segmenter() -> Segmenter:
    """Thai words: pythainlp's default ``newmm`` engine (dictionary maximal matching over Thai
    character clusters; its dictionary ships in the wheel, nothing is downloaded)."""
    try:
        from pythainlp.tokenize import word_tokenize
    except ImportError as err:
        raise _missing("Thai words with pythainlp", "cjk", "pythainlp") from err

    def segment(text: str) -> list[tuple[int, int]]:
        return _aligned_spans(text, word_tokenize(text, engine="newmm", keep_whitespace=True))

    return _cached("pythainlp", segment)


def _missing(what: str, extra: str, packages: str) -> WWMError:
    """The one-line error of a segmenter whose package is not installed."""
    return WWMError(
        f"policy 'segmenter' segments {what}, which is not installed; install it with "
        f"`pip install \"wwm[{extra}]\"` (or `pip install {packages}`), or set the segmenter to 'none'"
    )


def laonlp_segmenter() -> Segmenter:
    """Lao words: LaoNLP's ``word_tokenize`` (dictionary maximal matching over Lao character clusters,
    pythainlp's newmm algorithm with LaoNLP's Lao dictionary, shipped in its wheel)."""
    try:
        from laonlp import word_tokenize
    except ImportError as err:
        raise _missing("Lao words with laonlp", "lo", "laonlp") from err

    def segment(text: str) -> list[tuple[int, int]]:
        return _aligned_spans(text, word_tokenize(text))

    return _cached("laonlp", segment)


def khmernltk_segmenter() -> Segmenter:
    """Khmer words: khmer-nltk's ``word_tokenize`` (a CRF over Khmer character clusters; its model ships
    in the wheel). Its startup log line is silenced."""
    try:
        logging.getLogger("khmer-nltk").setLevel(logging.WARNING)
        from khmernltk import word_tokenize
    except ImportError as err:
        raise _missing("Khmer words with khmer-nltk", "km", "khmer-nltk") from err
    logging.getLogger("khmer-nltk").setLevel(logging.WARNING)

    def segment(text: str) -> list[tuple[int, int]]:
        # khmer-nltk drops zero-width spaces and repeated spaces: words are found in order in the text.
        return _aligned_spans(text, word_tokenize(text, return_tokens=True))

    return _cached("khmernltk", segment)


def pyidaungsu_segmenter() -> Segmenter:
    """Myanmar (Burmese) words: pyidaungsu's ``tokenize(form="word")`` (a CRF over syllables; its model
    ships in the wheel)."""
    try:
        import pyidaungsu
    except ImportError as err:
        raise _missing("Myanmar words with pyidaungsu", "my", "pyidaungsu") from err

    def segment(text: str) -> list[tuple[int, int]]:
        return _aligned_spans(text, pyidaungsu.tokenize(text, form="word"))

    return _cached("pyidaungsu", segment)


#: Where botok keeps its dialect packs (botok's own default), and the variable that points elsewhere.
BOTOK_PACK_ENV = "WWM_BOTOK_DIALECT_PACK"
_BOTOK: dict[str, Any] = {}


def botok_dialect_pack() -> str:
    """The folder of botok's dialect pack: ``$WWM_BOTOK_DIALECT_PACK``, else botok's default
    ``~/Documents/pybo/dialect_packs/general``."""
    from pathlib import Path

    env = os.environ.get(BOTOK_PACK_ENV)
    if env:
        return str(Path(env).expanduser())
    return str(Path.home() / "Documents" / "pybo" / "dialect_packs" / "general")


def botok_segmenter() -> Segmenter:
    """Tibetan words: botok's ``WordTokenizer`` (dictionary maximal matching over syllables with the
    "general" dialect pack). botok downloads that pack from GitHub the first time it is built, retrying
    for minutes when offline; wwm never lets it: without the pack on disk it raises one line saying how
    to get it."""
    try:
        from botok import Config, WordTokenizer
    except ImportError as err:
        raise _missing("Tibetan words with botok", "bo", "botok") from err
    pack = botok_dialect_pack()
    if not os.path.isdir(os.path.join(pack, "dictionary")):
        raise WWMError(
            f"Tibetan words need botok's dialect pack, and {pack} holds none: botok downloads it from "
            "GitHub (Esukhia/botok-data, general.zip) on first use, which wwm does not do at run time; "
            'unpack general.zip into that folder once (with network: python -c "from botok import '
            f'WordTokenizer; WordTokenizer()"), or point {BOTOK_PACK_ENV} at an unpacked dialect pack'
        )
    tokenizer = _BOTOK.get(pack)
    if tokenizer is None:  # building the trie takes a while: once per process
        tokenizer = WordTokenizer(config=Config.from_path(pack))
        _BOTOK[pack] = tokenizer

    def segment(text: str) -> list[tuple[int, int]]:
        tokens = tokenizer.tokenize(text, split_affixes=False)
        return [(t.start, t.start + t.len) for t in tokens]

    return _cached(f"botok:{pack}", segment)


def pyvi_segmenter() -> Segmenter:
    """Vietnamese words: pyvi's ``ViTokenizer`` (a CRF that joins the syllables of a word with "_"; its
    model ships in the wheel). Opt-in: Vietnamese is written with spaces between syllables."""
    try:
        from pyvi import ViTokenizer
    except ImportError as err:
        raise _missing("Vietnamese words with pyvi", "vi", "pyvi") from err

    def segment(text: str) -> list[tuple[int, int]]:
        return _syllable_spans(text, [w.split("_") for w in ViTokenizer.tokenize(text).split()])

    return segment


def underthesea_segmenter() -> Segmenter:
    """Vietnamese words: underthesea's ``word_tokenize`` (a CRF trained on VLSP 2013). Opt-in, like pyvi;
    heavier to install and import (about 6 s)."""
    try:
        from underthesea import word_tokenize
    except ImportError as err:
        raise _missing("Vietnamese words with underthesea", "underthesea", "underthesea") from err

    def segment(text: str) -> list[tuple[int, int]]:
        return _syllable_spans(text, [w.split() for w in word_tokenize(text)])

    return segment


def _syllable_spans(text: str, words: list[list[str]]) -> list[tuple[int, int]]:
    """Spans of words given as their syllables, found in order in ``text`` (from the first syllable's
    start to the last one's end); a word whose syllables are not found is skipped."""
    spans, pos = [], 0
    for syllables in words:
        syllables = [s for s in syllables if s]
        if not syllables:
            continue
        start = end = -1
        at = pos
        for syllable in syllables:
            found = text.find(syllable, at)
            if found < 0:
                break
            start = found if start < 0 else start
            at = end = found + len(syllable)
        else:
            spans.append((start, end))
            pos = end
    return spans


_FACTORIES: dict[str, Callable[[], Segmenter]] = {
    "jieba": jieba_segmenter,
    "fugashi": fugashi_segmenter,
    "pythainlp": pythainlp_segmenter,
    "laonlp": laonlp_segmenter,
    "khmernltk": khmernltk_segmenter,
    "pyidaungsu": pyidaungsu_segmenter,
    "botok": botok_segmenter,
    "pyvi": pyvi_segmenter,
    "underthesea": underthesea_segmenter,
}
# The packages whose versions a named segmenter's words depend on (the data cache key holds them).
_PACKAGES = {
    "jieba": ("jieba",),
    "fugashi": ("fugashi", "unidic-lite"),
    "pythainlp": ("pythainlp",),
    "laonlp": ("laonlp",),
    "khmernltk": ("khmer-nltk",),
    "pyidaungsu": ("pyidaungsu",),
    "botok": ("botok",),
    "pyvi": ("pyvi",),
    "underthesea": ("underthesea",),
}
_PACKAGES["auto"] = tuple(p for name in ("jieba", "fugashi", "pythainlp", *_SCRIPT_SEGMENTER.values())
                          for p in _PACKAGES[name])  # fmt: skip


def named_segmenter(name: str) -> Segmenter:
    """The segmenter called ``name`` (one of ``SEGMENTERS`` but "auto" and "none")."""
    if name not in _FACTORIES:
        raise WWMError(f"unknown segmenter {name!r}; use one of {', '.join(repr(s) for s in _FACTORIES)}")
    return _FACTORIES[name]()


def _check_segmenter(segmenter: Any) -> None:
    if not callable(segmenter) and segmenter not in SEGMENTERS:
        raise WWMError(
            f"unknown segmenter {segmenter!r}; use one of {', '.join(repr(s) for s in SEGMENTERS)} "
            "or a function text -> [(start, end), ...]"
        )


def require_segmenter(name: str) -> None:
    """Raise the one-line WWMError of a missing package now, before slow work, for a named segmenter.
    ``auto`` checks nothing: each of its packages is imported when a text needs it (Chinese text needs
    only jieba, English text none)."""
    _check_segmenter(name)
    if name in _FACTORIES:
        named_segmenter(name)


def segmenter_fingerprint(name: str) -> dict[str, Any]:
    """What the words of a named segmenter depend on: its name and the versions of the packages it
    may use (without importing them); botok's also on its dialect pack's folder."""
    from importlib.metadata import PackageNotFoundError, version

    _check_segmenter(name)
    versions = {}
    for package in _PACKAGES.get(name, ()):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    out: dict[str, Any] = {"segmenter": name, "versions": versions}
    if name in ("auto", "botok") and versions.get("botok") is not None:
        out["botok_dialect_pack"] = botok_dialect_pack()
    return out


# --------------------------------------------------------------------------------------------------
# Vocabulary (begin-of-word) tables
# --------------------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map, used by byte-level BPE vocabularies."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _walk(node: Any):
    """Every dict in a tokenizer.json sub-tree (pre-tokenizer, decoder or normalizer)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _backend(tokenizer: Any) -> Any:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend
    if hasattr(tokenizer, "to_str") and hasattr(tokenizer, "get_vocab"):  # a tokenizers.Tokenizer
        return tokenizer
    raise WWMError(
        f"word ids need a fast tokenizer (PreTrainedTokenizerFast), got {type(tokenizer).__name__}; "
        "load it with AutoTokenizer.from_pretrained(..., use_fast=True) or convert it with "
        "PreTrainedTokenizerFast(tokenizer_object=...)"
    )


_TABLE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def begin_of_word_table(tokenizer: Any) -> np.ndarray:
    """A bool array over the vocabulary (added tokens included): True where a token begins a word.

    Built from the tokenizer's backend model: WordPiece -> the token does not start with the
    continuing-subword prefix ("##"); byte-level BPE -> the token starts with the byte-level character of
    a whitespace byte ("Ġ" for a space, "Ċ" for a newline, ...); Metaspace / SentencePiece (Unigram or BPE)
    -> the token starts with the replacement character ("▁", read from the pre-tokenizer, decoder or
    normalizer); BPE with a continuing-subword prefix -> as WordPiece. Special and added tokens are marked
    as word starts (word ids of special tokens are -1 anyway); a SentencePiece-style unknown piece is
    not. Any other model (WordLevel, BPE with an end-of-word suffix as CLIP, ...) raises WWMError.

    ``tokenizer`` is a PreTrainedTokenizerFast or a ``tokenizers.Tokenizer``. The table is cached per
    tokenizer object (and rebuilt when its length changes, e.g. after ``add_tokens``).
    """
    if is_word_structured(tokenizer):
        return _word_structured_begin_table(tokenizer)
    backend = _backend(tokenizer)
    size = len(tokenizer) if hasattr(tokenizer, "backend_tokenizer") else backend.get_vocab_size(True)
    try:
        cached = _TABLE_CACHE.get(tokenizer)
    except TypeError:  # not weak-referenceable or not hashable: no caching
        cached = None
    if cached is not None and cached[0] == size:
        return cached[1]
    table = _build_begin_table(backend, size)
    table.setflags(write=False)
    try:
        _TABLE_CACHE[tokenizer] = (size, table)
    except TypeError:
        pass
    return table


def _word_structured_begin_table(tokenizer: Any) -> np.ndarray:
    """A word-structured tokenizer with a WordPiece sub-word tokenizer marks every piece after a word's
    first with "##" (an unknown word is one [UNK]), so its vocabulary tells its words exactly; with any
    other sub-word tokenizer (characters: cl-tohoku's char models) it cannot."""
    kind = getattr(tokenizer, "subword_tokenizer_type", None)
    if kind != "wordpiece" or not getattr(tokenizer, "do_subword_tokenize", True):
        raise WWMError(
            f"policy 'vocab' cannot tell word starts from the vocabulary of this {type(tokenizer).__name__} "
            f"(sub-word tokenizer {kind!r}: its pieces carry no word marks); give each example its word "
            "ids from tokenize_with_word_ids(tokenizer, texts, policy='tokenizer')"
        )
    size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    table = np.array([not str(t).startswith("##") for t in tokens], dtype=bool)
    specials = [i for i in getattr(tokenizer, "all_special_ids", []) if i is not None and 0 <= i < size]
    table[specials] = True
    table[[i for i in getattr(tokenizer, "added_tokens_decoder", {}) if 0 <= i < size]] = True
    table.setflags(write=False)
    return table


def _build_begin_table(backend: Any, size: int) -> np.ndarray:
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    model_type = model.get("type", "unknown")
    around = [spec.get("pre_tokenizer"), spec.get("decoder")]
    nodes = list(_walk(around))
    byte_level = any(node.get("type") == "ByteLevel" for node in nodes)
    replacement = next((node.get("replacement") for node in nodes if node.get("type") == "Metaspace"), None)
    if replacement is None:  # Llama-style: the normalizer replaces " " with "▁"
        for node in _walk(spec.get("normalizer")):
            if (
                node.get("type") == "Replace"
                and node.get("pattern") == {"String": " "}
                and len(node.get("content", "")) == 1
            ):
                replacement = node["content"]
                break
    prefix = model.get("continuing_subword_prefix")

    vocab = backend.get_vocab(with_added_tokens=True)
    size = max(size, max(vocab.values(), default=-1) + 1)
    tokens = [""] * size
    for token, index in vocab.items():
        tokens[index] = token

    def unsupported(detail: str) -> WWMError:
        return WWMError(
            f"policy 'vocab' cannot tell word starts from the vocabulary of this {model_type} tokenizer "
            f"({detail}); use policy 'tokenizer' or 'whitespace', which read word boundaries from the text"
        )

    suffix = model.get("end_of_word_suffix")
    if model_type == "BPE" and suffix:  # e.g. CLIP: "</w>" ends a word, which a per-token table can't say
        raise unsupported(f"it marks the end of a word with the suffix {suffix!r}, not the start")
    if model_type == "WordPiece":
        prefix = prefix if prefix is not None else "##"
        table = np.array([not t.startswith(prefix) for t in tokens], dtype=bool)
    elif model_type == "BPE" and byte_level:
        mapping = _bytes_to_unicode()
        starters = tuple(mapping[b] for b in range(128) if chr(b).isspace())
        table = np.array([t.startswith(starters) for t in tokens], dtype=bool)
        if not table.any():
            raise unsupported("byte-level, but no token starts with 'Ġ' (a space)")
    elif model_type in ("BPE", "Unigram") and replacement is not None:
        table = np.array([t.startswith(replacement) for t in tokens], dtype=bool)
        if not table.any():
            raise unsupported(f"Metaspace, but no token starts with its replacement {replacement!r}")
    elif model_type == "BPE" and prefix:
        table = np.array([not t.startswith(prefix) for t in tokens], dtype=bool)
    elif model_type == "Unigram" and any(t.startswith("▁") for t in tokens):
        table = np.array([t.startswith("▁") for t in tokens], dtype=bool)
    elif model_type in ("BPE", "Unigram"):
        raise unsupported("no ByteLevel or Metaspace pre-tokenizer and no continuing-subword prefix")
    else:
        raise unsupported("its tokens carry no begin-of-word marker")
    # Vocabulary holes (ids without a token), special and added tokens begin words.
    holes = np.ones(size, dtype=bool)
    holes[list(vocab.values())] = False
    table |= holes
    added = list(backend.get_added_tokens_decoder())
    if added:
        table[added] = True
    if model_type in ("BPE", "Unigram") and not byte_level:
        # A SentencePiece-style unknown piece can sit inside a word ("▁T", "<unk>"); a word that begins
        # with an unknown character has the "▁" as a piece of its own.
        unk = model.get("unk_id") if model_type == "Unigram" else vocab.get(model.get("unk_token") or "")
        if unk is not None and 0 <= unk < size:
            table[unk] = False
    return table


def word_ids_from_begin_table(input_ids: Any, table: np.ndarray, eligible: Any) -> np.ndarray:
    """Word ids of (L,) or (B, L) token ids from a begin-of-word table (see ``begin_of_word_table``).

    ``eligible`` (same shape, bool) marks the tokens that belong to words (not special, not pad). A word
    begins at an eligible token whose table entry is True, and at the first eligible token after an
    ineligible one. Ineligible tokens get -1; words are numbered 0..W-1 per row. O(B*L) numpy.
    """
    ids = np.asarray(input_ids)
    elig = np.asarray(eligible, dtype=bool)
    table = np.asarray(table, dtype=bool)
    if ids.ndim not in (1, 2) or elig.shape != ids.shape:
        raise WWMError(
            f"input_ids must be (L,) or (B, L) with eligible of the same shape, got {ids.shape} and "
            f"{elig.shape}; pass eligible = attention_mask & ~special_tokens_mask"
        )
    if not np.issubdtype(ids.dtype, np.integer):
        raise WWMError(f"input_ids must be integers, got dtype {ids.dtype}; pass token ids")
    squeeze = ids.ndim == 1
    if squeeze:
        ids, elig = ids[None], elig[None]
    if ids.size and (ids.min() < 0 or ids.max() >= len(table)):
        raise WWMError(
            f"token ids span {ids.min()}..{ids.max()} but the begin-of-word table has {len(table)} "
            "entries; build the table with begin_of_word_table(tokenizer) from the tokenizer that made "
            "the ids (again after adding tokens)"
        )
    begins = table[ids]
    prev_elig = np.zeros_like(elig)
    prev_elig[:, 1:] = elig[:, :-1]
    starts = elig & (begins | ~prev_elig)
    counts = np.cumsum(starts, axis=1, dtype=np.int32)
    out = np.where(elig, counts - 1, -1).astype(np.int32)
    return out[0] if squeeze else out


# --------------------------------------------------------------------------------------------------
# Word ids from encodings (a batch laid out flat)
# --------------------------------------------------------------------------------------------------


def _special_ids(tokenizer: Any) -> np.ndarray:
    """Ids of the special tokens that must never be part of a word (the unknown token is a word)."""
    if tokenizer is None:
        return np.zeros(0, dtype=np.int64)
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    unk = getattr(tokenizer, "unk_token_id", None)
    ids.discard(unk)
    return np.array(sorted(i for i in ids if i is not None), dtype=np.int64)


def _check_policy(policy: str) -> str:
    """The policy's canonical name (``cjk`` -> ``segmenter``)."""
    if policy not in POLICIES and policy not in POLICY_ALIASES:
        raise WWMError(
            f"unknown word-boundary policy {policy!r}; use one of {', '.join(repr(p) for p in POLICIES)} "
            "(or 'cjk', the old name of 'segmenter')"
        )
    return POLICY_ALIASES.get(policy, policy)


def _shifted(values: np.ndarray, fill: Any) -> np.ndarray:
    out = np.empty_like(values)
    if len(values):
        out[0] = fill
        out[1:] = values[:-1]
    return out


@dataclass
class _Flat:
    """The tokens of a batch of encodings laid out as one sequence of T tokens (all arrays (T,))."""

    encodings: Sequence[Any]
    lengths: np.ndarray  # (R,) tokens per row
    row_start: np.ndarray  # (R,) index of each row's first token
    row: np.ndarray  # row of each token
    ids: np.ndarray
    seq: np.ndarray  # sequence id (0, 1; NaN for tokens added by the post-processor), float64
    special: np.ndarray  # added by the tokenizer, pads, literal special tokens (not the unknown token)
    eligible: np.ndarray  # tokens that belong to words
    prev_elig: np.ndarray  # the previous token of the same row is eligible
    forced: np.ndarray  # first word token after a special token, a row start, or a sequence change

    @property
    def total(self) -> int:
        return len(self.ids)


def _flat_layout(encodings: Sequence[Any], tokenizer: Any) -> _Flat:
    lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
    total = int(lengths.sum())
    row_start = np.cumsum(lengths) - lengths
    row = np.repeat(np.arange(len(encodings)), lengths)
    ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int64, count=total)
    seq = np.array(list(chain.from_iterable(e.sequence_ids for e in encodings)), dtype=np.float64)
    special = np.fromiter(
        chain.from_iterable(e.special_tokens_mask for e in encodings), dtype=bool, count=total
    )
    attention = np.fromiter(chain.from_iterable(e.attention_mask for e in encodings), dtype=bool, count=total)
    special |= np.isin(ids, _special_ids(tokenizer))
    eligible = attention & ~special & ~np.isnan(seq)
    first = np.zeros(total, dtype=bool)
    first[row_start[lengths > 0]] = True
    prev_elig = _shifted(eligible, False) & ~first
    forced = eligible & (~prev_elig | (seq != _shifted(seq, np.nan)))
    return _Flat(encodings, lengths, row_start, row, ids, seq, special, eligible, prev_elig, forced)


@dataclass
class _TextLayout:
    """The texts of a batch laid out as one string ``full``: row i's first text, SEP, its second text,
    SEP, next row ... and each token's [s, e) character span in it."""

    full: str
    texts: list[tuple[str, int]]  # every text with its start in `full` (first texts, then pairs)
    s: np.ndarray  # (T,)
    e: np.ndarray  # (T,)
    codepoints: np.ndarray  # (len(full),)
    space: np.ndarray  # (len(full) + 1,): whitespace; the sentinel position len(full) is not


def _placement(texts: Sequence[str], text_pairs: Sequence[str | None] | None) -> _Placement:
    """Where each text of a batch lies in the laid-out string: row i's first text, SEP, its second text,
    SEP, next row ..."""
    pairs = text_pairs if text_pairs is not None else [None] * len(texts)
    pieces: list[str] = []
    n = len(texts)
    base_a, base_b = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    len_a, len_b = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    placed: list[tuple[str, int]] = []
    pos = 0
    for i, (text_a, text_b) in enumerate(zip(texts, pairs, strict=True)):
        text_b = text_b or ""
        base_a[i], len_a[i] = pos, len(text_a)
        base_b[i], len_b[i] = pos + len(text_a) + 1, len(text_b)
        placed += [(text_a, int(base_a[i])), (text_b, int(base_b[i]))]
        pieces += [text_a, _SEP, text_b, _SEP]
        pos += len(text_a) + len(text_b) + 2
    return _Placement("".join(pieces), placed, base_a, len_a, base_b, len_b)


@dataclass
class _Placement:
    full: str
    placed: list[tuple[str, int]]
    base_a: np.ndarray
    len_a: np.ndarray
    base_b: np.ndarray
    len_b: np.ndarray


def _text_layout(
    flat: _Flat,
    texts: Sequence[str],
    text_pairs: Sequence[str | None] | None,
    placement: _Placement | None = None,
) -> _TextLayout:
    if flat.encodings and isinstance(flat.encodings[0].offsets, np.ndarray):  # pre-segmented: arrays
        offsets = np.concatenate([e.offsets for e in flat.encodings]).reshape(flat.total, 2)
    else:
        offsets = np.array(list(chain.from_iterable(e.offsets for e in flat.encodings)), dtype=np.int64)
        offsets = offsets.reshape(flat.total, 2)
    at = placement or _placement(texts, text_pairs)
    in_b = flat.seq == 1
    local_len = np.where(in_b, at.len_b[flat.row], at.len_a[flat.row])
    if np.any(flat.eligible & ((offsets[:, 1] > local_len) | (offsets[:, 0] > offsets[:, 1]))):
        raise WWMError(
            "token offsets fall outside the text; pass exactly the text (and text_pair) that was tokenized"
        )
    base = np.where(in_b, at.base_b[flat.row], at.base_a[flat.row])
    codepoints = _codepoints(at.full)
    space = np.append(_whitespace_mask(codepoints), False)
    return _TextLayout(at.full, at.placed, offsets[:, 0] + base, offsets[:, 1] + base, codepoints, space)


def _starts_tokenizer(flat: _Flat) -> np.ndarray:
    """Word starts of policy 'tokenizer': where ``Encoding.word_ids`` changes."""
    if flat.encodings and isinstance(flat.encodings[0].word_ids, np.ndarray):  # pre-segmented: arrays
        wid = np.concatenate([e.word_ids for e in flat.encodings]).astype(np.float64)
    else:
        wid = np.array(list(chain.from_iterable(e.word_ids for e in flat.encodings)), dtype=np.float64)
    return flat.forced | (flat.eligible & (wid != _shifted(wid, np.nan)))


def _starts_vocab(flat: _Flat, tokenizer: Any) -> np.ndarray:
    """Word starts of policy 'vocab': at tokens whose vocabulary entry begins a word."""
    table = begin_of_word_table(tokenizer)
    if flat.total and flat.ids.max() >= len(table):
        raise WWMError(
            f"token id {flat.ids.max()} is outside the vocabulary of {len(table)} tokens; "
            "tokenize with the same tokenizer"
        )
    return flat.forced | (flat.eligible & table[flat.ids])


def _starts_whitespace(flat: _Flat, layout: _TextLayout) -> np.ndarray:
    """Word starts of policy 'whitespace': whitespace in the gap since the previous token, or as the
    token's own first character."""
    space = layout.space
    spaces_before = np.concatenate([[0], np.cumsum(space[:-1])])
    s, e = layout.s, layout.e
    lo = np.minimum(_shifted(e, 0), s)  # the gap since the previous token ...
    hi = np.where(e > s, s + 1, s)  # ... and this token's first character
    return flat.forced | (flat.eligible & (spaces_before[hi] > spaces_before[lo]))


def _starts_segmenter(
    flat: _Flat, layout: _TextLayout, segmenter: Segmenter | str, spans: np.ndarray | None = None
) -> np.ndarray:
    """Word starts of policy 'segmenter': those of 'tokenizer', except between two tokens of which either
    anchors in a segmented script, where a new word starts iff the anchors lie in different segmenter
    words. ``spans``: the segmenter's words over the layout, when already known (pre-segmentation)."""
    starts = _starts_tokenizer(flat)
    if segmenter == "none":
        return starts
    # Each token's anchor: its first non-space character; a token of only spaces (Metaspace "▁",
    # byte-level "Ġ") anchors to the character after it, the word it joins.
    n = len(layout.full)
    space = layout.space
    index = np.where(space, n, np.arange(n + 1))
    next_nonspace = np.minimum.accumulate(index[::-1])[::-1]
    anchor = np.minimum(next_nonspace[layout.s], layout.e)
    scripts = _Scripts(layout.codepoints)
    segmented = np.append(scripts.decided(segmenter), False)
    if spans is None:
        spans = _segment_spans(layout.texts, scripts, segmented, segmenter)
    seg = _segment_ids(n, spans)[anchor]
    seg_tok = segmented[anchor]
    decided = flat.eligible & flat.prev_elig & (flat.seq == _shifted(flat.seq, np.nan))
    decided &= seg_tok | _shifted(seg_tok, False)
    return np.where(decided, seg != _shifted(seg, -1), starts)


def _segment_spans(
    texts: list[tuple[str, int]], scripts: _Scripts, segmented: np.ndarray, segmenter: Segmenter | str
) -> np.ndarray:
    """(S, 2) spans of the segmenter's words over the laid-out string, for the texts (each with its start
    in the layout) that hold a character the segmenter decides."""
    built: dict[str, Segmenter] = {}

    def named(name: str) -> Segmenter:  # each segmenter built once per batch, when first needed
        if name not in built:
            built[name] = named_segmenter(name)
        return built[name]

    spans = []
    for text, at in texts:
        if text and segmented[at : at + len(text)].any():  # segment only texts that need it
            for lo, hi, segment in _plan(text, at, scripts, segmenter, named):
                piece = text if (lo, hi) == (0, len(text)) else text[lo:hi]
                found = segment(piece)
                if not getattr(segment, "checked", False):
                    found = _check_spans(found, hi - lo, "spans")
                spans.append(found + (at + lo))
    return np.concatenate(spans) if spans else np.zeros((0, 2), dtype=np.int64)


class _Scripts:
    """Script masks over the laid-out string, computed on first use."""

    def __init__(self, codepoints: np.ndarray) -> None:
        self.codepoints = codepoints
        self._masks: dict[str, np.ndarray] = {}
        self._labels: np.ndarray | None = None

    def mask(self, name: str) -> np.ndarray:
        if name not in self._masks:
            if name == "nonspace":
                self._masks[name] = ~_whitespace_mask(self.codepoints)
            elif name == "own":  # scripts with a segmenter of their own (Thai, Lao, Khmer, ...)
                self._masks[name] = np.logical_or.reduce([self.mask(s) for s in _SCRIPT_SEGMENTER])
            else:
                self._masks[name] = _in_ranges(self.codepoints, _SCRIPT_RANGES[name])
        return self._masks[name]

    def decided(self, segmenter: Segmenter | str) -> np.ndarray:
        """Characters whose tokens the segmenter's words group: Han and kana for jieba and fugashi (as
        policy 'cjk' always did), its script for the segmenter of Thai, Lao, Khmer, Myanmar or Tibetan,
        every non-space character for the Vietnamese ones, all segmented scripts for 'auto' and a
        function."""
        if segmenter in ("jieba", "fugashi"):
            return self.mask("cjk")
        if segmenter in ("pyvi", "underthesea"):
            return self.mask("nonspace")
        for script, name in _SCRIPT_SEGMENTER.items():
            if segmenter == name:
                return self.mask(script)
        return self.mask("cjk") | self.mask("own")

    def own_script_runs(self, lo: int, hi: int) -> list[tuple[int, int, str | None]]:
        """Maximal runs [lo, hi) (relative to lo) of one script with a segmenter of its own, and the
        stretches between them (script None)."""
        names = list(_SCRIPT_SEGMENTER)
        if self._labels is None:  # the script of every character of the layout, once
            self._labels = np.zeros(len(self.codepoints), dtype=np.int8)
            for k, script in enumerate(names, start=1):
                self._labels[self.mask(script)] = k
        label = self._labels[lo:hi]
        if not len(label):
            return []
        if not label.any():
            return [(0, len(label), None)]
        cuts = np.flatnonzero(label[1:] != label[:-1]) + 1
        bounds = [0, *cuts.tolist(), len(label)]
        return [(a, b, names[label[a] - 1] if label[a] else None) for a, b in pairwise(bounds)]


def _plan(
    text: str, at: int, scripts: _Scripts, segmenter: Segmenter | str, named: Callable[[str], Segmenter]
) -> list[tuple[int, int, Segmenter]]:
    """The pieces [lo, hi) of ``text`` (at ``at`` in the layout) and the segmenter of each."""
    n = len(text)
    if callable(segmenter):
        return [(0, n, segmenter)]
    if segmenter == "fugashi":
        return _japanese_sentences(text, 0, n, named)
    if segmenter in ("jieba", "pyvi", "underthesea"):
        return [(0, n, named(segmenter))]
    runs = scripts.own_script_runs(at, at + n)
    if segmenter != "auto":  # the segmenter of one script: its runs
        return [
            (lo, hi, named(segmenter))
            for lo, hi, script in runs
            if _SCRIPT_SEGMENTER.get(script) == segmenter
        ]
    return _auto_plan(text, at, scripts, runs, named)


def document_is_japanese(kana: int, han_and_kana: int) -> bool:
    """``auto``'s language decision for a document's Han characters: Japanese when kana letters are at
    least ``JAPANESE_KANA_SHARE`` of its Han and kana characters, else Chinese."""
    return kana > 0 and kana >= JAPANESE_KANA_SHARE * han_and_kana


def _auto_plan(
    text: str,
    at: int,
    scripts: _Scripts,
    runs: list[tuple[int, int, str | None]],
    named: Callable[[str], Segmenter],
) -> list[tuple[int, int, Segmenter]]:
    """``auto``, decided once per document (text): a run of Thai, Lao, Khmer, Myanmar or Tibetan goes to
    that script's segmenter. Between those runs, Han and kana go by the document's language: in a
    Japanese document (``document_is_japanese``) every stretch holding Han or kana goes to fugashi,
    sentence by sentence;
    in a Chinese one, as before document routing (bit for bit): a stretch without kana goes to jieba
    whole, a stretch with kana is cut into sentences, each run of sentences with kana going to fugashi,
    each run without to jieba."""
    n = len(text)
    kana = scripts.mask("kana")[at : at + n]
    cjk = scripts.mask("cjk")[at : at + n]
    japanese = document_is_japanese(int(kana.sum()), int(cjk.sum()))
    plan: list[tuple[int, int, Segmenter]] = []
    for lo, hi, script in runs:
        if script is not None:
            plan.append((lo, hi, named(_SCRIPT_SEGMENTER[script])))
        elif not cjk[lo:hi].any():
            continue
        elif japanese:
            plan += _japanese_sentences(text, lo, hi, named)
        elif not kana[lo:hi].any():
            plan.append((lo, hi, named("jieba")))
        else:
            for a, b, has_kana in _sentence_runs(text, kana, lo, hi):
                if has_kana:
                    plan.append((a, b, named("fugashi")))
                elif cjk[a:b].any():
                    plan.append((a, b, named("jieba")))
    return plan


def _japanese_sentences(
    text: str, lo: int, hi: int, named: Callable[[str], Segmenter]
) -> list[tuple[int, int, Segmenter]]:
    """fugashi for each sentence of [lo, hi) (cut after runs of sentence ends and line breaks)."""
    fugashi = named("fugashi")
    bounds = sorted({lo, hi, *(m.end() for m in _SENTENCE_END.finditer(text, lo, hi))})
    return [(a, b, fugashi) for a, b in pairwise(bounds) if b > a]


def _sentence_runs(text: str, kana: np.ndarray, lo: int, hi: int) -> list[tuple[int, int, bool]]:
    """The stretch [lo, hi) cut after each run of sentence ends, consecutive sentences of the same kind
    (holding kana or not) joined: [(a, b, holds kana), ...]."""
    cuts = [m.end() for m in _SENTENCE_END.finditer(text, lo, hi)]
    bounds = sorted({lo, hi, *cuts})
    out: list[tuple[int, int, bool]] = []
    for a, b in pairwise(bounds):
        japanese = bool(kana[a:b].any())
        if out and out[-1][2] == japanese:
            out[-1] = (out[-1][0], b, japanese)
        else:
            out.append((a, b, japanese))
    return out


# --------------------------------------------------------------------------------------------------
# Pre-segmentation: the text cut at segmenter words before the fast tokenizer
# --------------------------------------------------------------------------------------------------


@dataclass
class _Enc:
    """What the word-id code reads of a ``tokenizers.Encoding``, for encodings assembled from pieces."""

    ids: list[int]
    offsets: Any  # list of (start, end), or an (L, 2) array
    word_ids: Any  # list of int or None, or a float array with NaN for None
    sequence_ids: list[int | None]
    special_tokens_mask: list[int]
    attention_mask: list[int]
    type_ids: list[int]


def _word_cuts(
    placement: _Placement, segmenter: Segmenter | str
) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    """Where pre-segmentation cuts each laid-out text (positions inside it, sorted), and the segmenter's
    spans over the layout. A cut lies between two characters of different segmenter words of which
    either is in a script the segmenter decides; a cut after whitespace moves to the start of that
    whitespace, which so leads the next piece (byte-level BPE and Metaspace attach a space to the word
    after it; BERT drops it)."""
    full = placement.full
    n = len(full)
    codepoints = _codepoints(full)
    scripts = _Scripts(codepoints)
    segmented = np.append(scripts.decided(segmenter), False)  # (n + 1,)
    spans = _segment_spans(placement.placed, scripts, segmented, segmenter)
    seg = _segment_ids(n, spans)  # (n + 1,)
    cut = np.zeros(n + 1, dtype=bool)
    cut[1:n] = (seg[1:n] != seg[: n - 1]) & (segmented[1:n] | segmented[: n - 1])
    space = _whitespace_mask(codepoints)
    last_nonspace = np.maximum.accumulate(np.where(space, -1, np.arange(n)))  # (n,)
    positions = np.flatnonzero(cut)
    after_space = space[positions - 1]
    positions[after_space] = last_nonspace[positions[after_space] - 1] + 1
    positions = np.unique(positions)
    cuts = []
    for text, at in placement.placed:
        lo, hi = np.searchsorted(positions, [at + 1, at + len(text)])
        cuts.append((positions[lo:hi] - at).tolist())
    return cuts, spans, segmented


def pre_segment_pieces(texts: Sequence[str], segmenter: Segmenter | str = "auto") -> list[list[str]]:
    """Each text cut where ``tokenize_with_word_ids(..., pre_segment=True)`` cuts it: at the segmenter's
    words, the whitespace before a word leading its piece. The pieces of a text join to the text."""
    _check_segmenter(segmenter)
    texts = list(texts)
    placement = _placement(texts, None)
    cuts, _, _ = _word_cuts(placement, segmenter)
    out = []
    for text, text_cuts in zip(texts, cuts[::2], strict=True):
        bounds = [0, *text_cuts, len(text)]
        out.append([text[a:b] for a, b in pairwise(bounds) if b > a])
    return out


_PIECE_BACKENDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class _PieceBackend:
    """A copy of a fast tokenizer's backend that tokenizes pre-segmented pieces: nothing added before a
    piece (no Metaspace "▁", no ByteLevel prefix space, no Prepend normalizer); ``prefix``: the text's
    first piece gets a space in front instead, when the tokenizer puts something before a text."""

    tokenizer: Any
    pre_tokenizer: Any  # the original pre-tokenizer, to find its words in a stretch of text
    prefix: bool


def _piece_backend(tokenizer: Any) -> _PieceBackend:
    from tokenizers import Tokenizer

    size = len(tokenizer)
    try:
        cached = _PIECE_BACKENDS.get(tokenizer)
    except TypeError:
        cached = None
    if cached is not None and cached[0] == size:
        return cached[1]
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec["truncation"] = spec["padding"] = None
    prefix = False
    for node in _walk(spec.get("pre_tokenizer")):
        if node.get("type") == "Metaspace":
            prefix |= node.get("prepend_scheme", "always") != "never" and node.get("add_prefix_space", True)
            node["prepend_scheme"] = "never"
        if node.get("type") in ("Metaspace", "ByteLevel") and "add_prefix_space" in node:
            prefix |= bool(node["add_prefix_space"]) and node.get("type") == "ByteLevel"
            node["add_prefix_space"] = False
    normalizer = spec.get("normalizer")
    if normalizer and normalizer.get("type") == "Prepend":
        spec["normalizer"], prefix = None, True
    elif normalizer and normalizer.get("type") == "Sequence":
        kept = [n for n in normalizer["normalizers"] if n.get("type") != "Prepend"]
        prefix |= len(kept) < len(normalizer["normalizers"])
        normalizer["normalizers"] = kept
    backend = _PieceBackend(
        Tokenizer.from_str(json.dumps(spec)), tokenizer.backend_tokenizer.pre_tokenizer, prefix
    )
    try:
        _PIECE_BACKENDS[tokenizer] = (size, backend)
    except TypeError:
        pass
    return backend


def _pieces_of(
    text: str, cuts: list[int], segmented: list[int], at: int, backend: _PieceBackend
) -> list[int]:
    """The starts of a text's pieces: its segmenter cuts, and inside each piece without a segmented
    character the starts of the pre-tokenizer's words, so that those stay words of their own.
    ``segmented``: the running count of segmented characters before each position of the layout, where
    the text starts at ``at``."""
    bounds = [0, *cuts, len(text)]
    starts = []
    for a, b in pairwise(bounds):
        if b <= a:
            continue
        starts.append(a)
        if b - a > 1 and segmented[at + b] == segmented[at + a] and backend.pre_tokenizer is not None:
            words = backend.pre_tokenizer.pre_tokenize_str(text[a:b])
            starts += [a + s for _w, (s, _e) in words[1:] if s > 0]
    return starts


def _pre_segmented_encodings(
    tokenizer: Any,
    placement: _Placement,
    cuts: list[list[int]],
    segmented: np.ndarray,
    pairs: bool,
    add_special_tokens: bool,
    truncation: bool,
    max_length: int | None,
    padding: bool | str,
) -> list[_Enc]:
    """Encodings of the texts cut into pieces (``_pieces_of``), each piece tokenized on its own (one
    ``is_pretokenized`` batch call: each piece is a "word" of its own to the tokenizer, special tokens,
    truncation and padding as usual); offsets point into the texts, each piece is a word."""
    backend = _piece_backend(tokenizer)
    tok = backend.tokenizer
    if truncation and max_length is not None:
        tok.enable_truncation(max_length=max_length, strategy="longest_first")
    else:
        tok.no_truncation()
    if padding:
        length = max_length if padding == "max_length" else None
        side = getattr(tokenizer, "padding_side", "right")
        tok.enable_padding(direction=side, pad_id=tokenizer.pad_token_id, pad_token=str(tokenizer.pad_token),
                           pad_type_id=getattr(tokenizer, "pad_token_type_id", 0), length=length)  # fmt: skip
    else:
        tok.no_padding()
    inputs, starts_of, shifted = [], [], []  # per text: the pieces, their starts, a space put first
    running = np.concatenate([[0], np.cumsum(segmented, dtype=np.int64)]).tolist()
    for (text, at), text_cuts in zip(placement.placed, cuts, strict=True):
        starts = _pieces_of(text, text_cuts, running, at, backend)
        ends = [*starts[1:], len(text)] if starts else []
        pieces = [text[a:b] for a, b in zip(starts, ends, strict=True)]
        shifted.append(bool(pieces) and backend.prefix and pieces[0][:1] != " ")
        if shifted[-1]:
            pieces[0] = " " + pieces[0]  # what the tokenizer puts before a text (its offsets: shifted back)
        inputs.append(pieces)
        starts_of.append(np.array(starts, dtype=np.int64))
    rows = len(placement.placed) // 2
    batch = [(inputs[2 * r], inputs[2 * r + 1]) if pairs else inputs[2 * r] for r in range(rows)]
    encodings = tok.encode_batch(batch, is_pretokenized=True, add_special_tokens=add_special_tokens)
    tok.no_truncation()
    tok.no_padding()
    out = []
    for r, e in enumerate(encodings):
        words = np.array([-1 if w is None else w for w in e.word_ids], dtype=np.int64)
        seq = np.array([-1 if s is None else s for s in e.sequence_ids], dtype=np.int64)
        rel = np.array(e.offsets, dtype=np.int64).reshape(-1, 2)
        content = (words >= 0) & (seq >= 0)
        offsets = np.zeros_like(rel)
        for s in (0, 1):
            here = content & (seq == s)
            if not here.any():
                continue
            piece = words[here]
            local = rel[here]
            if shifted[2 * r + s]:  # the space put first: as the tokenizer's own prefix, on the first
                first = piece == 0  # character (a lone "▁" over it, "▁hello" over "hello")
                local[first] = np.stack([np.maximum(local[first, 0] - 1, 0),
                                         np.maximum(local[first, 1] - 1, 1)], axis=1)  # fmt: skip
            offsets[here] = local + starts_of[2 * r + s][piece][:, None]
        word_ids = np.where(content, words, np.nan)  # (None where no word, as Encoding.word_ids)
        out.append(_Enc(e.ids, offsets, word_ids, e.sequence_ids, e.special_tokens_mask, e.attention_mask,
                        e.type_ids))  # fmt: skip
    return out


def _pad_encodings(tokenizer: Any, encs: list[_Enc], padding: bool | str, max_length: int | None) -> None:
    """Pad in place, as the tokenizer would: to the longest row, or to ``max_length`` ("max_length")."""
    length = max_length if padding == "max_length" and max_length else max(len(e.ids) for e in encs)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    pad_id, pad_type = tokenizer.pad_token_id, getattr(tokenizer, "pad_token_type_id", 0)
    for e in encs:
        k = length - len(e.ids)
        if k <= 0:
            continue
        fields = {
            "ids": [pad_id] * k,
            "offsets": [(0, 0)] * k,
            "word_ids": [None] * k,
            "sequence_ids": [None] * k,
            "special_tokens_mask": [1] * k,
            "attention_mask": [0] * k,
            "type_ids": [pad_type] * k,
        }
        for name, pad in fields.items():
            values = list(getattr(e, name))
            setattr(e, name, pad + values if left else values + pad)


# --------------------------------------------------------------------------------------------------
# Word-structured (slow) tokenizers: words first, then sub-words inside each word
# --------------------------------------------------------------------------------------------------


def is_word_structured(tokenizer: Any) -> bool:
    """A slow tokenizer that splits text into words and each word into sub-words (a ``word_tokenizer`` /
    ``subword_tokenizer`` pair, as transformers' ``BertJapaneseTokenizer`` with MeCab, Sudachi or
    Juman++): its own words are the whole words."""
    return not getattr(tokenizer, "is_fast", False) and (
        hasattr(tokenizer, "word_tokenizer") or hasattr(tokenizer, "subword_tokenizer")
    )


def _trusted_pair(tokenizer: Any) -> bool:
    """Whether the tokenizer's ``_tokenize`` is known to be word tokenizer then sub-word tokenizer
    (BertJapaneseTokenizer's); for any other class each text's tokens are checked against it."""
    try:
        from transformers import BertJapaneseTokenizer
    except ImportError:  # pragma: no cover - transformers without the class
        return False
    return type(tokenizer)._tokenize is BertJapaneseTokenizer._tokenize


def _word_groups(tokenizer: Any, text: str, trusted: bool) -> list[list[str]]:
    """The tokens of a text without added tokens, grouped by the word tokenizer's words, exactly as
    ``tokenizer._tokenize(text)`` concatenates them."""
    words = [text]
    if getattr(tokenizer, "do_word_tokenize", True) and hasattr(tokenizer, "word_tokenizer"):
        words = tokenizer.word_tokenizer.tokenize(text, never_split=tokenizer.all_special_tokens)
    if getattr(tokenizer, "do_subword_tokenize", True) and hasattr(tokenizer, "subword_tokenizer"):
        groups = [tokenizer.subword_tokenizer.tokenize(word) for word in words]
    else:
        groups = [[word] for word in words]
    groups = [g for g in groups if g]
    if not trusted and list(chain.from_iterable(groups)) != tokenizer._tokenize(text):
        raise WWMError(
            f"{type(tokenizer).__name__}'s tokens are not its word tokenizer's words cut by its sub-word "
            "tokenizer, so its words cannot be told; use a fast tokenizer"
        )
    return groups


def _slow_words(tokenizer: Any, text: str, trusted: bool) -> tuple[list[str], list[int]]:
    """``tokenizer.tokenize(text)`` and the word of each token (-1 for an added token, which is a word
    of its own): the text split at added tokens as ``PreTrainedTokenizer.tokenize`` does (transformers
    5), each other part cut into words and sub-words."""
    text, _ = tokenizer.prepare_for_tokenization(text)
    no_split = tokenizer._added_tokens_encoder
    if getattr(tokenizer, "split_special_tokens", False):
        parts = [text]
    else:
        parts = tokenizer.tokens_trie.split(text)
        decoder = tokenizer._added_tokens_decoder
        for i, part in enumerate(parts):  # added tokens' lstrip / rstrip / single_word, as tokenize()
            if part not in no_split:
                continue
            added = decoder.get(no_split[part])
            left = parts[i - 1] if i > 0 else None
            right = parts[i + 1] if i < len(parts) - 1 else None
            if added is not None and not isinstance(added, str):
                if getattr(added, "rstrip", False) and right:
                    parts[i + 1] = right.lstrip()
                if getattr(added, "lstrip", False) and left:
                    parts[i - 1] = left.rstrip()
                if getattr(added, "single_word", False):
                    if left and left[-1] != " ":
                        parts[i - 1] += part
                        parts[i] = ""
                    elif right and right[0] != " ":
                        parts[i + 1] = part + parts[i + 1]
                        parts[i] = ""
    specials = set(tokenizer.all_special_tokens)
    tokens: list[str] = []
    words: list[int] = []
    count = 0
    for part in parts:
        if not part:
            continue
        if part in no_split or part in specials:
            tokens.append(part)
            words.append(-1)
            continue
        for group in _word_groups(tokenizer, part, trusted):
            tokens += group
            words += [count] * len(group)
            count += 1
    return tokens, words


class _quiet_transformers:
    """transformers' warnings off for a block (its logger, restored after)."""

    def __enter__(self) -> None:
        self.logger = logging.getLogger("transformers")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self.logger.setLevel(self.level)


def _slow_encodings(
    tokenizer: Any,
    texts: list[str],
    text_pairs: list[str] | None,
    add_special_tokens: bool,
    truncation: bool,
    max_length: int | None,
    padding: bool | str,
) -> list[_Enc]:
    """Encodings of a word-structured tokenizer: the ids ``tokenizer(text, text_pair, ...)`` gives (its
    tokens, truncation and special tokens), each token's word in ``word_ids``."""
    trusted = _trusted_pair(tokenizer)
    out = []
    for k, text in enumerate(texts):
        seqs = []
        for part in (text, None if text_pairs is None else text_pairs[k]):
            if part is None:
                seqs.append(None)
                continue
            tokens, words = _slow_words(tokenizer, part, trusted)
            seqs.append((tokenizer.convert_tokens_to_ids(tokens), words))
        (ids_a, words_a), pair = seqs[0], seqs[1]
        ids_b, words_b = pair if pair is not None else (None, None)
        if truncation and max_length is not None:
            extra = tokenizer.num_special_tokens_to_add(pair is not None) if add_special_tokens else 0
            remove = len(ids_a) + len(ids_b or []) + extra - max_length
            with _quiet_transformers():  # "overflowing tokens are not returned" for pairs: we need none
                kept_a, kept_b, _ = tokenizer.truncate_sequences(ids_a, ids_b, num_tokens_to_remove=remove)
            left = getattr(tokenizer, "truncation_side", "right") == "left"
            words_a = words_a[len(words_a) - len(kept_a) :] if left else words_a[: len(kept_a)]
            if ids_b is not None:
                words_b = words_b[len(words_b) - len(kept_b) :] if left else words_b[: len(kept_b)]
            ids_a, ids_b = kept_a, kept_b
        if add_special_tokens:
            ids = tokenizer.build_inputs_with_special_tokens(ids_a, ids_b)
            special = tokenizer.get_special_tokens_mask(ids_a, ids_b)
        else:
            ids = ids_a + (ids_b or [])
            special = [0] * len(ids)
        content = iter(
            [(w, 0) for w in words_a] + [(w, 1) for w in (words_b or [])]
        )  # the texts' tokens, in order
        base = max(words_a, default=-1) + 1
        word_ids: list[int | None] = []
        sequence_ids: list[int | None] = []
        for sp in special:
            if sp:
                word_ids.append(None)
                sequence_ids.append(None)
                continue
            w, s = next(content)
            word_ids.append(None if w < 0 else w + (base if s else 0))
            sequence_ids.append(s)
        type_ids = [0 if s in (0, None) else 1 for s in sequence_ids]
        out.append(_Enc(ids, [(0, 0)] * len(ids), word_ids, sequence_ids, special, [1] * len(ids), type_ids))
    if padding:
        _pad_encodings(tokenizer, out, padding, max_length)
    return out


def _word_ids_flat(
    encodings: Sequence[Any],
    texts: Sequence[str] | None,
    text_pairs: Sequence[str | None] | None,
    policy: str,
    tokenizer: Any,
    segmenter: Segmenter | str,
    placement: _Placement | None = None,
    spans: np.ndarray | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Word ids (int32) of each encoding, and its special-token mask (bool): tokens added by the
    tokenizer, pads, and special tokens written in the text (the unknown token excepted). ``placement``
    and ``spans``: the texts' layout and segmenter words, when pre-segmentation already made them."""
    flat = _flat_layout(encodings, tokenizer)
    if policy == "tokenizer":
        starts = _starts_tokenizer(flat)
    elif policy == "vocab":
        starts = _starts_vocab(flat, tokenizer)
    else:
        if texts is None:
            raise WWMError(f"policy {policy!r} needs the text that was tokenized; pass text=...")
        layout = _text_layout(flat, texts, text_pairs, placement)
        if policy == "whitespace":
            starts = _starts_whitespace(flat, layout)
        else:
            starts = _starts_segmenter(flat, layout, segmenter, spans)
    counts = np.cumsum(starts, dtype=np.int64)
    before = np.concatenate([[0], counts])[flat.row_start]  # words in the rows before
    word_ids = np.where(flat.eligible, counts - np.repeat(before, flat.lengths) - 1, -1).astype(np.int32)
    bounds = np.cumsum(flat.lengths)[:-1]
    return np.split(word_ids, bounds), np.split(flat.special, bounds)


def _require_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False) or not hasattr(tokenizer, "backend_tokenizer"):
        raise WWMError(
            f"word ids need a fast tokenizer (PreTrainedTokenizerFast), got {type(tokenizer).__name__}; "
            "load it with AutoTokenizer.from_pretrained(..., use_fast=True), or wrap a tokenizers."
            "Tokenizer with PreTrainedTokenizerFast(tokenizer_object=...)"
        )


def _check_pre_tokenizer(tokenizer: Any, policy: str, name: str) -> None:
    """Policies built on ``Encoding.word_ids`` need a pre-tokenizer: without one (Llama-style tokenizers
    that put "▁" in with the normalizer) the whole text is one word."""
    if policy in ("tokenizer", "segmenter") and tokenizer.backend_tokenizer.pre_tokenizer is None:
        raise WWMError(
            f"policy {name!r} takes words from the tokenizer's pre-tokenizer, and this tokenizer has "
            "none (its word_ids() make the whole text one word); use policy 'whitespace' or 'vocab'"
        )


def word_ids_for_encoding(
    encoding: Any,
    text: str | None = None,
    policy: str = "tokenizer",
    *,
    text_pair: str | None = None,
    tokenizer: Any = None,
    segmenter: Segmenter | str | None = None,
) -> np.ndarray:
    """Word ids (int32, (L,)) of one encoding: a ``tokenizers.Encoding``, ``batch_encoding[i]``, or a
    BatchEncoding of one row.

    ``text`` (and ``text_pair``) are the strings that were tokenized (needed by 'whitespace' and
    'segmenter'); ``tokenizer`` is needed by 'vocab', and lets literal special tokens in the text (e.g.
    "[MASK]") get -1. ``segmenter`` as in ``tokenize_with_word_ids``.
    """
    name, policy = policy, _check_policy(policy)
    segmenter = "auto" if segmenter is None else segmenter
    _check_segmenter(segmenter)
    if hasattr(encoding, "encodings"):
        encodings = encoding.encodings
        if encodings is None:
            raise WWMError(
                "word ids need a fast tokenizer (PreTrainedTokenizerFast); this BatchEncoding came from "
                "a slow one: load the tokenizer with use_fast=True"
            )
        if len(encodings) != 1:
            raise WWMError(
                f"word_ids_for_encoding takes one encoding, got a batch of {len(encodings)}; "
                "pass batch_encoding[i] or use tokenize_with_word_ids"
            )
        encoding = encodings[0]
    if policy == "vocab" and tokenizer is None:
        raise WWMError("policy 'vocab' needs the tokenizer for its vocabulary; pass tokenizer=...")
    if tokenizer is not None:
        _require_fast(tokenizer)
        _check_pre_tokenizer(tokenizer, policy, name)
    texts = None if text is None else [text]
    word_ids, _ = _word_ids_flat([encoding], texts, [text_pair], policy, tokenizer, segmenter)
    return word_ids[0]


def tokenize_with_word_ids(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    policy: str = "tokenizer",
    max_length: int | None = None,
    truncation: bool = False,
    add_special_tokens: bool = True,
    segmenter: Segmenter | str | None = None,
    text_pairs: Sequence[str] | None = None,
    padding: bool | str = False,
    pre_segment: bool = False,
    return_offsets_mapping: bool = False,
) -> dict[str, list]:
    """Tokenize a batch with one call of the fast tokenizer and compute word ids with ``policy``.

    Returns a dict of per-row lists: "input_ids" (lists of int), "word_ids" (int32 arrays: -1 for
    special and pad tokens, words 0..W-1), "special_tokens_mask" (lists of 0/1: the tokens added by the
    tokenizer, pads, and special tokens written literally in the text, except the unknown token) and
    "attention_mask". ``text_pairs`` makes sentence pairs: the words of the second text get ids after
    those of the first. ``segmenter`` is used by policy 'segmenter' (alias 'cjk') and by pre-segmentation:
    a name of ``SEGMENTERS`` (default "auto": chosen per document and script) or a function
    text -> [(start, end), ...] used for every text that holds a character of a segmented script.

    ``pre_segment=True`` cuts each text at the segmenter's words before the fast tokenizer (each piece
    tokenized alone, the spaces before a word leading its piece), so that no token straddles two words;
    ``return_offsets_mapping=True`` adds "offset_mapping": each token's (start, end) character span in
    its original text ((0, 0) for special and pad tokens).

    A word-structured slow tokenizer (``is_word_structured``: transformers' BertJapaneseTokenizer with
    MeCab, Sudachi or Juman++) gives its own words: its tokens are exactly ``tokenizer.tokenize``'s, its
    words the word tokenizer's (policies 'tokenizer' and 'segmenter'; 'vocab' reads "##"); it has no
    offsets.
    """
    name, policy = policy, _check_policy(policy)
    segmenter = "auto" if segmenter is None else segmenter
    _check_segmenter(segmenter)
    slow = is_word_structured(tokenizer)
    if not slow:
        _require_fast(tokenizer)
        _check_pre_tokenizer(tokenizer, policy, name)
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise WWMError("texts must be a list of strings; wrap a single text in a list")
    texts = list(texts)
    if text_pairs is not None:
        text_pairs = list(text_pairs)
        if len(text_pairs) != len(texts) or not all(isinstance(t, str) for t in text_pairs):
            raise WWMError(
                f"text_pairs must be a list of {len(texts)} strings, one per text; got "
                f"{len(text_pairs)} items"
            )
    if pre_segment and segmenter == "none":
        raise WWMError("pre_segment=True cuts the text at segmenter words: name a segmenter, not 'none'")
    if slow:
        return _tokenize_word_structured(
            tokenizer, texts, text_pairs, policy, name, max_length, truncation, add_special_tokens,
            padding, pre_segment, return_offsets_mapping,
        )  # fmt: skip
    if not texts:
        empty: dict[str, list] = {
            "input_ids": [],
            "word_ids": [],
            "special_tokens_mask": [],
            "attention_mask": [],
        }
        return empty | ({"offset_mapping": []} if return_offsets_mapping else {})
    placement = spans = None
    if pre_segment:
        placement = _placement(texts, text_pairs)
        cuts, spans, segmented = _word_cuts(placement, segmenter)
        encodings = _pre_segmented_encodings(
            tokenizer, placement, cuts, segmented, text_pairs is not None, add_special_tokens, truncation,
            max_length, padding,
        )  # fmt: skip
    else:
        batch = tokenizer(
            texts,
            text_pairs,
            add_special_tokens=add_special_tokens,
            truncation=truncation,
            max_length=max_length,
            padding=padding,
            return_special_tokens_mask=True,
            return_attention_mask=True,
        )
        encodings = batch.encodings
    word_ids, special = _word_ids_flat(
        encodings, texts, text_pairs, policy, tokenizer, segmenter, placement, spans
    )
    out = {
        "input_ids": [e.ids for e in encodings],
        "word_ids": word_ids,
        "special_tokens_mask": [row.view(np.int8).tolist() for row in special],
        "attention_mask": [e.attention_mask for e in encodings],
    }
    if return_offsets_mapping:
        out["offset_mapping"] = [
            [(int(s), int(e)) if not sp else (0, 0) for (s, e), sp in zip(enc.offsets, row, strict=True)]
            for enc, row in zip(encodings, special, strict=True)
        ]
    return out


def _tokenize_word_structured(
    tokenizer: Any,
    texts: list[str],
    text_pairs: list[str] | None,
    policy: str,
    name: str,
    max_length: int | None,
    truncation: bool,
    add_special_tokens: bool,
    padding: bool | str,
    pre_segment: bool,
    return_offsets_mapping: bool,
) -> dict[str, list]:
    """``tokenize_with_word_ids`` for a word-structured slow tokenizer: its words are its word
    tokenizer's (policy 'vocab': its "##" marks, the same for a WordPiece sub-word tokenizer)."""
    kind = type(tokenizer).__name__
    if policy == "whitespace":
        raise WWMError(
            f"policy {name!r} reads word boundaries from token offsets, which the slow {kind} does not "
            "give; use policy 'tokenizer' (its own words, e.g. MeCab's)"
        )
    if pre_segment or return_offsets_mapping:
        what = "pre_segment" if pre_segment else "return_offsets_mapping"
        raise WWMError(
            f"{what}=True needs a fast tokenizer; {kind} splits the text into words itself (its words "
            "are the whole words, and no token straddles two of them)"
        )
    if not texts:
        return {"input_ids": [], "word_ids": [], "special_tokens_mask": [], "attention_mask": []}
    encodings = _slow_encodings(
        tokenizer, texts, text_pairs, add_special_tokens, truncation, max_length, padding
    )
    policy = "vocab" if policy == "vocab" else "tokenizer"
    word_ids, special = _word_ids_flat(encodings, None, None, policy, tokenizer, "none")
    return {
        "input_ids": [list(e.ids) for e in encodings],
        "word_ids": word_ids,
        "special_tokens_mask": [row.view(np.int8).tolist() for row in special],
        "attention_mask": [list(e.attention_mask) for e in encodings],
    }
