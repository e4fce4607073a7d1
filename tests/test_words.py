"""Word boundaries (wwm.words) and tokenizer training (wwm.tokenizer_train); design in docs/words.md."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wwm.data.builtin import builtin_sample_text
from wwm.errors import WWMError
from wwm.tokenizer_train import KINDS, train_tokenizer
from wwm.words import (
    POLICIES,
    begin_of_word_table,
    cjk_char_mask,
    jieba_segmenter,
    tokenize_with_word_ids,
    word_ids_for_encoding,
    word_ids_from_begin_table,
)

FAMILIES = ["wordpiece_tokenizer", "bpe_tokenizer", "unigram_tokenizer", "bert_uncased_tokenizer"]
HYPO = settings(max_examples=30, deadline=None, derandomize=True)


@pytest.fixture(scope="session", params=FAMILIES)
def any_tokenizer(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module", params=[True, False], ids=["trim", "untrimmed"])
def bpe_trim(request, bpe_tokenizer):
    """The byte-level BPE tokenizer with RobertaProcessing(trim_offsets=True or False)."""
    from tokenizers import processors

    tok = copy.deepcopy(bpe_tokenizer)
    tok.backend_tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", tok.sep_token_id),
        ("<s>", tok.cls_token_id),
        trim_offsets=request.param,
        add_prefix_space=False,
    )
    return tok


def offsets_of(tok, text, text_pair=None):
    return tok(text, text_pair, return_offsets_mapping=True)["offset_mapping"]


def surfaces(tok, text, policy, **kwargs):
    """The words as strings: text from the first to the last character of a word's tokens, stripped."""
    out = tokenize_with_word_ids(tok, [text], policy=policy, **kwargs)
    word_ids = out["word_ids"][0]
    offsets = offsets_of(tok, text)
    assert len(offsets) == len(word_ids)
    spans: dict[int, list[int]] = {}
    for w, (s, e) in zip(word_ids.tolist(), offsets, strict=True):
        if w >= 0:
            span = spans.setdefault(w, [s, e])
            span[0], span[1] = min(span[0], s), max(span[1], e)
    return [text[s:e].strip() for s, e in spans.values()]


def partition(word_ids):
    """Token positions grouped into words, as a tuple of tuples (order of appearance)."""
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(np.asarray(word_ids).tolist()):
        if w is not None and w >= 0:
            groups.setdefault(w, []).append(i)
    return tuple(tuple(g) for g in groups.values())


def assert_well_formed(word_ids, special_tokens_mask, attention_mask):
    """-1 exactly on special/pad tokens; other ids dense and non-decreasing from 0, steps of 0 or 1."""
    word_ids = np.asarray(word_ids)
    assert word_ids.dtype == np.int32
    ineligible = (np.asarray(special_tokens_mask) == 1) | (np.asarray(attention_mask) == 0)
    assert np.array_equal(word_ids < 0, ineligible)
    assert np.all(word_ids >= -1)
    ids = word_ids[word_ids >= 0]
    if len(ids):
        assert ids[0] == 0
        assert set(np.diff(ids).tolist()) <= {0, 1}


def jieba_words(text):
    import jieba

    return [w for w in jieba.lcut(text) if w.strip()]


# --------------------------------------------------------------------------------------------------
# Policy 'tokenizer'
# --------------------------------------------------------------------------------------------------


def test_tokenizer_policy_bert_punctuation(bert_uncased_tokenizer):
    words = surfaces(bert_uncased_tokenizer, "Hello, stop-believing. Tokenization rocks!", "tokenizer")
    assert words == ["Hello", ",", "stop", "-", "believing", ".", "Tokenization", "rocks", "!"]


def test_tokenizer_policy_continuation_pieces_join_their_word(bert_uncased_tokenizer):
    text = "unbelievably tokenization of hyperparameters"
    out = tokenize_with_word_ids(bert_uncased_tokenizer, [text])
    tokens = bert_uncased_tokenizer.convert_ids_to_tokens(out["input_ids"][0])
    word_ids = out["word_ids"][0]
    assert sum(t.startswith("##") for t in tokens) >= 3  # the text really splits into pieces
    for i in range(1, len(tokens) - 1):
        same = word_ids[i] == word_ids[i - 1]
        assert same == tokens[i].startswith("##"), (i, tokens)
    assert surfaces(bert_uncased_tokenizer, text, "tokenizer") == text.split()


