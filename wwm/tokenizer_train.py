"""Train a small tokenizer with the `tokenizers` library (tests, `wwm inspect`, `wwm train-tokenizer`).

Four kinds, one per word-boundary convention that ``wwm.words`` handles plus ModernBERT's variant:

``wordpiece``
    BERT-style: BertNormalizer (lowercase by default), BertPreTokenizer (punctuation and every CJK
    ideograph split off), WordPiece with "##" continuations, ``[CLS] $A [SEP]`` / ``[CLS] $A [SEP] $B
    [SEP]`` template. Special tokens (ids 0..4): [PAD] [UNK] [CLS] [SEP] [MASK].
``bpe``
    RoBERTa-style byte-level BPE: ByteLevel pre-tokenizer (add_prefix_space=False, "Ġ" marks a leading
    space), RobertaProcessing post-processor with trimmed offsets (``<s> $A </s>`` / ``<s> $A </s> </s>
    $B </s>``). Special tokens (ids 0..4, RoBERTa's order): <s> <pad> </s> <unk> <mask>.
``modernbert``
    ModernBERT-style byte-level BPE (ModernBERT's own tokenizer is OLMo's BPE with BERT's special tokens):
    NFC normalizer, ByteLevel pre-tokenizer (add_prefix_space=False, "Ġ"), ``[CLS] $A [SEP]`` /
    ``[CLS] $A [SEP] $B:1 [SEP]:1`` template, "[MASK]" absorbing the space before it, and
    ``model_input_names`` input_ids + attention_mask (ModernBERT takes no token_type_ids). Special tokens
    (ids 0..4, in ModernBERT's order, where they are 50280..50284): [UNK] [CLS] [SEP] [PAD] [MASK].
``unigram``
    SentencePiece-style: NFKC normalizer, Metaspace pre-tokenizer ("▁" replaces spaces and is prepended
    to the text), Unigram model, XLM-R's template (``<s> $A </s>`` / ``<s> $A </s> </s> $B </s>``).
    Special tokens as ``bpe``.

Training is deterministic: the Unigram trainer sums floats in parallel, so its scores are rounded to 6
decimals and its vocabulary put in a canonical order (score, then token); the WordPiece trainer adds its
"##" alphabet in hash order, so runs of single-character tokens are sorted.

The result is a ``transformers.PreTrainedTokenizerFast`` with its special tokens set (``mask_token_id``
etc.), which ``save_pretrained(dir)`` / ``AutoTokenizer.from_pretrained(dir)`` round-trips.

``builtin_sample_text`` gives a training text that exists on any machine without a download: English
prose from CPython's own documentation (``pydoc_data.topics``), or the Chinese, Japanese or Thai sample
shipped in ``wwm/data/sample_<lang>.txt``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from itertools import chain
from typing import Any

from wwm.errors import WWMError, WWMWarning

__all__ = ["ALL_KINDS", "KINDS", "WORD_STRUCTURED_KINDS", "train_tokenizer"]

KINDS = ("wordpiece", "bpe", "unigram", "modernbert")  # fast tokenizers
#: Kinds that are slow, word-structured tokenizers (words first, then sub-words: wwm.words).
WORD_STRUCTURED_KINDS = ("bert-japanese",)
#: Every kind ``train_tokenizer`` takes (the config's ``tokenizer.train.kind``).
ALL_KINDS = KINDS + WORD_STRUCTURED_KINDS

_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
_MODERNBERT_SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
_BYTE_LEVEL = ("bpe", "modernbert")


def _min_vocab_size(kind: str) -> int:
    return 256 + len(_ROBERTA_SPECIALS) if kind in _BYTE_LEVEL else 2 * len(_BERT_SPECIALS)


def train_tokenizer(
    texts: Iterable[str],
    kind: str = "wordpiece",
    vocab_size: int = 1000,
    lowercase: bool | None = None,
    *,
    min_frequency: int = 2,
    model_max_length: int = 512,
    pre_segment: Any = None,
) -> Any:
    """Train a tokenizer of ``kind`` ("wordpiece", "bpe", "unigram", "modernbert" or "bert-japanese") on
    ``texts``.

    ``lowercase`` defaults to True for "wordpiece" (bert-base-uncased style) and False for the others.
    ``min_frequency`` applies to "wordpiece" and "bpe" merges. Returns a PreTrainedTokenizerFast
    ("bert-japanese": a slow ``BertJapaneseTokenizer``, cl-tohoku's: MeCab words with unidic-lite, then
    WordPiece inside each word, its vocabulary learnt from the MeCab words); a vocabulary smaller than
    ``vocab_size`` (too little text) gives a ``WWMWarning`` with both sizes.

    ``pre_segment`` (a segmenter name of ``wwm.words.SEGMENTERS`` or a function): learn the vocabulary
    from the text cut at that segmenter's words, as ``tokenize_with_word_ids(..., pre_segment=True)``
    tokenizes it, so that no piece spans two words.
    """
    from transformers import PreTrainedTokenizerFast

    if kind not in ALL_KINDS:
        known = ", ".join(repr(k) for k in ALL_KINDS)
        raise WWMError(f"unknown tokenizer kind {kind!r}; use one of {known}")
    if isinstance(texts, str):
        raise WWMError("texts must be an iterable of strings, not one string; wrap it in a list")
    if not isinstance(vocab_size, int) or vocab_size < _min_vocab_size(kind):
        raise WWMError(
            f"vocab_size {vocab_size!r} is too small for a {kind} tokenizer; use at least "
            f"{_min_vocab_size(kind)}"
            + (" (256 byte symbols + 5 special tokens)" if kind in _BYTE_LEVEL else "")
        )
    texts = [t for t in texts if t and not t.isspace()]
    if not texts:
        raise WWMError("no text to train the tokenizer on; pass a non-empty list of strings")
    n_documents = len(texts)
    texts = _pieces(texts)
    if lowercase is None:
        lowercase = kind == "wordpiece"
    if kind == "bert-japanese":
        if pre_segment is not None:
            raise WWMError("kind 'bert-japanese' cuts the text into MeCab words itself; drop pre_segment")
        tokenizer = _bert_japanese(texts, vocab_size, min_frequency, lowercase, model_max_length)
        _warn_if_short(tokenizer, kind, vocab_size, min_frequency, n_documents, sum(map(len, texts)))
        return tokenizer
    prepend = True
    if pre_segment is not None:
        texts, prepend = _pre_segmented(texts, kind, pre_segment)
    build = {"wordpiece": _wordpiece, "modernbert": _modernbert, "bpe": _roberta_bpe, "unigram": _unigram}[
        kind
    ]
    tok, names = (
        build(texts, vocab_size, min_frequency, lowercase)
        if prepend
        else _unigram(texts, vocab_size, min_frequency, lowercase, prepend=False)
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **names)
    _warn_if_short(tokenizer, kind, vocab_size, min_frequency, n_documents, sum(map(len, texts)))
    return tokenizer


# One builder per kind: (texts, vocab_size, min_frequency, lowercase) -> (tokenizers.Tokenizer, the special
# token names PreTrainedTokenizerFast gets).


def _template(tok: Any, single: str, pair: str) -> Any:
    """A [CLS]/[SEP] TemplateProcessing post-processor."""
    from tokenizers import processors

    ids = [(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=ids)


def _wordpiece(texts: list[str], vocab_size: int, min_frequency: int, lowercase: bool) -> tuple[Any, dict]:
    """BERT: WordPiece with "##" continuations, BertNormalizer and pre-tokenizer, [CLS] A [SEP] B [SEP]."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    vocab = _wordpiece_vocab(texts, normalizer, vocab_size, min_frequency)
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(_BERT_SPECIALS)
    tok.post_processor = _template(tok, "[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1")
    names = {"unk_token": "[UNK]", "pad_token": "[PAD]", "mask_token": "[MASK]", "cls_token": "[CLS]"}
    return tok, names | {"sep_token": "[SEP]"}


