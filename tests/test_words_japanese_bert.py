"""Japanese BERT tokenizers (docs/words.md, "Word-structured tokenizers"): transformers'
BertJapaneseTokenizer, built offline from a vocabulary the test writes (MeCab + unidic-lite; Sudachi where
sudachipy is installed), gives its own words: our tokens equal its `tokenize()`, our words its MeCab words,
in tokenize_with_word_ids, the collator, `wwm prepare` and `wwm inspect`. And pre-segmentation for fast
tokenizers: no token straddles a segmenter word, offsets point into the original text.
"""

from __future__ import annotations

import json
import re
from itertools import pairwise

import numpy as np
import pytest

from wwm.data.builtin import builtin_sample_text
from wwm.errors import WWMError
from wwm.tokenizer_train import train_tokenizer
from wwm.words import begin_of_word_table, is_word_structured, pre_segment_pieces, tokenize_with_word_ids

pytest.importorskip("fugashi")
pytest.importorskip("unidic_lite")

JA = [
    "東京の空はいつもより青く見えた。",
    "来週の会議では Python と Rust の比較について話す予定です。",
    "彼女はなのかもしれないと小さな声でつぶやいた。",
    "GPU を 8 枚使えば、学習は 3 日ほどで終わるでしょう。[MASK] を当てる。",
    "ｶﾀｶﾅ と全角ＡＢＣ は NFKC で正規化される。",
    "",
]


