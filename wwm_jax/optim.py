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
* StableAdamW (`optim.name: stable_adamw`): `stable_adamw`, a GradientTransformation (chained after the
  clipping) equal to torch-optimi's StableAdamW, ModernBERT's optimizer (the rule: its docstring).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
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


class StableAdamWState(NamedTuple):
    count: jax.Array  # int32: updates done so far
    mu: Any  # debiased first moment (m_hat), like the params
    nu: Any  # debiased second moment (v_hat)


def debiased_beta_table(beta: float, max_steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(beta_hat, 1 - beta_hat) at updates t = 1, 2, ... as float32 tables, computed in float64 as
    torch-optimi does (debias_beta(beta, t) = (beta^t - beta) / (beta^t - 1): an EMA with this factor is
    Adam's bias-corrected moment itself) and rounded once, as torch's float32 kernels round the scalar.

    Computed in float32 inside the step instead, the factors carry ~1e-7 errors of one sign, which over 100
    updates move the weights ~1e-6 (relative) away from torch's. The table ends where both values reach
    their limits (beta, 1 - beta) in float32, or at `max_steps`; later updates use its last entry."""
    t_end = 1
    if 0.0 < beta < 1.0:  # beta^t below 2^-30: both float32 values have converged
        t_end = math.ceil(30 * math.log(2.0) / -math.log(beta)) + 2
    if max_steps is not None:
        t_end = min(t_end, max_steps + 1)
    t = np.arange(1, t_end + 1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        hat = (beta**t - beta) / (beta**t - 1.0)
    hat = np.where(np.isfinite(hat), hat, 0.0)  # beta = 0: no averaging
    return hat.astype(np.float32), (1.0 - hat).astype(np.float32)


def _lerp(start: jax.Array, end: jax.Array, weight: jax.Array) -> jax.Array:
    """torch.lerp's two formulas (exact at weight 1, as torch's): start + w (end - start) for w < 0.5,
    else end - (end - start)(1 - w)."""
    diff = end - start
    return jnp.where(weight < 0.5, start + weight * diff, end - diff * (1.0 - weight))


def stable_adamw(
    learning_rate: Callable[[jax.Array], jax.Array],
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float = 0.0,
    mask: Any = None,
    decay_lr_peak: float | None = None,
    max_steps: int | None = None,
) -> optax.GradientTransformation:
    """StableAdamW, equal to torch-optimi's `StableAdamW` (ModernBERT's src/optimizer.py forks it).

    At update t (1, 2, ...), per tensor p with gradient g and scheduled rate lr = learning_rate(t - 1):
      m = lerp(m, g, 1 - b1_hat(t)); v = v b2_hat(t) + g^2 (1 - b2_hat(t))   (bias-corrected EMAs:
                                                                              debiased_beta_table)
      rms = sqrt(mean(g^2 / max(v, eps^2)));  lr_c = lr / max(1, rms)       (Adafactor-style clip)
      p = p * (1 - lr_c * wd)        (where `mask`; decay_lr_peak set: 1 - lr_c / peak * wd, "fully
                                      decoupled", optimi's decouple_lr)
      p = p - lr_c * m / (sqrt(v) + eps)
    The update is returned as new p - p, which `optax.apply_updates` adds back exactly (new p and p are
    within a factor 2, so the difference is exact): the decay is a float32 factor as in torch, whose
    rounding otherwise accumulates to ~1e-6 of the weights over 100 steps."""

    tables = (debiased_beta_table(b1, max_steps), debiased_beta_table(b2, max_steps))

    def init(params):
        zeros = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=jnp.float32), params)
        return StableAdamWState(jnp.zeros([], jnp.int32), zeros, jax.tree.map(jnp.copy, zeros))

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("stable_adamw needs the params (weight decay, and the update is new - old)")
        (_, b1_comp), (b2_hat, b2_comp) = (
            (jnp.asarray(x)[jnp.minimum(state.count, x.size - 1)] for x in table) for table in tables
        )
        lr = jnp.asarray(learning_rate(state.count), jnp.float32)
        decays = mask(params) if callable(mask) else mask
        if decays is None:
            decays = jax.tree.map(lambda _: True, params)

        def one(g, m, v, p, decay):
            g = g.astype(jnp.float32)
            m = _lerp(m, g, b1_comp)
            v = v * b2_hat + jnp.square(g) * b2_comp
            rms = jnp.sqrt(jnp.mean(jnp.square(g) / jnp.maximum(v, eps * eps)))
            lr_c = lr / jnp.maximum(1.0, rms)
            new = p.astype(jnp.float32)
            if decay and weight_decay:
                rate = lr_c / decay_lr_peak if decay_lr_peak else lr_c
                new = new * (1.0 - rate * weight_decay)
            new = new - lr_c * (m / (jnp.sqrt(v) + eps))
            return (new - p).astype(p.dtype), m, v

        out = jax.tree.map(one, grads, state.mu, state.nu, params, decays)  # (update, m, v) leaves
        updates, mu, nu = jax.tree.transpose(jax.tree.structure(grads), jax.tree.structure((0, 0, 0)), out)
        return updates, StableAdamWState(state.count + 1, mu, nu)

    return optax.GradientTransformation(init, update)


def make_optimizer(optim: OptimConfig, max_steps: int) -> tuple[optax.GradientTransformation, Callable]:
    """(`optim.name` (AdamW or StableAdamW) with clipping and the HF-equal schedule, the schedule)."""
    schedule = make_schedule(optim, max_steps)
    if optim.name == "stable_adamw":
        tx = stable_adamw(
            schedule, optim.beta1, optim.beta2, optim.eps, optim.weight_decay, decay_mask,
            decay_lr_peak=optim.learning_rate if optim.decouple_lr else None, max_steps=max_steps,
        )  # fmt: skip
    else:
        tx = optax.adamw(
            learning_rate=schedule,
            b1=optim.beta1,
            b2=optim.beta2,
            eps=optim.eps,
            weight_decay=optim.weight_decay,
            mask=decay_mask,
        )
    if optim.max_grad_norm is None:
        return tx, schedule
    return optax.chain(clip_by_global_norm_torch(optim.max_grad_norm), tx), schedule
