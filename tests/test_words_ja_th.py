"""Japanese and Thai whole words (policy 'segmenter', docs/words.md): the real segmenters (fugashi +
unidic-lite, pythainlp) on sentences written here, for WordPiece, byte-level BPE and Unigram tokenizers
trained on that text, and bert-base-uncased.

The rule under test: a word is a segmenter word; a token belongs to the segmenter word that holds its
first character (its anchor); a token is never split. The reference below computes it with plain Python
loops from the segmenters' own output, independently of wwm.words' numpy layout.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from wwm.data.builtin import builtin_sample_text
from wwm.errors import WWMError
from wwm.masking import MaskingConfig, WholeWordMasker
from wwm.tokenizer_train import train_tokenizer
from wwm.words import SEGMENTERS, cjk_char_mask, require_segmenter, tokenize_with_word_ids

fugashi = pytest.importorskip("fugashi")
unidic_lite = pytest.importorskip("unidic_lite")
thai_tokenize = pytest.importorskip("pythainlp.tokenize")

JA = [
    "東京の空はいつもより青く見えた。",
    "新しいスマートフォンを買ったので、写真をたくさん撮っています。",
    "来週の会議では Python と Rust の比較について話す予定です。",
    "彼女はなのかもしれないと小さな声でつぶやいた。",
    "ラーメンを食べに行きませんか？",
    "GPU を 8 枚使えば、学習は 3 日ほどで終わるでしょう。",
    "人々は時々、昔の歌を口ずさむ。",
    "Hello, world! 今日はいい天気ですね。stop-believing",
    "Tシャツとジーンズで出かけた。",
]
TH = [
    "วันนี้อากาศดีมาก เราจึงออกไปเดินเล่นที่สวนสาธารณะ",
    "ฉันใช้ Python เขียนโปรแกรมทุกวัน",
    "รถไฟขบวนสุดท้ายออกเวลาสี่ทุ่มครึ่ง",
    "เขาซื้อ iPhone เครื่องใหม่เมื่อวานนี้",
    "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ แต่เว้นวรรคระหว่างประโยค",
    "บ้านของเราอยู่ใกล้ตลาด",
    "Hello ภาษาไทย, stop-believing!",
]
KINDS = ("wordpiece", "bpe", "unigram")


# --------------------------------------------------------------------------------------------------
# The segmenters' own words, and the rule computed token by token
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tagger():
    dicdir = unidic_lite.DICDIR
    return fugashi.Tagger(f'-d "{dicdir}" -r "{os.path.join(dicdir, "mecabrc")}"')


def fugashi_spans(tagger, text):
    """MeCab's words as spans: each node is the whitespace it skipped, then its surface."""
    spans, pos = [], 0
    for node in tagger(text):
        pos += len(node.white_space)
        assert text.startswith(node.surface, pos), (text, pos, node.surface)
        spans.append((pos, pos + len(node.surface)))
        pos += len(node.surface)
    return spans


def thai_spans(text):
    """pythainlp's newmm words of each run of Thai characters."""
    spans, i = [], 0
    while i < len(text):
        if not is_thai(text[i]):
            i += 1
            continue
        j = i
        while j < len(text) and is_thai(text[j]):
            j += 1
        pos = i
        for word in thai_tokenize.word_tokenize(text[i:j], engine="newmm"):
            spans.append((pos, pos + len(word)))
            pos += len(word)
        assert pos == j
        i = j
    return spans


def is_thai(ch):
    return "\u0e00" <= ch <= "\u0e7f"


def anchors(text, offsets):
    """Each token's first non-space character; a token of only spaces anchors to the next character."""
    out = []
    for s, e in offsets:
        a = s
        while a < len(text) and text[a].isspace():
            a += 1
        out.append(min(a, e) if e > s else a)
    return out


