"""Whole-word masking collator for the Hugging Face Trainer (or any torch DataLoader).

    collator = WholeWordMaskingCollator(tokenizer, MaskingConfig(mask_prob=0.15))
    trainer = Trainer(model=model, data_collator=collator, callbacks=[EpochCallback(collator)], ...)

It takes the features that `tokenizer(text, return_special_tokens_mask=True)` returns, with
optional `word_ids`, `example_id` and `epoch` fields; pads; masks with `wwm.WholeWordMasker`; and
returns torch tensors. Every other numeric field (attention_mask, token_type_ids, ...) is kept and
padded; text columns (a dataset's `text`) are dropped with one warning. Values may be lists, numpy
arrays or torch tensors (a `datasets` dataset `.with_format("torch")`).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from wwm.errors import WWMError
from wwm.masking import MaskingConfig, WholeWordMasker

# Fields the collator consumes: they steer masking and are not model inputs.
WORD_IDS, EXAMPLE_ID, SPECIAL_TOKENS_MASK, EPOCH = "word_ids", "example_id", "special_tokens_mask", "epoch"
_CONSUMED = (WORD_IDS, EXAMPLE_ID, SPECIAL_TOKENS_MASK, EPOCH, "offset_mapping")
# Output key of the example ids when `return_example_ids=True` (not a model input: pop it before forward).
EXAMPLE_IDS_OUT = "example_ids"


class StaticMaskingWarning(UserWarning):
    """The collator was never told the epoch: every epoch would mask each example the same way."""


STATIC_MASKING_MESSAGE = (
    "WholeWordMaskingCollator: no epoch was given, so every epoch masks each example the same way "
    "(static masking). With a Hugging Face Trainer add the one line "
    "`trainer.add_callback(EpochCallback(collator))` (from wwm_torch.callbacks import EpochCallback); "
    "elsewhere call collator.set_epoch(epoch) when an epoch starts, or give each feature an 'epoch' "
    "field. If fixed masks are what you want, call collator.set_epoch(0) to say so."
)


def content_example_id(input_ids: Sequence[int]) -> int:
    """A stable 63-bit id from the token ids: used when a feature has no `example_id`.

    The mask is then a function of (seed, epoch, tokens): the same text gets the same mask in an
    epoch wherever it is batched. Give real example ids to tell duplicates apart.
    """
    digest = hashlib.blake2b(np.asarray(input_ids, dtype=np.int64).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class WholeWordMaskingCollator:
    """Pads, computes word ids where missing, masks whole words, returns torch tensors.

    Args:
        tokenizer: a Hugging Face tokenizer (fast if word ids must be computed).
        config: the masking spec (docs/masking.md).
        pad_to_multiple_of: pad the length up to a multiple of this (e.g. 8 for tensor cores).
        return_tensors: "pt" (torch tensors) or "np".
        return_example_ids: also return the (B,) example ids under "example_ids" (not a model input:
            the `wwm_torch` trainer pops it before the forward pass).

    Word ids missing from a feature are computed from the token ids with the tokenizer's
    begin-of-word table (`wwm.words`, policy "vocab"): "##" WordPiece, "Ġ" byte-level BPE or "▁"
    SentencePiece. For BERT-style punctuation words or CJK segmentation, compute `word_ids` in the
    dataset with `wwm.words.tokenize_with_word_ids` and keep the column.

    The epoch is part of the mask key: call `set_epoch(epoch)` when an epoch starts
    (`wwm_torch.callbacks.EpochCallback` does it for a plain Trainer, data-loader workers included),
    or give each feature an `epoch` field, which wins over `set_epoch` and works whatever process
    builds the batch; the `wwm_torch` trainer does the latter. A batch may mix epochs: each row is
    masked with its own. Until one of them is given the collator masks with epoch 0 and warns
    (`StaticMaskingWarning`, once per collator and process): a plain Trainer never tells a collator
    the epoch, and every epoch would see the same masks.

    Tokens that `special_tokens_mask` marks are never masked, whether or not `word_ids` are given.
    """

    def __init__(
        self,
        tokenizer: Any,
        config: MaskingConfig | None = None,
        *,
        pad_to_multiple_of: int | None = None,
        return_tensors: str = "pt",
        return_example_ids: bool = False,
    ) -> None:
        if return_tensors not in ("pt", "np"):
            raise WWMError(f"return_tensors must be 'pt' or 'np'; got {return_tensors!r}")
        if tokenizer.pad_token_id is None:
            raise WWMError(
                "the tokenizer has no pad token; add one with tokenizer.add_special_tokens({'pad_token': '[PAD]'})"
            )
        self.tokenizer = tokenizer
        self.masker = WholeWordMasker.from_tokenizer(tokenizer, config)
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.return_tensors = return_tensors
        self.return_example_ids = bool(return_example_ids)
        self.epoch = 0
        self._epoch_given = False  # set_epoch was called: the epoch is known, even if it is 0
        self._warned_static = False
        self._dropped: set[str] = set()  # text columns already warned about
        self._begin_table: np.ndarray | None = None

    @property
    def config(self) -> MaskingConfig:
        return self.masker.config

    def set_epoch(self, epoch: int) -> None:
        """Mask with this epoch from now on (features with an `epoch` field keep theirs).

        A data-loader worker gets a copy of the collator when the epoch's iterator is created: call
        this before iterating (a Trainer's `on_epoch_begin`, what `EpochCallback` does)."""
        self.epoch = int(epoch)
        self._epoch_given = True

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not features:
            raise WWMError("the collator got an empty list of features")
        if not isinstance(features[0], Mapping):  # plain lists of token ids
            features = [{"input_ids": f} for f in features]
        for f in features:
            if "input_ids" not in f:
                raise WWMError(f"every feature needs 'input_ids'; got keys {sorted(f)}")
        lengths = [len(f["input_ids"]) for f in features]
        L = max(lengths)
        if self.pad_to_multiple_of:
            L = -(-L // self.pad_to_multiple_of) * self.pad_to_multiple_of
        B = len(features)

        input_ids = self._pad([f["input_ids"] for f in features], L, self.pad_token_id, np.int64)  # (B, L)
        attention_mask = (
            self._pad([f["attention_mask"] for f in features], L, 0, np.int64)
            if "attention_mask" in features[0]
            else (np.arange(L)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
        )
        if WORD_IDS not in features[0]:  # word ids are looked up by token id: check the ids first
            self.masker.check_token_ids(input_ids)
        word_ids = self._word_ids(features, input_ids, attention_mask, L)  # (B, L)
        if EXAMPLE_ID in features[0]:
            example_ids = np.asarray([int(f[EXAMPLE_ID]) for f in features], dtype=np.int64)
        else:
            example_ids = np.asarray([content_example_id(f["input_ids"]) for f in features], dtype=np.int64)

        if EPOCH not in features[0] and not self._epoch_given:
            self._warn_static_masking()
        masked_ids, labels = self._mask(features, input_ids, word_ids, example_ids, attention_mask)
        batch: dict[str, Any] = {
            "input_ids": masked_ids,
            "attention_mask": attention_mask,
            "labels": labels,
        }
        if self.return_example_ids:
            batch[EXAMPLE_IDS_OUT] = example_ids
        for key in features[0]:
            if key in batch or key in _CONSUMED:
                continue
            column = self._column(key, [f[key] for f in features], lengths, L)
            if column is not None:
                batch[key] = column
        assert batch["input_ids"].shape == (B, L)
        if self.return_tensors == "pt":
            import torch

            batch = {k: torch.as_tensor(v) for k, v in batch.items()}
        return batch

    # ------------------------------------------------------------------ helpers
    def _warn_static_masking(self) -> None:
        # Once per collator and process: a data-loader worker warns in its own process.
        if not self._warned_static:
            self._warned_static = True
            warnings.warn(STATIC_MASKING_MESSAGE, StaticMaskingWarning, stacklevel=3)

    def _column(self, key: str, values: list, lengths: Sequence[int], L: int) -> np.ndarray | None:
        """Another field of the features as an array: (B, L) padded with 0 when it has one value per
        token, else (B, ...). None for a column that cannot become a tensor (text), with one warning."""
        if _is_token_level(values, lengths):
            dtype = np.asarray(values[int(np.argmax(lengths))]).dtype  # a longest row's values
            if dtype.kind in "biu":
                return self._pad(values, L, 0, np.int64)
            if dtype.kind == "f":  # e.g. per-token weights: not truncated to integers
                return self._pad(values, L, 0, dtype)
            return self._drop(key)
        try:
            array = np.asarray(values)
        except ValueError:  # sequences of different lengths, not one value per token
            raise WWMError(
                f"the feature column {key!r} holds sequences whose lengths differ and are not one value per "
                f"token, so it cannot be batched; remove it (dataset.remove_columns([{key!r}]))"
            ) from None
        return array if array.dtype.kind in "biuf" else self._drop(key)

    def _drop(self, key: str) -> None:
        if key not in self._dropped:
            self._dropped.add(key)
            warnings.warn(
                f"WholeWordMaskingCollator: dropping the feature column {key!r}: it holds text or objects, "
                f"not numbers, and cannot become a tensor; remove it to silence this "
                f"(dataset.remove_columns([{key!r}]))",
                stacklevel=4,
            )
        return None

    def _mask(
        self, features, input_ids, word_ids, example_ids, attention_mask
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mask the rows; rows with an `epoch` field use their own epoch, the others `self.epoch`."""
        if EPOCH not in features[0]:
            out = self.masker(input_ids, word_ids, example_ids, self.epoch, attention_mask=attention_mask)
            return out.input_ids, out.labels
        epochs = np.asarray([int(f.get(EPOCH, self.epoch)) for f in features], dtype=np.int64)
        masked_ids, labels = np.empty_like(input_ids), np.empty_like(input_ids)
        for epoch in np.unique(epochs):
            rows = np.flatnonzero(epochs == epoch)
            out = self.masker(
                input_ids[rows],
                word_ids[rows],
                example_ids[rows],
                int(epoch),
                attention_mask=attention_mask[rows],
            )
            masked_ids[rows], labels[rows] = out.input_ids, out.labels
        return masked_ids, labels

    def _word_ids(self, features, input_ids: np.ndarray, attention_mask: np.ndarray, L: int) -> np.ndarray:
        """(B, L) word ids, -1 where `special_tokens_mask` is 1 (never masked, and ends a word)."""
        special = None
        if SPECIAL_TOKENS_MASK in features[0]:
            special = self._pad([f[SPECIAL_TOKENS_MASK] for f in features], L, 1, np.int64) != 0  # (B, L)
        if WORD_IDS in features[0]:
            rows = [f[WORD_IDS] for f in features]
            try:  # integer lists or arrays convert in one C pass
                word_ids = self._pad(rows, L, -1, np.int64)
            except TypeError:  # lists holding None for special tokens (a fast tokenizer's word_ids())
                word_ids = self._pad([[-1 if w is None else w for w in r] for r in rows], L, -1, np.int64)
            if any(len(f[WORD_IDS]) != len(f["input_ids"]) for f in features):
                raise WWMError("a feature's 'word_ids' has a different length than its 'input_ids'")
            if special is not None:
                word_ids[special] = -1
            return word_ids
        from wwm.words import begin_of_word_table, word_ids_from_begin_table

        if self._begin_table is None:
            self._begin_table = begin_of_word_table(self.tokenizer)
        eligible = attention_mask.astype(bool) & ~self.masker.is_special[input_ids]
        if special is not None:
            eligible &= ~special
        return word_ids_from_begin_table(input_ids, self._begin_table, eligible)

    @staticmethod
    def _pad(rows: Sequence[Sequence[int]], length: int, value: int, dtype) -> np.ndarray:
        if all(len(row) == length for row in rows):  # packed blocks: one conversion, no padding
            return np.asarray(rows, dtype=dtype).reshape(len(rows), length)
        out = np.full((len(rows), length), value, dtype=dtype)
        for i, row in enumerate(rows):
            out[i, : len(row)] = np.asarray(row, dtype=dtype)
        return out


def _is_token_level(values: Sequence[Any], lengths: Sequence[int]) -> bool:
    """A field with one value per token (e.g. token_type_ids) is padded like input_ids.

    A row is a list, a tuple or any 1-D array (numpy, torch, ...)."""
    return all(
        (isinstance(v, (list, tuple)) or getattr(v, "ndim", None) == 1) and len(v) == n
        for v, n in zip(values, lengths, strict=True)
    )
