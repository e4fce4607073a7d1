"""`flash` in torch: memory-efficient attention registered in transformers' attention interface
(`AttentionInterface` / `AttentionMaskInterface`, name `wwm_blockwise`), for BERT, RoBERTa and ModernBERT.

The mask is the JAX module's rule (wwm_jax/attention.py, docs/models.md "Attention kernels"): query i
attends key j iff seg[i] == seg[j] and, on a local layer, |i - j| <= w; padding is one more segment. The
segment ids reach the kernel the way transformers hands per-call data to an attention function: a keyword
argument of the model's forward (`model(..., wwm_segment_ids=seg)`, passed down through `**kwargs` like
flash-attention's `cu_seq_lens_*`). Without it the rows' 2D padding mask is the segments (1 real, 0 pad).
ModernBERT's local layers pass `sliding_window` = w + 1 (flash-attention's convention), so w = it - 1.

The kernel (`FlashAttention`, a torch.autograd.Function): queries in chunks of `CHUNK`; each chunk attends
only the keys that can be in its mask — the span of the documents present in the chunk, cut to the window
(chunk +- w) — with an exact float32 softmax; the backward recomputes each chunk's probabilities from the
saved log-sum-exp. Live memory: (B, N, CHUNK, span) per chunk, never (B, N, L, L); packed documents and
local windows skip every key block outside them. Why not flex attention or flash-attn: torch 2.13's
flex_attention has no CPU backward, and flash-attn's varlen kernels need CUDA.
"""

from __future__ import annotations

from typing import Any

import torch

from wwm.errors import WWMError

NAME = "wwm_blockwise"  # the attn_implementation transformers sees for train.attn_implementation flash
# (not "...flash...": transformers takes any name containing "flash" for a flash-attn kernel from the Hub)
SEGMENT_KWARG = "wwm_segment_ids"
CHUNK = 256


def _key_spans(segments: torch.Tensor, window: int | None, chunk: int) -> list[tuple[int, int]]:
    """Per query chunk, the key range [lo, hi) holding every key any of its queries may attend (all rows):
    from the first to the last position of the segments present in the chunk, cut to chunk +- window."""
    b, length = segments.shape
    seg = segments.long()
    ids = seg - seg.min()  # >= 0, to index per-segment tables
    n_ids = int(ids.max()) + 1
    pos = torch.arange(length, device=seg.device).expand(b, length)
    first = torch.full((b, n_ids), length, device=seg.device).scatter_reduce(1, ids, pos, "amin")
    last = torch.full((b, n_ids), -1, device=seg.device).scatter_reduce(1, ids, pos, "amax")
    lo_tok = first.gather(1, ids)  # (B, L): where each token's segment starts and ends
    hi_tok = last.gather(1, ids) + 1
    n_chunks = -(-length // chunk)
    pad = n_chunks * chunk - length
    lo = torch.nn.functional.pad(lo_tok, (0, pad), value=length).view(b, n_chunks, chunk).amin(dim=(0, 2))
    hi = torch.nn.functional.pad(hi_tok, (0, pad), value=0).view(b, n_chunks, chunk).amax(dim=(0, 2))
    spans = []
    for c, (a, z) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):  # one host sync per call
        if window is not None:
            a = max(a, c * chunk - window)
            z = min(z, min((c + 1) * chunk, length) + window)
        spans.append((a, z))
    return spans


def _chunk_scores(q_c, k_s, seg_q, seg_k, q0, k0, window, scale):
    """Scaled float32 scores (B, N, c, s) of a query chunk against its key span, and the keep mask."""
    s = torch.matmul(q_c, k_s.transpose(-1, -2)) * scale
    keep = seg_q[:, :, None] == seg_k[:, None, :]  # (B, c, s)
    if window is not None:
        qi = torch.arange(q0, q0 + q_c.shape[2], device=q_c.device)
        ki = torch.arange(k0, k0 + k_s.shape[2], device=q_c.device)
        keep = keep & ((qi[:, None] - ki[None, :]).abs() <= window)
    return s, keep[:, None]


