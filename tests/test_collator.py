"""The torch collator: accepts tokenizer output, keeps fields, pads, masks whole words, returns tensors."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch

from wwm.errors import WWMError
from wwm.masking import MaskingConfig, WholeWordMasker
from wwm.words import tokenize_with_word_ids
from wwm_torch import WholeWordMaskingCollator, content_example_id
from wwm_torch.collator import STATIC_MASKING_MESSAGE, StaticMaskingWarning

# Most tests call the collator directly, with no epoch source: the warning is tested on its own below.
pytestmark = pytest.mark.filterwarnings("ignore::wwm_torch.collator.StaticMaskingWarning")

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


# ------------------------------------------------------------ inputs from datasets, specials, bad columns
def test_token_level_fields_given_as_torch_tensors_are_padded(bert_uncased_tokenizer):
    """Rows of a `datasets` dataset `.with_format("torch")` are tensors of different lengths."""
    from datasets import Dataset

    tok = bert_uncased_tokenizer
    enc = tokenize_with_word_ids(tok, TEXTS)
    columns = {
        **dict(tok(TEXTS, return_special_tokens_mask=True)),
        "word_ids": [w.tolist() for w in enc["word_ids"]],
    }
    ds = Dataset.from_dict(columns)
    as_tensors = [ds.with_format("torch")[i] for i in range(len(TEXTS))]
    assert isinstance(as_tensors[0]["token_type_ids"], torch.Tensor)
    collator = WholeWordMaskingCollator(tok, MaskingConfig(mask_prob=0.3), return_tensors="np")
    collator.set_epoch(1)
    got, want = collator(as_tensors), collator([ds[i] for i in range(len(TEXTS))])  # tensors vs lists
    assert set(got) == set(want) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_special_tokens_mask_is_honoured_when_word_ids_are_given(bert_uncased_tokenizer):
    tok = bert_uncased_tokenizer
    ids = tok("one two three four five six")["input_ids"]  # [CLS] 6 words [SEP]
    special = [1, 0, 1, 0, 1, 0, 0, 1]  # the caller marks two words as special as well
    features = [{"input_ids": ids, "word_ids": [-1, 0, 1, 2, 3, 4, 5, -1], "special_tokens_mask": special}]
    collator = WholeWordMaskingCollator(tok, MaskingConfig(mask_prob=1.0), return_tensors="np")
    collator.set_epoch(0)
    masked = collator(features)["labels"][0] != -100
    assert masked.tolist() == [s == 0 for s in special]
    # The same as without word ids, where the collator derives them and honours the mask too.
    without = collator([{"input_ids": ids, "special_tokens_mask": special}])["labels"][0] != -100
    np.testing.assert_array_equal(masked, without)


def test_ids_outside_the_vocabulary_without_word_ids_raise_the_maskers_error(bert_uncased_tokenizer):
    tok = bert_uncased_tokenizer
    collator = WholeWordMaskingCollator(tok)
    collator.set_epoch(0)
    for bad in (len(tok), len(tok) + 10**6, -3):
        with pytest.raises(WWMError, match=r"outside the vocabulary \[0, 30522\).*same tokenizer"):
            collator([{"input_ids": [101, 2000, bad, 102]}])


def test_text_columns_are_dropped_with_one_warning_naming_them(bert_uncased_tokenizer):
    tok = bert_uncased_tokenizer
    features = [{**dict(tok(t, return_special_tokens_mask=True)), "text": t, "source": None} for t in TEXTS]
    collator = WholeWordMaskingCollator(tok, MaskingConfig(mask_prob=0.3))
    collator.set_epoch(0)
    with pytest.warns(UserWarning, match="dropping the feature column") as record:
        batch = collator(features)
    assert sorted(str(w.message).split("'")[1] for w in record) == ["source", "text"]
    assert "remove_columns(['text'])" in str(record[0].message) + str(record[1].message)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        collator(features)  # warned once per column
    # Text with one value per token (a tokens column) is dropped too; float columns are kept.
    tokens = [{**f, "tokens": tok.convert_ids_to_tokens(f["input_ids"]), "weight": [0.5] * len(f["input_ids"])}
              for f in features]  # fmt: skip
    with pytest.warns(UserWarning, match="'tokens'"):
        batch = collator(tokens)
    assert "tokens" not in batch and batch["weight"].dtype.is_floating_point and batch["weight"][0, 0] == 0.5


def test_ragged_column_that_is_not_per_token_fails_naming_the_column(bert_uncased_tokenizer):
    tok = bert_uncased_tokenizer
    features = [
        {"input_ids": [101, 2000, 102], "spans": [1]},
        {"input_ids": [101, 2000, 2001, 102], "spans": [1, 2]},
    ]
    collator = WholeWordMaskingCollator(tok)
    collator.set_epoch(0)
    with pytest.raises(WWMError, match=r"column 'spans'.*remove_columns\(\['spans'\]\)"):
        collator(features)


# ------------------------------------------------------------ the epoch: no static masks by accident
def test_collator_without_an_epoch_source_warns_once_with_the_line_to_add(bert_uncased_tokenizer):
    tok = bert_uncased_tokenizer
    features = [dict(tok(t)) for t in TEXTS]
    collator = WholeWordMaskingCollator(tok, MaskingConfig(mask_prob=0.3), return_tensors="np")
    # A data-loader worker gets a pickled (spawn) or forked copy: it warns in its own process too.
    for copy in (collator, pickle.loads(pickle.dumps(collator))):
        with pytest.warns(StaticMaskingWarning, match=r"trainer\.add_callback\(EpochCallback\(collator\)\)"):
            first = copy(features)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_array_equal(copy(features)["labels"], first["labels"])  # once per collator
    assert "set_epoch(0)" in STATIC_MASKING_MESSAGE
    # An epoch source, set_epoch (even 0) or per-feature epochs, silences it.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        told = WholeWordMaskingCollator(tok, MaskingConfig(mask_prob=0.3), return_tensors="np")
        told([{**f, "epoch": 0} for f in features])
        told.set_epoch(0)
        np.testing.assert_array_equal(told(features)["labels"], first["labels"])
        pickle.loads(pickle.dumps(told))(features)


PLAIN_TEXTS = [
    "the quick brown fox jumps over the lazy dog while the cat is sleeping near the warm fire",
    "whole word masking hides every piece of a word so the model must guess the full word back",
    "a tiny model trains on a handful of rows for two epochs to check the masks change each time",
    "reading the source of the trainer shows how the epoch reaches the sampler but not the collator",
    "data loader workers receive a copy of the collator when the iterator of an epoch is created",
    "the same text must get the same mask for the same seed and epoch wherever it is batched again",
]


def _tiny_tokenizer(texts):
    """A WordPiece tokenizer over the words of `texts` ("-ing" words split into stem + "##ing")."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = {w[:-3] if w.endswith("ing") else w for t in texts for w in t.split()}
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "##ing", *sorted(words)]
    backend = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _train_plain_trainer(tmp_path, tok, collator, *, num_workers=0, callbacks=(), **training_args):
    """The README's recipe with a real `transformers.Trainer`, 2 epochs; returns, per epoch, the labels
    each example got ({original tokens: labels}), recorded at the model's input."""
    from datasets import Dataset
    from transformers import BertConfig, BertForMaskedLM, Trainer, TrainerCallback, TrainingArguments

    torch.manual_seed(0)
    model = BertForMaskedLM(
        BertConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    )
    epochs: list[dict] = []

    class MarkEpochs(TrainerCallback):  # the test's own bookkeeping: which epoch a batch belongs to
        def on_epoch_begin(self, args, state, control, **kwargs):
            epochs.append({})

    def record(module, args, kwargs):
        ids, labels, attention = (kwargs[k].numpy() for k in ("input_ids", "labels", "attention_mask"))
        for row_ids, row_labels, row_attention in zip(ids, labels, attention, strict=True):
            n = int(row_attention.sum())
            original = np.where(row_labels != -100, row_labels, row_ids)[:n]
            epochs[-1][tuple(original.tolist())] = row_labels[:n].tolist()

    model.register_forward_pre_hook(record, with_kwargs=True)
    ds = Dataset.from_dict(dict(tok(PLAIN_TEXTS, return_special_tokens_mask=True)))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=2,
        per_device_train_batch_size=2,
        dataloader_num_workers=num_workers,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        **training_args,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=ds, data_collator=collator, callbacks=list(callbacks)
    )
    trainer.add_callback(MarkEpochs())
    trainer.train()
    assert len(epochs) == 2 and all(len(e) == len(PLAIN_TEXTS) for e in epochs)
    return epochs


