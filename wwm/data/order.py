"""The order of examples: a pure function of (seed, epoch), and the host-slicing rule.

Shuffle order (docs/data.md, "Order and sharding"), by the run's **order rule** (recorded in run.json):

``feistel-6`` (``ORDER_RULE``, every new run)
    Position p of epoch e holds example ``pi(p)``, where ``pi`` is a keyed permutation of [0, N): a
    balanced Feistel network of ``FEISTEL_ROUNDS`` rounds on 2w bits (w = ceil(bits(N - 1) / 2)), its
    round function ``hash32(k_r ^ hash32(R + golden)) mod 2^w`` with round keys
    ``k_r = stream_keys(example_keys(seed, epoch, r), STREAM_PERMUTE)`` of ``wwm.rng``, walked until it
    lands in [0, N) (cycle walking). The ids of any B positions cost O(B) and the order holds O(1) memory
    (the round keys), for any N < 2^63; nothing depends on the number of hosts.
``groups-G-K-r`` (``groups_rule``, opt-in: ``data.order: groups``)
    The rows are cut into groups of G adjacent example ids ([gG, (g+1)G), ng = N // G of them; the
    N mod G last rows are "loose"), K groups make a window of K*G positions. Window w holds the groups
    ``sigma(wK .. wK+K-1)`` (``sigma``: the Feistel permutation above of [0, ng), stream
    ``STREAM_GROUPS``); its position q = t*(K*r) + i*r + u holds row ``u*(G/r) + t`` of group
    ``sigma(wK + i)``. The positions after the last full window hold the remaining groups and the
    loose rows under a Feistel permutation of that tail (stream ``STREAM_GROUP_TAIL``). With K*r = B each
    global batch has r rows from each of K groups, and host h of H (H | K) reads groups
    ``[hK/H, (h+1)K/H)`` of its window only: whole groups, one ranged read each (remote mode).
``1`` (``SORT_RULE``, runs started before feistel-6)
    Example i of N gets the key ``k_i = stream_keys(example_keys(seed, epoch, i), ORDER_STREAM)``; the
    epoch's order is the example ids sorted by (k_i, i): O(N) memory and O(N log N) time per epoch, and
    its uint32 keys tie past 2^32 examples. Kept so that such runs resume with their own batches.

Global batches
    Global batch ``s`` of an epoch is positions ``[s*B, (s+1)*B)`` of its order; an epoch has ``N // B``
    steps (the last, incomplete global batch is dropped for training; the next epoch reshuffles
    everything).

Hosts and devices
    With H hosts (processes) and D devices per host, B must be divisible by H*D. Host h reads rows
    ``[h*B/H, (h+1)*B/H)`` of each global batch, and its device d takes rows ``[d*B/(H*D), (d+1)*B/(H*D))``
    of that slice: device (h, d) holds global rows ``[(h*D + d) * B/(H*D), ...)``, the usual
    process-major layout of jax's ``make_array_from_process_local_data`` and of a torch
    DistributedSampler over contiguous slices. The union over hosts is the single-host global batch, row
    for row. Under feistel-6 a host computes the example ids of its own rows only.
"""

from __future__ import annotations

import numpy as np

from wwm import rng
from wwm.errors import WWMError

__all__ = [
    "FEISTEL_ROUNDS",
    "ORDER_RULE",
    "ORDER_RULES",
    "ORDER_STREAM",
    "SORT_RULE",
    "EpochOrder",
    "FeistelPermutation",
    "GroupedOrder",
    "check_batch_layout",
    "check_order_rule",
    "configured_rule",
    "device_rows",
    "epoch_order",
    "group_rows",
    "groups_rule",
    "host_rows",
    "parse_groups_rule",
]

ORDER_STREAM = rng.STREAM_ORDER
BUFFER_STREAM = rng.STREAM_BUFFER
PERMUTE_STREAM = rng.STREAM_PERMUTE
GROUPS_STREAM = rng.STREAM_GROUPS
GROUP_TAIL_STREAM = rng.STREAM_GROUP_TAIL

