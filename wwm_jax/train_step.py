"""The pure training and evaluation steps: `train_step(state, batch) -> (state, metrics)`.

Loss (the same in every mode, and in the torch trainer): the summed token cross-entropy over masked
positions divided by the number of masked positions in the *whole global batch* (all devices, hosts and
accumulation micro-batches). The global count is computed first; each micro-batch then contributes
sum_ce / count, so 1 device and 8, 1 micro-batch and 4, give the same loss and gradient up to float
summation order. A batch with no masked token contributes 0 (count is clamped to 1), never NaN.

Batch layout: a train batch is a dict of (A, M, L) arrays, A = train.grad_accum_steps micro-batches of M
rows (M = global_batch_size / A), rows split over the mesh's data x fsdp axes:
  input_ids (A, M, L) int32 (already masked), labels (A, M, L) int32 (-100: not masked),
  attention_mask (A, M, L) int32; with data.packing packed_documents also segment_ids (A, M, L) int32
  (0 padding, 1..k the pieces of a row) and position_ids (A, M, L) int32 (per-piece positions from 0),
  which make attention block-diagonal and restart the position embeddings per piece.
Micro-batch a holds the global rows i with i % A == a (see `to_micro_batches`): that split is the same
on any number of hosts, because each host's contiguous rows split the same way.

Dropout: the key of update k, micro-batch a is fold_in(fold_in(PRNGKey(seed), k), a), a function of
(seed, step) only, so a resumed run draws the same masks as an uninterrupted one.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from wwm.masking import IGNORE_INDEX, exact_budget
from wwm_jax import sharding as shd


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # () int32: optimizer updates done
    params: Any  # nested dict of float32 arrays (nnx.to_pure_dict of the model's Params)
    opt_state: Any
    rng: jax.Array  # (2,) uint32: PRNGKey(seed); dropout keys are folded from it


def to_micro_batches(rows: np.ndarray, accum: int) -> np.ndarray:
    """(b, ...) host rows -> (A, b/A, ...): micro-batch a gets rows a, a+A, a+2A, ... (strided)."""
    b = rows.shape[0]
    return np.swapaxes(rows.reshape(b // accum, accum, *rows.shape[1:]), 0, 1)


def from_micro_batches(x: np.ndarray) -> np.ndarray:
    """Inverse of `to_micro_batches`: (A, b/A, ...) -> (b, ...) in row order."""
    x = np.asarray(x)
    return np.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:])


def masked_bound(masking, seq_len: int) -> int:
    """Static bound on the masked tokens of one row of length `seq_len` under `masking` (MaskingConfig).

    Budget `exact` masks at most n(L) tokens (`wwm.masking.exact_budget`, the masker's own rule, which
    never decreases with the E <= L eligible tokens; docs/masking.md §5): an exact bound. `bernoulli` has
    no hard bound without max_predictions: then 1.5 * L * p + 8 (a row above it falls back to the full
    head, see `token_losses`). Rounded up to a multiple of 8, at most L.
    """
    L = int(seq_len)
    if masking.budget == "exact":
        k = exact_budget(L, masking.mask_prob, masking.max_predictions)
    else:
        k = math.ceil(1.5 * L * masking.mask_prob) + 8
        if masking.max_predictions is not None:
            k = min(k, int(masking.max_predictions))
    return min(L, -(-k // 8) * 8)


def _ce_sums(logits, labels, valid):
    """(sum of CE, number right) over the `valid` positions of (..., V) float32 logits."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, labels, 0))
    ce_sum = jnp.sum(jnp.where(valid, ce, 0.0))
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) & valid)
    return ce_sum, correct


# Positions of each row the MLM head (transform, vocabulary projection, softmax) runs on at once. The head's
# (M, S, V) float32 logits, their log-softmax and their gradient would otherwise live together: 1 GB each
# for one 8,192-token row and BERT's 30,522 words. Above it the head runs in chunks under a scan whose body
# is rematerialised in the backward pass, so only one chunk's (M, HEAD_CHUNK, V) arrays live, at any L.
# BERT at L <= 1,706 (the exact budget's bound there: K <= 256 masked slots) never chunks.
HEAD_CHUNK = 256


