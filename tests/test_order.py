"""The epoch order (docs/data.md, "Order and sharding"): order rule feistel-6, a keyed permutation that
costs O(B) per global batch and O(1) memory for any N, against its naive oracle (tests/reference_order.py);
rule "1" (sorted keys) kept for the runs started under it."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from reference_order import naive_example, naive_grouped_example, naive_position

from wwm.data import BatchIterator, BlockDataset, DataPosition
from wwm.data.order import (
    ORDER_RULE,
    SORT_RULE,
    EpochOrder,
    FeistelPermutation,
    GroupedOrder,
    check_order_rule,
    epoch_order,
    groups_rule,
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


@pytest.mark.parametrize("rule", [ORDER_RULE, SORT_RULE, "groups-12-4-6"])
def test_order_is_independent_of_the_host_count(rule):
    """Under each rule, the hosts' rows of a global batch, put together, are the one-host batch."""
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


# ---------------------------------------------------------------------------------------------------------
# Order rule groups-G-K-r (data.order: groups)
# ---------------------------------------------------------------------------------------------------------

# (N, G, K, r): N a multiple of G or not, ng a multiple of K or not, N < G, N < K*G, r = 1, r = G, K = 1.
GROUPED = [(23, 4, 2, 2), (24, 4, 3, 2), (3, 4, 2, 2), (10, 4, 2, 2), (37, 6, 4, 3), (100, 8, 3, 4),
           (1000, 16, 4, 2), (1001, 16, 5, 16), (999, 7, 1, 7), (500, 10, 10, 1), (4097, 32, 8, 4),
           (1, 1, 1, 1), (2, 1, 1, 1), (257, 256, 64, 4)]  # fmt: skip


def test_order_groups_test_vectors_and_rule_strings():
    # docs/data.md quotes these; a change reorders every groups run (a new rule needs a new name).
    assert epoch_order(23, 0, 0, "groups-4-2-2").tolist() == [
        16, 18, 4, 6, 17, 19, 5, 7, 12, 14, 0, 2, 13, 15, 1, 3, 21, 9, 8, 11, 20, 22, 10]  # fmt: skip
    assert epoch_order(23, 0, 1, "groups-4-2-2").tolist() == [
        0, 2, 12, 14, 1, 3, 13, 15, 16, 18, 8, 10, 17, 19, 9, 11, 5, 6, 21, 4, 7, 22, 20]  # fmt: skip
    assert check_order_rule("groups-256-64-4") == "groups-256-64-4"
    for bad in ("groups-256-64", "groups-256-64-3", "groups-0-64-4", "groups-256-064-4", "groups-a-1-1",
                "groups-256-64-4-1", "groups-256--64-4", "groups-+8-2-4", "groups-٨-2-4"):  # fmt: skip
        with pytest.raises(WWMError, match="not of the form groups-G-K-r") as err:
            check_order_rule(bad)
        assert "\n" not in str(err.value)
    assert groups_rule(256, 64, 256) == "groups-256-64-4"
    with pytest.raises(WWMError, match="order_window_groups=") as err:
        groups_rule(256, 60, 256)  # K does not divide B
    with pytest.raises(WWMError, match="order_group_rows=252") as err:
        groups_rule(250, 64, 256)  # r = 4 does not divide G


def _oracle_mismatches(n, seed, epoch, G, K, r, oracle=naive_grouped_example):
    """Positions where the fast order differs from ``oracle`` (every position of [0, N))."""
    fast = epoch_order(n, seed, epoch, f"groups-{G}-{K}-{r}").tolist()
    return [p for p in range(n) if fast[p] != oracle(n, seed, epoch, p, G, K, r)]


@pytest.mark.parametrize(("n", "G", "K", "r"), GROUPED)
def test_order_groups_is_a_bijection_equal_to_its_naive_oracle(n, G, K, r):
    for seed, epoch in ((0, 0), (5, 3)):
        order = epoch_order(n, seed, epoch, f"groups-{G}-{K}-{r}")
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
        assert _oracle_mismatches(n, seed, epoch, G, K, r) == []