def _modernbert(texts: list[str], vocab_size: int, min_frequency: int, lowercase: bool) -> tuple[Any, dict]:
    """ModernBERT: byte-level BPE with NFC, [UNK] [CLS] [SEP] [PAD] [MASK], no token type ids."""
    from tokenizers import AddedToken

    tok = _byte_level_bpe(texts, vocab_size, min_frequency, _MODERNBERT_SPECIALS, lowercase, nfc=True)
    tok.post_processor = _template(tok, "[CLS]:0 $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1")
    # As ModernBERT's tokenizer: "[MASK]" absorbs the space before it ("is [MASK]." -> is, [MASK], .).
    tok.add_special_tokens([AddedToken("[MASK]", lstrip=True, normalized=False, special=True)])
    names = {"unk_token": "[UNK]", "pad_token": "[PAD]", "mask_token": "[MASK]", "cls_token": "[CLS]"}
    return tok, names | {"sep_token": "[SEP]", "model_input_names": ["input_ids", "attention_mask"]}


def _roberta_names(tok: Any) -> dict:
    from tokenizers import AddedToken

    # As RoBERTa and XLM-R: "<mask>" absorbs the space before it ("hello <mask>" -> hello, <mask>).
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, normalized=False, special=True)])
    names = {"bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>"}
    return names | {"unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}


def _roberta_bpe(texts: list[str], vocab_size: int, min_frequency: int, lowercase: bool) -> tuple[Any, dict]:
    """RoBERTa: byte-level BPE ("Ġ"), <s> A </s></s> B </s> with trimmed offsets."""
    from tokenizers import processors

    tok = _byte_level_bpe(texts, vocab_size, min_frequency, _ROBERTA_SPECIALS, lowercase, nfc=False)
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")), trim_offsets=True,
        add_prefix_space=False,
    )  # fmt: skip
    return tok, _roberta_names(tok)


