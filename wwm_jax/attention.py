"""Scaled dot-product attention for every model family (BERT, RoBERTa, ModernBERT): one mask description
and a registry of kernels (docs/models.md "Attention kernels").

* `AttentionMask` says which keys each query may attend: per-token segment ids (B, L) (0 = padding, 1..k =
  the documents of a packed row; a plain padded row is 1s then 0s) and, per call, a local window +-w.
  **The rule:** query i attends key j iff seg[i] == seg[j] and, on a local layer, |i - j| <= w (by index).
  Padding is one more segment: a padding query attends padding keys only, a real query never sees padding,
  and every query has at least one key (itself), so no kernel meets an empty softmax row. Outputs at padding
  positions never reach a real position (nor the loss).
  **BERT and RoBERTa rows without segment ids** (`key_padding=True`) keep transformers' own rule instead, so
  that every position's output equals theirs (the parity tests compare padded and fully padded rows too):
  every query, padding ones included, attends every real key (queries are all segment 1, keys are 1 real /
  0 padding); a row without any real key averages all L values uniformly, as the float32-min additive mask
  does in transformers' eager attention. eager, xla and flash follow it exactly; splash's fully padded rows
  are its own (their outputs never reach a real position).
* `KERNELS`: name -> `Kernel`. Adding a kernel is one `register_kernel(Kernel(...))`; `attention(...,
  kernel=name)` runs it. Shapes: q, k, v (B, L, N, D) in the compute dtype -> (B, L, N, D); scores,
  softmax statistics and accumulators in float32.

| kernel | what | memory | platforms |
|---|---|---|---|
| eager  | einsum scores + additive float32-min bias + softmax: the parity reference (dropout: yes) | (B, N, L, L) | any |
| xla    | `jax.nn.dot_product_attention(implementation="xla")` with the boolean mask | (B, N, L, L) | any |
| cudnn  | `jax.nn.dot_product_attention(implementation="cudnn")` (cuDNN flash attention) | O(L) | NVIDIA GPU |
| flash  | `flash_attention`: blockwise online softmax, custom VJP recomputing in the backward | O(L) | any |
| splash | Pallas TPU splash attention with segment ids and a local mask | O(L) | TPU (and CPU under
  `jax.experimental.pallas.tpu.force_tpu_interpret_mode()`, for tests) |

Which `train.attn_implementation` name selects which kernel in each framework: `wwm.attention` (the table).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wwm.errors import WWMError

NEG = float(np.finfo(np.float32).min)  # masked scores: finite, so a masked row never makes inf - inf


# ----------------------------------------------------------------------------------------------------
# The mask
# ----------------------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AttentionMask:
    """Which keys each query attends (the rule: module docstring). `segments` (B, L) int32, 0 = padding.
    `packed` (static): rows may hold several documents (segment ids were given); False: one per row."""

    segments: jax.Array
    packed: bool = dataclasses.field(default=False, metadata={"static": True})
    # transformers' BERT rule for rows without segment ids (module docstring): queries are all segment 1.
    key_padding: bool = dataclasses.field(default=False, metadata={"static": True})

    @staticmethod
    def build(
        attention_mask: Any = None,
        segment_ids: Any = None,
        shape: tuple[int, int] | None = None,
        *,
        key_padding: bool = False,
    ):
        """From a (B, L) 0/1 `attention_mask` (default: all ones, `shape`) and optional (B, L) `segment_ids`
        (packed documents; the attention mask marks padding on top of them). `key_padding`: BERT/RoBERTa's
        rule for rows without segment ids (module docstring)."""
        if attention_mask is None and segment_ids is None:
            if shape is None:
                raise ValueError("AttentionMask.build needs an attention_mask, segment_ids or a shape")
            return AttentionMask(jnp.ones(shape, jnp.int32), False)
        if segment_ids is None:
            return AttentionMask((jnp.asarray(attention_mask) != 0).astype(jnp.int32), False, key_padding)
        segments = jnp.asarray(segment_ids).astype(jnp.int32)
        if attention_mask is not None:
            segments = jnp.where(jnp.asarray(attention_mask) != 0, segments, 0)
        return AttentionMask(segments, True)

    def query_segments(self) -> jax.Array:
        """(B, L) the queries' segment ids: the keys' (`segments`), or all 1 under `key_padding`."""
        return jnp.ones_like(self.segments) if self.key_padding else self.segments

    def keep(self, window: int | None = None) -> jax.Array:
        """(B, 1, L, L) bool: the rule itself (the reference every kernel is tested against)."""
        seg = self.segments
        keep = self.query_segments()[:, :, None] == seg[:, None, :]  # (B, L, L)
        if window is not None:
            index = jnp.arange(seg.shape[1])
            keep &= jnp.abs(index[:, None] - index[None, :]) <= window
        return keep[:, None]


# ----------------------------------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------------------------------

KernelFn = Callable[..., jax.Array]  # fn(q, k, v, mask, *, window, scale, dropout) -> (B, L, N, D)


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One attention kernel. `problem(platform)`: why it cannot run on this JAX platform, or None.
    `dropout`: whether it applies attention-probability dropout (the others refuse training with it)."""

    name: str
    fn: KernelFn
    summary: str
    problem: Callable[[str], str | None] = lambda platform: None
    dropout: bool = False