def reference_word_ids(tok, text, spans, segmented):
    """Word ids by the rule, one token at a time: between two tokens of which either anchors in a
    segmented character, a new word starts iff the anchors lie in different segmenter words; elsewhere
    where the tokenizer's own word changes."""
    enc = tok(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    word_of_char = {}
    for k, (s, e) in enumerate(spans):
        for c in range(s, e):
            word_of_char[c] = k
    tok_words = enc.encodings[0].word_ids
    out, current, prev = [], -1, None
    for i, a in enumerate(anchors(text, enc["offset_mapping"])):
        if enc["special_tokens_mask"][i]:
            out.append(-1)
            prev = None
            continue
        if prev is None:
            current += 1
        else:
            pa = prev
            if segmented(pa) or segmented(a):
                new = word_of_char.get(pa, ("alone", pa)) != word_of_char.get(a, ("alone", a))
            else:
                new = tok_words[i] != tok_words[i - 1]
            current += new
        out.append(current)
        prev = a
    return out


def segmented_ja(text):
    cjk = cjk_char_mask(text)
    return lambda a: a < len(text) and bool(cjk[a] or is_thai(text[a]))


def assert_no_word_split(text, spans, word_ids, offsets, segmented):
    """Every segmenter word of segmented characters: the tokens anchored in it share one word id, and
    no token anchored elsewhere has that id."""
    token_anchor = anchors(text, offsets)
    checked = 0
    for s, e in spans:
        if not all(segmented(c) for c in range(s, e)):
            continue
        inside = {int(w) for w, a in zip(word_ids, token_anchor, strict=True) if w >= 0 and s <= a < e}
        if not inside:
            continue  # the word lies inside a token anchored in the word before it
        assert len(inside) == 1, (text[s:e], text)
        outside = {int(w) for w, a in zip(word_ids, token_anchor, strict=True) if w >= 0 and not s <= a < e}
        assert not inside & outside, (text[s:e], text)
        checked += 1
    return checked


def surfaces(tok, text, **kwargs):
    out = tokenize_with_word_ids(tok, [text], policy="segmenter", **kwargs)
    offsets = tok(text, return_offsets_mapping=True)["offset_mapping"]
    spans: dict[int, list[int]] = {}
    for w, (s, e) in zip(out["word_ids"][0].tolist(), offsets, strict=True):
        if w >= 0:
            span = spans.setdefault(w, [s, e])
            span[0], span[1] = min(span[0], s), max(span[1], e)
    return [text[s:e].strip() for s, e in spans.values()]


# --------------------------------------------------------------------------------------------------
# Tokenizers trained on the text (module scope: a second each)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ja_tokenizers():
    texts = builtin_sample_text("ja") + JA
    return {kind: train_tokenizer(texts, kind, 1500, lowercase=False) for kind in KINDS}


@pytest.fixture(scope="module")
def th_tokenizers():
    texts = builtin_sample_text("th") + TH
    return {kind: train_tokenizer(texts, kind, 1200, lowercase=False) for kind in KINDS}


# --------------------------------------------------------------------------------------------------
# Japanese
# --------------------------------------------------------------------------------------------------


def test_kana_are_fugashi_words_not_characters(bert_uncased_tokenizer, tagger):
    """The issue's regression: jieba cut kana into characters (8 words for one WordPiece word)."""
    text = "なのかもしれない"
    out = tokenize_with_word_ids(bert_uncased_tokenizer, [text], policy="cjk")  # the old name: same policy
    tokens = bert_uncased_tokenizer.convert_ids_to_tokens(out["input_ids"][0])
    assert tokens == ["[CLS]", "な", "##の", "##か", "##も", "##し", "##れ", "##な", "##い", "[SEP]"]
    assert [text[s:e] for s, e in fugashi_spans(tagger, text)] == ["な", "の", "か", "も", "しれ", "ない"]
    assert out["word_ids"][0].tolist() == [-1, 0, 1, 2, 3, 4, 4, 5, 5, -1]
    # jieba, the segmenter policy 'cjk' used for kana before: every character a word.
    old = tokenize_with_word_ids(bert_uncased_tokenizer, [text], policy="cjk", segmenter="jieba")
    assert old["word_ids"][0].tolist() == [-1, 0, 1, 2, 3, 4, 5, 6, 7, -1]


@pytest.mark.parametrize("kind", [*KINDS, "bert-base-uncased"])
def test_japanese_follows_the_rule_and_never_splits_a_fugashi_word(
    kind, ja_tokenizers, bert_uncased_tokenizer, tagger
):
    tok = bert_uncased_tokenizer if kind == "bert-base-uncased" else ja_tokenizers[kind]
    texts = JA + builtin_sample_text("ja")[:20]
    out = tokenize_with_word_ids(tok, texts, policy="segmenter")
    checked = 0
    for text, word_ids in zip(texts, out["word_ids"], strict=True):
        spans = fugashi_spans(tagger, text)
        segmented = segmented_ja(text)
        assert word_ids.tolist() == reference_word_ids(tok, text, spans, segmented), text
        offsets = tok(text, return_offsets_mapping=True)["offset_mapping"]
        checked += assert_no_word_split(text, spans, word_ids.tolist(), offsets, segmented)
    assert checked > 200


@pytest.mark.parametrize("kind", [*KINDS, "bert-base-uncased"])
def test_japanese_mixed_with_english(kind, ja_tokenizers, bert_uncased_tokenizer):
    # English keeps the tokenizer's words; Japanese gets fugashi's.
    tok = bert_uncased_tokenizer if kind == "bert-base-uncased" else ja_tokenizers[kind]
    text = "Hello, world! 今日はいい天気ですね。stop-believing"
    english = (["Hello", ",", "world", "!"], ["stop", "-", "believing"])
    if kind == "unigram":  # Metaspace words are whitespace words: punctuation stays in its word
        english = (["Hello,", "world!"], ["。stop-believing"])
    words = surfaces(tok, text)
    assert words[: len(english[0])] == english[0] and words[-len(english[1]) :] == english[1]
    if kind == "bert-base-uncased":  # a token per character: no token straddles two fugashi words
        assert words[4:-3] == ["今日", "は", "いい", "天気", "です", "ね", "。"]
    # An English word glued to kana (one byte-level pre-tokenizer word) is cut where fugashi cuts.
    assert surfaces(ja_tokenizers["bpe"], "iPhoneを買った")[:2] == ["iPhone", "を"]


def test_auto_decides_the_language_per_document(bert_uncased_tokenizer, tagger):
    # A Japanese document (kana >= 10% of its Han and kana): every sentence gets MeCab words, also a
    # kanji-only one (jieba would cut 気象庁 and 発表 differently); before document routing the
    # Chinese-looking sentence went to jieba.
    doc = "気象庁発表。東京は晴れるでしょう。"
    mecab = [doc[s:e] for s, e in fugashi_spans(tagger, doc)]
    assert mecab[:4] == [
        "気象",
        "庁",
        "発表",
        "。",
    ]  # (jieba: 气象 is a word, 庁发表 are not in its dictionary)
    assert surfaces(bert_uncased_tokenizer, doc)[:4] == mecab[:4]
    mixed = "我们在北京大学学习。私は東京に住んでいます。"  # 7 kana of 20 Han and kana: Japanese
    words = surfaces(bert_uncased_tokenizer, mixed)
    assert (
        words[:5]
        == [mixed[s:e] for s, e in fugashi_spans(tagger, mixed)][:5]
        != ["我们", "在", "北京大学", "学习", "。"]
    )
    # A Chinese document quoting a kana name (below 10%): Chinese rules, the kana sentence to fugashi.
    zh = "我们在北京大学学习自然语言处理，也研究机器翻译和语音识别的问题。今天天气很好，我们一起去公园散步吧。她说：ドラえもん。"
    assert surfaces(bert_uncased_tokenizer, zh)[:4] == ["我们", "在", "北京大学", "学习"]
    assert surfaces(bert_uncased_tokenizer, zh)[-2:] == ["ドラえもん", "。"]
    # Thai between Chinese words goes to pythainlp, the Chinese around it to jieba.
    assert surfaces(bert_uncased_tokenizer, "我们 ภาษาไทย 北京大学") == ["我们", "ภาษาไทย", "北京大学"]


def test_chinese_without_kana_is_segmented_by_jieba_exactly_as_before(any_family_tokenizer):
    tok = any_family_tokenizer
    texts = [*builtin_sample_text("zh"), "我用 Python 写代码，stop-believing 很好 iPhone手机 T恤"]
    auto = tokenize_with_word_ids(tok, texts, policy="segmenter")
    jieba = tokenize_with_word_ids(tok, texts, policy="cjk", segmenter="jieba")
    for a, b in zip(auto["word_ids"], jieba["word_ids"], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(
    params=["wordpiece_tokenizer", "bpe_tokenizer", "unigram_tokenizer", "bert_uncased_tokenizer"]
)
def any_family_tokenizer(request):
    return request.getfixturevalue(request.param)


def test_forced_segmenters_and_none(bert_uncased_tokenizer, tagger):
    tok = bert_uncased_tokenizer
    text = "私はラーメンが好きです"
    # fugashi for everything, also for Han-only text
    assert surfaces(tok, text, segmenter="fugashi") == [text[s:e] for s, e in fugashi_spans(tagger, text)]
    zh = "我们在北京大学学习"
    assert surfaces(tok, zh, segmenter="fugashi") == [zh[s:e] for s, e in fugashi_spans(tagger, zh)]
    # none: the tokenizer's own words (a kana run is one WordPiece word, every Han character another)
    for t in (text, zh, "ภาษาไทย hello"):
        none = tokenize_with_word_ids(tok, [t], policy="segmenter", segmenter="none")["word_ids"][0]
        plain = tokenize_with_word_ids(tok, [t], policy="tokenizer")["word_ids"][0]
        np.testing.assert_array_equal(none, plain)
    # pythainlp alone leaves Han and kana to the tokenizer
    plain = tokenize_with_word_ids(tok, [text], policy="tokenizer")["word_ids"][0]
    thai_only = tokenize_with_word_ids(tok, [text], policy="segmenter", segmenter="pythainlp")["word_ids"][0]
    np.testing.assert_array_equal(thai_only, plain)


# --------------------------------------------------------------------------------------------------
# Thai
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_thai_follows_the_rule_and_never_splits_a_pythainlp_word(kind, th_tokenizers):
    tok = th_tokenizers[kind]
    texts = TH + builtin_sample_text("th")[:20]
    out = tokenize_with_word_ids(tok, texts, policy="segmenter")
    checked = 0
    for text, word_ids in zip(texts, out["word_ids"], strict=True):
        spans = thai_spans(text)
        segmented = segmented_ja(text)
        assert word_ids.tolist() == reference_word_ids(tok, text, spans, segmented), text
        offsets = tok(text, return_offsets_mapping=True)["offset_mapping"]
        checked += assert_no_word_split(text, spans, word_ids.tolist(), offsets, segmented)
    assert checked > 150


@pytest.mark.parametrize("kind", KINDS)
def test_thai_mixed_with_english(kind, th_tokenizers):
    # English keeps the tokenizer's words, Thai gets pythainlp's (the rule test above checks every Thai
    # word; here, where the English ones stand).
    tok = th_tokenizers[kind]
    assert surfaces(tok, "ฉันใช้ Python เขียนโปรแกรมทุกวัน")[:3] == ["ฉัน", "ใช้", "Python"]
    expected = ["Hello", "ภาษาไทย", ",", "stop", "-", "believing", "!"]
    if kind == "unigram":  # Metaspace words are whitespace words: punctuation stays in its English word
        expected = ["Hello", "ภาษาไทย", ",", "stop-believing!"]
    assert surfaces(tok, "Hello ภาษาไทย, stop-believing!") == expected


def test_a_token_across_a_segmenter_boundary_goes_with_its_first_character():
    """Byte-level BPE trained on text where 'ของเรา' (two pythainlp words: ของ | เรา) is frequent merges
    it with the end of 'บ้าน' into one token: the token is not split, it belongs to the word of its first
    character (บ้าน), and the next token starts a new word."""
    text = "บ้านของเราอยู่ใกล้ตลาด"
    tok = train_tokenizer(builtin_sample_text("th") + [text] * 30, "bpe", 1200)
    enc = tok(text, return_offsets_mapping=True)
    pieces = [text[s:e] for s, e in enc["offset_mapping"]]
    words = [text[s:e] for s, e in thai_spans(text)]
    assert words == ["บ้าน", "ของ", "เรา", "อยู่", "ใกล้", "ตลาด"]
    assert "านของเราอย" in pieces  # starts inside บ้าน, ends inside อยู่
    word_ids = tokenize_with_word_ids(tok, [text], policy="segmenter")["word_ids"][0].tolist()
    at = pieces.index("านของเราอย")
    assert word_ids[at] == word_ids[at - 1]  # with the rest of บ้าน
    assert word_ids[at + 1] == word_ids[at] + 1  # "ู่", the end of อยู่, is a word of its own
    assert pieces[at + 1] == "ู่"
    # A WordPiece tokenizer that learnt the whole line as one token makes it one word.
    wp = train_tokenizer(builtin_sample_text("th") + [text] * 30, "wordpiece", 1200, lowercase=False)
    assert tokenize_with_word_ids(wp, [text], policy="segmenter")["word_ids"][0].tolist() == [-1, 0, -1]


# --------------------------------------------------------------------------------------------------
# End to end: masked words are masked whole
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["ja", "th"])
@pytest.mark.parametrize("kind", KINDS)
def test_masked_segmenter_words_are_fully_masked(lang, kind, ja_tokenizers, th_tokenizers, tagger):
    tok = (ja_tokenizers if lang == "ja" else th_tokenizers)[kind]
    texts = (JA if lang == "ja" else TH) + builtin_sample_text(lang)
    enc = tokenize_with_word_ids(tok, texts, policy="segmenter", max_length=128, truncation=True)
    width = max(map(len, enc["input_ids"]))
    ids = np.full((len(texts), width), tok.pad_token_id, dtype=np.int64)
    wids = np.full((len(texts), width), -1, dtype=np.int64)
    for i, (row_ids, row_wids) in enumerate(zip(enc["input_ids"], enc["word_ids"], strict=True)):
        ids[i, : len(row_ids)], wids[i, : len(row_wids)] = row_ids, row_wids
    masker = WholeWordMasker.from_tokenizer(tok, MaskingConfig(mask_prob=0.3))
    whole = 0
    for epoch in range(3):
        masked = masker(ids, wids, np.arange(len(texts)), epoch).masked
        for i, text in enumerate(texts):
            offsets = tok(text, max_length=128, truncation=True, return_offsets_mapping=True)[
                "offset_mapping"
            ]
            spans = fugashi_spans(tagger, text) if lang == "ja" else thai_spans(text)
            segmented = segmented_ja(text)
            token_anchor = anchors(text, offsets)
            for s, e in spans:
                if not all(segmented(c) for c in range(s, e)):
                    continue
                tokens = [j for j, a in enumerate(token_anchor) if wids[i, j] >= 0 and s <= a < e]
                if tokens:
                    got = masked[i, tokens]
                    assert got.all() or not got.any(), (text[s:e], text)
                    whole += len(tokens) > 1 and got.all()
    assert whole > 10  # words of several tokens were masked, whole


# --------------------------------------------------------------------------------------------------
# Errors, configuration, samples, commands
# --------------------------------------------------------------------------------------------------


def test_missing_segmenters_name_the_extra(monkeypatch, bert_uncased_tokenizer):
    tok = bert_uncased_tokenizer
    monkeypatch.setitem(sys.modules, "fugashi", None)
    monkeypatch.setitem(sys.modules, "pythainlp.tokenize", None)
    with pytest.raises(WWMError, match=r'fugashi and unidic-lite.*pip install "wwm\[cjk\]"'):
        tokenize_with_word_ids(tok, ["私は猫です"], policy="segmenter")
    with pytest.raises(WWMError, match=r'pythainlp.*pip install "wwm\[cjk\]"'):
        tokenize_with_word_ids(tok, ["ภาษาไทย"], policy="segmenter")
    with pytest.raises(WWMError, match=r'pip install "wwm\[cjk\]"'):
        require_segmenter("fugashi")
    # Text that needs neither still works: they are imported only for kana and Thai.
    out = tokenize_with_word_ids(tok, ["我们在北京", "hello world"], policy="segmenter")
    assert out["word_ids"][0].tolist() == [-1, 0, 0, 1, 2, 2, -1]
    require_segmenter("auto")


def test_unknown_segmenter(bert_uncased_tokenizer):
    assert SEGMENTERS[:4] == ("auto", "jieba", "fugashi", "pythainlp") and SEGMENTERS[-1] == "none"
    with pytest.raises(WWMError, match=r"unknown segmenter 'mecab'.*'auto', 'jieba', 'fugashi'"):
        tokenize_with_word_ids(bert_uncased_tokenizer, ["私"], policy="segmenter", segmenter="mecab")


def test_segmenter_config(tmp_path):
    from wwm.config import TokenizerConfig, load_config

    assert TokenizerConfig(word_policy="segmenter", segmenter="fugashi").segmenter == "fugashi"
    assert TokenizerConfig(word_policy="cjk", segmenter="jieba").segmenter == "jieba"
    with pytest.raises(WWMError, match="applies only to word_policy 'segmenter'"):
        TokenizerConfig(word_policy="tokenizer", segmenter="fugashi")
    path = tmp_path / "run.yaml"
    path.write_text("tokenizer:\n  word_policy: segmenter\n  segmenter: mecab\n", encoding="utf-8")
    with pytest.raises(WWMError, match="segmenter"):
        load_config(path)


def test_japanese_config():
    from pathlib import Path

    from wwm.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "japanese-bert-wwm.yaml")
    # cl-tohoku's recipe: their tokenizer (MeCab words, then WordPiece), whole words its MeCab words
    assert config.tokenizer.word_policy == "tokenizer"
    assert config.tokenizer.train.kind == "bert-japanese" and config.tokenizer.train.lowercase is False
    assert config.data.hub_config.endswith(".ja")


