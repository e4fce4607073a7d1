"""Keyed, counter-based randomness on 32-bit unsigned integers.

Every random number the masker draws is a pure function of (seed, epoch, example id, stream,
counter). Nothing depends on a global generator, the batch an example sits in, the data-loader
worker or the host, so the same example gets the same mask everywhere. The arithmetic is uint32
xor / shift / multiply (mod 2^32) only, which jax.numpy and torch reproduce bit-exactly on device.
docs/masking.md is the normative spec; this module is its reference implementation.

The mixing function is Chris Wellons' `lowbias32` integer hash (constants 0x21f0aaad, 0x735a2d97,
shifts 16/15/15): a bijection on uint32 with full avalanche. We do not use Philox or Threefry
because the masker needs only a few bits per word and those cost 10-20x more numpy passes; the
statistical tests in tests/test_masking.py check the rates that matter.
"""

from __future__ import annotations

import functools

import numpy as np

U32 = np.uint32
_MUL1 = U32(0x21F0AAAD)
_MUL2 = U32(0x735A2D97)
_GOLDEN = 0x9E3779B9
_KEY_SALT = 0x5EED_2B0C  # start of the key chain, so that all-zero inputs do not hash to 0

# Stream constants: one independent sequence per decision the masker makes.
STREAM_WORD = 1  # per word: high 16 bits = priority of its unit, low 16 bits = replacement
STREAM_SELECT = 2  # Bernoulli budget: is this word selected
STREAM_REPLACE = 3  # [MASK] / random / keep, per token (replacement_unit: token)
STREAM_TOKEN = 4  # which random token replaces a token
STREAM_NGRAM = 5  # length of the n-gram span that starts at a word
# The data order (wwm.data.order): every stream id of the project is here, so none is used twice.
STREAM_ORDER = 16  # the shuffle key of each example in an epoch
STREAM_BUFFER = 17  # the streaming shuffle buffer
STREAM_PERMUTE = 18  # the round keys of the epoch permutation (order rule feistel-6)
STREAM_GROUPS = 19  # the round keys of the group permutation sigma (order rules groups-G-K-r)
STREAM_GROUP_TAIL = 20  # the round keys of the tail's permutation (order rules groups-G-K-r)

# Probabilities are compared in fixed point: the 24-bit uniform u24 = value >> 8 with
# T = round(p * 2^24) for the selection decisions, and the 16-bit uniform value & 0xFFFF with
# T = round(p * 2^16) for replacement decisions. Integer comparisons keep every decision identical
# in every framework.
UNIFORM_BITS = 24
LOW16 = np.uint32(0xFFFF)


def hash32(x: np.ndarray) -> np.ndarray:
    """lowbias32: uint32 -> uint32 bijection. Input is converted to uint32 (mod 2^32)."""
    return _hash32_inplace(np.asarray(x).astype(U32, copy=True))


def _hash32_inplace(x: np.ndarray) -> np.ndarray:
    # In-place array ops wrap silently mod 2^32 (numpy warns on overflow only for scalars). The
    # operands are 0-d arrays: numpy dispatches those faster than scalars (~40% on small arrays).
    x ^= x >> _SHIFT16
    x *= _MUL1_ARRAY
    x ^= x >> _SHIFT15
    x *= _MUL2_ARRAY
    x ^= x >> _SHIFT15
    return x


_SHIFT16, _SHIFT15 = np.array(16, dtype=U32), np.array(15, dtype=U32)
_MUL1_ARRAY, _MUL2_ARRAY = np.array(_MUL1, dtype=U32), np.array(_MUL2, dtype=U32)