@pytest.mark.parametrize("text", ["hello, stop-believing.", "a  b\tc 😀 中文 x", "", "   "])
def test_tokenizer_policy_matches_encoding_word_ids(any_tokenizer, text):
    out = tokenize_with_word_ids(any_tokenizer, [text])
    encoding = any_tokenizer([text]).encodings[0]
    assert partition(out["word_ids"][0]) == partition(encoding.word_ids)
    assert_well_formed(out["word_ids"][0], out["special_tokens_mask"][0], out["attention_mask"][0])


# --------------------------------------------------------------------------------------------------
# Policy 'whitespace'
# --------------------------------------------------------------------------------------------------

TEXT_ALPHABET = st.sampled_from(
    [*"abcdefXYZ0189 ,.-'!?()", "中", "文", "学", "习", "😀", "é", "\n", "\t", "  ", "ß", "🇫🇷"]
)
# With kana and Thai (a lone tone mark too), which policy 'segmenter' sends to fugashi and pythainlp.
SEGMENTED_ALPHABET = st.sampled_from(
    [*"abcdefXYZ0189 ,.-'!?()", "中", "文", "学", "😀", "\n", "  ", "な", "カ", "ー", "。", "ก", "่", "า"]
)


@pytest.mark.parametrize("text", ["hello, stop-believing.", "It's  ok!\tnew\nline  ", " lead and trail "])
def test_whitespace_policy_gives_whitespace_words(any_tokenizer, text):
    assert [w for w in surfaces(any_tokenizer, text, "whitespace") if w] == text.split()


@given(text=st.lists(TEXT_ALPHABET, max_size=30).map("".join))
@HYPO
def test_whitespace_policy_property(any_tokenizer, text):
    assert [w for w in surfaces(any_tokenizer, text, "whitespace") if w] == text.split()


def test_byte_level_multibyte_characters_stay_one_word(bpe_trim):
    text = "ok 😀😀 go 中文字 end"
    encoding = bpe_trim([text]).encodings[0]
    # Precondition: the emoji really are several byte tokens that share one character's offsets.
    shared = [o for o in encoding.offsets if o[1] - o[0] == 1 and encoding.offsets.count(o) > 1]
    assert any(text[s] == "😀" for s, _ in shared)
    assert [w for w in surfaces(bpe_trim, text, "whitespace") if w] == ["ok", "😀😀", "go", "中文字", "end"]
    assert [w for w in surfaces(bpe_trim, text, "vocab") if w] == ["ok", "😀😀", "go", "中文字", "end"]


def test_byte_level_offsets_with_and_without_trim(bpe_trim):
    text = "hello world"
    encoding = bpe_trim([text]).encodings[0]
    starts = {tok: s for tok, (s, _) in zip(encoding.tokens, encoding.offsets, strict=True)}
    space_token = next(t for t in encoding.tokens if t.startswith("Ġ"))
    trimmed = json.loads(bpe_trim.backend_tokenizer.to_str())["post_processor"]["trim_offsets"]
    assert starts[space_token] == (6 if trimmed else 5)
    assert surfaces(bpe_trim, text, "whitespace") == ["hello", "world"]


def test_metaspace_leading_space_offsets(unigram_tokenizer):
    text = "hello world again"
    encoding = unigram_tokenizer([text]).encodings[0]
    # Precondition: Metaspace offsets include the leading space ("▁" token over the space).
    assert any(e > s and text[s] == " " for s, e in encoding.offsets)
    word_ids = tokenize_with_word_ids(unigram_tokenizer, [text], policy="whitespace")["word_ids"][0]
    for i, (s, e) in enumerate(encoding.offsets):
        if word_ids[i] >= 0 and e > s and text[s] == " ":  # the "▁" over a space begins the next word
            assert word_ids[i] == {5: 1, 11: 2}[s]
    assert surfaces(unigram_tokenizer, text, "whitespace") == ["hello", "world", "again"]


def gap_rule_partition(tok, text):
    """transformers' whole-word rule (DataCollatorForLanguageModeling, v5): a word starts at a token
    whose start offset differs from the previous token's end offset, or after a special token."""
    out = tok([text], return_offsets_mapping=True, return_special_tokens_mask=True)
    offsets, special = np.array(out["offset_mapping"][0]), np.array(out["special_tokens_mask"][0])
    prev_end = np.roll(offsets[:, 1], 1)
    prev_end[0] = -1
    prev_special = np.roll(special, 1)
    prev_special[0] = 0
    new_word = (special == 0) & ((offsets[:, 0] != prev_end) | (prev_special == 1))
    return partition(np.where(special == 1, -1, np.cumsum(new_word)))


