"""AdamW with Hugging Face Trainer's conventions, so the JAX and the torch trainer take the same steps.

* Learning rate at optimizer update k (k = 0, 1, ...): transformers' `get_{linear,cosine,constant}
  _schedule_with_warmup` (or `get_wsd_schedule` for "wsd") at step k. HF steps its scheduler *after* each optimizer step, so the first
  update uses lambda(0), which is 0 with warmup; optax calls the schedule with the number of updates done
  so far, the same k.
* Weight decay on every parameter except layer norms and biases (HF's `get_decay_parameter_names`:
  nn.LayerNorm modules and names containing "bias"/"layernorm"/"norm"); embeddings are decayed.
* Clipping by global norm as `torch.nn.utils.clip_grad_norm_`: scale by min(1, max / (norm + 1e-6)).
* AdamW itself: optax's adamw equals torch.optim.AdamW (decoupled decay p -= lr*wd*p; eps added to
  sqrt of the bias-corrected second moment).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from wwm.config import OptimConfig


def lr_factor(
    step: jax.Array | int,
    *,
    schedule: str,
    warmup_steps: int,
    max_steps: int,
    decay_steps: int = 1,
    decay_shape: str = "1-sqrt",
) -> jax.Array:
    """The multiplier of the peak learning rate at update `step` (HF's lr_lambda), float32.

    `decay_steps`, `decay_shape`: schedule "wsd" only (transformers' get_wsd_schedule with a linear warmup,
    min_lr_ratio 0: 1 until the last `decay_steps` updates, then 1 - sqrt(progress) or 1 - progress, 0 from
    max_steps on)."""
    step = jnp.asarray(step, jnp.float32)
    warm = step / float(max(1, warmup_steps))
    if schedule == "wsd":
        return jnp.where(step < warmup_steps, warm, _wsd_after(step, max_steps, decay_steps, decay_shape))
    remaining = (max_steps - step) / float(max(1, max_steps - warmup_steps))  # 1 - progress
    if schedule == "linear":
        after = jnp.maximum(0.0, remaining)
    elif schedule == "cosine":
        # HF: 0.5 * (1 + cos(pi * progress)) (num_cycles 0.5), written as sin(pi/2 * (1 - progress))^2,
        # the same function, which float32 evaluates to ~1e-7 relative even where it nears 0.
        after = jnp.sin(0.5 * math.pi * remaining) ** 2
    elif schedule == "constant":
        after = jnp.ones_like(step)
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return jnp.where(step < warmup_steps, warm, after)


def _wsd_after(step: jax.Array, max_steps: int, decay_steps: int, shape: str) -> jax.Array:
    """wsd after the warmup: 1 (stable), then the decay over the last `decay_steps` updates, then 0."""
    # 1 - progress, written as (end - step) / D: exact near the end, where HF's float64 value nears 0.
    remaining = jnp.clip((max_steps - step) / float(max(1, decay_steps)), 0.0, 1.0)
    if shape == "linear":
        return remaining
    if shape == "1-sqrt":
        # 1 - sqrt(p) = (1 - p) / (1 + sqrt(p)): no cancellation in float32 as p nears 1.
        return remaining / (1.0 + jnp.sqrt(1.0 - remaining))
    raise ValueError(f"unknown decay shape {shape!r}")


def make_schedule(optim: OptimConfig, max_steps: int) -> Callable[[jax.Array], jax.Array]:
    decay = optim.wsd_decay_steps(max_steps) if optim.schedule == "wsd" else 1

    def schedule(count):
        factor = lr_factor(
            count, schedule=optim.schedule, warmup_steps=optim.warmup_steps, max_steps=max_steps,
            decay_steps=decay, decay_shape=optim.decay_shape,
        )  # fmt: skip
        return optim.learning_rate * factor

    return schedule


def decay_mask(params: Any) -> Any:
    """True where weight decay applies: not a layer-norm parameter, not a bias (HF Trainer's rule)."""

    def decays(path, _) -> bool:
        names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        lowered = [n.lower() for n in names]
        if names[-1] == "bias":
            return False
        # LayerNorm modules: BERT's "LayerNorm", RoBERTa head's "layer_norm" (HF: "layernorm", "_norm").
        return not any("layernorm" in n or n.endswith("_norm") or n == "norm" for n in lowered)

    return jax.tree_util.tree_map_with_path(decays, params)


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
    """torch's clip_grad_norm_: g * min(1, max_norm / (||g|| + 1e-6))."""

    def update(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
        return jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(optim: OptimConfig, max_steps: int) -> tuple[optax.GradientTransformation, Callable]:
    """(AdamW with clipping and the HF-equal schedule, the schedule)."""
    schedule = make_schedule(optim, max_steps)
    adamw = optax.adamw(
        learning_rate=schedule,
        b1=optim.beta1,
        b2=optim.beta2,
        eps=optim.eps,
        weight_decay=optim.weight_decay,
        mask=decay_mask,
    )
    if optim.max_grad_norm is None:
        return adamw, schedule
    return optax.chain(clip_by_global_norm_torch(optim.max_grad_norm), adamw), schedule