def test_builtin_samples():
    for lang, script in (("ja", "kana"), ("th", "thai")):
        lines = builtin_sample_text(lang)
        assert len(lines) >= 40 and all(line == line.strip() and line for line in lines)
        joined = "".join(lines)
        if script == "kana":
            assert sum("\u3040" <= c <= "\u30ff" for c in joined) > 0.3 * len(joined)
        else:
            assert sum(map(is_thai, joined)) > 0.7 * len(joined)
        assert any(c.isascii() and c.isalpha() for c in joined) and any(c.isdigit() for c in joined)
    from wwm.data.builtin import builtin_documents

    assert builtin_documents("ja") == builtin_sample_text("ja")
    assert builtin_documents("th") == builtin_sample_text("th")


@pytest.mark.parametrize("lang", ["ja", "th"])
def test_inspect_builtin_sample(lang, capsys):
    from wwm_cli import main

    assert main(["inspect", "--lang", lang, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["policy"] == "segmenter" and stats["masked_words_fully_masked"] == 1.0
    assert stats["documents"] == len(builtin_sample_text(lang))
    assert main(["inspect", "--lang", lang, "--json", "--policy", "tokenizer"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["eligible_tokens"] == stats["eligible_tokens"]
    if lang == "th":  # the tokenizer's words are whole Thai phrases: pythainlp's are smaller
        assert stats["words"] > 1.5 * plain["words"]
    else:  # BERT makes every kanji a word and every kana run another; fugashi's words differ from both
        assert stats["words"] != plain["words"]


def test_train_tokenizer_ja_keeps_voicing_marks(tmp_path, capsys):
    from transformers import AutoTokenizer

    from wwm_cli import main

    out = tmp_path / "tok"
    assert main(["train-tokenizer", "--corpus", "builtin", "--lang", "ja", "--vocab-size", "1500",
                 "--out", str(out)]) == 0  # fmt: skip
    assert "trained a wordpiece tokenizer" in capsys.readouterr().out
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.tokenize("が") == ["が"]  # lowercasing strips accents and with them the voicing mark: か
    assert main(["train-tokenizer", "--corpus", "builtin", "--lang", "th", "--kind", "unigram",
                 "--vocab-size", "400", "--out", str(tmp_path / "th")]) == 0  # fmt: skip


# --------------------------------------------------------------------------------------------------
# wwm prepare: segmenter words in the stored blocks, also from num_proc worker processes
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["ja", "th"])
def test_prepare_builtin_with_segmenter_words(lang, tmp_path, ja_tokenizers, th_tokenizers):
    from wwm.config import DataConfig, RunConfig, TokenizerConfig
    from wwm.data import prepare_dataset
    from wwm.data.pipeline import cache_inputs

    tok = (ja_tokenizers if lang == "ja" else th_tokenizers)["wordpiece"]
    tok.save_pretrained(tmp_path / "tok")

    def config(num_proc, segmenter="auto"):
        return RunConfig(
            data=DataConfig(source="builtin", builtin_lang=lang, packing="doc_per_block", max_seq_len=256,
                            num_proc=num_proc, map_batch_size=8, cache_dir=str(tmp_path / f"cache{num_proc}")),
            tokenizer=TokenizerConfig(path=str(tmp_path / "tok"), word_policy="segmenter", segmenter=segmenter),
            output_dir=str(tmp_path / "out"),
        )  # fmt: skip

    docs = builtin_sample_text(lang)
    expected = tokenize_with_word_ids(tok, docs, policy="segmenter", add_special_tokens=False)
    for num_proc in (1, 2):  # 2: the documents are tokenized and segmented in two worker processes
        blocks = prepare_dataset(config(num_proc)).train.as_blocks()
        assert len(blocks) == len(docs)
        for i, wids in enumerate(expected["word_ids"]):
            np.testing.assert_array_equal(
                blocks.input_ids[i, 1 : blocks.lengths[i] - 1], expected["input_ids"][i]
            )
            np.testing.assert_array_equal(blocks.word_ids[i, 1 : blocks.lengths[i] - 1], wids)
    # The cache key holds the segmenter (and its packages' versions).
    forced = "fugashi" if lang == "ja" else "pythainlp"
    assert cache_inputs(config(1), tok)["segmenter"]["segmenter"] == "auto"
    assert cache_inputs(config(1), tok) != cache_inputs(config(1, forced), tok)


def test_prepare_fails_early_without_the_segmenter(monkeypatch, tmp_path):
    from wwm.config import DataConfig, RunConfig, TokenizerConfig, TokenizerTrainConfig
    from wwm.data import prepare_dataset

    monkeypatch.setitem(sys.modules, "fugashi", None)
    config = RunConfig(
        data=DataConfig(source="builtin", builtin_lang="ja", cache_dir=str(tmp_path / "cache")),
        tokenizer=TokenizerConfig(train=TokenizerTrainConfig(), word_policy="segmenter", segmenter="fugashi"),
        output_dir=str(tmp_path / "out"),
    )
    with pytest.raises(WWMError, match=r'pip install "wwm\[cjk\]"'):
        prepare_dataset(config)
    assert not (tmp_path / "out").exists()  # before any work: no tokenizer trained
