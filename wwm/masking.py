"""Whole-word masking: the reference implementation of docs/masking.md, in vectorized numpy.

Time and memory are O(B·L): no Python loop over tokens or rows, no L x L tensor. The only loops
are (a) the budget fill, which runs a few whole-batch passes (at most the length of the longest
word after the first pass) and (b) log2(W) pointer-doubling passes when n-gram spans are on.

Shapes: B rows, L tokens per row, W = most words in a row, U = most units (words or spans).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from wwm import rng
from wwm.config.sections import MaskingConfig
from wwm.errors import WWMError

IGNORE_INDEX = -100

# Hot paths call ufunc methods (np.add.accumulate, a.searchsorted, a.nonzero()) rather than the
# np.cumsum / np.searchsorted / np.flatnonzero wrappers: ~1 us of Python each, per call.

# Replacement categories reported per token (MaskedBatch.replacement).
NOT_MASKED, REPLACED_BY_MASK, REPLACED_BY_RANDOM, KEPT = 0, 1, 2, 3

_INT32_MAX = (1 << 31) - 1
_MAX_UNITS_PER_ROW = 1 << 31  # unit index and priority are packed into one uint64 sort key


def decimal_fraction(p: float) -> Fraction:
    """`p` as the decimal number it is written as: the exact rational value of its shortest
    round-trip decimal string (Python's repr), e.g. 0.15 -> 3/20, not the binary double
    0.1499999999999999944... that a float holds."""
    return Fraction(repr(float(p)))


def exact_budget(n_eligible, mask_prob: float, max_predictions: int | None = None):
    """The `exact` budget of docs/masking.md §5: the one home of the rule (the masker's lookup
    table and the JAX trainer's static bound `masked_bound` both come from here).

    n = floor(E * p + 1/2) (E * p rounded half up) in exact integer arithmetic, with p = a / b the
    decimal value of `mask_prob` (`decimal_fraction`): n = (2 * E * a + b) // (2 * b). Then
    n = max(n, 1), n = min(n, max_predictions) if set, and n = 0 when E = 0. For p = 0.15: E = 10
    gives 2 and E = 510 (a full 512-token block) 77, where 24-bit fixed point gave 1 and 76; float
    arithmetic fails too (45 * 0.7 = 31.499999999999996, and round() rounds half to even).

    n_eligible: E, an int or an integer array of any shape (the result then has its shape, int64).
    """
    p = decimal_fraction(mask_prob)
    a, b = p.numerator, p.denominator
    e = np.asarray(n_eligible, dtype=np.int64)
    if e.size and int(e.min()) < 0:
        raise WWMError(f"the number of eligible tokens must be >= 0; got {int(e.min())}")
    if 2 * max(int(e.max(initial=0)), 1) * a + b < 2**63:
        n = (2 * a * e + b) // (2 * b)  # int64 without overflow
    else:  # a long decimal (or huge E): Python integers, exact at any size
        n = ((2 * a) * e.astype(object) + b) // (2 * b)
        n = n.astype(np.int64) if isinstance(n, np.ndarray) else np.int64(n)
    n = np.maximum(n, 1)
    if max_predictions is not None:
        n = np.minimum(n, int(max_predictions))
    n = np.where(e == 0, 0, n).astype(np.int64)
    return n if np.ndim(n_eligible) else int(n)


class MaskedBatch(NamedTuple):
    input_ids: np.ndarray  # (B, L) the model's input, with masked positions replaced
    labels: np.ndarray  # (B, L) original id where masked, -100 elsewhere (signed: int32 for uint8/16 ids)
    masked: np.ndarray  # (B, L) bool
    replacement: np.ndarray  # (B, L) int8: NOT_MASKED / REPLACED_BY_MASK / REPLACED_BY_RANDOM / KEPT


class WholeWordMasker:
    """Masks whole words of a batch: `masker(input_ids, word_ids, example_ids, epoch)`.

    input_ids, word_ids: (B, L) integer arrays. word_ids gives each token's word (-1 for special
    and pad tokens); a word is a maximal run of equal non-negative ids. Tokens whose id is special
    or whose attention_mask is 0 are never masked whatever their word id.
    """

    def __init__(
        self,
        config: MaskingConfig | None = None,
        *,
        mask_token_id: int | None,
        vocab_size: int,
        special_token_ids: Iterable[int] = (),
        unk_token_id: int | None = None,
    ) -> None:
        self.config = config or MaskingConfig()
        if mask_token_id is None:
            raise WWMError(
                "the tokenizer has no mask token; MLM needs one: add it with "
                "tokenizer.add_special_tokens({'mask_token': '[MASK]'}) and resize the model's embeddings"
            )
        if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
            raise WWMError(f"vocab_size must be a positive integer; got {vocab_size!r}")
        if not 0 <= int(mask_token_id) < vocab_size:
            raise WWMError(f"mask_token_id {mask_token_id} is outside the vocabulary [0, {vocab_size})")
        self.mask_token_id = int(mask_token_id)
        self.vocab_size = int(vocab_size)
        self._workspace = _Workspace()
        special = np.zeros(self.vocab_size, dtype=bool)
        ids = np.fromiter((int(i) for i in special_token_ids), dtype=np.int64)
        ids = ids[(ids >= 0) & (ids < self.vocab_size)]
        special[ids] = True
        special[self.mask_token_id] = True
        self.is_special = special  # (V,) lookup table: never masked, never a random replacement
        self._special_ranges = _id_ranges(np.flatnonzero(special), max_ranges=3)
        # The unknown token stands for a word of the text: it can be masked, but a random
        # replacement never introduces it.
        random_ok = ~special
        if unk_token_id is not None and 0 <= int(unk_token_id) < self.vocab_size:
            if special[int(unk_token_id)]:
                raise WWMError("unk_token_id is also listed as special; leave it out of special_token_ids")
            random_ok[int(unk_token_id)] = False
        self.random_token_ids = np.flatnonzero(random_ok).astype(np.int64)  # random replacements
        if self.random_token_ids.size == 0 and self.config.random_token_ratio > 0:
            raise WWMError("every vocabulary id is special: no id is left for random replacement")
        cfg = self.config
        self._t_mask_prob = rng.probability_threshold(cfg.mask_prob)
        self._budget_table = np.zeros(0, dtype=np.int64)  # exact budget by eligible count (grown on use)
        self._t16_mask_token = rng.probability_threshold(cfg.mask_token_ratio, bits=16)
        self._t16_mask_or_random = rng.probability_threshold(
            cfg.mask_token_ratio + cfg.random_token_ratio, bits=16
        )
        # Span length k = 1 + #{i : u24 >= cumulative threshold i}.
        self._t_span = np.array(
            [rng.probability_threshold(c) for c in np.cumsum(cfg.span_probs)[:-1]], dtype=np.int32
        )

    def __getstate__(self) -> dict:
        # The scratch buffers are per thread and per process: a pickled masker (a data-loader
        # worker started with spawn) gets fresh ones.
        state = self.__dict__.copy()
        del state["_workspace"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._workspace = _Workspace()

    @classmethod
    def from_tokenizer(cls, tokenizer, config: MaskingConfig | None = None) -> WholeWordMasker:
        """Build from a Hugging Face tokenizer: its mask token, vocabulary size and special ids.

        The unknown token is not treated as special: it stands for a word of the text (wwm.words
        gives it a word id), so it can be masked; it is never a random replacement.
        """
        unk = tokenizer.unk_token_id
        return cls(
            config,
            mask_token_id=tokenizer.mask_token_id,
            vocab_size=len(tokenizer),
            special_token_ids=[i for i in tokenizer.all_special_ids if i != unk],
            unk_token_id=unk,
        )

    # ------------------------------------------------------------------ public entry point
    def __call__(
        self,
        input_ids: np.ndarray | Sequence[Sequence[int]],
        word_ids: np.ndarray | Sequence[Sequence[int]],
        example_ids: np.ndarray | Sequence[int],
        epoch: int = 0,
        attention_mask: np.ndarray | None = None,
    ) -> MaskedBatch:
        input_ids, word_ids, example_ids = self._check_inputs(
            input_ids, word_ids, example_ids, attention_mask
        )
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise WWMError(f"epoch must be a non-negative integer; got {epoch!r}")
        # (B, L) eligible: a word's token (word id >= 0) that is not special; a > b is a & ~b.
        eligible = np.greater(word_ids >= 0, self._is_special(input_ids))
        if attention_mask is not None:
            eligible &= np.asarray(attention_mask) != 0
        keys = rng.example_keys(self.config.seed, int(epoch), example_ids)  # (B,)

        ws = self._workspace
        words = _Words(word_ids, eligible, ws)
        B, W = words.lengths.shape
        # The two streams every batch uses, hashed in one pass: (B, 2).
        stream_keys = rng.stream_keys(keys, (rng.STREAM_WORD, rng.STREAM_TOKEN))
        # One draw per word: its high 16 bits order the units, its low 16 bits pick the replacement.
        word_draws = rng.draw(stream_keys[:, :1], _counter_hashes(W))  # (B, W)
        units = words.as_units() if self.config.max_ngram == 1 else self._spans(words, keys)
        n_eligible = words.lengths.sum(axis=1, dtype=np.int32)  # (B,) eligible tokens per row
        chosen = self._choose_units(units, n_eligible, keys, word_draws, ws)  # (N,) flat unit indices

        if self.config.replacement_unit == "word":
            # One decision per chosen word, scattered into a (B, W) grid (0 elsewhere) and moved
            # to tokens with one gather.
            chosen_words = chosen  # flat (B, W) indices
            if units.word_to_unit is not None:  # spans: the words of the chosen spans
                chosen_words = np.flatnonzero(units.to_words(_grid_of(chosen, units.lengths.size), B))
            state = np.zeros(B * W + 1, dtype=np.int8)  # + the dump slot of ineligible tokens
            state[chosen_words] = self._categories(word_draws.ravel().take(chosen_words) & rng.LOW16)
            replacement = state.take(words.flat_index)  # (B, L) int8
            masked = replacement != NOT_MASKED
        else:
            chosen_words = units.to_words(_grid_of(chosen, units.lengths.size), B)  # (B, W) bool
            masked = _append_dump(chosen_words).take(words.flat_index)  # (B, L) bool
            draws = rng.draw(
                rng.stream_keys(keys, rng.STREAM_REPLACE)[:, None], rng.counter_hash(words.eligible_rank())
            )
            replacement = self._categories(draws & rng.LOW16)  # (B, L) int8
            replacement *= masked

        out, labels = _apply(input_ids, replacement, masked, self.mask_token_id)
        random_at = (replacement == REPLACED_BY_RANDOM).ravel().nonzero()[0]  # flat positions, few
        if random_at.size:
            out.ravel()[random_at] = self._random_tokens(words, random_at, stream_keys[:, 1])
        return MaskedBatch(out, labels, masked, replacement)

    def _is_special(self, input_ids: np.ndarray) -> np.ndarray:
        """(B, L) bool: the token is special. A few ranges of ids are compared, not looked up:
        a table lookup is a gather, several times slower than 2-3 comparisons."""
        if self._special_ranges is None:
            return self.is_special.take(input_ids)
        special = None
        for lo, hi in self._special_ranges:
            # ids are validated non-negative, so a range starting at 0 needs one comparison.
            if lo == hi:
                hit = input_ids == lo
            elif lo == 0:
                hit = input_ids <= hi
            else:
                hit = input_ids >= lo
                hit &= input_ids <= hi
            special = hit if special is None else np.logical_or(special, hit, out=special)
        return special

    def _categories(self, u16: np.ndarray) -> np.ndarray:
        """int8 REPLACED_BY_MASK (u < T_mask) / REPLACED_BY_RANDOM (u < T_mask+random) / KEPT."""
        category = np.full(u16.shape, KEPT, dtype=np.int8)
        category -= u16 < self._t16_mask_or_random
        category -= u16 < self._t16_mask_token
        return category

    # ------------------------------------------------------------------ validation
    def _check_inputs(self, input_ids, word_ids, example_ids, attention_mask):
        input_ids = np.asarray(input_ids)
        word_ids = np.asarray(word_ids)
        example_ids = np.asarray(example_ids)
        if input_ids.ndim == 1:  # a single example
            input_ids, word_ids, example_ids = input_ids[None], word_ids[None], example_ids.reshape(-1)
        if input_ids.ndim != 2:
            raise WWMError(f"input_ids must be a (batch, length) array; got shape {input_ids.shape}")
        if word_ids.shape != input_ids.shape:
            raise WWMError(
                f"word_ids shape {word_ids.shape} does not match input_ids shape {input_ids.shape}: "
                "give one word id per token (-1 for special and pad tokens)"
            )
        if attention_mask is not None and np.shape(attention_mask) != input_ids.shape:
            raise WWMError(
                f"attention_mask shape {np.shape(attention_mask)} does not match "
                f"input_ids shape {input_ids.shape}"
            )
        if example_ids.shape != (input_ids.shape[0],):
            raise WWMError(
                f"example_ids must hold one id per row: expected shape ({input_ids.shape[0]},), "
                f"got {example_ids.shape}"
            )
        for name, arr in (("input_ids", input_ids), ("word_ids", word_ids), ("example_ids", example_ids)):
            if arr.size and arr.dtype.kind not in "iu":
                raise WWMError(f"{name} must be integers; got dtype {arr.dtype}")
        if example_ids.size and example_ids.min() < 0:
            raise WWMError("example_ids must be non-negative integers (stable ids of the examples)")
        self.check_token_ids(input_ids)
        return input_ids, word_ids, example_ids

    def check_token_ids(self, input_ids: np.ndarray) -> None:
        """Raise WWMError unless every id is in [0, vocab_size): called before any lookup by id."""
        if input_ids.size and (input_ids.min() < 0 or input_ids.max() >= self.vocab_size):
            raise WWMError(
                f"input_ids hold ids outside the vocabulary [0, {self.vocab_size}): "
                f"min {input_ids.min()}, max {input_ids.max()}; is the masker built from the same tokenizer?"
            )

    # ------------------------------------------------------------------ units and budget
    def _spans(self, words: _Words, keys: np.ndarray) -> _Units:
        """Partition each row's words into spans of 1..max_ngram words (never across a special token).

        Walking left to right, the span starting at word j has length k_j drawn from span_probs
        (cut at the end of its segment of consecutive eligible tokens); the next span starts where
        it ends. The chain of span starts is found by pointer doubling in ceil(log2(W)) passes.
        """
        B, W = words.lengths.shape
        j = np.arange(W, dtype=np.int64)
        draws = rng.draw(rng.stream_keys(keys, rng.STREAM_NGRAM)[:, None], rng.counter_hash(j)[None, :])
        u24 = rng.uniform24(draws)  # (B, W)
        span_len = 1 + (u24[:, :, None] >= self._t_span[None, None, :]).sum(-1)  # (B, W)
        nxt = np.minimum(j[None, :] + span_len, words.segment_end())  # (B, W), in (j, count]
        nxt = np.where(j[None, :] < words.count[:, None], nxt, W)  # padding words -> the sentinel W
        # jump = nxt^(2^t) for t = 0, 1, ...; the sentinel W maps to itself.
        jump = np.concatenate([nxt, np.full((B, 1), W)], axis=1)  # (B, W+1)
        node = np.zeros((B, W), dtype=np.int64)  # node[b, d] = the start reached after d spans
        bit = 0
        while (1 << bit) < W:
            step = ((j >> bit) & 1).astype(bool)[None, :]
            node = np.where(step, np.take_along_axis(jump, node, axis=1), node)
            jump = np.take_along_axis(jump, jump, axis=1)
            bit += 1
        is_start = np.zeros((B, W + 1), dtype=bool)
        np.put_along_axis(is_start, node, True, axis=1)
        is_start = is_start[:, :W] & (j[None, :] < words.count[:, None])  # (B, W)
        return words.group_into_spans(is_start)

    def _choose_units(
        self, units: _Units, n_eligible: np.ndarray, keys: np.ndarray, word_draws: np.ndarray, ws: _Workspace
    ) -> np.ndarray:
        """Flat indices b * U + u of the units masked in each row, per the budget rule of docs/masking.md."""
        cfg = self.config
        B, U = units.lengths.shape
        lengths = units.lengths  # (B, U); 0 = no unit (padding) or not a candidate
        if cfg.budget == "bernoulli":
            counters = _counter_hashes(U) if units.first_word is None else rng.counter_hash(units.first_word)
            select = rng.draw(rng.stream_keys(keys, rng.STREAM_SELECT)[:, None], counters)
            lengths = np.where(rng.uniform24(select) < self._t_mask_prob, lengths, 0)
            if cfg.max_predictions is None:
                return np.flatnonzero(lengths)
            budget = np.full(B, cfg.max_predictions, dtype=np.int64)
        else:
            budget = self._exact_budget(n_eligible)
        if U == 0 or B == 0:
            return np.zeros(0, dtype=np.intp)
        draws = (
            word_draws if units.first_word is None else np.take_along_axis(word_draws, units.first_word, 1)
        )
        # (B, U) keys unique per row, (draw >> 16, unit index), sorted in place in the workspace.
        # Empty units: a suffix of each row for words under the exact budget, else wherever length is 0.
        empty = units.count if cfg.budget == "exact" and units.count is not None else lengths == 0
        sorted_key = _priority_keys(draws, empty, ws)
        sorted_key.sort(axis=1)
        # The fill needs only the first ranks: a row's first overflow comes by rank n (every unit
        # has a token, and empty units sort last), and the gap it leaves is usually closed by a
        # one-token unit a few ranks later. Rows with budget left after K ranks go on over the rest.
        max_budget = int(budget.max())
        K = min(U, max_budget + max(32, max_budget // 2))
        flat_order = _flat_order(sorted_key[:, :K], np.arange(B), U)  # (B, K) flat unit of each rank
        taken, remaining = _greedy_fill(lengths.ravel().take(flat_order), budget)  # (B, K), (B,)
        chosen = flat_order[taken]
        if K < U:
            rows = (remaining > 0).nonzero()[0]
            if rows.size:
                rest = _flat_order(sorted_key[rows, K:], rows, U)  # (R, U - K)
                rest_taken, _ = _greedy_fill(lengths.ravel().take(rest), remaining[rows])
                chosen = np.concatenate([chosen, rest[rest_taken]])
        return chosen

    def _exact_budget(self, n_eligible: np.ndarray) -> np.ndarray:
        """(B,) the budget of each row (`exact_budget`), looked up in a table over E = 0..L (built
        once per length; one gather instead of several passes)."""
        table = self._budget_table
        top = int(n_eligible.max(initial=0))
        if table.size <= top:
            e = np.arange(max(top + 1, 2 * table.size), dtype=np.int64)
            table = self._budget_table = exact_budget(e, self.config.mask_prob, self.config.max_predictions)
        return table.take(n_eligible)

    # ------------------------------------------------------------------ replacement
    def _random_tokens(self, words: _Words, flat_positions: np.ndarray, token_keys: np.ndarray):
        """Random non-special ids for the given flat positions (counter: the token's eligible rank).

        token_keys (B,): each row's STREAM_TOKEN key."""
        rows = flat_positions // words.eligible.shape[1]
        rank = words.eligible_rank().ravel().take(flat_positions)
        values = rng.draw(token_keys.take(rows), rng.counter_hash(rank))
        return self.random_token_ids.take(values % np.uint32(self.random_token_ids.size))


class _Workspace(threading.local):
    """Scratch arrays reused from call to call (one set per thread).

    A fresh numpy temporary of 128 KB or more is a fresh mmap whose pages the kernel zero-fills on
    first touch: for a (64, 512) batch those page faults were a third of the masker's time. The
    biggest internal temporaries therefore live here; nothing here ever leaves the masker.
    """

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}
        self.views: dict[tuple, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        key = (name, shape, dtype)
        view = self.views.get(key)
        if view is not None:  # the common case: the same batch shape as last time
            return view
        dtype = np.dtype(dtype)
        size = int(np.prod(shape)) * dtype.itemsize
        buffer = self.buffers.get(name)
        if buffer is None or buffer.size < size:
            buffer = self.buffers[name] = np.empty(max(size, 1), dtype=np.uint8)
            self.views = {k: v for k, v in self.views.items() if k[0] != name}  # views of the old buffer
        view = self.views[key] = buffer[:size].view(dtype).reshape(shape)
        return view


@functools.lru_cache(maxsize=64)
def _counter_hashes(n: int) -> np.ndarray:
    """counter_hash(0..n-1), shared by every row and stream; cached per length."""
    values = rng.counter_hash(np.arange(n))
    values.setflags(write=False)
    return values


def _grid_of(flat_indices: np.ndarray, size: int) -> np.ndarray:
    """A flat bool grid of `size` cells, True at `flat_indices`."""
    grid = np.zeros(size, dtype=bool)
    grid[flat_indices] = True
    return grid


def _append_dump(grid: np.ndarray) -> np.ndarray:
    """Flatten a (B, U) grid and append one slot that ineligible tokens index (see _Units)."""
    return np.append(grid.ravel(), np.zeros(1, dtype=grid.dtype))


def _apply(input_ids: np.ndarray, replacement: np.ndarray, masked: np.ndarray, mask_token_id: int):
    """The model input (mask tokens put in; random ones are added by the caller) and the labels.

    For int32/int64 ids this is branch-free arithmetic, several times faster than numpy's masked
    assignment or np.where: out = ids + (mask - ids) * is_mask, labels = (ids + 100) * masked - 100.
    Labels of unsigned ids are signed (int32 for 8/16-bit ids, else int64) so that -100 fits.
    """
    if input_ids.dtype not in (np.int32, np.int64):
        out = input_ids.copy()
        out[replacement == REPLACED_BY_MASK] = mask_token_id
        signed = (
            input_ids.dtype
            if input_ids.dtype.kind == "i"
            else np.int32
            if input_ids.itemsize <= 2
            else np.int64
        )
        return out, np.where(masked, input_ids.astype(signed), IGNORE_INDEX)
    # Multiplying by the bool arrays directly casts them in small buffers: no (B, L) int temporaries.
    out = np.subtract(input_ids.dtype.type(mask_token_id), input_ids)
    out *= replacement == REPLACED_BY_MASK
    out += input_ids
    labels = input_ids - input_ids.dtype.type(IGNORE_INDEX)
    labels *= masked
    labels += input_ids.dtype.type(IGNORE_INDEX)
    return out, labels


def _id_ranges(ids: np.ndarray, max_ranges: int) -> list[tuple[int, int]] | None:
    """Sorted ids as at most `max_ranges` inclusive (lo, hi) runs of consecutive ids, else None."""
    if ids.size == 0:
        return None
    breaks = np.flatnonzero(np.diff(ids) != 1)
    if breaks.size + 1 > max_ranges:
        return None
    lows = [int(ids[0])] + [int(ids[i + 1]) for i in breaks]
    highs = [int(ids[i]) for i in breaks] + [int(ids[-1])]
    return list(zip(lows, highs, strict=True))


def _index_mask(U: int):
    return np.uint32(0xFFFF) if U < 0xFFFF else np.uint64(0xFFFFFFFF)


def _priority_keys(draws: np.ndarray, empty: np.ndarray, ws: _Workspace | None = None) -> np.ndarray:
    """Sort keys (B, U) ordering units by (draw >> 16, unit index): unique within a row.

    Packing the top 16 bits of the draw and the unit index into one uint32 lets numpy's SIMD sort
    do the work (6x faster than sorting uint64 keys); rows of 65535 units or more use uint64 keys
    with the same order. Empty units take the largest priority: they are no-ops for the fill
    wherever they sort, and last they leave the real units in the first ranks, which is all the
    fill reads. `empty` is a (B, U) bool, or a (B,) count when the empty units of row b are
    exactly those from count[b] on (words: only the columns past the shortest row are touched).
    """
    B, U = draws.shape
    if U < 0xFFFF:
        out = None if ws is None else ws.get("priority_key", draws.shape, np.uint32)
        key = np.bitwise_and(draws, np.uint32(0xFFFF0000), out=out)
        high = np.uint32(0xFFFF0000)
    else:
        key = (draws >> np.uint32(16)).astype(np.uint64)
        high = np.uint64(0xFFFF)
    if empty.ndim == 1:  # a count per row: empty units are the columns from count[b] on
        first = int(empty.min(initial=U)) if B else U
        tail = key[:, first:]
        np.bitwise_or(tail, high, out=tail, where=np.arange(first, U)[None, :] >= empty[:, None])
    else:
        np.bitwise_or(key, high, out=key, where=empty)
    if U < 0xFFFF:
        key |= np.arange(U, dtype=np.uint32)[None, :]
        return key
    return (key << np.uint64(32)) | np.arange(U, dtype=np.uint64)[None, :]


def _greedy_fill(sorted_len: np.ndarray, budget: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Google BERT's fill rule, vectorized over rows.

    Units come in priority order with lengths `sorted_len` (B, K) (0 = not a candidate). A unit is
    taken if it fits in what is left of the budget; one that would overflow is skipped and later
    (shorter) units may still fill the gap. Pass 1 takes, in every row, the fitting units ranked
    before the first one that overflows; each later pass starts after the last overflow with the
    smaller remaining budget, and only rows with budget left and an overflow take part. The
    remainder after a pass is less than the overflowing unit's length, so there are at most
    (longest unit length) + 1 passes.

    Returns (taken (B, K) bool: the units taken, in rank order; remaining (B,): budget left).
    """
    B, K = sorted_len.shape
    position = np.arange(K)[None, :]
    taken = np.zeros((B, K), dtype=bool)
    remaining = budget.astype(np.int64)
    # Running sums stay below the batch's token count; int32 unless that could overflow.
    longest = int(sorted_len.max(initial=0))
    acc = np.int32 if B * K * longest < _INT32_MAX else np.int64
    rows = np.arange(B)  # the rows still filling
    cursor = None  # (R,) first rank of this pass; None: 0 for every row
    lens = sorted_len
    filled = np.zeros(B * K + 1, dtype=acc)
    while rows.size:
        R = rows.size
        rem = remaining[rows]
        if cursor is None and longest <= rem.min():
            fitting = lens  # the usual first pass: every unit fits on its own
        else:
            fits = lens <= rem[:, None]  # empty units "fit" and add nothing
            if cursor is not None:
                fits &= position >= cursor[:, None]
            fitting = lens * fits  # (R, K) lengths of the fitting units, 0 elsewhere
        # filled[i] = sum of the first i units of the flattened rows. It never decreases, so each
        # row's units within budget are a prefix, found by one binary search per row.
        np.add.accumulate(fitting.ravel(), dtype=acc, out=filled[1 : R * K + 1])
        row_start = np.arange(0, R * K, K)  # (R,)
        before = filled[row_start]  # (R,) sum of the rows before
        # (The needles in the sums' dtype: a wider one would make searchsorted convert the sums.)
        end = filled[1 : R * K + 1].searchsorted((before + rem).astype(acc), side="right") - row_start
        np.minimum(end, K, out=end)  # (R,) rank of the first overflow, K if none
        used = filled[row_start + end] - before
        took = fitting > 0
        took &= position < end[:, None]
        if cursor is None:
            taken = took
        else:
            taken[rows] |= took
        remaining[rows] = rem - used
        go_on = (end < K) & (remaining[rows] > 0)
        rows, cursor = rows[go_on], end[go_on] + 1
        lens = sorted_len[rows]
    return taken, remaining


def _flat_order(sorted_key: np.ndarray, rows: np.ndarray, U: int) -> np.ndarray:
    """(R, K) flat index b * U + u of the unit of each rank, from the sorted keys of rows `rows`."""
    index = (sorted_key & _index_mask(U)).astype(np.intp)
    index += (rows.astype(np.intp) * U)[:, None]
    return index


class _Units:
    """Units (words or n-gram spans) of a batch, in a (B, U) grid padded with empty units."""

    def __init__(
        self,
        lengths: np.ndarray,
        first_word: np.ndarray | None,
        word_to_unit: np.ndarray | None,
        count: np.ndarray | None = None,
    ):
        self.lengths = lengths  # (B, U) tokens per unit, 0 for padding units
        self.count = count  # (B,) units per row when units 0..count-1 are the non-empty ones; None: unknown
        self.first_word = first_word  # (B, U) a unit's first word (its draws' counter); None: u itself
        self.word_to_unit = word_to_unit  # (B, W) flat unit index of each word; None: units are words

    def to_words(self, per_unit: np.ndarray, B: int) -> np.ndarray:
        """Move a per-unit value ((B, U) grid or its flattening) to the (B, W) words of each unit."""
        if self.word_to_unit is None:
            return per_unit.reshape(B, -1)
        return _append_dump(per_unit).take(self.word_to_unit)


class _Words:
    """Words of a batch: maximal runs of equal non-negative word ids among eligible tokens.

    flat_index (B, L): for each token, the flat index b * W + j of its word in a (B, W) grid, or
    B * W (a dump slot one past the end) for ineligible tokens, so that `_append_dump(grid).take(
    flat_index)` moves per-word values to tokens in one gather.
    """

    def __init__(self, word_ids: np.ndarray, eligible: np.ndarray, ws: _Workspace | None = None) -> None:
        B, L = word_ids.shape
        self.eligible = eligible
        self._ws, self._rank = ws, None
        # A token continues the word before it when both are eligible with the same word id.
        # Computed on the flattened batch (contiguous, 3x faster than row slices); a row's first
        # token never continues.
        flat_ids = np.ascontiguousarray(word_ids).ravel()
        continues = np.zeros(B * L, dtype=bool)
        np.equal(flat_ids[1:], flat_ids[:-1], out=continues[1:])
        continues[1:] &= eligible.ravel()[:-1]
        continues = continues.reshape(B, L)
        if L:
            continues[:, 0] = False
        self.starts = np.greater(eligible, continues)  # (B, L) eligible and not a continuation
        # Word numbers over the flattened batch (int32: cumsum into int64 has no fast path), then
        # shifted per row so that flat_index = b * W + (word index in the row).
        acc = np.int32 if B * L < _INT32_MAX else np.int64
        numbers = np.add.accumulate(self.starts.ravel(), dtype=acc).reshape(B, L)  # (B, L) words so far
        words_to_row_end = numbers[:, -1] if L else np.zeros(B, dtype=acc)  # (B,)
        count = words_to_row_end.astype(np.int32)  # (B,) words per row
        count[1:] -= words_to_row_end[:-1]
        self.count = count
        W = int(self.count.max()) if B else 0
        if W >= _MAX_UNITS_PER_ROW:
            raise WWMError(f"a row has {W} words; at most {_MAX_UNITS_PER_ROW - 1} are supported")
        shift = np.arange(B, dtype=acc) * acc(W) - (words_to_row_end - self.count) - acc(1)  # (B,)
        numbers += shift[:, None]
        # intp: bincount and take use it without a conversion pass.
        self.flat_index = np.empty((B, L), np.intp) if ws is None else ws.get("flat_index", (B, L), np.intp)
        np.copyto(self.flat_index, numbers)
        np.copyto(self.flat_index, B * W, where=~eligible)  # (B, L) the dump slot for ineligible tokens
        lengths = np.bincount(self.flat_index.ravel(), minlength=B * W + 1)[: B * W]
        self.lengths = lengths.astype(np.int32).reshape(B, W)  # (B, W) tokens per word

    def as_units(self) -> _Units:
        return _Units(self.lengths, None, None, self.count)

    def eligible_rank(self) -> np.ndarray:
        """(B, L): index of each token among its row's eligible tokens (the per-token counter).

        Computed once per batch, into the workspace. int32: numpy's int16 (and bool -> int64)
        cumsums have no fast path.
        """
        if self._rank is None:
            out = None if self._ws is None else self._ws.get("rank", self.eligible.shape, np.int32)
            self._rank = np.add.accumulate(self.eligible, axis=1, dtype=np.int32, out=out)
            self._rank -= 1
        return self._rank

    def segment_end(self) -> np.ndarray:
        """(B, W): index of the first word after word j's segment (a run of eligible tokens).

        n-gram spans never cross a special token, so a span is cut at its segment's end.
        """
        B, W = self.lengths.shape
        prev_eligible = np.zeros_like(self.eligible)
        prev_eligible[:, 1:] = self.eligible[:, :-1]
        # A word opens a segment when the token before its first token is not eligible.
        opens = np.zeros(B * W + 1, dtype=bool)
        opens[self.flat_index[self.starts & ~prev_eligible]] = True
        opens = np.concatenate([opens[: B * W].reshape(B, W), np.ones((B, 1), bool)], axis=1)
        j = np.arange(W + 1)
        opens |= j[None, :] >= self.count[:, None]  # the row's end acts as a segment start
        candidates = np.where(opens, j[None, :], W)  # (B, W+1)
        first_open_from = np.minimum.accumulate(candidates[:, ::-1], axis=1)[:, ::-1]  # min over k >= j
        return first_open_from[:, 1:]  # min over k > j

    def group_into_spans(self, is_start: np.ndarray) -> _Units:
        """Units made of consecutive words; is_start (B, W) marks each span's first word."""
        B = is_start.shape[0]
        unit_of_word = np.cumsum(is_start, axis=1, dtype=np.int32) - 1  # (B, W)
        U = int(is_start.sum(1).max()) if B else 0
        base = (np.arange(B, dtype=np.int64) * U)[:, None]
        word_to_unit = np.where(self.lengths > 0, base + unit_of_word, B * U)  # (B, W)
        lengths = np.bincount(word_to_unit.ravel(), weights=self.lengths.ravel(), minlength=B * U + 1)
        lengths = lengths[: B * U].astype(np.int32).reshape(B, U)
        first_word = np.zeros(B * U, dtype=np.int64)
        rows, cols = np.nonzero(is_start)
        first_word[rows * U + unit_of_word[rows, cols]] = cols
        return _Units(lengths, first_word.reshape(B, U), word_to_unit)