@pytest.fixture(scope="module")
def mecab_tokenizer(tmp_path_factory):
    """A BertJapaneseTokenizer (MeCab + unidic-lite, WordPiece) from a vocabulary written here: the
    WordPiece vocabulary of `train_tokenizer(kind="bert-japanese")`, saved and loaded back as a user's."""
    from transformers import AutoTokenizer, BertJapaneseTokenizer

    tok = train_tokenizer(builtin_sample_text("ja") + JA, "bert-japanese", 1500)
    assert isinstance(tok, BertJapaneseTokenizer) and tok.word_tokenizer_type == "mecab"
    path = tmp_path_factory.mktemp("bert-japanese")
    tok.save_pretrained(path)
    vocab = (path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    built = BertJapaneseTokenizer(
        str(path / "vocab.txt"), word_tokenizer_type="mecab", mecab_kwargs={"mecab_dic": "unidic_lite"}
    )
    assert built.get_vocab() == {t: i for i, t in enumerate(vocab)}
    loaded = AutoTokenizer.from_pretrained(path)
    assert type(loaded).__name__ == "BertJapaneseTokenizer"
    return loaded, path


def mecab_words(tok, text):
    """The MeCab words (NFKC, as BertJapaneseTokenizer's MeCab tokenizer) and their WordPiece tokens."""
    return [tok.subword_tokenizer.tokenize(w) for w in tok.word_tokenizer.tokenize(text)]


def groups(tokens, word_ids):
    out: dict[int, list[str]] = {}
    for t, w in zip(tokens, word_ids, strict=True):
        if w >= 0:
            out.setdefault(int(w), []).append(t)
    return list(out.values())


def test_japanese_bert_tokens_and_mecab_words(mecab_tokenizer):
    tok, _ = mecab_tokenizer
    texts = JA + builtin_sample_text("ja")[:20]
    out = tokenize_with_word_ids(tok, texts)
    assert is_word_structured(tok)
    for text, ids, wids in zip(texts, out["input_ids"], out["word_ids"], strict=True):
        assert ids == tok(text)["input_ids"], text  # the tokenizer's own tokens and special tokens
        tokens = tok.convert_ids_to_tokens(ids)
        assert tokens[1:-1] == tok.tokenize(text)
        expected = [g for g in mecab_words(tok, text.replace("[MASK]", "")) if g]
        got = [g for g in groups(tokens, wids)]
        assert got == expected, text  # [MASK] is special (-1): the words around it are MeCab's
    # policy segmenter gives the same words (the tokenizer's words are segmenter words), vocab too ("##")
    for policy in ("segmenter", "vocab"):
        other = tokenize_with_word_ids(tok, texts, policy=policy)
        for a, b in zip(out["word_ids"], other["word_ids"], strict=True):
            np.testing.assert_array_equal(a, b)


def test_japanese_bert_pairs_truncation_padding(mecab_tokenizer):
    tok, _ = mecab_tokenizer
    first, second = [JA[0], JA[2]], [JA[1], "はい"]
    out = tokenize_with_word_ids(tok, first, text_pairs=second, max_length=20, truncation=True, padding=True)
    for row, (a, b) in enumerate(zip(first, second, strict=True)):
        expected = tok(a, b, max_length=20, truncation=True)
        n = len(expected["input_ids"])
        assert out["input_ids"][row][:n] == expected["input_ids"]
        assert out["attention_mask"][row][:n] == [1] * n and set(out["attention_mask"][row][n:]) <= {0}
        wids = out["word_ids"][row]
        seps = [i for i, t in enumerate(expected["input_ids"]) if t == tok.sep_token_id]
        assert wids[1 : seps[0]].max() < wids[seps[0] + 1 : seps[1]].min()  # the pair's words come after
        assert (wids[n:] == -1).all()


def test_japanese_bert_collator_and_vocab_table(mecab_tokenizer):
    """The collator computes the same words from token ids alone ("##" marks), so masks are keyed and
    whole either way."""
    from wwm.masking import MaskingConfig
    from wwm_torch.collator import WholeWordMaskingCollator

    tok, _ = mecab_tokenizer
    texts = builtin_sample_text("ja")[:16]
    enc = tokenize_with_word_ids(tok, texts)
    table = begin_of_word_table(tok)
    assert table.shape == (len(tok),) and not table[tok.convert_tokens_to_ids("##の")]
    collator = WholeWordMaskingCollator(tok, MaskingConfig(mask_prob=0.3), return_tensors="np")
    collator.set_epoch(1)
    plain = [{"input_ids": tok(t)["input_ids"], "example_id": i} for i, t in enumerate(texts)]
    with_words = [dict(f, word_ids=w.tolist()) for f, w in zip(plain, enc["word_ids"], strict=True)]
    a, b = collator(plain), collator(with_words)
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    np.testing.assert_array_equal(a["labels"], b["labels"])
    assert (a["labels"] != -100).sum() > 20


def test_japanese_bert_character_subwords_need_word_ids(tmp_path, mecab_tokenizer):
    from transformers import BertJapaneseTokenizer

    _, path = mecab_tokenizer
    chars = BertJapaneseTokenizer(
        str(path / "vocab.txt"), word_tokenizer_type="mecab", subword_tokenizer_type="character",
        mecab_kwargs={"mecab_dic": "unidic_lite"},
    )  # fmt: skip
    text = JA[0]
    out = tokenize_with_word_ids(chars, [text])
    tokens = chars.convert_ids_to_tokens(out["input_ids"][0])
    assert tokens[1:-1] == chars.tokenize(text)
    assert [len(g) for g in groups(tokens, out["word_ids"][0])] == [
        len(w) for w in chars.word_tokenizer.tokenize(text)
    ]
    with pytest.raises(WWMError, match=r"cannot tell word starts.*'character'.*tokenize_with_word_ids"):
        tokenize_with_word_ids(chars, [text], policy="vocab")
    with pytest.raises(WWMError, match="offsets, which the slow BertJapaneseTokenizer"):
        tokenize_with_word_ids(chars, [text], policy="whitespace")


def test_japanese_bert_sudachi_words():
    pytest.importorskip("sudachipy")
    pytest.importorskip("sudachidict_core")
    from transformers import BertJapaneseTokenizer

    tok = train_tokenizer(builtin_sample_text("ja"), "bert-japanese", 1200)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        sudachi = BertJapaneseTokenizer(
            f"{tmp}/vocab.txt", word_tokenizer_type="sudachi", sudachi_kwargs={"sudachi_split_mode": "C"}
        )
    texts = builtin_sample_text("ja")[:10]
    out = tokenize_with_word_ids(sudachi, texts)
    for text, ids, wids in zip(texts, out["input_ids"], out["word_ids"], strict=True):
        assert ids == sudachi(text)["input_ids"]
        tokens = sudachi.convert_ids_to_tokens(ids)
        assert groups(tokens, wids) == [g for g in mecab_words(sudachi, text) if g]


def test_japanese_bert_prepare_and_inspect(mecab_tokenizer, tmp_path, capsys):
    from wwm.config import DataConfig, RunConfig, TokenizerConfig
    from wwm.data import prepare_dataset
    from wwm_cli import main

    tok, path = mecab_tokenizer
    config = RunConfig(
        data=DataConfig(source="builtin", builtin_lang="ja", packing="doc_per_block", max_seq_len=128,
                        cache_dir=str(tmp_path / "cache")),
        tokenizer=TokenizerConfig(path=str(path), word_policy="tokenizer"),
        output_dir=str(tmp_path / "out"),
    )  # fmt: skip
    prepared = prepare_dataset(config)
    blocks = prepared.train.as_blocks()
    docs = builtin_sample_text("ja")
    expected = tokenize_with_word_ids(tok, docs, add_special_tokens=False, max_length=126, truncation=True)
    for i in range(3):
        n = blocks.lengths[i]
        np.testing.assert_array_equal(blocks.input_ids[i, 1 : n - 1], expected["input_ids"][i])
        np.testing.assert_array_equal(blocks.word_ids[i, 1 : n - 1], expected["word_ids"][i])
    assert main(["inspect", "--lang", "ja", "--tokenizer", str(path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["masked_words_fully_masked"] == 1.0 and stats["words"] > 500


# --------------------------------------------------------------------------------------------------
# Pre-segmentation (fast tokenizers)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pre_segmented_tokenizers():
    texts = builtin_sample_text("ja") + JA
    return {kind: train_tokenizer(texts, kind, 1500, lowercase=False, pre_segment="auto")
            for kind in ("wordpiece", "bpe", "unigram")}  # fmt: skip


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_japanese_pre_segment_no_token_straddles_a_word(kind, pre_segmented_tokenizers):
    import fugashi
    import unidic_lite
    from test_words_ja_th import anchors, fugashi_spans

    tagger = fugashi.Tagger(f'-d "{unidic_lite.DICDIR}" -r "{unidic_lite.DICDIR}/mecabrc"')
    tok = pre_segmented_tokenizers[kind]
    texts = [t for t in JA if t] + builtin_sample_text("ja")[:20]
    out = tokenize_with_word_ids(
        tok, texts, policy="segmenter", pre_segment=True, return_offsets_mapping=True
    )
    straddling = 0
    for text, offsets, wids in zip(texts, out["offset_mapping"], out["word_ids"], strict=True):
        bounds = {b for s, e in fugashi_spans(tagger, text) for b in (s, e)}
        straddling += sum(
            any(a < b < e for b in bounds) for a, (_s, e) in zip(anchors(text, offsets), offsets, strict=True)
        )
        # offsets point into the text, in order
        assert all(0 <= a <= b <= len(text) for a, b in offsets)
        starts = [a for a, b in offsets if b > a]
        assert starts == sorted(starts)
        spans = fugashi_spans(tagger, text)
        for s, e in spans:  # every MeCab word is exactly the tokens anchored in it: one word id
            inside = {
                int(w) for w, (a, b) in zip(wids, offsets, strict=True) if w >= 0 and b > a and s <= a < e
            }
            assert len(inside) <= 1, (text[s:e], text)
    assert straddling == 0
    # negative control: a tokenizer trained and used without pre-segmentation has straddling tokens
    plain_tok = train_tokenizer(builtin_sample_text("ja") + JA, kind, 1500, lowercase=False)
    plain = tokenize_with_word_ids(plain_tok, texts, return_offsets_mapping=True)
    assert (
        sum(
            any(a < b < e for b in {b for s2, e2 in fugashi_spans(tagger, t) for b in (s2, e2)})
            for t, offs in zip(texts, plain["offset_mapping"], strict=True)
            for a, (_s, e) in zip(anchors(t, offs), offs, strict=True)
        )
        > 0
    )


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_pre_segment_leaves_unsegmented_text_alone(kind, pre_segmented_tokenizers):
    tok = pre_segmented_tokenizers[kind]
    texts = ["Hello, world! stop-believing  twice", "", "   "]
    for policy in ("tokenizer", "whitespace", "segmenter"):
        a = tokenize_with_word_ids(tok, texts, policy=policy, pre_segment=True, return_offsets_mapping=True)
        b = tokenize_with_word_ids(tok, texts, policy=policy, return_offsets_mapping=True)
        assert a["input_ids"] == b["input_ids"] and a["offset_mapping"] == b["offset_mapping"]
        for x, y in zip(a["word_ids"], b["word_ids"], strict=True):
            np.testing.assert_array_equal(x, y)


def test_pre_segment_pieces_spacing_and_pairs(pre_segmented_tokenizers):
    assert pre_segment_pieces(["我用 Python 写代码，iPhone手机", "東京の空は 青い"]) == [
        ["我用", " Python", " 写", "代码", "，iPhone", "手机"],
        ["東京", "の", "空", "は", " 青い"],
    ]
    tok = pre_segmented_tokenizers["bpe"]
    out = tokenize_with_word_ids(
        tok, ["東京の空", "x"], text_pairs=["青い海です", "y"], pre_segment=True, policy="segmenter",
        max_length=8, truncation=True, padding="max_length", return_offsets_mapping=True,
    )  # fmt: skip
    assert [len(r) for r in out["input_ids"]] == [8, 8]
    tokens = tok.convert_ids_to_tokens(out["input_ids"][0])
    assert tokens[0] == "<s>" and tokens.count("</s>") == 3
    wids = out["word_ids"][0]
    assert (wids[np.array(out["special_tokens_mask"][0]) == 1] == -1).all()
    second = [i for i, t in enumerate(tokens) if t == "</s>"][1] + 1
    assert wids[1:second].max() < wids[second:][wids[second:] >= 0].min()
    assert out["offset_mapping"][1][-1] == (0, 0)  # a pad


def test_pre_segment_config_and_training(tmp_path):
    from wwm.config import DataConfig, RunConfig, TokenizerConfig, TokenizerTrainConfig
    from wwm.data import prepare_dataset
    from wwm.data.pipeline import cache_inputs

    with pytest.raises(WWMError, match=r"pre_segment.*segmenter is 'none'"):
        TokenizerConfig(train=TokenizerTrainConfig(), pre_segment=True, segmenter="none")

    def config(pre_segment):
        return RunConfig(
            data=DataConfig(source="builtin", builtin_lang="ja", packing="doc_per_block", max_seq_len=256,
                            cache_dir=str(tmp_path / "cache")),
            tokenizer=TokenizerConfig(train=TokenizerTrainConfig(kind="bpe", vocab_size=1000),
                                      word_policy="segmenter", pre_segment=pre_segment),
            output_dir=str(tmp_path / f"out{pre_segment}"),
        )  # fmt: skip

    prepared = prepare_dataset(config(True))
    blocks = prepared.train.as_blocks()
    docs = builtin_sample_text("ja")
    expected = tokenize_with_word_ids(prepared.tokenizer, docs, policy="segmenter", pre_segment=True,
                                      add_special_tokens=False)  # fmt: skip
    for i in range(3):
        n = blocks.lengths[i]
        np.testing.assert_array_equal(blocks.input_ids[i, 1 : n - 1], expected["input_ids"][i])
        np.testing.assert_array_equal(blocks.word_ids[i, 1 : n - 1], expected["word_ids"][i])
    assert cache_inputs(config(True), prepared.tokenizer)["pre_segment"] is True
    assert "pre_segment" not in cache_inputs(config(False), prepared.tokenizer)


def reference_pieces(text, spans, segmented):
    """docs/words.md, "Pre-segmentation", literally: cut between two characters of different segmenter
    words (a character no span covers is a word of its own) of which either is segmented; a cut right
    after whitespace moves back to the start of that whitespace."""
    word = {}
    for k, (s, e) in enumerate(spans):
        for c in range(s, e):
            word[c] = k
    cuts = []
    for p in range(1, len(text)):
        if (segmented(p - 1) or segmented(p)) and word.get(p - 1, ("own", p - 1)) != word.get(p, ("own", p)):
            q = p
            while q > 0 and text[q - 1].isspace():
                q -= 1
            if q > 0 and q not in cuts:
                cuts.append(q)
    bounds = [0, *sorted(cuts), len(text)]
    return [text[a:b] for a, b in pairwise(bounds) if b > a]


def test_pre_segment_pieces_equal_the_reference(tagger_spans):
    from wwm.words import cjk_char_mask

    texts = [t for t in JA if t] + builtin_sample_text("ja") + builtin_sample_text("zh")[:20]
    texts += ["我用 Python 写代码，iPhone手机", "  東京  の空 ", "T恤 和 iPhone手机"]
    got = pre_segment_pieces(texts, "auto")
    for text, pieces in zip(texts, got, strict=True):
        cjk = cjk_char_mask(text)
        spans = tagger_spans(text)
        assert pieces == reference_pieces(text, spans, lambda c, cjk=cjk: bool(cjk[c])), text
        assert "".join(pieces) == text


@pytest.fixture(scope="module")
def tagger_spans():
    """auto's words of a text (Japanese document: fugashi whole; Chinese: jieba), from the packages."""
    import fugashi
    import jieba
    import unidic_lite
    from test_words_ja_th import fugashi_spans

    from wwm.words import document_is_japanese

    tagger = fugashi.Tagger(f'-d "{unidic_lite.DICDIR}" -r "{unidic_lite.DICDIR}/mecabrc"')

    def spans(text):
        kana = sum(
            "\u3040" <= c <= "\u309f" or "\u30a1" <= c <= "\u30fa" or "\u30fc" <= c <= "\u30ff" for c in text
        )
        han = sum("\u4e00" <= c <= "\u9fff" for c in text)
        if document_is_japanese(kana, kana + han):  # fugashi, one sentence at a time
            bounds = sorted({0, len(text), *(m.end() for m in re.finditer(r"[。．｡！？!?\n]+", text))})
            return [(a + s, a + e) for a, b in pairwise(bounds) for s, e in fugashi_spans(tagger, text[a:b])]
        assert not kana
        return [(s, e) for _w, s, e in jieba.tokenize(text)]

    return spans


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_pre_segment_property_well_formed_and_batch_free(kind, pre_segmented_tokenizers):
    """Random mixes of Han, kana, Thai, Latin, digits and spaces: ids are the tokenizer's own for each
    piece, word ids well formed, offsets inside the text, and a batch gives what each text gives alone."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    tok = pre_segmented_tokenizers[kind]
    alphabet = st.sampled_from(
        [*"ab Z0 ,.-", "中", "文", "学", "な", "カ", "ー", "。", "ก", "่", "า", "  ", "\n"]
    )

    @given(texts=st.lists(st.lists(alphabet, max_size=20).map("".join), min_size=1, max_size=3))
    @settings(max_examples=10, deadline=None, derandomize=True)
    def check(texts):
        out = tokenize_with_word_ids(tok, texts, policy="segmenter", pre_segment=True, padding=True,
                                     return_offsets_mapping=True)  # fmt: skip
        for row, text in enumerate(texts):
            wids = out["word_ids"][row]
            special = np.array(out["special_tokens_mask"][row]) == 1
            pad = np.array(out["attention_mask"][row]) == 0
            assert np.array_equal(wids < 0, special | pad)
            ids = wids[wids >= 0]
            if len(ids):
                assert ids[0] == 0 and set(np.diff(ids).tolist()) <= {0, 1}
            assert all(0 <= a <= b <= len(text) for a, b in out["offset_mapping"][row])
            alone = tokenize_with_word_ids(tok, [text], policy="segmenter", pre_segment=True)
            n = len(alone["input_ids"][0])
            assert out["input_ids"][row][:n] == alone["input_ids"][0]
            np.testing.assert_array_equal(wids[:n], alone["word_ids"][0])

    check()


def test_pre_segmented_tokenizer_used_without_pre_segment_warns(pre_segmented_tokenizers, tmp_path):
    from wwm.config import DataConfig, RunConfig, TokenizerConfig
    from wwm.data import prepare_dataset
    from wwm.errors import WWMWarning

    path = tmp_path / "tok"
    pre_segmented_tokenizers["bpe"].save_pretrained(path)
    (path / "wwm_pre_segment.json").write_text('{"segmenter": "auto"}\n', encoding="utf-8")

    def config(pre_segment):
        return RunConfig(
            data=DataConfig(
                source="builtin", builtin_lang="ja", max_seq_len=64, cache_dir=str(tmp_path / "c")
            ),
            tokenizer=TokenizerConfig(path=str(path), word_policy="segmenter", pre_segment=pre_segment),
            output_dir=str(tmp_path / "out"),
        )

    with pytest.warns(WWMWarning, match=r"trained on text cut at segmenter words.*pre_segment is false"):
        prepare_dataset(config(False))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", WWMWarning)
        prepare_dataset(config(True))


def test_straddle_measurement(pre_segmented_tokenizers):
    """The figure behind docs/words.md's table: straddling tokens counted on known cases."""
    from wwm_cli.bench.data import straddle_stats

    texts = builtin_sample_text("ja")[:20]
    plain = train_tokenizer(builtin_sample_text("ja") + JA, "bpe", 1500)
    raw = straddle_stats(plain, texts, "auto", pre_segment=False)
    pre = straddle_stats(pre_segmented_tokenizers["bpe"], texts, "auto", pre_segment=True)
    assert raw["straddling_tokens"] > 0 and raw["words_not_maskable_alone"] > 0
    assert pre["straddling_tokens"] == 0 and pre["words_not_maskable_alone"] == 0
    assert pre["segmenter_words"] == raw["segmenter_words"] > 300


@pytest.mark.slow
def test_bench_data_lang_reports_each_variant(capsys):
    from wwm_cli import main

    assert main(["bench", "data", "--lang", "ja", "--documents", "40", "--repeats", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["word_ids"]) == {"tokenizer", "segmenter", "pre_segment"}
    assert {(r["variant"], r["num_proc"]) for r in report["prepare"]} == {
        (v, n) for v in ("tokenizer", "segmenter", "pre_segment") for n in (1, 2)
    }
    assert all(r["vs_tokenizer"] > 0 for r in report["prepare"])
