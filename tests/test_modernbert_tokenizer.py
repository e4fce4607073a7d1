"""`train_tokenizer(..., "modernbert")` and `wwm train-tokenizer --kind modernbert`: ModernBERT's conventions.

ModernBERT's own tokenizer (answerdotai/ModernBERT-base) is a byte-level BPE with an NFC normalizer, the
special tokens [UNK] [CLS] [SEP] [PAD] [MASK] (ids 50280..50284 there, 0..4 here), the template
``[CLS] $A [SEP]`` / ``[CLS] $A [SEP] $B:1 [SEP]:1``, "[MASK]" with lstrip, and no token_type_ids in its
model inputs. The generic round trip and determinism tests run it too (tests/test_words.py, via KINDS).
"""

from __future__ import annotations

import numpy as np
import pytest

from wwm.data.builtin import builtin_sample_text
from wwm.data.packing import SpecialIds
from wwm.tokenizer_train import train_tokenizer
from wwm.words import tokenize_with_word_ids


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(builtin_sample_text("en")[:300], "modernbert", 800)


def test_modernbert_tokenizer_special_tokens_and_template(tok):
    assert tok.convert_ids_to_tokens(range(5)) == ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    assert (tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.mask_token_id) == (
        0, 1, 2, 3, 4,
    )  # fmt: skip
    assert SpecialIds.from_tokenizer(tok) == SpecialIds(cls=1, sep=2, pad=3, mask=4, vocab_size=800)
    enc = tok("hello world", "second text")
    assert "token_type_ids" not in enc  # ModernBertForMaskedLM takes none
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and tokens[-1] == "[SEP]"
    types = tok("hello world", "second text", return_token_type_ids=True)["token_type_ids"]
    first_sep = tokens.index("[SEP]")
    assert set(types[: first_sep + 1]) == {0} and set(types[first_sep + 1 :]) == {1}


def test_modernbert_tokenizer_byte_level_nfc_and_mask_lstrip(tok):
    assert any(t.startswith("Ġ") for t in tok.tokenize("hello world"))
    assert tok("caf\u0065\u0301")["input_ids"] == tok("caf\u00e9")["input_ids"]  # NFC
    assert tok.tokenize("Hello") != tok.tokenize("hello")  # cased, as ModernBERT
    tokens = tok.convert_ids_to_tokens(tok("The answer is [MASK].")["input_ids"])
    assert tokens[-3:] == ["[MASK]", ".", "[SEP]"] and tokens[-4].startswith("Ġ") and tokens[-4] != "Ġ"
    assert tok.decode(tok("Whole words, ünïcode 😀")["input_ids"], skip_special_tokens=True) == (
        "Whole words, ünïcode 😀"
    )


@pytest.mark.parametrize("policy", ["tokenizer", "whitespace"])
def test_modernbert_tokenizer_gives_word_ids(tok, policy):
    out = tokenize_with_word_ids(tok, ["stop-believing now"], policy=policy)
    word_ids = np.asarray(out["word_ids"][0])
    assert word_ids[0] == -1 and word_ids[-1] == -1  # [CLS], [SEP]
    words = len(set(word_ids[word_ids >= 0].tolist()))
    assert words == (4 if policy == "tokenizer" else 2)


def test_train_tokenizer_command_modernbert(tmp_path, capsys):
    from transformers import AutoTokenizer

    from wwm_cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(builtin_sample_text("en")[:200]), encoding="utf-8")
    out = tmp_path / "tok"
    args = ["train-tokenizer", "--corpus", str(corpus), "--kind", "modernbert", "--vocab-size", "400"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "trained a modernbert tokenizer of 400 tokens" in printed and "mask=[MASK]" in printed
    loaded = AutoTokenizer.from_pretrained(str(out))
    assert (
        loaded.is_fast and len(loaded) == 400 and loaded.model_input_names == ["input_ids", "attention_mask"]
    )
    assert SpecialIds.from_tokenizer(loaded) == SpecialIds(cls=1, sep=2, pad=3, mask=4, vocab_size=400)
    assert loaded.convert_ids_to_tokens(loaded("a [MASK] b")["input_ids"])[2] == "[MASK]"