def test_offsets_gap_rule_fails_where_the_policies_do_not(
    unigram_tokenizer, bert_uncased_tokenizer, bpe_trim
):
    """The documented failures of the offsets-gap rule (docs/words.md)."""
    text = "hello world again"
    # Metaspace: "▁" tokens carry the space in their offsets, so no gap is ever seen.
    assert len(gap_rule_partition(unigram_tokenizer, text)) < 3
    assert surfaces(unigram_tokenizer, text, "whitespace") == ["hello", "world", "again"]
    # Chinese has no spaces: the whole sentence is one word.
    zh = "我们在北京大学学习"
    assert len(gap_rule_partition(bert_uncased_tokenizer, zh)) == 1
    assert surfaces(bert_uncased_tokenizer, zh, "cjk") == ["我们", "在", "北京大学", "学习"]
    # The byte tokens of one emoji share its offsets: the gap rule cuts the character into pieces.
    emoji = "ok 😀 go"
    assert len(gap_rule_partition(bpe_trim, emoji)) > 3
    assert surfaces(bpe_trim, emoji, "whitespace") == ["ok", "😀", "go"]
    # Byte-level BPE without trimmed offsets: "Ġworld" covers the space, no gap either.
    trimmed = json.loads(bpe_trim.backend_tokenizer.to_str())["post_processor"]["trim_offsets"]
    assert len(gap_rule_partition(bpe_trim, text)) == (3 if trimmed else 1)
    assert surfaces(bpe_trim, text, "whitespace") == ["hello", "world", "again"]
    # WordPiece: no gap before the comma, so "hello," is one word, unlike BERT's own words.
    assert len(gap_rule_partition(bert_uncased_tokenizer, "hello, world")) == 2
    assert surfaces(bert_uncased_tokenizer, "hello, world", "tokenizer") == ["hello", ",", "world"]


# --------------------------------------------------------------------------------------------------
# Policy 'vocab'
# --------------------------------------------------------------------------------------------------

PLAIN_WORDS = [
    "the", "a", "hello", "world", "tokenization", "unbelievably", "pythonic", "asyncio", "lambda",
    "zebra", "quixotic", "naïve", "interpreter", "x", "2024", "supercalifragilistic", "of",
]  # fmt: skip
PUNCT_WORDS = ["hello,", "stop-believing.", "(x)", "it's", "😀", "中文", "naïve!", "e.g.", "--", "学习"]


@pytest.mark.parametrize(
    ("family", "vocabulary", "separators"),
    [
        ("wordpiece_tokenizer", PLAIN_WORDS, [" ", "  ", "\t", "\n"]),
        ("bert_uncased_tokenizer", PLAIN_WORDS, [" ", "  ", "\n"]),
        ("bpe_tokenizer", PLAIN_WORDS + PUNCT_WORDS, [" ", "  ", "\n"]),
        ("unigram_tokenizer", PLAIN_WORDS + PUNCT_WORDS, [" ", "  "]),
    ],
)
def test_vocab_policy_agrees_with_whitespace(request, family, vocabulary, separators):
    tok = request.getfixturevalue(family)

    @given(
        words=st.lists(st.sampled_from(vocabulary), min_size=1, max_size=12),
        seps=st.lists(st.sampled_from(separators), min_size=12, max_size=12),
    )
    @HYPO
    def check(words, seps):
        text = "".join(w + s for w, s in zip(words, seps, strict=False)).rstrip()
        by_vocab = tokenize_with_word_ids(tok, [text], policy="vocab")["word_ids"][0]
        by_space = tokenize_with_word_ids(tok, [text], policy="whitespace")["word_ids"][0]
        assert np.array_equal(by_vocab, by_space), text

    check()


def test_begin_of_word_table_entries(wordpiece_tokenizer, bpe_tokenizer, unigram_tokenizer):
    table = begin_of_word_table(wordpiece_tokenizer)
    vocab = wordpiece_tokenizer.get_vocab()
    assert table.shape == (len(wordpiece_tokenizer),) and table.dtype == bool
    pieces = [t for t in vocab if t.startswith("##")]
    assert pieces and not table[[vocab[t] for t in pieces]].any()
    assert table[[vocab[t] for t in vocab if not t.startswith("##")]].all()

    table = begin_of_word_table(bpe_tokenizer)
    vocab = bpe_tokenizer.get_vocab()
    assert table[vocab["Ġthe"]] and table[vocab["Ġ"]] and table[vocab["Ċ"]] and not table[vocab["e"]]
    specials = set(bpe_tokenizer.all_special_tokens)
    assert table[[i for t, i in vocab.items() if t.startswith("Ġ")]].all()
    # Byte-level characters of the whitespace bytes \t \n \v \f \r \x1c-\x1f and space (str.isspace()).
    space_bytes = ("ĉ", "Ċ", "ċ", "Č", "č", "Ĝ", "ĝ", "Ğ", "ğ", "Ġ")
    plain = [i for t, i in vocab.items() if not t.startswith(space_bytes) and t not in specials]
    assert len(plain) > 500 and not table[plain].any()
    assert table[[bpe_tokenizer.cls_token_id, bpe_tokenizer.mask_token_id, bpe_tokenizer.pad_token_id]].all()

    table = begin_of_word_table(unigram_tokenizer)
    vocab = unigram_tokenizer.get_vocab()
    assert table[vocab["▁the"]] and table[vocab["▁"]] and not table[vocab["s"]]
    assert not table[unigram_tokenizer.unk_token_id]  # an unknown piece sits inside its word
    assert table[unigram_tokenizer.mask_token_id]