@pytest.mark.parametrize("num_workers", [0, 2])
def test_plain_trainer_with_epoch_callback_remasks_every_epoch_reproducibly(tmp_path, num_workers):
    from wwm_torch.callbacks import EpochCallback

    tok = _tiny_tokenizer(PLAIN_TEXTS)
    config = MaskingConfig(mask_prob=0.3, seed=7)
    collator = WholeWordMaskingCollator(tok, config)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StaticMaskingWarning)
        epochs = _train_plain_trainer(tmp_path, tok, collator, num_workers=num_workers, callbacks=[EpochCallback(collator)])  # fmt: skip
    # Every example gets a new mask in epoch 1 ...
    for original, labels in epochs[0].items():
        assert epochs[1][original] != labels
    # ... and each mask is a function of (seed, epoch, example): masked alone, in this process.
    alone = WholeWordMaskingCollator(tok, config, return_tensors="np")
    for epoch, masks in enumerate(epochs):
        alone.set_epoch(epoch)
        for original, labels in masks.items():
            assert alone([{"input_ids": list(original)}])["labels"][0].tolist() == labels


def test_plain_trainer_without_an_epoch_source_warns_since_its_masks_are_static(tmp_path):
    tok = _tiny_tokenizer(PLAIN_TEXTS)
    collator = WholeWordMaskingCollator(tok, MaskingConfig(mask_prob=0.3, seed=7))
    with pytest.warns(StaticMaskingWarning, match=r"add_callback\(EpochCallback\(collator\)\)"):
        epochs = _train_plain_trainer(tmp_path, tok, collator)
    assert epochs[0] == epochs[1]  # what the warning is about


def test_plain_trainer_without_an_epoch_source_warns_in_data_loader_workers(tmp_path):
    """The warning is raised in the worker (turned into an error here, so that it reaches this process;
    forked workers inherit the filter)."""
    tok = _tiny_tokenizer(PLAIN_TEXTS)
    collator = WholeWordMaskingCollator(tok, MaskingConfig(mask_prob=0.3, seed=7))
    with warnings.catch_warnings():
        warnings.simplefilter("error", StaticMaskingWarning)  # inherited by the forked workers
        with pytest.raises(StaticMaskingWarning, match=r"add_callback\(EpochCallback\(collator\)\)"):
            _train_plain_trainer(
                tmp_path, tok, collator, num_workers=2, dataloader_multiprocessing_context="fork"
            )


def test_epoch_callback_refuses_persistent_workers():
    from types import SimpleNamespace

    from wwm_torch.callbacks import EpochCallback

    callback = EpochCallback(SimpleNamespace(set_epoch=lambda epoch: None))
    args = SimpleNamespace(dataloader_persistent_workers=True, dataloader_num_workers=2)
    with pytest.raises(WWMError, match="dataloader_persistent_workers=False"):
        callback.on_train_begin(args, SimpleNamespace(epoch=0), None)