def head_sums(model, hidden, labels, valid, chunk: int | None = HEAD_CHUNK):
    """(sum of CE, number right) of the MLM head at (M, S, H) hidden rows with (M, S) labels, over `valid`.

    S <= `chunk` (or chunk None): the head at all S at once (the plain computation). Above: S is cut into k
    balanced chunks of c <= chunk slots (a multiple of 8; the padded slots are not valid), and a
    `lax.scan` over the k chunks sums the per-chunk sums under `jax.checkpoint`, so the backward pass
    recomputes each chunk's logits instead of keeping them: no (M, S, V) array forward or backward. The
    rows M stay the leading axis of every chunk, so a batch sharded over devices stays where it is. Equal
    to the plain sums up to float summation order (the chunks' sums are added in order).
    """
    M, S = labels.shape
    if chunk is None or S <= chunk:
        return _ce_sums(model.mlm_logits(hidden), labels, valid)
    c = math.ceil(math.ceil(S / math.ceil(S / chunk)) / 8) * 8  # slots per chunk: balanced, a multiple of 8
    k = math.ceil(S / c)  # chunks
    pad = k * c - S

    def split(x):  # (M, S, ...) -> (k, M, c, ...), the padded slots at the end of the last chunk
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return jnp.moveaxis(x.reshape(M, k, c, *x.shape[2:]), 1, 0)

    @jax.checkpoint  # the backward pass recomputes this chunk's logits from its hidden rows
    def body(carry, xs):
        h, y, v = xs  # (M, c, H), (M, c), (M, c)
        ce, correct = _ce_sums(model.mlm_logits(h), y, v)  # (M, c, V) logits live only here
        return (carry[0] + ce, carry[1] + correct.astype(jnp.int32)), None

    init = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
    (ce_sum, correct), _ = jax.lax.scan(body, init, (split(hidden), split(labels), split(valid)))
    return ce_sum, correct


PACKED_KEYS = ("segment_ids", "position_ids")  # batch keys of packed documents only


def _packed_inputs(model, segment_ids, position_ids) -> dict:
    """The model's keyword arguments for packed documents (none for the other packings)."""
    if segment_ids is None:
        return {}
    from wwm.families import family

    cfg = model.config  # the position rows of its family (RoBERTa's count from pad_token_id + 1)
    positions = family(cfg.model_type).position_rows(position_ids, segment_ids, cfg.pad_token_id)
    return {"segment_ids": segment_ids, "position_ids": positions}


def token_losses(
    graphdef, params, input_ids, attention_mask, labels, *, deterministic, rng, max_masked=None,
    segment_ids=None, position_ids=None, head_chunk: int | None = HEAD_CHUNK,
):  # fmt: skip
    """One forward pass -> (sum of masked-token CE, number of correct masked predictions). (M, L) in.

    `max_masked` (a static int, see `masked_bound`): run the MLM head (transform + vocabulary
    projection) only at the masked positions, gathered into (M, max_masked) slots per row, instead of
    at all L positions; a batch with a row of more masked tokens takes the head at every position
    (`lax.cond`, one branch runs). Either head runs in chunks of `head_chunk` positions per row
    (`head_sums`), so neither branch holds an (M, L, V) array: a `cond` allocates both branches'
    temporaries, and the unchunked fallback alone kept ~3 (M, L, V) float32 arrays (3 GB at L = 8,192).
    The sums are the same either way (the same terms; float summation order aside).
    """
    model = nnx.merge(graphdef, params)
    packed = _packed_inputs(model, segment_ids, position_ids)
    masked = labels != IGNORE_INDEX  # (M, L)
    hidden = model.encode(
        input_ids, attention_mask, deterministic=deterministic, rngs=rng, **packed
    )  # (M, L, H)

    def full(hidden):
        return head_sums(model, hidden, labels, masked, head_chunk)

    L = labels.shape[-1]
    if max_masked is None or max_masked >= L:
        return full(hidden)

    def gathered(hidden):
        # The masked positions of each row first, in position order: top_k of L - position on masked tokens.
        score = jnp.where(masked, L - jnp.arange(L, dtype=jnp.int32), 0)
        top, pos = jax.lax.top_k(score, max_masked)  # (M, K)
        h = jnp.take_along_axis(hidden, pos[..., None], axis=1)  # (M, K, H)
        return head_sums(model, h, jnp.take_along_axis(labels, pos, axis=1), top > 0, head_chunk)

    overflow = jnp.any(jnp.sum(masked, axis=-1) > max_masked)
    return jax.lax.cond(overflow, full, gathered, hidden)


