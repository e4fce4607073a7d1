"""Framework-free parts of masked-LM evaluation: the figures from summed counts, and the unigram baseline.

The unigram baseline says what a model that knows token frequencies and nothing else scores on the same
masked tokens, so an eval loss means something on its own:

* counts c(t) of every non-special token id t in the training blocks (padding excluded);
* p(t) = (c(t) + 1) / (N + V), add-one smoothing over the V non-special ids of the vocabulary
  (N = sum of the counts), 0 for special ids;
* unigram_loss = mean over the masked positions of -log p(original id);
* majority_accuracy = share of the masked positions whose original id is the most frequent training
  token (the accuracy of always predicting it; ties: the smallest id).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


def mlm_metrics(ce_sum: float, correct: float, count: float) -> dict[str, float]:
    """Token-weighted loss, accuracy and perplexity from sums over the masked tokens."""
    loss = ce_sum / max(count, 1)
    return {
        "eval_loss": loss,
        "eval_accuracy": correct / max(count, 1),
        "eval_perplexity": math.exp(min(loss, 700.0)),
    }


def token_counts(blocks: Iterable[tuple[np.ndarray, np.ndarray]], vocab_size: int) -> np.ndarray:
    """(V,) int64 counts of the ids in `blocks`: (input_ids (b, L), lengths (b,)) pairs; positions at or
    after a row's length (padding) are not counted."""
    counts = np.zeros(vocab_size, np.int64)
    for ids, lengths in blocks:
        ids = np.asarray(ids)
        real = np.arange(ids.shape[1])[None, :] < np.asarray(lengths)[:, None]  # (b, L)
        counts += np.bincount(ids[real].astype(np.int64), minlength=vocab_size)[:vocab_size]
    return counts


@dataclass(frozen=True)
class UnigramBaseline:
    log_probs: np.ndarray  # (V,) float64: -inf at special ids
    majority_id: int
    training_tokens: int  # N: non-special training tokens counted

    @classmethod
    def from_counts(cls, counts: np.ndarray, special_ids: Iterable[int]) -> UnigramBaseline:
        counts = np.asarray(counts, np.float64).copy()
        special = np.zeros(counts.shape[0], bool)
        special[[i for i in special_ids if 0 <= i < counts.shape[0]]] = True
        counts[special] = 0.0
        n, v = counts.sum(), int((~special).sum())
        with np.errstate(divide="ignore"):
            log_probs = np.where(special, -np.inf, np.log(counts + 1.0) - math.log(n + v))
        return cls(log_probs, int(np.argmax(counts)), int(n))

    def score(self, targets: np.ndarray) -> dict[str, float]:
        """{"unigram_loss", "majority_accuracy"} on the original ids of the masked tokens (any shape)."""
        targets = np.asarray(targets).reshape(-1).astype(np.int64)
        if targets.size == 0:
            return {"unigram_loss": float("nan"), "majority_accuracy": float("nan")}
        return {
            "unigram_loss": float(-np.mean(self.log_probs[targets])),
            "majority_accuracy": float(np.mean(targets == self.majority_id)),
        }
