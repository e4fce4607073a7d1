"""The torch collator: accepts tokenizer output, keeps fields, pads, masks whole words, returns tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wwm.errors import WWMError
from wwm.masking import MaskingConfig, WholeWordMasker
from wwm.words import tokenize_with_word_ids
from wwm_torch import WholeWordMaskingCollator, content_example_id

TEXTS = [
    "The unbelievable weather stopped everything in the northern counties yesterday.",
    "Short sentence.",
    "Tokenizers split uncommon words like antidisestablishmentarianism into many pieces.",
]


def _words_of(row_ids, row_wids):
    words = {}
    for i, w in enumerate(row_wids):
        if w >= 0:
            words.setdefault(int(w), []).append(i)
    return words.values()


def test_collator_takes_plain_tokenizer_output_and_keeps_other_fields(bert_uncased_tokenizer):
    tok = bert_uncased_tokenizer
    features = [dict(tok(t, return_special_tokens_mask=True)) for t in TEXTS]
    collator = WholeWordMaskingCollator(tok, MaskingConfig(mask_prob=0.3), pad_to_multiple_of=8)
    batch = collator(features)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    B, L = batch["input_ids"].shape
    assert B == 3 and L % 8 == 0 and L >= max(len(f["input_ids"]) for f in features)
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.int64 for v in batch.values())
    for b, f in enumerate(features):
        n = len(f["input_ids"])
        assert batch["attention_mask"][b, :n].all() and not batch["attention_mask"][b, n:].any()
        assert (batch["input_ids"][b, n:] == tok.pad_token_id).all()
        labels = batch["labels"][b]
        masked = labels != -100
        assert masked.any()
        special = torch.tensor(f["special_tokens_mask"] + [1] * (L - n), dtype=torch.bool)
        assert not (masked & special).any()
        assert (labels[masked] == torch.tensor(f["input_ids"] + [0] * (L - n))[masked]).all()


def test_collator_masks_whole_words_given_word_ids_and_matches_the_masker(bert_uncased_tokenizer):
    tok = bert_uncased_tokenizer
    enc = tokenize_with_word_ids(tok, TEXTS)
    features = [
        {"input_ids": ids, "word_ids": wids.tolist(), "example_id": 100 + i}
        for i, (ids, wids) in enumerate(zip(enc["input_ids"], enc["word_ids"], strict=True))
    ]
    config = MaskingConfig(mask_prob=0.4, seed=3)
    collator = WholeWordMaskingCollator(tok, config, return_tensors="np")
    collator.set_epoch(2)
    batch = collator(features)
    for b, f in enumerate(features):
        masked = batch["labels"][b] != -100
        for positions in _words_of(f["input_ids"], f["word_ids"]):
            assert masked[positions].all() or not masked[positions].any()
        # The same example alone through the masker: the same mask (batch composition is irrelevant).
        single = WholeWordMasker.from_tokenizer(tok, config)(
            np.array(f["input_ids"]), np.array(f["word_ids"]), f["example_id"], epoch=2
        )
        n = len(f["input_ids"])
        np.testing.assert_array_equal(batch["input_ids"][b, :n], single.input_ids[0])


def test_word_ids_with_none_as_a_fast_tokenizer_gives_them_equal_word_ids_with_minus_one(
    bert_uncased_tokenizer,
):
    tok = bert_uncased_tokenizer
    encodings = [tok(t) for t in TEXTS]
    with_none = [
        {"input_ids": e["input_ids"], "word_ids": e.word_ids(), "example_id": i}
        for i, e in enumerate(encodings)
    ]
    assert any(w is None for f in with_none for w in f["word_ids"])
    with_minus_one = [{**f, "word_ids": [-1 if w is None else w for w in f["word_ids"]]} for f in with_none]
    collator = WholeWordMaskingCollator(tok, MaskingConfig(mask_prob=0.4, seed=5), return_tensors="np")
    a, b = collator(with_none), collator(with_minus_one)
    assert (a["labels"] != -100).any()
    for key in ("input_ids", "labels", "attention_mask"):
        np.testing.assert_array_equal(a[key], b[key])


def test_collator_computes_word_ids_from_the_vocabulary_when_missing(wordpiece_tokenizer):
    tok = wordpiece_tokenizer
    features = [dict(tok(t, return_special_tokens_mask=True)) for t in TEXTS]
    batch = WholeWordMaskingCollator(tok, MaskingConfig(mask_prob=0.5), return_tensors="np")(features)
    for b, f in enumerate(features):
        tokens = tok.convert_ids_to_tokens(f["input_ids"])
        masked = batch["labels"][b, : len(tokens)] != -100
        # A "##" continuation is masked exactly when the token before it is.
        for i, t in enumerate(tokens):
            if t.startswith("##"):
                assert masked[i] == masked[i - 1]


def test_content_example_id_keys_the_mask_by_tokens(bert_uncased_tokenizer):
    tok = bert_uncased_tokenizer
    f = dict(tok(TEXTS[0], return_special_tokens_mask=True))
    collator = WholeWordMaskingCollator(tok, MaskingConfig(mask_prob=0.3), return_tensors="np")
    alone = collator([f])["input_ids"][0]
    with_others = collator([dict(tok(TEXTS[2])), f])["input_ids"][1][: len(alone)]
    np.testing.assert_array_equal(alone, with_others)
    assert content_example_id(f["input_ids"]) != content_example_id(f["input_ids"][:-1])
    # Another epoch re-masks the same text.
    epochs = []
    for epoch in range(6):
        collator.set_epoch(epoch)
        epochs.append(collator([f])["labels"][0].tolist())
    assert len({tuple(e) for e in epochs}) > 1


def test_collator_errors(bert_uncased_tokenizer):
    tok = bert_uncased_tokenizer
    collator = WholeWordMaskingCollator(tok)
    with pytest.raises(WWMError, match="empty"):
        collator([])
    with pytest.raises(WWMError, match="input_ids"):
        collator([{"attention_mask": [1, 1]}])
    with pytest.raises(WWMError, match="different length"):
        collator([{"input_ids": [101, 2000, 102], "word_ids": [None, 0]}])
    with pytest.raises(WWMError, match="return_tensors"):
        WholeWordMaskingCollator(tok, return_tensors="tf")