class FlashAttention(torch.autograd.Function):
    """(B, N, L, D) q, k, v, (B, L) segments -> (B, N, L, D) in q's dtype; computed in float32."""

    @staticmethod
    def forward(ctx, q, k, v, segments, window, scale, chunk):
        qf, kf, vf = q.float(), k.float(), v.float()
        length = q.shape[2]
        spans = _key_spans(segments, window, chunk)
        out = torch.empty_like(qf)
        lse = torch.empty(qf.shape[:3], dtype=torch.float32, device=q.device)
        for c, (k0, k1) in enumerate(spans):
            q0, q1 = c * chunk, min((c + 1) * chunk, length)
            s, keep = _chunk_scores(
                qf[:, :, q0:q1],
                kf[:, :, k0:k1],
                segments[:, q0:q1],
                segments[:, k0:k1],
                q0,
                k0,
                window,
                scale,
            )
            s = s.masked_fill(~keep, float("-inf"))  # every query keeps itself: no row is empty
            m = s.amax(-1, keepdim=True)
            p = torch.exp(s - m)
            total = p.sum(-1, keepdim=True)
            out[:, :, q0:q1] = torch.matmul(p, vf[:, :, k0:k1]) / total
            lse[:, :, q0:q1] = (m + torch.log(total)).squeeze(-1)
        ctx.save_for_backward(q, k, v, segments, out, lse)
        ctx.setup = (window, scale, chunk, spans)
        return out.to(q.dtype)

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, segments, out, lse = ctx.saved_tensors
        window, scale, chunk, spans = ctx.setup
        qf, kf, vf, do = q.float(), k.float(), v.float(), d_out.float()
        length = q.shape[2]
        delta = (do * out).sum(-1)  # (B, N, L): rowsum(dO * O)
        dq, dk, dv = torch.zeros_like(qf), torch.zeros_like(kf), torch.zeros_like(vf)
        for c, (k0, k1) in enumerate(spans):
            q0, q1 = c * chunk, min((c + 1) * chunk, length)
            q_c, k_s, v_s, do_c = qf[:, :, q0:q1], kf[:, :, k0:k1], vf[:, :, k0:k1], do[:, :, q0:q1]
            s, keep = _chunk_scores(q_c, k_s, segments[:, q0:q1], segments[:, k0:k1], q0, k0, window, scale)
            p = torch.exp(s - lse[:, :, q0:q1, None]).masked_fill(~keep, 0.0)
            dv[:, :, k0:k1] += torch.matmul(p.transpose(-1, -2), do_c)
            dp = torch.matmul(do_c, v_s.transpose(-1, -2))
            ds = p * (dp - delta[:, :, q0:q1, None]) * scale
            dq[:, :, q0:q1] = torch.matmul(ds, k_s)
            dk[:, :, k0:k1] += torch.matmul(ds.transpose(-1, -2), q_c)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    segments: torch.Tensor,
    *,
    window: int | None = None,
    scale: float | None = None,
    chunk: int = CHUNK,
) -> torch.Tensor:
    """(B, N, L, D) q, k, v, (B, L) int segment ids (0 = padding) -> (B, N, L, D) (the module docstring)."""
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return FlashAttention.apply(q, k, v, segments, window, scale, int(chunk))


def flash_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: (B, N, L, D) states -> ((B, L, N, D), no weights)."""
    if dropout and module.training:
        raise WWMError(
            "train.attn_implementation flash has no attention dropout; set model.attention_probs_dropout_prob: 0 "
            "or use eager"
        )
    segments = kwargs.get(SEGMENT_KWARG)
    if segments is None:
        b, _, length, _ = query.shape
        segments = (
            attention_mask.long()
            if attention_mask is not None
            else torch.ones(b, length, dtype=torch.long, device=query.device)
        )
    window = None if sliding_window is None else int(sliding_window) - 1
    out = flash_attention(query, key, value, segments.to(query.device), window=window, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def padding_mask(
    *args: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any
) -> torch.Tensor | None:
    """The mask transformers builds for `wwm_blockwise`: the 2D padding mask as given (the kernel applies the
    windows and the segments itself), so no (B, 1, L, L) mask is ever made."""
    return attention_mask


def register() -> str:
    """Register `wwm_blockwise` in transformers' attention and mask interfaces (idempotent); its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, flash_attention_forward)
    AttentionMaskInterface.register(NAME, padding_mask)
    return NAME
