"""End to end: real text -> each tokenizer family and word policy -> masker -> no word partly masked."""

from __future__ import annotations

import numpy as np
import pytest

from wwm.data.builtin import builtin_sample_text
from wwm.masking import MaskingConfig, WholeWordMasker
from wwm.words import tokenize_with_word_ids

FAMILIES = ("wordpiece_tokenizer", "bpe_tokenizer", "unigram_tokenizer", "bert_uncased_tokenizer")


def _pad(rows, value):
    L = max(len(r) for r in rows)
    out = np.full((len(rows), L), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _assert_whole_words(word_ids: np.ndarray, masked: np.ndarray) -> int:
    """Every maximal run of equal non-negative word ids is fully masked or not at all."""
    checked = 0
    for row_w, row_m in zip(word_ids, masked, strict=True):
        start = None
        for i in range(len(row_w) + 1):
            boundary = i == len(row_w) or row_w[i] < 0 or (i > 0 and row_w[i] != row_w[i - 1])
            if boundary and start is not None:
                run = row_m[start:i]
                assert run.all() or not run.any(), (start, i, row_w[start:i], run)
                checked += run.all()
                start = None
            if i < len(row_w) and row_w[i] >= 0 and start is None:
                start = i
    return checked


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("policy", ["tokenizer", "whitespace", "vocab"])
@pytest.mark.parametrize("max_ngram", [1, 3])
def test_no_word_partly_masked_for_each_family_and_policy(request, family, policy, max_ngram):
    tok = request.getfixturevalue(family)
    texts = builtin_sample_text("en")[:64]
    enc = tokenize_with_word_ids(tok, texts, policy=policy, max_length=96, truncation=True)
    ids, wids = _pad(enc["input_ids"], tok.pad_token_id), _pad(enc["word_ids"], -1)
    masker = WholeWordMasker.from_tokenizer(tok, MaskingConfig(mask_prob=0.25, max_ngram=max_ngram))
    out = masker(ids, wids, np.arange(len(texts)), epoch=1)
    assert _assert_whole_words(wids, out.masked) > 50
    assert not out.masked[np.isin(ids, tok.all_special_ids)].any()


@pytest.mark.parametrize("family", ["bert_uncased_tokenizer", "bpe_tokenizer"])
def test_chinese_with_jieba_masks_whole_segmented_words(request, family):
    tok = request.getfixturevalue(family)
    texts = builtin_sample_text("zh")
    enc = tokenize_with_word_ids(tok, texts, policy="cjk", max_length=128, truncation=True)
    ids, wids = _pad(enc["input_ids"], tok.pad_token_id), _pad(enc["word_ids"], -1)
    out = WholeWordMasker.from_tokenizer(tok, MaskingConfig(mask_prob=0.2))(ids, wids, np.arange(len(texts)))
    assert _assert_whole_words(wids, out.masked) > 20
    # Multi-character words exist and some are masked whole (not one character alone, as Google's).
    lengths = np.diff(np.flatnonzero(np.diff(np.concatenate([[-2], wids[0], [-2]])) != 0))
    assert (lengths > 1).any()