def test_order_groups_negative_control_an_oracle_off_by_one_detail_is_caught():
    """The equality test can fail: an oracle that takes each group's rows contiguously (t*r + u) instead
    of strided (u*(G/r) + t), one detail of the spec, differs at positions of every window."""

    def contiguous(n, seed, epoch, p, G, K, r):
        x = naive_grouped_example(n, seed, epoch, p, G, K, r)
        ng = n // G
        if p >= (ng // K) * K * G:
            return x
        row = x % G
        t, u = row % (G // r), row // (G // r)
        return x - row + t * r + u

    assert _oracle_mismatches(100, 5, 3, 8, 3, 4, contiguous) != []
    assert _oracle_mismatches(100, 5, 3, 8, 3, 4) == []


@pytest.mark.parametrize(("n", "G", "K", "r"), [(4097, 32, 8, 4), (1000, 16, 4, 2), (600, 12, 6, 3)])
def test_order_groups_each_global_batch_takes_r_rows_of_k_groups_and_hosts_read_their_groups(n, G, K, r):
    """With B = K*r: every global batch inside a window has exactly r rows of each of K distinct groups
    (strided through the group), a window's K*G/B steps read its K groups whole, and host h of H (H | K)
    reads only groups [hK/H, (h+1)K/H) of the window."""
    B = K * r
    o = GroupedOrder(n, 1, 2, f"groups-{G}-{K}-{r}")
    order = o(np.arange(n))
    windows = o.windows
    assert windows >= 1
    for w in range(windows):
        window = order[w * K * G : (w + 1) * K * G]
        whole = np.unique(window // G)[:, None] * G + np.arange(G)  # the window's groups, every row
        assert np.array_equal(np.sort(window), np.sort(whole.ravel()))
        for s in range(G // r):
            batch = window[s * B : (s + 1) * B]
            groups, counts = np.unique(batch // G, return_counts=True)
            assert groups.size == K and set(counts.tolist()) == {r}
            for hosts in (h for h in range(1, K + 1) if K % h == 0):
                for h in range(hosts):
                    mine = batch[h * B // hosts : (h + 1) * B // hosts] // G
                    assert np.unique(mine).size == K // hosts
        assert np.unique(window // G).size == K  # the window's groups, each whole (K*G rows)
    # The groups of successive windows are a shuffle: not in id order, each group once per epoch.
    firsts = order[: windows * K * G : B] // G
    assert np.unique(order[: windows * K * G] // G).size == windows * K
    assert windows < 2 or not np.all(np.diff(firsts) > 0)


def test_order_groups_of_billions_of_rows_cost_only_the_hosts_rows():
    """N = 2^33 + 7, groups-256-64-4, B = 256, host 3 of 8: the ids of its rows only, O(B/H), equal to
    the oracle's; the tail past the last window too."""
    data, B, H, h = _Virtual(), 256, 8, 3
    rule = groups_rule(256, 64, B)
    batches = BatchIterator(data, B, seed=1, host_index=h, host_count=H, order_rule=rule)
    tracemalloc.start()
    batch = batches.batch_at(DataPosition(2, 5_000_000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 500_000, peak
    rows = host_rows(B, h, H)
    n = len(data)
    expected = [
        naive_grouped_example(n, 1, 2, 5_000_000 * B + q, 256, 64, 4) for q in range(rows.start, rows.stop)
    ]
    assert batch["example_ids"].tolist() == expected
    assert np.unique(batch["example_ids"] // 256).size == 64 // H  # this host's 8 groups of the window
    tail = GroupedOrder(n, 1, 2, rule)
    positions = np.arange(n - 300, n)  # past the last full window: remaining groups and loose rows
    assert tail(positions).tolist() == [naive_grouped_example(n, 1, 2, int(p), 256, 64, 4) for p in positions]


def test_order_groups_config_keys_refuse_a_batch_they_do_not_divide_in_one_line():
    from wwm.config import load_config
    from wwm.rundir import configured_order_rule

    config = load_config(None, ["data.order=groups", "train.global_batch_size=256"])
    assert configured_order_rule(config) == "groups-256-64-4"
    assert configured_order_rule(load_config(None, [])) == ORDER_RULE  # the default stays feistel-6
    small = [
        "data.order=groups",
        "train.global_batch_size=32",
        "data.order_group_rows=16",
        "data.order_window_groups=4",
    ]
    assert configured_order_rule(load_config(None, small)) == "groups-16-4-8"
    for bad, fix in ((["train.global_batch_size=100"], "order_window_groups="),
                     (["train.global_batch_size=256", "data.order_group_rows=250"], "order_group_rows=252"),
                     (["data.order_window_groups=0"], ">= 1"),
                     (["data.streaming=true", "train.global_batch_size=256"], "data.streaming: false")):  # fmt: skip
        with pytest.raises(WWMError, match=fix) as err:
            load_config(None, ["data.order=groups", *bad])
        assert "\n" not in str(err.value)
    load_config(None, ["train.global_batch_size=100"])  # data.order rows: the group keys order nothing