def _split64(value: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(value, dtype=np.uint64)
    return (v & np.uint64(0xFFFFFFFF)).astype(U32), (v >> np.uint64(32)).astype(U32)


def example_keys(seed: int, epoch: int | np.ndarray, example_ids: np.ndarray) -> np.ndarray:
    """Per-example key (B,) uint32 = chain of hash32 over (salt, seed lo/hi, epoch lo/hi, id lo/hi).

    Each step h <- hash32(h ^ word) is a bijection of `word`, so distinct example ids below 2^32
    get distinct keys for a given (seed, epoch).
    """
    ids = np.asarray(example_ids)
    if ids.ndim != 1:
        raise ValueError(f"example_ids must be 1-D (one id per row); got shape {ids.shape}")
    h = _seed_epoch_key(int(seed), int(epoch)) if np.ndim(epoch) == 0 else _seed_epoch_keys(seed, epoch)
    if ids.dtype.kind in "iu":  # the usual case, in place: the low and high 32 bits of each id
        x = np.bitwise_xor(ids.astype(U32), h, dtype=U32)  # (B,) low bits (C cast = mod 2^32)
        _hash32_inplace(x)
        if ids.dtype.itemsize > 4:
            x ^= (ids >> ids.dtype.type(32)).astype(U32)  # a typed shift: uint64 >> int is float in numpy 1.x
        return _hash32_inplace(x)
    id_lo, id_hi = _split64(ids)
    h = hash32(h ^ id_lo)
    return hash32(h ^ id_hi)  # (B,) or () broadcast with ids


def _seed_epoch_keys(seed: int, epoch) -> np.ndarray:
    seed_lo, seed_hi = _split64(seed)
    h = hash32(U32(_KEY_SALT) ^ seed_lo)
    h = hash32(h ^ seed_hi)
    epoch_lo, epoch_hi = _split64(epoch)
    h = hash32(h ^ epoch_lo)
    return hash32(h ^ epoch_hi)


@functools.lru_cache(maxsize=256)
def _seed_epoch_key(seed: int, epoch: int) -> np.uint32:
    """The (seed, epoch) half of the key chain, computed once per epoch."""
    return U32(_seed_epoch_keys(seed, epoch))


def stream_keys(keys: np.ndarray, stream: int | tuple[int, ...]) -> np.ndarray:
    """Key of one stream for each example: hash32(key ^ hash32(stream * golden)).

    With a tuple of streams, the keys of all of them in one pass: shape keys.shape + (S,).
    """
    keys = np.asarray(keys, dtype=U32)
    if isinstance(stream, tuple):
        keys = keys[..., None]
    return _hash32_inplace(np.asarray(np.bitwise_xor(keys, _stream_salt(stream), dtype=U32)))


@functools.lru_cache(maxsize=64)
def _stream_salt(stream: int | tuple[int, ...]) -> np.ndarray:
    """hash32(stream * golden), once per stream or tuple of streams (numpy scalar arithmetic is slow)."""
    streams = np.array(stream, dtype=np.uint64).reshape(-1)
    salts = hash32((streams * np.uint64(_GOLDEN)) & np.uint64(0xFFFFFFFF))
    return salts if isinstance(stream, tuple) else salts[0]


def counter_hash(counters: np.ndarray) -> np.ndarray:
    """hash32(counter + golden): the per-counter half of a draw, shared by all rows and streams."""
    x = np.asarray(counters).astype(U32, copy=True)
    x += U32(_GOLDEN)
    return hash32(x)


def draw(stream_key: np.ndarray, counter_hashes: np.ndarray) -> np.ndarray:
    """The random uint32 for (stream key, counter): hash32(stream_key ^ counter_hash(counter)).

    Both arguments broadcast, e.g. stream_key (B, 1) with counter_hashes (B, W).
    """
    x = np.bitwise_xor(np.asarray(stream_key, dtype=U32), counter_hashes, dtype=U32)
    return _hash32_inplace(np.asarray(x))


def probability_threshold(p: float, bits: int = UNIFORM_BITS) -> int:
    """T = round(p * 2^bits): an event of probability p happens iff the bits-bit uniform is < T."""
    return round(float(p) * (1 << bits))


def uniform24(values: np.ndarray) -> np.ndarray:
    """The top 24 bits of a draw, as int32 in [0, 2^24)."""
    return (values >> U32(32 - UNIFORM_BITS)).astype(np.int32)
