"""A second, deliberately naive implementation of the epoch orders of docs/data.md (order rules feistel-6
and groups-G-K-r): plain Python integers, one position at a time, its own copy of the hash, and the
inverse permutation.

It shares no code with wwm.data.order or wwm.rng, so the tests can demand that the vectorized order
equals it exactly, and prove the permutation a bijection where it cannot be enumerated (N >= 2^32):
``naive_position(naive_example(p)) == p``.
"""

from __future__ import annotations

M32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9
KEY_SALT = 0x5EED2B0C
STREAM_PERMUTE = 18
STREAM_GROUPS = 19
STREAM_GROUP_TAIL = 20
ROUNDS = 6


def hash32(x: int) -> int:
    """lowbias32 (docs/masking.md section 3)."""
    x &= M32
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & M32
    x ^= x >> 15
    x = (x * 0x735A2D97) & M32
    x ^= x >> 15
    return x


def example_key(seed: int, epoch: int, i: int) -> int:
    h = KEY_SALT
    for value in (seed, epoch, i):
        h = hash32(h ^ (value & M32))
        h = hash32(h ^ (value >> 32))
    return h


def stream_key(key: int, stream: int) -> int:
    return hash32(key ^ hash32((stream * GOLDEN) & M32))


def round_keys(seed: int, epoch: int, stream: int = STREAM_PERMUTE) -> list[int]:
    return [stream_key(example_key(seed, epoch, r), stream) for r in range(ROUNDS)]


def half_bits(n: int) -> int:
    """w: the Feistel network works on 2w bits, the least even number of bits that holds N - 1 (>= 2)."""
    bits = max(n - 1, 1).bit_length()
    return (bits + 1) // 2


def _f(key: int, right: int, w: int) -> int:
    return hash32(key ^ hash32(right + GOLDEN)) & ((1 << w) - 1)


def _encrypt(x: int, keys: list[int], w: int) -> int:
    left, right = x >> w, x & ((1 << w) - 1)
    for key in keys:
        left, right = right, left ^ _f(key, right, w)
    return (left << w) | right


def _decrypt(y: int, keys: list[int], w: int) -> int:
    left, right = y >> w, y & ((1 << w) - 1)
    for key in reversed(keys):
        left, right = right ^ _f(key, left, w), left
    return (left << w) | right


def naive_example(n: int, seed: int, epoch: int, position: int, stream: int = STREAM_PERMUTE) -> int:
    """The example id at ``position`` of epoch ``epoch``: encrypt, and again while outside [0, N)."""
    assert 0 <= position < n
    keys, w = round_keys(seed, epoch, stream), half_bits(n)
    x = _encrypt(position, keys, w)
    while x >= n:
        x = _encrypt(x, keys, w)
    return x


def naive_position(n: int, seed: int, epoch: int, example: int) -> int:
    """The inverse: the position of ``example`` (decrypt, and again while outside [0, N))."""
    assert 0 <= example < n
    keys, w = round_keys(seed, epoch), half_bits(n)
    x = _decrypt(example, keys, w)
    while x >= n:
        x = _decrypt(x, keys, w)
    return x


def naive_grouped_example(n: int, seed: int, epoch: int, position: int, G: int, K: int, r: int) -> int:
    """The example id at ``position`` under order rule groups-G-K-r, read off docs/data.md line by line."""
    assert 0 <= position < n and G % r == 0
    ng = n // G  # full groups
    nw = ng // K  # full windows

    def sigma(g: int) -> int:
        return naive_example(ng, seed, epoch, g, STREAM_GROUPS)

    if position < nw * K * G:  # inside window w
        w, q = position // (K * G), position % (K * G)
        t = q // (K * r)
        i = (q % (K * r)) // r
        u = q % r
        return sigma(w * K + i) * G + u * (G // r) + t
    x = naive_example(n - nw * K * G, seed, epoch, position - nw * K * G, STREAM_GROUP_TAIL)
    remaining = (ng - nw * K) * G
    if x < remaining:
        return sigma(nw * K + x // G) * G + x % G
    return ng * G + (x - remaining)
