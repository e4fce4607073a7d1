"""Lao, Khmer, Myanmar (Burmese), Tibetan and Vietnamese whole words (policy 'segmenter', docs/words.md):
each script's segmenter (laonlp, khmer-nltk, pyidaungsu, botok, pyvi) on its built-in sample, for
WordPiece and byte-level BPE tokenizers trained on it. The rule is checked token by token with the
reference of tests/test_words_ja_th.py. Test ids carry the language's English name (`pytest -k khmer`).

Tibetan: botok needs a dialect pack, which it downloads from GitHub on first use; the tests build a small
one (a few dozen words of the sample) and point WWM_BOTOK_DIALECT_PACK at it.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from test_words_ja_th import anchors, assert_no_word_split, reference_word_ids

from wwm.data.builtin import builtin_sample_text
from wwm.errors import WWMError
from wwm.masking import MaskingConfig, WholeWordMasker
from wwm.tokenizer_train import train_tokenizer
from wwm.words import (
    _SCRIPT_RANGES,
    BOTOK_PACK_ENV,
    _in_ranges,
    named_segmenter,
    require_segmenter,
    tokenize_with_word_ids,
)

# lang, English name, segmenter, its module, script of its words (None: every non-space character)
LANGS = {
    "lao": ("lo", "laonlp", "laonlp", "lao"),
    "khmer": ("km", "khmernltk", "khmernltk", "khmer"),
    "myanmar": ("my", "pyidaungsu", "pyidaungsu", "myanmar"),
    "tibetan": ("bo", "botok", "botok", "tibetan"),
    "vietnamese": ("vi", "pyvi", "pyvi", None),
}
NAMES = list(LANGS)
# Mixed with English: a sentence of each, and the English words the tokenizer keeps.
MIXED = {
    "lao": "ຂ້ອຍຂຽນໂປຣແກຣມດ້ວຍ Python, stop-believing!",
    "khmer": "ខ្ញុំសរសេរកម្មវិធីដោយប្រើ Python, stop-believing!",
    "myanmar": "ကျွန်တော် Python နဲ့ ပရိုဂရမ် ရေးတယ်, stop-believing!",
    "tibetan": "ངས་ Python ཡིས་མཉེན་ཆས་འབྲི, stop-believing!",
    "vietnamese": "Tôi viết chương trình bằng Python, stop-believing!",
}
# Tibetan words of the test dialect pack (botok's own pack is downloaded, which tests may not do).
TIBETAN_WORDS = """ཞོགས་པ ལྷ་ས ཁྲོམ་ར ཆུ་ཚོད ཁ་ཕྱེ མི་མང་པོ ཡོད ལམ་ཁ བོད་ཇ བག་ལེབ འཚོང་མཁན སྡོད དཀར་ཡོལ
གཅིག སྒོར ང་ཚོ ཚོགས་པ ཟླ་བ གསུམ་པ ལས་ཁུངས གསར་པ སྤོས ཆེ་བ ཚོགས་ཁང ཆེན་པོ མཉེན་ཆས འབྲི བེད་སྤྱོད
བོད་ཡིག ཚིག བར་སྟོང མེད དཀའ་ལས་ཁག་པོ སྐད་ཡིག དཔེ་དབྱིབས སྦྱོང་བརྡར ཕྲལ དགོས ཕྱི་དྲོ སྐྱིད་ཆུ འགྲམ
ཉི་མ ནུབ ལྟ པོ་ཏ་ལ མཚན་མོ གློག་འོད མཛེས་པོ ཨ་ཕྱི གྲོང་ཁྱེར སྤྱི་ལེ རིང གྲོང་གསེབ ཆུང་ཆུང བཞུགས
ན་ནིང དབྱར་ཁ ཕ་ཡུལ ལོག རྔ་བ རོགས་རམ དགོང་དྲོ ཁ་ལག ཁྱིམ་ཚང ཡོངས་རྫོགས མཉམ་དུ གཏམ་གླེང སློབ་ཆེན
དཔེ་མཛོད་ཁང སློབ་མ རྒྱུགས་ལེན དཔེ་ཆ ཀློག སྲིང་མོ གློག་ཀླད ཚན་རིག ལོ་རིམ སློབ་སྦྱོང""".split()


@pytest.fixture(scope="module")
def tibetan_pack(tmp_path_factory):
    """A botok dialect pack with the words above, WWM_BOTOK_DIALECT_PACK pointing at it."""
    pytest.importorskip("botok")
    import botok

    pack = tmp_path_factory.mktemp("botok") / "general"
    for folder in ("dictionary/words", "dictionary/rules", "dictionary/words_non_inflected",
                   "adjustments/words", "adjustments/rules"):  # fmt: skip
        (pack / folder).mkdir(parents=True)
    (pack / "dictionary" / "words" / "words.tsv").write_text(
        "\n".join(TIBETAN_WORDS) + "\n", encoding="utf-8"
    )
    particles = os.path.join(os.path.dirname(botok.__file__), "resources", "particles.tsv")
    (pack / "dictionary" / "words_non_inflected" / "particles.tsv").write_bytes(open(particles, "rb").read())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(BOTOK_PACK_ENV, str(pack))
        yield str(pack)


@pytest.fixture(scope="module", params=NAMES)
def language(request, tibetan_pack):
    """(English name, lang code, segmenter name, segment function, tokenizers) of one language."""
    name = request.param
    lang, segmenter, module, _script = LANGS[name]
    pytest.importorskip(module)
    segment = named_segmenter(segmenter)
    texts = [*builtin_sample_text(lang), MIXED[name]]
    toks = {kind: train_tokenizer(texts, kind, 1200, lowercase=False) for kind in ("wordpiece", "bpe")}
    return name, lang, segmenter, segment, toks


def script_spans(name, segment, text):
    """The segmenter's words of each run of the language's script (as wwm runs it: Vietnamese whole)."""
    if LANGS[name][3] is None:
        return segment(text)
    inside = segmented_in(name, text)
    spans, i = [], 0
    while i < len(text):
        if not inside(i):
            i += 1
            continue
        j = i
        while j < len(text) and inside(j):
            j += 1
        spans += [(i + s, i + e) for s, e in segment(text[i:j])]
        i = j
    return spans


def segmented_in(name, text):
    script = LANGS[name][3]
    mask = (
        np.array([not c.isspace() for c in text], dtype=bool)
        if script is None
        else _in_ranges(np.array([ord(c) for c in text], dtype=np.uint32), _SCRIPT_RANGES[script])
    )
    return lambda a: a < len(text) and bool(mask[a])


def test_segmenters_follow_the_rule_and_never_split_a_word(language):
    name, lang, segmenter, segment, toks = language
    texts = [*builtin_sample_text(lang)[:15], MIXED[name]]
    checked = 0
    for kind, tok in toks.items():
        out = tokenize_with_word_ids(tok, texts, policy="segmenter", segmenter=segmenter)
        for text, word_ids in zip(texts, out["word_ids"], strict=True):
            spans = script_spans(name, segment, text)
            segmented = segmented_in(name, text)
            assert word_ids.tolist() == reference_word_ids(tok, text, spans, segmented), (kind, text)
            offsets = tok(text, return_offsets_mapping=True)["offset_mapping"]
            checked += assert_no_word_split(text, spans, word_ids.tolist(), offsets, segmented)
    assert checked > 100
    if name != "vietnamese":  # auto picks the script's segmenter: the same words
        auto = tokenize_with_word_ids(toks["wordpiece"], texts, policy="segmenter")
        named = tokenize_with_word_ids(toks["wordpiece"], texts, policy="segmenter", segmenter=segmenter)
        for a, b in zip(auto["word_ids"], named["word_ids"], strict=True):
            np.testing.assert_array_equal(a, b)


def test_segmenters_mixed_with_english(language):
    name, _lang, segmenter, _segment, toks = language
    text = MIXED[name]
    tok = toks["wordpiece"]
    out = tokenize_with_word_ids(tok, [text], policy="segmenter", segmenter=segmenter)
    offsets = tok(text, return_offsets_mapping=True)["offset_mapping"]
    words: dict[int, list[int]] = {}
    for w, (s, e) in zip(out["word_ids"][0].tolist(), offsets, strict=True):
        if w >= 0:
            span = words.setdefault(w, [s, e])
            span[1] = e
    surfaces = [text[s:e] for s, e in words.values()]
    # English keeps BERT's words (except under pyvi, which decides every character of a Vietnamese text)
    tail = ["!"] if name == "vietnamese" else ["stop", "-", "believing", "!"]
    assert surfaces[-len(tail) :] == tail
    assert "Python" in surfaces


def test_vietnamese_is_opt_in_and_joins_syllables(language):
    name, _lang, _segmenter, _segment, toks = language
    if name != "vietnamese":
        pytest.skip("Vietnamese only")
    tok = toks["wordpiece"]
    text = "Hà Nội là thủ đô của Việt Nam"
    auto = tokenize_with_word_ids(tok, [text], policy="segmenter")["word_ids"][0]
    plain = tokenize_with_word_ids(tok, [text], policy="tokenizer")["word_ids"][0]
    np.testing.assert_array_equal(auto, plain)  # auto leaves text with spaces to the tokenizer
    words = tokenize_with_word_ids(tok, [text], policy="segmenter", segmenter="pyvi")["word_ids"][0]
    assert len(set(words.tolist()) - {-1}) == 5  # Hà Nội | là | thủ đô | của | Việt Nam


def test_segmenter_words_are_masked_whole(language):
    name, lang, segmenter, segment, toks = language
    tok = toks["bpe"]
    texts = builtin_sample_text(lang)
    enc = tokenize_with_word_ids(
        tok, texts, policy="segmenter", segmenter=segmenter, max_length=128, truncation=True
    )
    width = max(map(len, enc["input_ids"]))
    ids = np.full((len(texts), width), tok.pad_token_id, dtype=np.int64)
    wids = np.full((len(texts), width), -1, dtype=np.int64)
    for i, (row_ids, row_wids) in enumerate(zip(enc["input_ids"], enc["word_ids"], strict=True)):
        ids[i, : len(row_ids)], wids[i, : len(row_wids)] = row_ids, row_wids
    masked = WholeWordMasker.from_tokenizer(tok, MaskingConfig(mask_prob=0.3))(
        ids, wids, np.arange(len(texts)), 0
    ).masked
    whole = 0
    for i, text in enumerate(texts):
        offsets = tok(text, max_length=128, truncation=True, return_offsets_mapping=True)["offset_mapping"]
        token_anchor = anchors(text, offsets)
        segmented = segmented_in(name, text)
        for s, e in script_spans(name, segment, text):
            if not all(segmented(c) for c in range(s, e) if not text[c].isspace()):
                continue
            tokens = [j for j, a in enumerate(token_anchor) if wids[i, j] >= 0 and s <= a < e]
            if tokens:
                got = masked[i, tokens]
                assert got.all() or not got.any(), (text[s:e], text)
                whole += len(tokens) > 1 and got.all()
    assert whole > 5


def test_segmenters_pre_segmented_tokens_never_straddle(language):
    name, lang, segmenter, segment, _toks = language
    texts = builtin_sample_text(lang)[:10]
    pre = train_tokenizer(builtin_sample_text(lang), "bpe", 1200, pre_segment=segmenter)
    out = tokenize_with_word_ids(
        pre, texts, policy="segmenter", segmenter=segmenter, pre_segment=True, return_offsets_mapping=True
    )
    for text, offsets in zip(texts, out["offset_mapping"], strict=True):
        segmented = segmented_in(name, text)
        spans = script_spans(name, segment, text)
        bounds = {b for s, e in spans for b in (s, e) if segmented(b) or segmented(b - 1)}
        assert not [
            o
            for a, o in zip(anchors(text, offsets), offsets, strict=True)
            if any(a < b < o[1] for b in bounds)
        ]


@pytest.mark.parametrize("name", NAMES)
def test_missing_segmenter_package_names_the_extra(name, monkeypatch):
    lang, segmenter, module, _ = LANGS[name]
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, f"{module}.ViTokenizer", None)
    with pytest.raises(WWMError, match=rf'pip install "wwm\[{lang}\]"') as err:
        require_segmenter(segmenter)
    assert "\n" not in str(err.value)


def test_tibetan_without_a_dialect_pack_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("botok")
    monkeypatch.setenv(BOTOK_PACK_ENV, str(tmp_path / "nothing"))
    with pytest.raises(WWMError, match=r"dialect pack.*GitHub.*WWM_BOTOK_DIALECT_PACK") as err:
        named_segmenter("botok")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_inspect_builtin_samples_of_more_scripts(name, tibetan_pack, capsys):
    from wwm_cli import main

    lang, _segmenter, module, _ = LANGS[name]
    pytest.importorskip(module)
    assert main(["inspect", "--lang", lang, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["policy"] == "segmenter" and stats["masked_words_fully_masked"] == 1.0
    assert stats["documents"] == len(builtin_sample_text(lang))
    assert main(["inspect", "--lang", lang, "--json", "--policy", "tokenizer"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["eligible_tokens"] == stats["eligible_tokens"]
    # BERT's words differ: whole phrases between spaces (Lao, Khmer, Myanmar), every syllable (Tibetan's
    # tsheg is punctuation to BERT), every syllable (Vietnamese)
    assert stats["words"] != plain["words"]
    if name in ("lao", "khmer"):
        assert stats["words"] > 1.3 * plain["words"]
    if name in ("tibetan", "vietnamese"):
        assert stats["words"] < plain["words"]


@pytest.mark.parametrize("name", NAMES)
def test_builtin_samples_of_more_scripts(name):
    lang, *_ = LANGS[name]
    lines = builtin_sample_text(lang)
    assert len(lines) >= 40 and all(line == line.strip() and line for line in lines)
    joined = "".join(lines)
    assert any(c.isascii() and c.isalpha() for c in joined) and any(c.isdigit() for c in joined)
    if LANGS[name][3] is not None:
        segmented = segmented_in(name, joined)
        assert sum(map(segmented, range(len(joined)))) > 0.6 * len(joined)
