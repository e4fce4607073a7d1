"""The exact budget (docs/masking.md §5): E·p rounded half up, exactly, for every E; one rule everywhere.

`wwm.masking.exact_budget` is the one home of the rule; the masker's lookup table, the naive reference
(tests/reference_masking.py) and the JAX trainer's static bound `masked_bound` must all agree with it.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
from reference_masking import reference_mask_row

from wwm.masking import MaskingConfig, WholeWordMasker, decimal_fraction, exact_budget

# p whose 24-bit threshold rounds down (0.15, 0.45, 0.7: the old fixed-point rule was one short at
# every exact half), up (0.3), exact in binary (0.125, 0.25), and long decimals (1/3).
PROBS = (0.15, 0.3, 0.125, 0.2, 0.4, 0.1, 0.05, 0.25, 0.45, 0.7, 1 / 3, 0.0, 1.0)
E_MAX = 8192
MASK, SPECIALS = 4, (0, 1, 2, 3, 4)


def budget_by_decimal(e: int, p: float, max_predictions: int | None = None) -> int:
    """The spec's words with decimal arithmetic (a second route to the same number)."""
    if e == 0:
        return 0
    with localcontext(prec=100):  # exact: no digit of E * p is rounded away
        n = int((Decimal(e) * Decimal(repr(p))).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert n == math.floor(e * Fraction(repr(p)) + Fraction(1, 2))  # the same with fractions
    n = max(n, 1)
    return n if max_predictions is None else min(n, max_predictions)


@pytest.mark.parametrize("p", PROBS)
def test_exact_budget_is_e_times_p_rounded_half_up_for_every_e_up_to_8192(p):
    e = np.arange(E_MAX + 1)
    expected = np.array([budget_by_decimal(int(k), p) for k in e])
    np.testing.assert_array_equal(exact_budget(e, p), expected)
    capped = np.array([budget_by_decimal(int(k), p, 80) for k in e])
    np.testing.assert_array_equal(exact_budget(e, p, max_predictions=80), capped)


def test_exact_budget_at_exact_halves_rounds_up_where_floating_point_rounds_down():
    # What binary floating point sees: 0.15 is 0.1499999999999999944..., Python's round() rounds half
    # to even, and a float product can land below the half (45 * 0.7 = 31.499999999999996).
    assert Fraction(0.15) * 510 < Fraction(153, 2) and round(510 * 0.15) == 76 and 45 * 0.7 < 31.5
    assert exact_budget(45, 0.7) == 32
    assert exact_budget(510, 0.15) == 77  # every full 512-token BERT block (510 + [CLS] + [SEP])
    assert exact_budget(10, 0.15) == 2
    assert exact_budget(30, 0.15) == 5
    assert exact_budget(5, 0.7) == 4
    assert exact_budget(12, 0.125) == 2
    assert exact_budget(0, 0.15) == 0 and exact_budget(1, 0.001) == 1
    assert exact_budget(510, 0.15, max_predictions=20) == 20
    assert isinstance(exact_budget(510, 0.15), int)
    assert decimal_fraction(0.15).as_integer_ratio() == (3, 20)


def test_exact_budget_is_exact_with_long_decimals_and_huge_counts():
    # 2 * E * a + b does not fit in 64 bits here: the Python-integer path takes over.
    p = 0.1234567890123456
    e = np.array([0, 1, 10**6, 10**9, 4 * 10**9])
    expected = np.array([budget_by_decimal(int(k), p) for k in e])
    np.testing.assert_array_equal(exact_budget(e, p), expected)
    assert exact_budget(10**9, 1e-300) == 1


def _single_token_word_rows(counts: list[int], L: int):
    """Row b: [CLS], counts[b] one-token words, [SEP], padding: E = counts[b], and the fill is exact."""
    ids = np.zeros((len(counts), L), dtype=np.int64)
    wids = np.full((len(counts), L), -1, dtype=np.int64)
    for b, n in enumerate(counts):
        ids[b, 0], ids[b, 1 : n + 1], ids[b, n + 1] = 2, 10 + np.arange(n) % 90, 3
        wids[b, 1 : n + 1] = np.arange(n)
    return ids, wids


@pytest.mark.parametrize("p", [0.15, 0.45, 0.3, 0.125])
def test_masker_masks_exactly_the_budget_of_each_row(p):
    counts = [0, 1, 5, 10, 30, 50, 77, 110, 333, 510, 511, 1021, *range(2, 1022, 37)]
    ids, wids = _single_token_word_rows(counts, 1024)
    masker = WholeWordMasker(
        MaskingConfig(mask_prob=p), mask_token_id=MASK, vocab_size=100, special_token_ids=SPECIALS
    )
    out = masker(ids, wids, np.arange(len(counts)), epoch=0)
    np.testing.assert_array_equal(out.masked.sum(1), [budget_by_decimal(n, p) for n in counts])


def test_masker_budget_table_grows_and_equals_exact_budget_for_every_e():
    config = MaskingConfig(mask_prob=0.15, max_predictions=900)
    masker = WholeWordMasker(config, mask_token_id=MASK, vocab_size=100, special_token_ids=SPECIALS)
    for top in (10, 11, 600, E_MAX):  # the table is built for small rows first, then grown
        e = np.arange(top + 1)
        np.testing.assert_array_equal(masker._exact_budget(e), exact_budget(e, 0.15, 900))


@pytest.mark.parametrize("max_ngram", [1, 3])
def test_fast_masker_equals_reference_at_exact_halves(max_ngram):
    """Rows whose E·p is exactly k + 1/2, with multi-token words: bit-identical to the reference."""
    rs = np.random.default_rng(4)
    counts = [10, 30, 50, 70, 110, 510]
    L = 512
    ids = np.zeros((len(counts), L), dtype=np.int64)
    wids = np.full((len(counts), L), -1, dtype=np.int64)
    for b, n in enumerate(counts):
        ids[b, 0], ids[b, 1 : n + 1], ids[b, n + 1] = 2, rs.integers(5, 100, size=n), 3
        wids[b, 1 : n + 1] = np.cumsum(rs.random(n) < 0.6)
    config = MaskingConfig(mask_prob=0.15, max_ngram=max_ngram, seed=11)
    masker = WholeWordMasker(config, mask_token_id=MASK, vocab_size=100, special_token_ids=SPECIALS)
    example_ids = np.arange(100, 100 + len(counts))
    out = masker(ids, wids, example_ids, epoch=1)
    for b in range(len(counts)):
        ref_ids, ref_labels = reference_mask_row(
            config,
            mask_token_id=MASK,
            vocab_size=100,
            special_token_ids=SPECIALS,
            input_ids=ids[b],
            word_ids=wids[b],
            example_id=int(example_ids[b]),
            epoch=1,
        )
        assert out.input_ids[b].tolist() == ref_ids
        assert out.labels[b].tolist() == ref_labels
    assert (out.masked.sum(1) <= [budget_by_decimal(n, 0.15) for n in counts]).all()


def test_jax_static_bound_follows_the_exact_budget():
    pytest.importorskip("jax")
    from wwm_jax.train_step import masked_bound

    # 110 * 0.15 = 16.5 -> 17 masked tokens: the head needs 24 slots, not 16.
    assert masked_bound(MaskingConfig(mask_prob=0.15), 110) == 24
    for p in (0.15, 0.45, 0.3, 0.7):
        for max_predictions in (None, 20):
            config = MaskingConfig(mask_prob=p, max_predictions=max_predictions)
            for L in range(0, 1025):
                most = exact_budget(L, p, max_predictions)  # n never decreases with E <= L
                assert masked_bound(config, L) == min(L, -(-most // 8) * 8)