def test_begin_of_word_table_real_bert_and_cache(bert_uncased_tokenizer):
    table = begin_of_word_table(bert_uncased_tokenizer)
    vocab = bert_uncased_tokenizer.get_vocab()
    assert table.shape == (30522,)
    assert table[vocab["hello"]] and not table[vocab["##ing"]] and table[vocab["[CLS]"]]
    assert begin_of_word_table(bert_uncased_tokenizer) is table  # cached
    grown = copy.deepcopy(bert_uncased_tokenizer)
    grown.add_tokens(["##weird", "covid19"])
    bigger = begin_of_word_table(grown)
    assert bigger.shape == (30524,) and bigger[30522] and bigger[30523]  # added tokens begin words


def test_word_ids_from_begin_table_unit():
    table = np.array([True, True, True, False, True, False])  # 0 = pad, 1 = cls, 2.. = tokens
    ids = np.array([[1, 2, 3, 3, 4, 5, 1, 3, 2, 0], [1, 3, 4, 2, 1, 0, 0, 0, 0, 0]])
    eligible = np.array([[0, 1, 1, 1, 1, 1, 0, 1, 1, 0], [0, 1, 1, 1, 0, 0, 0, 0, 0, 0]], dtype=bool)
    expected = np.array([[-1, 0, 0, 0, 1, 1, -1, 2, 3, -1], [-1, 0, 1, 2, -1, -1, -1, -1, -1, -1]])
    out = word_ids_from_begin_table(ids, table, eligible)
    assert out.dtype == np.int32 and np.array_equal(out, expected)
    # One row at a time gives the same; the first eligible token after a special starts a word even
    # when its table entry says "continuation" (token 3 after [CLS]).
    for row in range(2):
        assert np.array_equal(word_ids_from_begin_table(ids[row], table, eligible[row]), expected[row])


def test_word_ids_from_begin_table_matches_batched_tokenization(bpe_tokenizer):
    texts = ["hello, stop-believing.", "a", "x 😀😀 中文字 and more words here", ""]
    out = tokenize_with_word_ids(bpe_tokenizer, texts, policy="vocab", padding=True)
    ids = np.array(out["input_ids"])
    eligible = (np.array(out["attention_mask"]) == 1) & (np.array(out["special_tokens_mask"]) == 0)
    batch = word_ids_from_begin_table(ids, begin_of_word_table(bpe_tokenizer), eligible)
    assert np.array_equal(batch, np.stack(out["word_ids"]))
    whitespace = tokenize_with_word_ids(bpe_tokenizer, texts, policy="whitespace", padding=True)
    assert np.array_equal(batch, np.stack(whitespace["word_ids"]))


def test_word_ids_from_begin_table_errors():
    table = np.array([True, False, True])
    with pytest.raises(WWMError, match="begin_of_word_table"):
        word_ids_from_begin_table(np.array([0, 3]), table, np.array([True, True]))
    with pytest.raises(WWMError, match="same shape"):
        word_ids_from_begin_table(np.array([0, 1]), table, np.array([True]))
    with pytest.raises(WWMError, match="integers"):
        word_ids_from_begin_table(np.array([0.0, 1.0]), table, np.array([True, True]))


def test_unknown_family_is_an_error():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    with pytest.raises(WWMError, match=r"WordLevel.*'tokenizer' or 'whitespace'"):
        begin_of_word_table(tok)
    with pytest.raises(WWMError, match="WordLevel"):
        tokenize_with_word_ids(tok, ["hello world"], policy="vocab")
    # The text-based policies still work for it.
    assert tokenize_with_word_ids(tok, ["hello world"], policy="whitespace")["word_ids"][0].tolist() == [0, 1]

    bpe = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(WWMError, match=r"BPE.*no ByteLevel or Metaspace"):
        begin_of_word_table(bpe)
    # CLIP-style: a byte-level BPE whose "</w>" suffix ends words; no token starts with "Ġ".
    clip = Tokenizer(
        models.BPE(vocab={"a": 0, "b</w>": 1, "ab</w>": 2}, merges=[], end_of_word_suffix="</w>")
    )
    clip.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    with pytest.raises(WWMError, match=r"BPE.*suffix '</w>'"):
        begin_of_word_table(clip)
    clip = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    clip.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    with pytest.raises(WWMError, match="no token starts with 'Ġ'"):
        begin_of_word_table(clip)