def _grads(graphdef, params, batch, count, rng, *, deterministic, max_masked=None):
    """Sum over micro-batches of grad(sum_ce / count). Returns (loss, grads); loss = sum_ce / count."""
    denom = jnp.maximum(count, 1).astype(jnp.float32)  # no masked token: a zero contribution

    def micro(carry, xs):
        loss, grads = carry
        mb, a = xs
        key = jax.random.fold_in(rng, a)

        def loss_fn(p):
            ce_sum, _ = token_losses(
                graphdef, p, mb["input_ids"], mb["attention_mask"], mb["labels"],
                deterministic=deterministic, rng=key, max_masked=max_masked,
                segment_ids=mb.get("segment_ids"), position_ids=mb.get("position_ids"),
            )  # fmt: skip
            return ce_sum / denom

        value, g = jax.value_and_grad(loss_fn)(params)
        return (loss + value, jax.tree.map(jnp.add, grads, g)), None

    accum = batch["input_ids"].shape[0]
    zeros = jax.tree.map(jnp.zeros_like, params)
    keys = ("input_ids", "attention_mask", "labels", *(k for k in PACKED_KEYS if k in batch))
    micro_batches = {k: batch[k] for k in keys}
    if accum == 1:  # no scan: the common case compiles to the plain step
        (loss, grads), _ = micro(
            (jnp.zeros((), jnp.float32), zeros), (jax.tree.map(lambda x: x[0], micro_batches), 0)
        )
    else:
        (loss, grads), _ = jax.lax.scan(
            micro, (jnp.zeros((), jnp.float32), zeros), (micro_batches, jnp.arange(accum))
        )
    return loss, grads


def _apply(state: TrainState, loss, grads, count, tx, schedule):
    grad_norm = optax.tree.norm(grads)  # before clipping, as HF logs it
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "learning_rate": schedule(state.step),
        "masked_tokens": count,
    }
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def train_step(state: TrainState, batch, *, graphdef, tx, schedule, deterministic: bool, max_masked=None):
    """jit/sharded mode (also `single`): XLA inserts the cross-device sums the sharding implies."""
    count = jnp.sum(batch["labels"] != IGNORE_INDEX).astype(
        jnp.int32
    )  # global: all micro-batches and devices
    rng = jax.random.fold_in(state.rng, state.step)
    loss, grads = _grads(
        graphdef, state.params, batch, count, rng, deterministic=deterministic, max_masked=max_masked
    )
    return _apply(state, loss, grads, count, tx, schedule)


def train_step_psum(
    state: TrainState, batch, *, graphdef, tx, schedule, deterministic: bool, max_masked=None
):
    """pmap mode, run per device under shard_map: local rows only, explicit psums over data x fsdp.

    Each device gets its own dropout key (folded with its index) so its rows draw distinct masks.
    """
    count = jax.lax.psum(jnp.sum(batch["labels"] != IGNORE_INDEX).astype(jnp.int32), shd.BATCH_AXES)
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), jax.lax.axis_index(shd.BATCH_AXES))
    loss, grads = _grads(
        graphdef, state.params, batch, count, rng, deterministic=deterministic, max_masked=max_masked
    )
    loss, grads = jax.lax.psum((loss, grads), shd.BATCH_AXES)  # sums of sum_ce / global count
    return _apply(state, loss, grads, count, tx, schedule)


def eval_step(params, batch, *, graphdef, max_masked=None):
    """(M, L) batch -> sums: {"ce_sum", "correct", "count"} over its masked tokens (no dropout)."""
    ce_sum, correct = token_losses(
        graphdef, params, batch["input_ids"], batch["attention_mask"], batch["labels"],
        deterministic=True, rng=None, max_masked=max_masked,
        segment_ids=batch.get("segment_ids"), position_ids=batch.get("position_ids"),
    )  # fmt: skip
    count = jnp.sum(batch["labels"] != IGNORE_INDEX).astype(jnp.int32)
    return {"ce_sum": ce_sum, "correct": correct.astype(jnp.int32), "count": count}


def compile_steps(
    graphdef, tx, schedule, state_shardings, mesh: Mesh, mode: str, *, deterministic: bool, max_masked=None
):
    """(jitted train step with donated state, jitted eval step) for `mode`.

    `max_masked`: the static bound on masked tokens per row (`masked_bound`) that lets the MLM head run
    at the masked positions only; None: the head runs at every position.
    """
    replicated = NamedSharding(mesh, P())
    train_batch = shd.batch_sharding(mesh, 3, 1)  # (A, M, L)
    eval_batch = shd.batch_sharding(mesh, 2, 0)  # (M, L)
    kwargs = dict(
        graphdef=graphdef, tx=tx, schedule=schedule, deterministic=deterministic, max_masked=max_masked
    )
    if mode == "pmap":
        body = jax.shard_map(
            functools.partial(train_step_psum, **kwargs),
            mesh=mesh,
            in_specs=(P(), P(None, shd.BATCH_AXES)),
            out_specs=(P(), P()),
            check_vma=False,  # the psums are ours; no implicit ones from replication typing
        )
    else:
        body = functools.partial(train_step, **kwargs)
    step = jax.jit(
        body,
        in_shardings=(state_shardings, train_batch),
        out_shardings=(state_shardings, replicated),
        donate_argnums=(0,),  # parameters and optimizer state are updated in place
    )
    evaluate = jax.jit(
        functools.partial(eval_step, graphdef=graphdef, max_masked=max_masked),
        in_shardings=(state_shardings.params, eval_batch),
        out_shardings=replicated,
    )
    return step, evaluate
