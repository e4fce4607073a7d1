"""The epoch order (docs/data.md, "Order and sharding"): order rule feistel-6, a keyed permutation that
costs O(B) per global batch and O(1) memory for any N, against its naive oracle (tests/reference_order.py);
rule "1" (sorted keys) kept for the runs started under it."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from reference_order import naive_example, naive_position

from wwm.data import BatchIterator, BlockDataset, DataPosition
from wwm.data.order import (
    ORDER_RULE,
    SORT_RULE,
    EpochOrder,
    FeistelPermutation,
    epoch_order,
    host_rows,
)
from wwm.errors import WWMError


def test_order_rule_test_vectors():
    # docs/data.md quotes these; a change reorders every feistel-6 run (a new rule needs a new name).
    assert ORDER_RULE == "feistel-6"
    assert epoch_order(10, 0, 0).tolist() == [7, 0, 5, 1, 2, 9, 4, 3, 6, 8]
    assert epoch_order(10, 0, 1).tolist() == [7, 1, 6, 3, 4, 2, 0, 8, 5, 9]
    assert epoch_order(10, 1, 0).tolist() == [3, 2, 1, 9, 6, 8, 7, 5, 0, 4]
    # Rule "1" (sorted keys) is unchanged: runs recorded under it resume with their own batches.
    assert epoch_order(10, 0, 0, SORT_RULE).tolist() == [5, 2, 0, 9, 8, 6, 1, 7, 4, 3]
    with pytest.raises(WWMError, match="upgrade wwm"):
        EpochOrder(10, 0, 0, "feistel-99")


@pytest.mark.parametrize(
    ("n", "seed", "epoch"),
    [(1, 0, 0), (2, 0, 0), (3, 5, 1), (10, 0, 0), (17, 2**40, 3), (1000, 7, 3), (2**20 + 1, 1, 0),
     (2**32 - 1, 3, 2), (2**32, 0, 7), (2**33 + 5, 1, 2), (2**62 + 11, 2**63 - 1, 2**64 - 1)],
)  # fmt: skip
def test_order_equals_its_naive_oracle(n, seed, epoch):
    """The vectorized permutation equals the spec's one-position-at-a-time reading, at the start, the
    middle and the end of [0, N), also past 2^32 (where rule "1"'s uint32 keys tie)."""
    edges = np.concatenate([np.arange(40), n // 2 + np.arange(40), n - 40 + np.arange(40)])
    positions = np.unique(np.clip(edges, 0, n - 1))
    fast = FeistelPermutation(n, seed, epoch)(positions)
    assert fast.dtype == np.int64
    assert fast.tolist() == [naive_example(n, seed, epoch, int(p)) for p in positions]


def test_order_is_a_bijection_exhaustively_to_a_million():
    for n in [*range(1, 130), 255, 256, 257, 4095, 4097]:
        np.testing.assert_array_equal(np.sort(epoch_order(n, n, 1)), np.arange(n))
    order = epoch_order(10**6, 3, 2)
    np.testing.assert_array_equal(np.sort(order), np.arange(10**6))
    assert not np.array_equal(order, epoch_order(10**6, 3, 3))  # each epoch its own order
    assert not np.array_equal(order, epoch_order(10**6, 4, 2))  # each seed its own order
    # It shuffles: position and example are uncorrelated, and an epoch's first 1000 examples are spread
    # over [0, N) like a uniform sample (a tolerance of ~5 standard errors).
    assert abs(np.corrcoef(np.arange(10**6), order)[0, 1]) < 0.005
    counts = np.bincount(order[:1000] * 10 // 10**6, minlength=10)
    assert counts.min() > 100 - 5 * 9.5 and counts.max() < 100 + 5 * 9.5


def test_order_spot_checked_at_2_33():
    """N = 2^33 + 12345 cannot be enumerated here: each of 100,000 sampled positions maps into [0, N), the
    images are distinct, and the oracle's inverse permutation gives the position back (on 200)."""
    n, seed, epoch = 2**33 + 12345, 9, 4
    positions = np.unique(np.random.default_rng(0).integers(0, n, 100_000))
    ids = FeistelPermutation(n, seed, epoch)(positions)
    assert ids.min() >= 0 and ids.max() < n and np.unique(ids).size == positions.size
    for p, x in zip(positions[:200].tolist(), ids[:200].tolist(), strict=True):
        assert naive_position(n, seed, epoch, x) == p


class _Virtual:
    """A random-access dataset of 2^33 + 7 rows that holds nothing: row i is [i mod 1000] * L."""

    max_seq_len = 4
    pad_token_id = 0
    has_segments = False

    def __len__(self) -> int:
        return 2**33 + 7

    def batch(self, ids):
        ids = np.asarray(ids, dtype=np.int64)
        rows = np.repeat((ids % 1000)[:, None], self.max_seq_len, axis=1).astype(np.int32)
        return {"input_ids": rows, "word_ids": np.zeros_like(rows), "attention_mask": np.ones_like(rows),
                "example_ids": ids.copy()}  # fmt: skip


def test_order_of_billions_of_blocks_costs_only_the_hosts_rows():
    """A global batch of an epoch of 2^33 blocks, host 3 of 8: the example ids of its rows only, computed
    in O(B/H) time and memory (rule "1" would sort 2^33 keys, ~70 GB), equal to the oracle's."""
    data, B, H, h = _Virtual(), 4096, 8, 3
    batches = BatchIterator(data, B, seed=1, host_index=h, host_count=H)
    position = DataPosition(5, 2_000_000)
    tracemalloc.start()
    batch = batches.batch_at(position)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2_000_000, peak  # ~50 B per row of this host, not per block of the corpus
    rows = host_rows(B, h, H)
    expected = [naive_example(len(data), 1, 5, 2_000_000 * B + r) for r in range(rows.start, rows.start + 20)]
    assert batch["example_ids"][:20].tolist() == expected and batch["example_ids"].shape == (B // H,)


@pytest.mark.parametrize("rule", [ORDER_RULE, SORT_RULE])
def test_order_is_independent_of_the_host_count(rule):
    """Under either rule, the hosts' rows of a global batch, put together, are the one-host batch."""
    n, B = 203, 24
    ids = np.arange(n, dtype=np.int32)[:, None] + np.zeros((1, 6), dtype=np.int32)
    data = BlockDataset(ids, np.zeros_like(ids), np.full(n, 6, dtype=np.int32))
    single = list(BatchIterator(data, B, seed=3, epochs=2, order_rule=rule))
    expected = [epoch_order(n, 3, e, rule)[s * B : (s + 1) * B] for e in range(2) for s in range(n // B)]
    assert [b["example_ids"].tolist() for b in single] == [e.tolist() for e in expected]
    for hosts in (2, 3, 4, 8):
        parts = [list(BatchIterator(data, B, seed=3, epochs=2, host_index=h, host_count=hosts, order_rule=rule))
                 for h in range(hosts)]  # fmt: skip
        for step, full in enumerate(single):
            joined = np.concatenate([parts[h][step]["example_ids"] for h in range(hosts)])
            np.testing.assert_array_equal(joined, full["example_ids"])