FEISTEL_ROUNDS = 6
# Which rule orders an epoch's examples; changed only with a new name, since every run's batches depend
# on it. run.json records the rule a run was started under, and a run resumes under its own rule.
ORDER_RULE = f"feistel-{FEISTEL_ROUNDS}"
SORT_RULE = "1"  # sorted hash keys: the rule before feistel-6 (and of run.json files without one)
ORDER_RULES = (SORT_RULE, ORDER_RULE)  # and every well-formed groups-G-K-r (``parse_groups_rule``)
GROUPS_PREFIX = "groups-"
_MAX_EXAMPLES = 1 << 63  # example ids are int64


def _check_seed_epoch(seed: int, epoch: int) -> None:
    for name, value in (("seed", seed), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2**64:
            raise WWMError(f"{name} must be an integer in [0, 2^64); got {value!r}")


def order_keys(example_ids: np.ndarray, seed: int, epoch: int, stream: int = ORDER_STREAM) -> np.ndarray:
    """The uint32 sort key of each example id for (seed, epoch)."""
    _check_seed_epoch(seed, epoch)
    ids = np.asarray(example_ids, dtype=np.int64)
    return rng.stream_keys(rng.example_keys(int(seed), int(epoch), ids), stream)


def check_order_rule(rule: str) -> str:
    """``rule`` if this wwm knows it (feistel-6, "1", or a well-formed groups-G-K-r), else one line."""
    if isinstance(rule, str) and rule.startswith(GROUPS_PREFIX):
        parse_groups_rule(rule)
        return rule
    if rule not in ORDER_RULES:
        raise WWMError(
            f"order rule {rule!r} is unknown to this wwm (it knows {', '.join(map(repr, ORDER_RULES))} and "
            "groups-G-K-r); the run was started by a newer wwm: upgrade wwm to resume it"
        )
    return rule


def parse_groups_rule(rule: str) -> tuple[int, int, int]:
    """(G, K, r) of an order rule ``groups-G-K-r`` (positive decimal integers, r dividing G), else one
    line."""
    parts = rule[len(GROUPS_PREFIX) :].split("-") if rule.startswith(GROUPS_PREFIX) else []
    ok = len(parts) == 3 and all(
        p.isdigit() and p.isascii() and p == str(int(p)) and int(p) > 0 for p in parts
    )
    if not ok or int(parts[0]) % int(parts[2]) or int(parts[0]) >= _MAX_EXAMPLES:
        raise WWMError(
            f"order rule {rule!r} is not of the form groups-G-K-r (G rows a group, K groups a window, r rows "
            "of each group a global batch: positive integers without leading zeros, r dividing G), e.g. "
            "groups-256-64-4"
        )
    return int(parts[0]), int(parts[1]), int(parts[2])


def groups_rule(group_rows: int, window_groups: int, global_batch_size: int) -> str:
    """The rule ``groups-G-K-r`` of ``data.order: groups`` (r = B // K), or one line naming the fix."""
    G, K, B = int(group_rows), int(window_groups), int(global_batch_size)
    if G < 1 or K < 1:
        raise WWMError(f"data.order_group_rows and data.order_window_groups must be >= 1; got {G} and {K}")
    if B % K:
        divisors = [k for k in range(1, B + 1) if B % k == 0 and G % (B // k) == 0]
        near = min(divisors, key=lambda k: abs(k - K)) if divisors else None
        fix = f"; e.g. data.order_window_groups={near}" if near else ""
        raise WWMError(
            f"data.order: groups needs data.order_window_groups ({K}) to divide train.global_batch_size ({B}), "
            f"so that each global batch takes the same number of rows from each of its groups{fix}"
        )
    r = B // K
    if G % r:
        raise WWMError(
            f"data.order: groups takes r = train.global_batch_size / data.order_window_groups = {B} / {K} = {r} "
            f"rows of each group a step, which must divide data.order_group_rows ({G}); choose "
            f"data.order_group_rows={-(-G // r) * r} or more window groups"
        )
    return f"{GROUPS_PREFIX}{G}-{K}-{r}"


def configured_rule(order: str, group_rows: int, window_groups: int, global_batch_size: int) -> str:
    """The rule a new run gets from its config: ``data.order`` rows -> feistel-6, groups -> groups-G-K-r."""
    if order == "groups":
        return groups_rule(group_rows, window_groups, global_batch_size)
    return ORDER_RULE


def group_rows(rule: str) -> int:
    """G, the rows of a group, of a groups rule; 0 for the row orders (feistel-6, "1")."""
    return parse_groups_rule(rule)[0] if rule.startswith(GROUPS_PREFIX) else 0


class FeistelPermutation:
    """The keyed permutation ``pi`` of [0, N) of order rule feistel-6 (module doc; spec in docs/data.md).

    ``perm(positions)`` -> example ids (int64), O(len(positions)) time, O(1) state: the round keys.
    """

    def __init__(
        self,
        num_examples: int,
        seed: int,
        epoch: int,
        rounds: int = FEISTEL_ROUNDS,
        stream: int = PERMUTE_STREAM,
    ) -> None:
        _check_seed_epoch(seed, epoch)
        if isinstance(num_examples, bool) or not 0 <= int(num_examples) < _MAX_EXAMPLES:
            raise WWMError(f"the number of examples must be in [0, 2^63); got {num_examples!r}")
        self.num_examples = int(num_examples)
        bits = max(self.num_examples - 1, 1).bit_length()
        self.half_bits = (bits + 1) // 2  # w: the domain is [0, 4^w), 4^w < 4 N
        self._shift = np.uint64(self.half_bits)
        self._mask = np.uint32((1 << self.half_bits) - 1)
        round_ids = np.arange(rounds, dtype=np.int64)
        self.round_keys = rng.stream_keys(rng.example_keys(int(seed), int(epoch), round_ids), stream)

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        """One pass of the Feistel network over [0, 4^w): (L, R) -> (R, L ^ F_r(R)) for each round."""
        left = (x >> self._shift).astype(np.uint32)
        right = (x & np.uint64(self._mask)).astype(np.uint32)
        for key in self.round_keys:
            f = rng.draw(key, rng.counter_hash(right))
            f &= self._mask
            left, right = right, left ^ f
        return (left.astype(np.uint64) << self._shift) | right.astype(np.uint64)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= self.num_examples):
            raise IndexError(f"positions outside [0, {self.num_examples})")
        n = np.uint64(self.num_examples)
        out = self._encrypt(positions.astype(np.uint64))
        walking = np.flatnonzero(out >= n)
        while walking.size:  # cycle walking: E(E(...)) until inside [0, N); expected < 4 passes
            again = self._encrypt(out[walking])
            out[walking] = again
            walking = walking[again >= n]
        return out.astype(np.int64)


class GroupedOrder:
    """The order of one epoch under a rule ``groups-G-K-r`` (module doc; spec in docs/data.md).

    ``ids(positions)`` -> example ids (int64), O(len(positions)) time; the state is two Feistel
    permutations' round keys (``sigma`` over the groups, one over the tail)."""

    def __init__(self, num_examples: int, seed: int, epoch: int, rule: str) -> None:
        G, K, r = parse_groups_rule(rule)
        n = int(num_examples)
        self.num_examples, self.G, self.K, self.r = n, G, K, r
        self.groups = n // G  # ng: full groups; rows [ng*G, N) are loose
        self.windows = self.groups // K  # nw: full windows of K groups
        self.window_rows = K * G
        self.tail_start = self.windows * self.window_rows  # positions [tail_start, N): the tail
        self.sigma = FeistelPermutation(self.groups, seed, epoch, stream=GROUPS_STREAM)
        self.tail = FeistelPermutation(n - self.tail_start, seed, epoch, stream=GROUP_TAIL_STREAM)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= self.num_examples):
            raise IndexError(f"positions outside [0, {self.num_examples})")
        G, K, r = self.G, self.K, self.r
        out = np.empty(positions.shape, dtype=np.int64)
        inside = positions < self.tail_start
        p = positions[inside]
        w, q = np.divmod(p, self.window_rows)  # window, position in it
        t, rest = np.divmod(q, K * r)  # t: the span of K*r positions (a global step when B = K*r)
        i, u = np.divmod(rest, r)  # i: the window's i-th group, u: its u-th row of the span
        out[inside] = self.sigma(w * K + i) * G + u * (G // r) + t
        x = self.tail(positions[~inside] - self.tail_start)
        grouped = (self.groups - self.windows * K) * G  # tail positions that fall in the remaining groups
        in_group = x < grouped
        g = np.divmod(x[in_group], G)
        x[in_group] = self.sigma(self.windows * K + g[0]) * G + g[1]
        x[~in_group] += self.groups * G - grouped  # the loose rows, in id order
        out[~inside] = x
        return out


class EpochOrder:
    """The order of one epoch under ``rule``: ``ids(positions)`` gives the example ids at those
    positions. feistel-6 and groups-G-K-r compute them directly; rule "1" sorts all N keys once (O(N)
    memory)."""

    def __init__(self, num_examples: int, seed: int, epoch: int, rule: str = ORDER_RULE) -> None:
        self.rule = check_order_rule(rule)
        self.num_examples, self.epoch = int(num_examples), int(epoch)
        if rule == SORT_RULE:
            keys = order_keys(np.arange(self.num_examples, dtype=np.int64), seed, epoch)
            self._order = np.argsort(keys, kind="stable").astype(np.int64)
        elif rule.startswith(GROUPS_PREFIX):
            self._permutation = GroupedOrder(self.num_examples, seed, epoch, rule)
        else:
            self._permutation = FeistelPermutation(self.num_examples, seed, epoch)

    def ids(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        if self.rule == SORT_RULE:
            return self._order[positions]
        return self._permutation(positions)


def epoch_order(num_examples: int, seed: int, epoch: int, rule: str = ORDER_RULE) -> np.ndarray:
    """The example ids 0..N-1 in the shuffled order of ``epoch`` under ``rule`` (int64; O(N): for tests
    and small sets; readers use ``EpochOrder.ids`` on the positions they need)."""
    return EpochOrder(num_examples, seed, epoch, rule).ids(np.arange(num_examples, dtype=np.int64))


def check_batch_layout(global_batch_size: int, host_count: int = 1, devices_per_host: int = 1) -> None:
    """Raise WWMError unless B > 0 is divisible by host_count * devices_per_host."""
    if isinstance(global_batch_size, bool) or not isinstance(global_batch_size, (int, np.integer)):
        raise WWMError(f"the global batch size must be an integer; got {global_batch_size!r}")
    if host_count < 1 or devices_per_host < 1:
        raise WWMError(f"host_count and devices_per_host must be >= 1; got {host_count}, {devices_per_host}")
    shards = host_count * devices_per_host
    if global_batch_size < 1 or global_batch_size % shards:
        raise WWMError(
            f"the global batch size {global_batch_size} must be a positive multiple of hosts x devices "
            f"({host_count} x {devices_per_host} = {shards}); choose e.g. {max(1, global_batch_size // shards) * shards}"
        )


def host_rows(global_batch_size: int, host_index: int, host_count: int) -> slice:
    """Rows of each global batch that host ``host_index`` of ``host_count`` reads."""
    check_batch_layout(global_batch_size, host_count)
    if not 0 <= host_index < host_count:
        raise WWMError(f"host_index must be in [0, {host_count}); got {host_index}")
    per_host = global_batch_size // host_count
    return slice(host_index * per_host, (host_index + 1) * per_host)


def device_rows(
    global_batch_size: int, host_index: int, host_count: int, device: int, devices_per_host: int
) -> slice:
    """Rows of the global batch that local device ``device`` of host ``host_index`` holds."""
    check_batch_layout(global_batch_size, host_count, devices_per_host)
    if not 0 <= device < devices_per_host:
        raise WWMError(f"device must be in [0, {devices_per_host}); got {device}")
    per_device = global_batch_size // (host_count * devices_per_host)
    first = (host_index * devices_per_host + device) * per_device
    return slice(first, first + per_device)