KERNELS: dict[str, Kernel] = {}


def register_kernel(kernel: Kernel) -> Kernel:
    KERNELS[kernel.name] = kernel
    return kernel


def check_kernel(name: str, *, attention_dropout: float = 0.0, training: bool = True) -> Kernel:
    """The kernel `name`, or WWMError (one line) when it is unknown or cannot run here."""
    if name not in KERNELS:
        raise WWMError(f"unknown JAX attention kernel {name!r}; use one of {', '.join(KERNELS)}")
    kernel = KERNELS[name]
    problem = kernel.problem(jax.default_backend())
    if problem:
        raise WWMError(f"attention kernel {name}: {problem}")
    if training and attention_dropout > 0 and not kernel.dropout:
        raise WWMError(
            f"attention kernel {name} has no attention dropout; set the model's attention dropout to 0 "
            "(model.attention_probs_dropout_prob: 0) or use train.attn_implementation: eager"
        )
    return kernel


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: AttentionMask,
    *,
    kernel: str = "eager",
    window: int | None = None,
    scale: float | None = None,
    dropout: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """Scaled dot-product attention of (B, L, N, D) q, k, v under `mask` (and a local `window` +-w) with
    the kernel `kernel`; (B, L, N, D) in q's dtype. `dropout`: applied to the probabilities (eager only;
    the caller refuses it for the others through `check_kernel`)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    fn = KERNELS[kernel].fn
    return fn(q, k, v, mask, window=window, scale=scale, dropout=dropout)


def set_kernel(model: Any, kernel: str) -> Any:
    """Switch a built (or loaded) model of any family to the attention kernel `kernel`, in place: every
    module whose `attention` attribute names a kernel (BERT's SelfAttention, ModernBERT's attention)."""
    if kernel not in KERNELS:
        raise WWMError(f"unknown JAX attention kernel {kernel!r}; use one of {', '.join(KERNELS)}")
    from flax import nnx

    for _, module in nnx.iter_modules(model):
        if isinstance(getattr(module, "attention", None), str):
            module.attention = kernel
    return model


# ----------------------------------------------------------------------------------------------------
# eager, xla, cudnn
# ----------------------------------------------------------------------------------------------------


def _eager(q, k, v, mask: AttentionMask, *, window, scale, dropout=None) -> jax.Array:
    bias = jnp.where(mask.keep(window), 0.0, NEG).astype(jnp.float32)  # (B, 1, L, L)
    # transformers' eager order: (q @ k^T) * scale, then + mask, softmax in float32.
    scores = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32)  # (B, N, L, L)
    probs = jax.nn.softmax(scores * scale + bias, axis=-1)
    if dropout is not None:
        probs = dropout(probs)
    return jnp.einsum("bnqk,bknd->bqnd", probs.astype(q.dtype), v)


def _dot_product_attention(implementation: str) -> KernelFn:
    def fn(q, k, v, mask: AttentionMask, *, window, scale, dropout=None) -> jax.Array:
        del dropout
        return jax.nn.dot_product_attention(
            q, k, v, mask=mask.keep(window), scale=scale, implementation=implementation
        )

    return fn


def _gpu_only(platform: str) -> str | None:
    if platform == "gpu":
        return None
    return (
        f"cuDNN flash attention needs an NVIDIA GPU (JAX platform here: {platform}); use flash (O(L) memory "
        "on any platform), xla or eager"
    )


# ----------------------------------------------------------------------------------------------------
# flash: blockwise online softmax with a recomputing custom VJP
# ----------------------------------------------------------------------------------------------------

# Block sizes (static). Global layers: query chunks of FLASH_CHUNK_Q x key blocks of FLASH_BLOCK_K; local
# layers: query blocks of FLASH_BLOCK_LOCAL against their key span (block + 2w).
FLASH_CHUNK_Q = 512
FLASH_BLOCK_K = 512
FLASH_BLOCK_LOCAL = 64


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _pad_axis(x: jax.Array, axis: int, before: int, after: int, value=0) -> jax.Array:
    widths = [(0, 0)] * x.ndim
    widths[axis] = (before, after)
    return jnp.pad(x, widths, constant_values=value)


def flash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    segments: jax.Array,
    *,
    window: int | None = None,
    scale: float | None = None,
    chunk_q: int = FLASH_CHUNK_Q,
    block_k: int = FLASH_BLOCK_K,
    block_local: int = FLASH_BLOCK_LOCAL,
    query_segments: jax.Array | None = None,
) -> jax.Array:
    """FlashAttention in JAX: (B, L, N, D) q, k, v, (B, L) int segment ids -> (B, L, N, D), the rule of
    `AttentionMask` (`query_segments`: the queries' ids where they differ from the keys', BERT's
    `key_padding`; a query without any key averages the values of all L keys, as eager's additive mask does).
    Never a (B, N, L, L) array, forward or backward:

    * global (window None): query chunks of `chunk_q` (a sequential map) x key blocks of `block_k` (a scan)
      with an online softmax (running max m, sum l, float32 accumulator); live scores (B, N, chunk_q, block_k);
    * local (+-window): query blocks of `block_local`, each against its key span only (block + 2 window
      keys, gathered with static indices): the blocks outside the window are never computed;
    * backward (custom VJP): keeps q, k, v, the output and the log-sum-exp (B, N, L); recomputes each
      block's probabilities from them (FlashAttention-2's backward: dS = P (dP - rowsum(dO * O))).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    blocks = (int(chunk_q), int(block_k), int(block_local))
    segments = jnp.asarray(segments, jnp.int32)
    q_segments = segments if query_segments is None else jnp.asarray(query_segments, jnp.int32)
    return _flash(q, k, v, (q_segments, segments), window, scale, blocks)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _flash(q, k, v, segments, window, scale, blocks):
    return _flash_fwd(q, k, v, segments, window, scale, blocks)[0]