def _unigram(
    texts: list[str], vocab_size: int, min_frequency: int, lowercase: bool, *, prepend: bool = True
) -> tuple[Any, dict]:
    """SentencePiece-style: Unigram over Metaspace ("▁") pieces, NFKC, RoBERTa's special tokens.
    ``prepend=False``: trained without the "▁" put before each text (pre-segmented pieces, the first of
    each text given its leading space), then set to put it, as for tokenizing."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(steps)
    scheme = "always" if prepend else "never"
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=_ROBERTA_SPECIALS, unk_token="<unk>", show_progress=False
    )
    try:
        tok.train_from_iterator(texts, trainer)
    except Exception as err:
        if "not large enough to contain all chars" not in str(err):
            raise
        n_chars = len(set("".join(texts)))
        raise WWMError(
            f"vocab_size {vocab_size} is too small for a unigram tokenizer of this text, which has "
            f"{n_chars} distinct characters; raise vocab_size above that"
        ) from err
    tok = _canonical_unigram(tok)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    return tok, _roberta_names(tok)


def _pre_segmented(texts: list[str], kind: str, segmenter: Any) -> tuple[list[str], bool]:
    """The training texts cut at segmenter words (``wwm.words.pre_segment_pieces``), laid out so that the
    trainer sees what pre-segmented tokenizing gives: WordPiece (BERT's pre-tokenizer splits at spaces)
    the pieces joined with spaces; byte-level BPE each piece as a text of its own (its leading space
    kept); Unigram the same, trained without Metaspace's prepended "▁", the first piece of each text
    given a leading space instead. Returns (texts, whether the builder may prepend as usual)."""
    from wwm.words import pre_segment_pieces

    cut = pre_segment_pieces(texts, segmenter)
    if kind == "wordpiece":
        return [" ".join(pieces) for pieces in cut], True
    if kind in _BYTE_LEVEL:
        return [p for pieces in cut for p in pieces], True
    out = []
    for pieces in cut:
        out += [" " + pieces[0] if pieces and not pieces[0][:1].isspace() else pieces[0], *pieces[1:]]
    return [p for p in out if p], False


def _bert_japanese(
    texts: list[str], vocab_size: int, min_frequency: int, lowercase: bool, model_max_length: int
) -> Any:
    """cl-tohoku's Japanese BERT tokenizer: transformers' BertJapaneseTokenizer with MeCab (fugashi +
    unidic-lite) words, then WordPiece inside each word; the WordPiece vocabulary is learnt from the MeCab
    words of ``texts`` (NFKC, as its MeCab tokenizer normalizes) with the deterministic learner below."""
    import tempfile
    from pathlib import Path

    try:
        from transformers import BertJapaneseTokenizer
        from transformers.models.bert_japanese.tokenization_bert_japanese import MecabTokenizer

        mecab = MecabTokenizer(do_lower_case=lowercase, mecab_dic="unidic_lite")
    except (ImportError, ModuleNotFoundError) as err:
        raise WWMError(
            "kind 'bert-japanese' needs fugashi and unidic-lite; install them with "
            '`pip install "wwm[cjk]"` (or `pip install fugashi unidic-lite`)'
        ) from err
    words = [" ".join(w for w in mecab.tokenize(t) if not w.isspace()) for t in texts]
    vocab = _wordpiece_vocab(words, None, vocab_size, min_frequency)
    with tempfile.TemporaryDirectory(prefix="wwm-bert-japanese-") as tmp:
        path = Path(tmp) / "vocab.txt"
        # local: a temporary folder
        path.write_text("".join(f"{t}\n" for t in sorted(vocab, key=vocab.__getitem__)), encoding="utf-8")
        return BertJapaneseTokenizer(
            str(path),
            do_lower_case=lowercase,
            word_tokenizer_type="mecab",
            subword_tokenizer_type="wordpiece",
            mecab_kwargs={"mecab_dic": "unidic_lite"},
            model_max_length=model_max_length,
        )


def _pieces(texts: list[str]) -> list[str]:
    """Long documents in pieces, cut where every pre-tokenizer here splits anyway (as for tokenizing,
    ``wwm.data.pieces.text_pieces``): the same words to count, without one huge string in the trainer."""
    from wwm.data.pieces import MAX_PIECE_CHARS, text_pieces

    if all(len(t) <= MAX_PIECE_CHARS for t in texts):
        return texts
    return [piece for t in texts for piece in text_pieces(t, MAX_PIECE_CHARS)]


def _warn_if_short(
    tokenizer: Any, kind: str, vocab_size: int, min_frequency: int, documents: int, characters: int
) -> None:
    """The trainers stop early when the text has no more pieces to merge (or to keep): say so."""
    got = len(tokenizer)
    if got >= vocab_size:
        return
    corpus = f"the corpus ({documents:,} documents, {characters:,} characters)"
    if kind == "unigram":
        cause = f"{corpus} is too small for more pieces; add text or ask for a smaller vocab_size"
    else:
        cause = (
            f"{corpus} has no more pairs of pieces that occur min_frequency={min_frequency} times; add "
            "text, lower min_frequency or ask for a smaller vocab_size"
        )
    warnings.warn(
        f"the {kind} tokenizer has {got:,} tokens, not the {vocab_size:,} asked for: {cause}",
        WWMWarning,
        stacklevel=3,
    )


def _byte_level_bpe(
    texts: list[str], vocab_size: int, min_frequency: int, specials: list[str], lowercase: bool, *, nfc: bool
) -> Any:
    """A byte-level BPE ("Ġ" marks a leading space) trained on ``texts``, special tokens first (ids 0..4)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    steps = ([normalizers.NFC()] if nfc else []) + ([normalizers.Lowercase()] if lowercase else [])
    if steps:
        tok.normalizer = steps[0] if len(steps) == 1 else normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def _wordpiece_vocab(
    texts: list[str], normalizer: Any, vocab_size: int, min_frequency: int
) -> dict[str, int]:
    """A WordPiece vocabulary learnt with the BPE trainer, deterministically.

    ``tokenizers``' WordPieceTrainer numbers its "##" symbols in hash order, which breaks ties between
    equally frequent merges differently from run to run. Instead, every pre-tokenizer word gets a marker
    character in front ("\ue000hello") and a plain BPE (deterministic: sorted alphabet, ties broken by
    symbol ids) learns the merges; a merged symbol with the marker is a word-initial piece ("hello"), one
    without is a continuation ("##llo"). The vocabulary: special tokens, every character seen at the
    start of a word, every character seen inside a word ("##x"), then the merged pieces in merge order,
    up to ``vocab_size`` (the characters are always kept, as WordPieceTrainer does).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    marker = "\ue000"
    # normalizer None: the texts are words separated by spaces (BertJapaneseTokenizer's MeCab words), so
    # a word is a whitespace chunk: WordPiece never splits it at punctuation.
    split = pre_tokenizers.BertPreTokenizer() if normalizer is not None else pre_tokenizers.WhitespaceSplit()
    pre_tokenizer = pre_tokenizers.Sequence(
        [split, pre_tokenizers.Metaspace(replacement=marker, prepend_scheme="always", split=False)]
    )
    joined = "\n".join(texts)
    chunks = " ".join(set((normalizer.normalize_str(joined) if normalizer is not None else joined).split()))
    words = [w for w, _ in pre_tokenizer.pre_tokenize_str(chunks)]
    initial = sorted({w[1] for w in words if len(w) > 1} - {marker})
    inside = sorted(set(chain.from_iterable(w[2:] for w in words)) - {marker})

    bpe = Tokenizer(models.BPE())
    if normalizer is not None:
        bpe.normalizer = normalizer
    bpe.pre_tokenizer = pre_tokenizer
    alphabet = len(set(initial) | set(inside)) + 1
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + alphabet, min_frequency=min_frequency, show_progress=False
    )
    bpe.train_from_iterator(texts, trainer)
    bpe_vocab = bpe.get_vocab()

    pieces = [*_BERT_SPECIALS, *initial, *("##" + c for c in inside)]
    seen = set(pieces)
    for token in sorted(bpe_vocab, key=bpe_vocab.__getitem__):
        if len(pieces) >= vocab_size:
            break
        if len(token) < 2 or token.count(marker) > (token[0] == marker):
            continue  # a single character (already in), or a marker inside (not a word piece)
        piece = token[1:] if token[0] == marker else "##" + token
        if piece not in seen:
            seen.add(piece)
            pieces.append(piece)
    return {piece: index for index, piece in enumerate(pieces)}


def _canonical_unigram(tok: Any) -> Any:
    """Make a trained Unigram model deterministic.

    Two things vary from run to run in ``tokenizers``' UnigramTrainer: the last bits of the scores
    (floats summed in parallel), and which rare character gets which of the low scores
    ``min_score + k * 1e-4`` given to characters the model had pruned (hash order). So: scores are
    rounded to 6 decimals; the single characters scored within ``n_chars * 1e-4`` of the minimum score
    get those scores back in code-point order; the vocabulary is sorted by (score, token).
    """
    from tokenizers import Tokenizer

    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    n_special = len(_ROBERTA_SPECIALS)
    head = vocab[:n_special]
    if [t for t, _ in head] != _ROBERTA_SPECIALS:  # the trainer puts special tokens first, in order
        raise AssertionError(f"unexpected Unigram vocabulary head {head}")
    rest = [(t, round(score, 6)) for t, score in vocab[n_special:]]
    if rest:
        low = min(score for _, score in rest)
        n_chars = sum(len(t) == 1 for t, _ in rest)
        window = low + n_chars * 1e-4 + 1e-6
        rare = [i for i, (t, score) in enumerate(rest) if len(t) == 1 and score <= window]
        scores = sorted((rest[i][1] for i in rare), reverse=True)
        for i, token, score in zip(rare, sorted(rest[i][0] for i in rare), scores, strict=True):
            rest[i] = (token, score)
    rest.sort(key=lambda ts: (-ts[1], ts[0]))
    spec["model"]["vocab"] = [[t, score] for t, score in head] + [[t, score] for t, score in rest]
    spec["model"]["unk_id"] = _ROBERTA_SPECIALS.index("<unk>")
    return Tokenizer.from_str(json.dumps(spec))
