"""A second, deliberately naive implementation of docs/masking.md: plain Python, one row at a time.

It shares only the scalar hash (wwm.rng) with the vectorized masker, and follows the spec's words
literally (Google BERT's loop for the budget, a left-to-right walk for n-gram spans), so that the
tests can demand bit-identical results from the fast implementation.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from wwm import rng
from wwm.masking import IGNORE_INDEX, MaskingConfig


def _u32(stream_key: int, counter: int) -> int:
    return int(rng.draw(np.uint32(stream_key), rng.counter_hash(np.array([counter])))[0])


def _u24(stream_key: int, counter: int) -> int:
    return _u32(stream_key, counter) >> 8


def reference_mask_row(
    config: MaskingConfig,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_token_ids,
    unk_token_id=None,
    input_ids,
    word_ids,
    example_id: int,
    epoch: int,
):
    special = set(int(i) for i in special_token_ids) | {mask_token_id}
    ids = [int(i) for i in input_ids]
    wids = [int(w) for w in word_ids]
    L = len(ids)
    eligible = [wids[i] >= 0 and ids[i] not in special for i in range(L)]

    # Words: maximal runs of equal ids among eligible tokens.
    words: list[list[int]] = []
    segment_of_word: list[int] = []
    segment = -1
    for i in range(L):
        if not eligible[i]:
            continue
        if i == 0 or not eligible[i - 1]:
            segment += 1
        if i > 0 and eligible[i - 1] and wids[i] == wids[i - 1]:
            words[-1].append(i)
        else:
            words.append([i])
            segment_of_word.append(segment)
    W = len(words)
    E = sum(eligible)

    key = int(rng.example_keys(config.seed, epoch, np.array([example_id]))[0])

    def skey(stream: int) -> int:
        return int(rng.stream_keys(np.uint32(key), stream))

    # Units: words, or spans of consecutive words of one segment.
    units: list[list[int]] = []  # lists of word indices
    if config.max_ngram == 1:
        units = [[j] for j in range(W)]
    else:
        cumulative = np.cumsum(config.span_probs)[:-1]
        thresholds = [rng.probability_threshold(c) for c in cumulative]
        j = 0
        while j < W:
            u = _u24(skey(rng.STREAM_NGRAM), j)
            k = 1 + sum(u >= t for t in thresholds)
            end = j
            while end < W and end < j + k and segment_of_word[end] == segment_of_word[j]:
                end += 1
            units.append(list(range(j, end)))
            j = end
    unit_len = [sum(len(words[j]) for j in unit) for unit in units]

    t_mask = rng.probability_threshold(config.mask_prob)
    candidates = list(range(len(units)))
    if config.budget == "bernoulli":
        candidates = [u for u in candidates if _u24(skey(rng.STREAM_SELECT), units[u][0]) < t_mask]
        n = config.max_predictions
    else:
        # E * p rounded half up, exactly, with p the decimal number mask_prob is written as.
        n = math.floor(E * Fraction(repr(float(config.mask_prob))) + Fraction(1, 2))
        n = max(1, n)
        if config.max_predictions is not None:
            n = min(n, config.max_predictions)
        if E == 0:
            n = 0

    chosen: list[int] = []
    if n is None:
        chosen = candidates
    else:
        order = sorted(candidates, key=lambda u: (_u32(skey(rng.STREAM_WORD), units[u][0]) >> 16, u))
        taken = 0
        for u in order:  # Google BERT's create_masked_lm_predictions loop
            if taken >= n:
                break
            if taken + unit_len[u] > n:
                continue
            chosen.append(u)
            taken += unit_len[u]

    masked = [False] * L
    for u in chosen:
        for j in units[u]:
            for i in words[j]:
                masked[i] = True

    t_m = rng.probability_threshold(config.mask_token_ratio, bits=16)
    t_mr = rng.probability_threshold(config.mask_token_ratio + config.random_token_ratio, bits=16)
    allowed = [i for i in range(vocab_size) if i not in special and i != unk_token_id]
    rank = {}
    r = 0
    for i in range(L):
        if eligible[i]:
            rank[i] = r
            r += 1
    word_of_token = {i: j for j, word in enumerate(words) for i in word}

    out = list(ids)
    labels = [IGNORE_INDEX] * L
    for i in range(L):
        if not masked[i]:
            continue
        labels[i] = ids[i]
        if config.replacement_unit == "word":
            u = _u32(skey(rng.STREAM_WORD), word_of_token[i]) & 0xFFFF
        else:
            u = _u32(skey(rng.STREAM_REPLACE), rank[i]) & 0xFFFF
        if u < t_m:
            out[i] = mask_token_id
        elif u < t_mr:
            v = _u32(skey(rng.STREAM_TOKEN), rank[i])
            out[i] = allowed[v % len(allowed)]
    return out, labels