def _flash_fwd(q, k, v, segments, window, scale, blocks):
    # segments: ((B, L) the queries' ids, (B, L) the keys' ids)
    qt, kt, vt = (x.swapaxes(1, 2) for x in (q, k, v))  # (B, N, L, D)
    if window is None:
        out, lse = _global_fwd(qt, kt, vt, segments, scale, blocks[0], blocks[1])
    else:
        out, lse = _local_fwd(qt, kt, vt, segments, window, scale, blocks[2])
    out = out.astype(q.dtype)  # (B, N, L, D)
    return out.swapaxes(1, 2), (q, k, v, segments, out, lse)


def _flash_bwd(window, scale, blocks, residuals, d_out):
    q, k, v, segments, out, lse = residuals
    qt, kt, vt = (x.swapaxes(1, 2) for x in (q, k, v))
    do = d_out.swapaxes(1, 2)  # (B, N, L, D)
    # rowsum(dO * O): the softmax backward's per-query term, float32 (B, N, L).
    delta = jnp.sum(do.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
    if window is None:
        dq, dk, dv = _global_bwd(qt, kt, vt, segments, lse, do, delta, scale, blocks[0], blocks[1])
    else:
        dq, dk, dv = _local_bwd(qt, kt, vt, segments, lse, do, delta, window, scale, blocks[2])
    grads = tuple(g.swapaxes(1, 2).astype(x.dtype) for g, x in ((dq, q), (dk, k), (dv, v)))
    return (*grads, (None, None))


_flash.defvjp(_flash_fwd, _flash_bwd)


def _global_layout(qt, kt, vt, segments, chunk_q, block_k):
    """Pad L to whole chunks and blocks; padding tokens get segment -1 (they attend only each other)."""
    length = qt.shape[2]
    bk = min(block_k, _round_up(length, 8))
    cq = min(_round_up(chunk_q, bk), _round_up(length, bk))
    padded = _round_up(length, cq)
    pad = padded - length
    qt, kt, vt = (_pad_axis(x, 2, 0, pad) for x in (qt, kt, vt))
    seg_q, seg_k = (_pad_axis(x, 1, 0, pad, value=-1) for x in segments)  # (B, Lp) each
    return qt, kt, vt, seg_q, seg_k, cq, bk


def _masked_scores(s, sq, sk):
    """(B, N, cq, bk) scores -> kept scores, float32-min for the row's other keys (so a row without keys
    averages its L keys uniformly, as eager's additive mask) and -inf for the layout's padding keys."""
    keep = (sq[:, :, None] == sk[:, None, :])[:, None]  # (B, 1, cq, bk)
    other = jnp.where((sk != -1)[:, None, None, :], NEG, -jnp.inf)
    return jnp.where(keep, s, other)


def _chunks(x: jax.Array, axis: int, size: int) -> jax.Array:
    """Split `axis` into (n, size) blocks and move the block index to the front."""
    n = x.shape[axis] // size
    x = x.reshape(*x.shape[:axis], n, size, *x.shape[axis + 1 :])
    return jnp.moveaxis(x, axis, 0)


def _global_fwd(qt, kt, vt, segments, scale, chunk_q, block_k):
    b, n, length, d = qt.shape
    qt, kt, vt, seg_q, seg, cq, bk = _global_layout(qt, kt, vt, segments, chunk_q, block_k)
    k_blocks, v_blocks, s_blocks = _chunks(kt, 2, bk), _chunks(vt, 2, bk), _chunks(seg, 1, bk)

    def chunk(args):
        qc, sq = args  # (B, N, cq, D), (B, cq)

        def key_block(carry, xs):
            m, l, acc = carry  # (B, N, cq), (B, N, cq), (B, N, cq, D) float32
            kj, vj, sk = xs
            s = jnp.einsum("bnqd,bnkd->bnqk", qc, kj, preferred_element_type=jnp.float32) * scale
            s = _masked_scores(s, sq, sk)  # (B, N, cq, bk)
            m_new = jnp.maximum(m, s.max(-1))
            p = jnp.exp(s - m_new[..., None])  # masked keys: 0 once a row's max is a kept score
            corr = jnp.exp(m - m_new)
            pv = jnp.einsum("bnqk,bnkd->bnqd", p.astype(vj.dtype), vj, preferred_element_type=jnp.float32)
            return (m_new, l * corr + p.sum(-1), acc * corr[..., None] + pv), None

        init = (jnp.full((b, n, cq), NEG, jnp.float32), jnp.zeros((b, n, cq), jnp.float32),
                jnp.zeros((b, n, cq, d), jnp.float32))  # fmt: skip
        (m, l, acc), _ = jax.lax.scan(key_block, init, (k_blocks, v_blocks, s_blocks))
        return acc / l[..., None], m + jnp.log(l)  # l > 0: a row without keys averages its L keys

    out, lse = jax.lax.map(chunk, (_chunks(qt, 2, cq), _chunks(seg_q, 1, cq)))  # (C, B, N, cq, ...)
    out = jnp.moveaxis(out, 0, 2).reshape(b, n, -1, d)[:, :, :length]
    lse = jnp.moveaxis(lse, 0, 2).reshape(b, n, -1)[:, :, :length]
    return out, lse


def _global_bwd(qt, kt, vt, segments, lse, do, delta, scale, chunk_q, block_k):
    b, n, length, d = qt.shape
    qt, kt, vt, seg_q, seg, cq, bk = _global_layout(qt, kt, vt, segments, chunk_q, block_k)
    pad = qt.shape[2] - length
    lse, delta, do = _pad_axis(lse, 2, 0, pad), _pad_axis(delta, 2, 0, pad), _pad_axis(do, 2, 0, pad)
    k_blocks, v_blocks, s_blocks = _chunks(kt, 2, bk), _chunks(vt, 2, bk), _chunks(seg, 1, bk)

    def chunk(carry, args):
        dk, dv = carry  # (nk, B, N, bk, D) float32 accumulators over the query chunks
        qc, sq, lc, dc, doc = args

        def key_block(dq, xs):
            kj, vj, sk = xs
            s = jnp.einsum("bnqd,bnkd->bnqk", qc, kj, preferred_element_type=jnp.float32) * scale
            # A row without keys (lse = float32-min + log L rounds to float32-min): 1/L for each of its keys.
            empty = (lc <= NEG / 2)[..., None]
            p = jnp.exp(_masked_scores(s, sq, sk) - jnp.where(empty, NEG, lc[..., None]))  # (B, N, cq, bk)
            p = jnp.where(empty, p / length, p)
            dv_j = jnp.einsum("bnqk,bnqd->bnkd", p, doc, preferred_element_type=jnp.float32)
            dp = jnp.einsum("bnqd,bnkd->bnqk", doc, vj, preferred_element_type=jnp.float32)
            ds = p * (dp - dc[..., None]) * scale
            dk_j = jnp.einsum("bnqk,bnqd->bnkd", ds, qc, preferred_element_type=jnp.float32)
            dq = dq + jnp.einsum("bnqk,bnkd->bnqd", ds, kj, preferred_element_type=jnp.float32)
            return dq, (dk_j, dv_j)

        dq, (dk_c, dv_c) = jax.lax.scan(
            key_block, jnp.zeros((b, n, cq, d), jnp.float32), (k_blocks, v_blocks, s_blocks)
        )
        return (dk + dk_c, dv + dv_c), dq

    nk = k_blocks.shape[0]
    zeros = jnp.zeros((nk, b, n, bk, d), jnp.float32)
    xs = (
        _chunks(qt, 2, cq),
        _chunks(seg_q, 1, cq),
        _chunks(lse, 2, cq),
        _chunks(delta, 2, cq),
        _chunks(do, 2, cq),
    )
    (dk, dv), dq = jax.lax.scan(chunk, (zeros, zeros), xs)

    def unblock(x):  # (n_blocks, B, N, size, D) -> (B, N, L, D)
        return jnp.moveaxis(x, 0, 2).reshape(b, n, -1, d)[:, :, :length]

    return unblock(dq), unblock(dk), unblock(dv)


def _local_layout(qt, kt, vt, segments, window, block):
    """Query blocks of `block` and, per block i, the indices of its key span [i*block - w, (i+1)*block + w)
    in K padded by w on the left (segment -2, never attended) and to whole blocks + w on the right
    (segment -1: padding tokens attend only each other)."""
    length = qt.shape[2]
    bq = min(block, _round_up(length, 8))
    lq = _round_up(length, bq)
    qt = _pad_axis(qt, 2, 0, lq - length)
    kt, vt = (_pad_axis(x, 2, window, lq - length + window) for x in (kt, vt))
    seg_q, seg_k = (_pad_axis(x, 1, 0, lq - length, value=-1) for x in segments)  # (B, Lq) each
    seg_k = _pad_axis(_pad_axis(seg_k, 1, 0, window, value=-1), 1, window, 0, value=-2)  # (B, Lq + 2w)
    span = bq + 2 * window
    index = np.arange(lq // bq)[:, None] * bq + np.arange(span)[None, :]  # (nq, S) into the padded keys
    offset = np.arange(span)[None, :] - np.arange(bq)[:, None] - window  # (bq, S): key pos - query pos
    near = jnp.asarray(np.abs(offset) <= window)
    return qt, kt, vt, seg_q, seg_k, bq, index, near


def _local_scores(qb, kt, seg_q, seg_k, index, near, scale):
    """Scores and keep mask of every query block against its span: (B, N, nq, bq, S) each."""
    ks = kt[:, :, index]  # (B, N, nq, S, D)
    s = jnp.einsum("bniqd,bnisd->bniqs", qb, ks, preferred_element_type=jnp.float32) * scale
    sq = seg_q.reshape(seg_q.shape[0], index.shape[0], -1)  # (B, nq, bq)
    sk = seg_k[:, index]  # (B, nq, S)
    keep = ((sq[:, :, :, None] == sk[:, :, None, :]) & near)[:, None]  # (B, 1, nq, bq, S)
    return s, keep, ks


def _local_fwd(qt, kt, vt, segments, window, scale, block):
    b, n, length, d = qt.shape
    qt, kt, vt, seg_q, seg_k, bq, index, near = _local_layout(qt, kt, vt, segments, window, block)
    qb = qt.reshape(b, n, -1, bq, d)  # (B, N, nq, bq, D)
    s, keep, _ = _local_scores(qb, kt, seg_q, seg_k, index, near, scale)
    m = jnp.where(keep, s, NEG).max(-1)  # (B, N, nq, bq)
    p = jnp.where(keep, jnp.exp(s - m[..., None]), 0.0)
    l = p.sum(-1)
    vs = vt[:, :, index]  # (B, N, nq, S, D)
    out = jnp.einsum("bniqs,bnisd->bniqd", p.astype(vt.dtype), vs, preferred_element_type=jnp.float32)
    out = (out / l[..., None]).reshape(b, n, -1, d)[:, :, :length]
    return out, (m + jnp.log(l)).reshape(b, n, -1)[:, :, :length]


def _local_bwd(qt, kt, vt, segments, lse, do, delta, window, scale, block):
    b, n, length, d = qt.shape
    qt, kt, vt, seg_q, seg_k, bq, index, near = _local_layout(qt, kt, vt, segments, window, block)
    pad = qt.shape[2] - length
    lse, delta, do = _pad_axis(lse, 2, 0, pad), _pad_axis(delta, 2, 0, pad), _pad_axis(do, 2, 0, pad)
    nq = index.shape[0]
    qb, dob = qt.reshape(b, n, nq, bq, d), do.reshape(b, n, nq, bq, d)
    s, keep, ks = _local_scores(qb, kt, seg_q, seg_k, index, near, scale)
    p = jnp.where(keep, jnp.exp(s - lse.reshape(b, n, nq, bq)[..., None]), 0.0)  # (B, N, nq, bq, S)
    vs = vt[:, :, index]
    dv_s = jnp.einsum("bniqs,bniqd->bnisd", p, dob, preferred_element_type=jnp.float32)
    dp = jnp.einsum("bniqd,bnisd->bniqs", dob, vs, preferred_element_type=jnp.float32)
    ds = p * (dp - delta.reshape(b, n, nq, bq)[..., None]) * scale
    dq = jnp.einsum("bniqs,bnisd->bniqd", ds, ks, preferred_element_type=jnp.float32)
    dk_s = jnp.einsum("bniqs,bniqd->bnisd", ds, qb, preferred_element_type=jnp.float32)
    flat = index.reshape(-1)  # the spans overlap: sum each key's contributions back (static indices)
    total = kt.shape[2]
    dk = jnp.zeros((b, n, total, d), jnp.float32).at[:, :, flat].add(dk_s.reshape(b, n, -1, d))
    dv = jnp.zeros((b, n, total, d), jnp.float32).at[:, :, flat].add(dv_s.reshape(b, n, -1, d))
    keys = slice(window, window + length)
    return dq.reshape(b, n, -1, d)[:, :, :length], dk[:, :, keys], dv[:, :, keys]


def _flash_kernel(q, k, v, mask: AttentionMask, *, window, scale, dropout=None) -> jax.Array:
    del dropout
    query_segments = mask.query_segments() if mask.key_padding else None
    return flash_attention(q, k, v, mask.segments, window=window, scale=scale, query_segments=query_segments)


# ----------------------------------------------------------------------------------------------------
# splash: Pallas TPU splash attention
# ----------------------------------------------------------------------------------------------------

SPLASH_BLOCK = 128  # the TPU kernel's q / kv block (lengths are padded to whole blocks)


def _tpu_interpret_mode() -> bool:
    try:
        from jax._src import config as jax_config

        return jax_config.pallas_tpu_interpret_mode_context_manager.value is not None
    except (ImportError, AttributeError):  # another jax: interpret mode cannot be seen, so not assumed
        return False


def _tpu_only(platform: str) -> str | None:
    if platform == "tpu" or _tpu_interpret_mode():
        return None
    return (
        f"splash attention is a Pallas TPU kernel (JAX platform here: {platform}); use flash (O(L) memory "
        "on any platform), or run it under jax.experimental.pallas.tpu.force_tpu_interpret_mode() for tests"
    )


@functools.lru_cache(maxsize=64)
def _splash_kernel(length: int, heads: int, window: int | None, block: int):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    shape = (length, length)
    one = (
        sm.FullMask(shape) if window is None else sm.LocalMask(shape, window_size=(window, window), offset=0)
    )
    sizes = sk.BlockSizes(
        block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block, block_kv_dkv=block,
        block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block,
    )  # fmt: skip
    with jax.ensure_compile_time_eval():  # concrete mask tables, so the cached kernel outlives any trace
        return sk.make_splash_mha(
            mask=sm.MultiHeadMask([one] * heads), head_shards=1, q_seq_shards=1, block_sizes=sizes
        )


def _splash(q, k, v, mask: AttentionMask, *, window, scale, dropout=None) -> jax.Array:
    """Splash attention per row (vmap over B; one row at a time in interpret mode), heads-major (N, L, D); q is pre-scaled (splash does not
    scale). Lengths are padded to whole blocks with segment -1 (padding tokens attend only each other)."""
    from jax.experimental.pallas.ops.tpu.splash_attention.splash_attention_kernel import SegmentIds

    del dropout
    _, length, n, _ = q.shape
    padded = _round_up(length, SPLASH_BLOCK)
    kernel = _splash_kernel(padded, n, window, SPLASH_BLOCK)
    qs = (q.astype(jnp.float32) * scale).astype(q.dtype)
    qt, kt, vt = (_pad_axis(x, 1, 0, padded - length).swapaxes(1, 2) for x in (qs, k, v))  # (B, N, Lp, D)
    seg = _pad_axis(mask.segments, 1, 0, padded - length, value=-1)
    seg_q = _pad_axis(mask.query_segments(), 1, 0, padded - length, value=-1)

    def row(qr, kr, vr, sq, sk):
        return kernel(qr, kr, vr, segment_ids=SegmentIds(sq, sk))

    if _tpu_interpret_mode():  # the interpreter cannot batch the kernel's grid: one row at a time
        out = jax.lax.map(lambda xs: row(*xs), (qt, kt, vt, seg_q, seg))  # (B, N, Lp, D)
    else:
        out = jax.vmap(row)(qt, kt, vt, seg_q, seg)
    return out.swapaxes(1, 2)[:, :length].astype(q.dtype)


register_kernel(Kernel("eager", _eager, "einsum scores, the parity reference", dropout=True))
register_kernel(Kernel("xla", _dot_product_attention("xla"), 'jax.nn.dot_product_attention("xla")'))
register_kernel(
    Kernel("cudnn", _dot_product_attention("cudnn"), 'jax.nn.dot_product_attention("cudnn")', _gpu_only)
)
register_kernel(Kernel("flash", _flash_kernel, "blockwise online softmax, recomputing custom VJP"))
register_kernel(Kernel("splash", _splash, "Pallas TPU splash attention", _tpu_only))