def test_llama_style_metaspace_from_the_normalizer():
    """No pre-tokenizer; the normalizer prepends "▁" and replaces spaces (Llama, Mistral)."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = ["<unk>", "<s>", "</s>", "▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "▁w", "ll", "▁he", "llo"]
    vocab += ["▁hello", "or", "ld"]
    merges = [
        ("▁", "h"),
        ("▁", "w"),
        ("l", "l"),
        ("▁h", "e"),
        ("ll", "o"),
        ("▁he", "llo"),
        ("o", "r"),
        ("l", "d"),
    ]
    backend = Tokenizer(
        models.BPE(vocab={t: i for i, t in enumerate(vocab)}, merges=merges, unk_token="<unk>")
    )
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    table = begin_of_word_table(tok)
    assert [t for t in vocab if table[vocab.index(t)]] == ["<s>", "</s>", "▁", "▁h", "▁w", "▁he", "▁hello"]
    text = "hello world  hello"
    by_vocab = tokenize_with_word_ids(tok, [text], policy="vocab")["word_ids"][0]
    assert by_vocab.tolist() == [0, 1, 1, 1, 2, 3]  # ▁hello | ▁w or ld | ▁ | ▁hello
    assert np.array_equal(tokenize_with_word_ids(tok, [text], policy="whitespace")["word_ids"][0], by_vocab)
    for policy in ("tokenizer", "cjk"):
        with pytest.raises(WWMError, match=r"has none.*use policy 'whitespace' or 'vocab'"):
            tokenize_with_word_ids(tok, [text], policy=policy)


# --------------------------------------------------------------------------------------------------
# Policy 'cjk'
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe_english_only():
    """Byte-level BPE that has never seen Chinese: every CJK character is split into byte tokens."""
    return train_tokenizer(builtin_sample_text("en")[:400], "bpe", 800)


CJK_FAMILIES = [*FAMILIES, "bpe_english_only"]


def test_cjk_groups_characters_into_jieba_words(bert_uncased_tokenizer, bpe_english_only):
    text = "我们在北京大学学习自然语言处理。"
    expected = ["我们", "在", "北京大学", "学习", "自然语言", "处理", "。"]
    assert jieba_words(text) == expected
    assert surfaces(bert_uncased_tokenizer, text, "cjk") == expected
    assert surfaces(bpe_english_only, text, "cjk") == expected
    # Without segmentation, BERT makes every character a word; byte-level BPE one word of the run.
    assert len(surfaces(bert_uncased_tokenizer, text, "tokenizer")) == len(text)
    assert surfaces(bpe_english_only, text, "tokenizer") == ["我们在北京大学学习自然语言处理", "。"]


MIXED = "我用 Python 写代码，stop-believing 很好 iPhone手机"


@pytest.mark.parametrize(
    "family", ["bert_uncased_tokenizer", "wordpiece_tokenizer", "bpe_tokenizer", "bpe_english_only"]
)
def test_cjk_mixed_chinese_english(request, family):
    # English keeps the base policy's (BERT-like) boundaries; Chinese gets jieba's words, also where a
    # Chinese word is glued to an English one ("iPhone手机" is one pre-tokenizer word in byte-level BPE).
    expected = ["我用", "Python", "写", "代码", "，", "stop", "-", "believing", "很", "好", "iPhone", "手机"]
    assert jieba_words(MIXED) == expected
    assert surfaces(request.getfixturevalue(family), MIXED, "cjk") == expected


def test_cjk_mixed_metaspace(unigram_tokenizer):
    # Metaspace's words are whitespace words, so the comma (not CJK) stays glued to "stop-believing".
    expected = ["我用", "Python", "写", "代码", "，stop-believing", "很", "好", "iPhone", "手机"]
    assert surfaces(unigram_tokenizer, MIXED, "cjk") == expected


@pytest.mark.parametrize("family", CJK_FAMILIES)
def test_cjk_property_on_chinese_sample(request, family):
    """Every word that holds a CJK character is exactly one jieba word, whenever no token straddles two
    jieba words (a token cannot be split); checked on the lines of the Chinese sample."""
    tok = request.getfixturevalue(family)
    segment = jieba_segmenter()
    lines = builtin_sample_text("zh")
    out = tokenize_with_word_ids(tok, lines, policy="cjk")
    checked = 0
    for text, word_ids, ids in zip(lines, out["word_ids"], out["input_ids"], strict=True):
        offsets = offsets_of(tok, text)
        assert len(offsets) == len(ids)
        spans = segment(text)
        boundaries = {s for s, _ in spans}
        straddle = any(any(s < b < e for b in boundaries) for s, e in offsets)
        if straddle:
            continue
        checked += 1
        jieba_spans = {(s, e) for s, e in spans}
        groups: dict[int, list[int]] = {}
        for w, (s, e) in zip(word_ids.tolist(), offsets, strict=True):
            if w >= 0 and e > s:
                span = groups.setdefault(w, [s, e])
                span[0], span[1] = min(span[0], s), max(span[1], e)
        cjk = cjk_char_mask(text)
        for s, e in groups.values():
            while s < e and text[s].isspace():
                s += 1
            if cjk[s:e].any():
                assert (s, e) in jieba_spans, (family, text[s:e], text)
    assert checked >= 10


def test_cjk_custom_segmenter(bert_uncased_tokenizer):
    text = "私はラーメンが好きです"

    def segment(t):  # a toy Japanese segmenter: 私 / は / ラーメン / が / 好き / です
        assert t == text
        return [(0, 1), (1, 2), (2, 6), (6, 7), (7, 9), (9, 11)]

    words = surfaces(bert_uncased_tokenizer, text, "cjk", segmenter=segment)
    assert words == ["私", "は", "ラーメン", "が", "好き", "です"]


def test_cjk_segmenter_errors(bert_uncased_tokenizer):
    with pytest.raises(WWMError, match="overlapping"):
        tokenize_with_word_ids(
            bert_uncased_tokenizer, ["中文字"], policy="cjk", segmenter=lambda t: [(0, 2), (1, 3)]
        )
    with pytest.raises(WWMError, match="outside the text"):
        tokenize_with_word_ids(bert_uncased_tokenizer, ["中文"], policy="cjk", segmenter=lambda t: [(0, 5)])
    with pytest.raises(WWMError, match=r"\(start, end\)"):
        tokenize_with_word_ids(bert_uncased_tokenizer, ["中文"], policy="cjk", segmenter=lambda t: ["中文"])


def test_cjk_without_jieba(monkeypatch, bert_uncased_tokenizer):
    monkeypatch.setitem(sys.modules, "jieba", None)
    with pytest.raises(WWMError, match=r'pip install "wwm\[cjk\]"'):
        tokenize_with_word_ids(bert_uncased_tokenizer, ["我们在北京"], policy="cjk")
    # A segmenter of one's own needs no jieba.
    out = tokenize_with_word_ids(
        bert_uncased_tokenizer, ["我们在北京"], policy="cjk", segmenter=lambda t: [(0, 2), (2, 3), (3, 5)]
    )
    assert out["word_ids"][0].tolist() == [-1, 0, 0, 1, 2, 2, -1]


# --------------------------------------------------------------------------------------------------
# All policies: specials, pads, pairs, batches
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
@given(texts=st.lists(st.lists(SEGMENTED_ALPHABET, max_size=25).map("".join), min_size=1, max_size=4))
@HYPO
def test_well_formed_for_every_policy(any_tokenizer, policy, texts):
    out = tokenize_with_word_ids(any_tokenizer, texts, policy=policy, padding=True)
    assert set(out) == {"input_ids", "word_ids", "special_tokens_mask", "attention_mask"}
    for row in range(len(texts)):
        assert len(out["word_ids"][row]) == len(out["input_ids"][row])
        assert_well_formed(out["word_ids"][row], out["special_tokens_mask"][row], out["attention_mask"][row])
    # Batching changes nothing: each text alone gives the same word ids (without the padding).
    for row, text in enumerate(texts):
        alone = tokenize_with_word_ids(any_tokenizer, [text], policy=policy)["word_ids"][0]
        assert np.array_equal(out["word_ids"][row][: len(alone)], alone)


@pytest.mark.parametrize("policy", POLICIES)
def test_specials_and_pads_are_minus_one(wordpiece_tokenizer, policy):
    tok = wordpiece_tokenizer
    out = tokenize_with_word_ids(
        tok, ["hello [MASK] world", "a much longer text than the first one"], policy=policy, padding=True
    )
    ids, word_ids = out["input_ids"][0], out["word_ids"][0]
    assert ids[0] == tok.cls_token_id and word_ids[0] == -1
    assert tok.mask_token_id in ids and word_ids[ids.index(tok.mask_token_id)] == -1  # literal [MASK]
    assert out["special_tokens_mask"][0][ids.index(tok.mask_token_id)] == 1
    assert ids[-1] == tok.pad_token_id and word_ids[-1] == -1 and out["attention_mask"][0][-1] == 0
    assert sorted(set(word_ids.tolist())) == [-1, 0, 1]


@pytest.mark.parametrize("policy", POLICIES)
def test_unknown_token_is_a_word(wordpiece_tokenizer, policy):
    out = tokenize_with_word_ids(wordpiece_tokenizer, ["hello ☃ world"], policy=policy)
    ids, word_ids = out["input_ids"][0], out["word_ids"][0]
    assert wordpiece_tokenizer.unk_token_id in ids
    at = ids.index(wordpiece_tokenizer.unk_token_id)
    assert word_ids[at] >= 0 and word_ids[at - 1] != word_ids[at] != word_ids[at + 1]
    assert out["special_tokens_mask"][0][ids.index(wordpiece_tokenizer.unk_token_id)] == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_sentence_pairs(any_tokenizer, policy):
    first, second = ["hello world", "a b"], ["hello world again", "c"]
    out = tokenize_with_word_ids(any_tokenizer, first, text_pairs=second, policy=policy)
    for row, (a, b) in enumerate(zip(first, second, strict=True)):
        word_ids = out["word_ids"][row]
        encoding = any_tokenizer(a, b).encodings[0]
        seq = np.array([-1 if s is None else s for s in encoding.sequence_ids])
        in_a, in_b = word_ids[seq == 0], word_ids[seq == 1]
        assert len(in_a) and len(in_b) and in_a.max() < in_b.min()
        n_a, n_b = len(a.split()), len(b.split())
        assert (len(set(in_a.tolist())), len(set(in_b.tolist()))) == (n_a, n_b)
        assert_well_formed(word_ids, out["special_tokens_mask"][row], out["attention_mask"][row])
        # The single-encoding form agrees.
        single = word_ids_for_encoding(encoding, a, policy, text_pair=b, tokenizer=any_tokenizer)
        assert np.array_equal(single, word_ids)


def test_pair_without_separator_tokens_still_splits_words(bert_uncased_tokenizer):
    out = tokenize_with_word_ids(
        bert_uncased_tokenizer, ["hello"], text_pairs=["hello"], add_special_tokens=False, policy="whitespace"
    )
    assert out["word_ids"][0].tolist() == [0, 1]


def test_truncation_and_max_length(bert_uncased_tokenizer):
    text = "tokenization " * 50
    out = tokenize_with_word_ids(
        bert_uncased_tokenizer, [text], truncation=True, max_length=16, policy="whitespace"
    )
    assert len(out["input_ids"][0]) == 16
    assert_well_formed(out["word_ids"][0], out["special_tokens_mask"][0], out["attention_mask"][0])


def test_word_ids_for_encoding_forms(bpe_tokenizer):
    text = "hello, stop-believing."
    batch = bpe_tokenizer([text])
    expected = tokenize_with_word_ids(bpe_tokenizer, [text], policy="whitespace")["word_ids"][0]
    assert np.array_equal(word_ids_for_encoding(batch, text, "whitespace"), expected)
    assert np.array_equal(word_ids_for_encoding(batch[0], text, "whitespace"), expected)
    assert np.array_equal(word_ids_for_encoding(batch.encodings[0], text, "whitespace"), expected)
    with pytest.raises(WWMError, match="one encoding"):
        word_ids_for_encoding(bpe_tokenizer([text, text]), text, "whitespace")
    with pytest.raises(WWMError, match="pass text"):
        word_ids_for_encoding(batch, None, "whitespace")
    with pytest.raises(WWMError, match="exactly the text"):
        word_ids_for_encoding(batch, "hello", "whitespace")
    with pytest.raises(WWMError, match="tokenizer="):
        word_ids_for_encoding(batch, text, "vocab")


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def test_unknown_policy(bpe_tokenizer):
    with pytest.raises(
        WWMError,
        match=r"unknown word-boundary policy 'spaces'.*'tokenizer', 'whitespace', 'vocab', 'segmenter'.*'cjk'",
    ):
        tokenize_with_word_ids(bpe_tokenizer, ["x"], policy="spaces")


def test_slow_tokenizer_is_an_error(bert_uncased_path):
    import os

    from transformers import BertTokenizerLegacy

    slow = BertTokenizerLegacy(os.path.join(bert_uncased_path, "vocab.txt"))
    assert not slow.is_fast
    for policy in POLICIES:
        with pytest.raises(WWMError, match=r"fast tokenizer \(PreTrainedTokenizerFast\).*use_fast=True"):
            tokenize_with_word_ids(slow, ["hello world"], policy=policy)
    with pytest.raises(WWMError, match="fast tokenizer"):
        begin_of_word_table(slow)


def test_texts_must_be_a_list(bpe_tokenizer):
    with pytest.raises(WWMError, match="list of strings"):
        tokenize_with_word_ids(bpe_tokenizer, "hello world")
    with pytest.raises(WWMError, match="text_pairs"):
        tokenize_with_word_ids(bpe_tokenizer, ["a", "b"], text_pairs=["c"])
    assert tokenize_with_word_ids(bpe_tokenizer, [])["word_ids"] == []


def test_import_is_light():
    code = (
        "import sys, wwm.words, wwm.tokenizer_train\n"
        "heavy = ('torch', 'jax', 'transformers', 'tokenizers', 'jieba', 'fugashi', 'pythainlp')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------------
# Tokenizer training and the built-in sample
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_trained_tokenizer_round_trips(kind, request, tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = request.getfixturevalue(f"{kind}_tokenizer")
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert len(tok) == 2000
    for name in ("mask", "pad", "cls", "sep", "unk"):
        assert getattr(tok, f"{name}_token_id") is not None, name
    assert tok.mask_token_id == 4
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "Hello, stop-believing. 中文 <mask> 😀"
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.mask_token_id == tok.mask_token_id and loaded.pad_token_id == tok.pad_token_id
    ids = tok("hello world")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id


def test_trained_tokenizer_conventions(wordpiece_tokenizer, bpe_tokenizer, unigram_tokenizer):
    assert wordpiece_tokenizer.convert_ids_to_tokens(range(5)) == [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
    ]
    assert bpe_tokenizer.convert_ids_to_tokens(range(5)) == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    assert unigram_tokenizer.convert_ids_to_tokens(range(5)) == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    assert wordpiece_tokenizer.tokenize("Tokenization") == wordpiece_tokenizer.tokenize("tokenization")
    assert any(t.startswith("##") for t in wordpiece_tokenizer.tokenize("supercalifragilistic"))
    assert any(t.startswith("Ġ") for t in bpe_tokenizer.tokenize("hello world"))
    assert unigram_tokenizer.tokenize("hello world")[0].startswith("▁")
    pair = bpe_tokenizer("a", "b")["input_ids"]
    assert bpe_tokenizer.convert_ids_to_tokens(pair)[-4:] == ["</s>", "</s>", "b", "</s>"]
    # "<mask>" absorbs the space before it, as in RoBERTa.
    tokens = bpe_tokenizer.convert_ids_to_tokens(bpe_tokenizer("hello <mask>")["input_ids"])
    assert tokens[-2:] == ["<mask>", "</s>"] and "Ġ" not in tokens


@pytest.mark.parametrize("kind", KINDS)
def test_training_is_deterministic(kind, training_texts):
    """Run to run (the trainers of `tokenizers` alone are not: hash order, parallel float sums)."""
    texts = training_texts[:300] + training_texts[-60:]
    first = train_tokenizer(texts, kind, 1000).backend_tokenizer.to_str()
    second = train_tokenizer(texts, kind, 1000).backend_tokenizer.to_str()
    assert first == second


def test_train_tokenizer_errors():
    with pytest.raises(WWMError, match="'wordpiece', 'bpe', 'unigram'"):
        train_tokenizer(["hello"], "sentencepiece")
    with pytest.raises(WWMError, match="at least 261"):
        train_tokenizer(["hello"], "bpe", 100)
    with pytest.raises(WWMError, match="distinct characters; raise vocab_size"):
        train_tokenizer(builtin_sample_text("zh"), "unigram", 300)
    with pytest.raises(WWMError, match="no text"):
        train_tokenizer(["", "  "], "wordpiece")
    with pytest.raises(WWMError, match="not one string"):
        train_tokenizer("hello world", "wordpiece")


def test_builtin_sample_text():
    en = builtin_sample_text("en")
    assert len(en) > 500 and sum(map(len, en)) > 100_000
    assert all("\n" not in p and p == p.strip() and p for p in en)
    assert builtin_sample_text() == en
    zh = builtin_sample_text("zh")
    assert len(zh) >= 30
    joined = "".join(zh)
    assert cjk_char_mask(joined).mean() > 0.7
    assert any(c.isascii() and c.isalpha() for c in joined) and any(c.isdigit() for c in joined)
    with pytest.raises(WWMError, match="'en', 'zh', 'ja', 'th'"):
        builtin_sample_text("fr")
