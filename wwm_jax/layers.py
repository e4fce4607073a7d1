"""The building blocks every model family here shares (`wwm_jax.modeling`, `wwm_jax.modernbert`): the
activations by transformers' ACT2FN names, logical-axis metadata, the float32 LayerNorm, the embedding
lookup with torch's padding-row gradient, and dropout keys. Shared in the open, so that no model file
imports another's private names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

# transformers' ACT2FN names every family here accepts (a family may add its own).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # transformers' "gelu" is the exact erf form
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # the tanh approximation (GPT-2, "gelu_new")
    "relu": jax.nn.relu,
}


def axis_metadata(*names: str | None) -> dict[str, Any]:
    """Variable metadata that names a parameter's logical axes (one name or None per dimension)."""
    return {"out_sharding": names}


def float32_layer_norm(size: int, eps: float, *, use_bias: bool, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """The one LayerNorm of every model family here: float32, torch's variance, logical axis "norm"."""
    return nnx.LayerNorm(
        size,
        epsilon=eps,
        use_bias=use_bias,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        use_fast_variance=False,
        scale_metadata=axis_metadata("norm"),
        bias_metadata=axis_metadata("norm"),
        rngs=rngs,
    )


def embed_lookup(table: nnx.Embed, ids: jax.Array, padding_idx: int | None) -> jax.Array:
    """Row lookup with torch's nn.Embedding(padding_idx=...) semantics.

    torch never sends gradient to the padding row through the lookup (the tied decoder still does), so
    rows looked up at `padding_idx` are cut from the gradient here too. The forward value is unchanged.
    """
    rows = jnp.take(table.embedding[...], ids, axis=0)  # (B, L, H) float32
    if padding_idx is None:
        return rows
    return jnp.where((ids == padding_idx)[..., None], jax.lax.stop_gradient(rows), rows)


def as_rngs(rngs):
    """Dropout needs a fresh key per layer: a bare key becomes an nnx.Rngs stream that splits per call."""
    if rngs is None or isinstance(rngs, nnx.Rngs):
        return rngs
    return nnx.Rngs(dropout=rngs)
