"""The torch optimizer for `optim.name` (docs/models.md "StableAdamW").

* `adamw`: the Trainer's own `adamw_torch` (`training_arguments` sets it), torch.optim.AdamW.
* `stable_adamw`: torch-optimi's `StableAdamW` (the maintained library ModernBERT's own `src/optimizer.py`
  forks; same rule, checked in tests/test_stable_adamw.py against a float64 transcription of ModernBERT's
  file), handed to the Trainer through `optimizer_cls_and_kwargs`, so the Trainer's `create_optimizer`
  still builds the parameter groups: weight decay on every parameter except LayerNorm weights and biases,
  the JAX trainer's `decay_mask`. The scheduler sets each group's `lr`; with `decouple_lr` the decay
  is scaled by lr / max_lr, where max_lr is the peak `optim.learning_rate` (optimi's default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wwm.errors import WWMError

if TYPE_CHECKING:
    from wwm.config import OptimConfig


def optimizer_cls_and_kwargs(optim: OptimConfig) -> tuple[type, dict[str, Any]] | None:
    """`Trainer(optimizer_cls_and_kwargs=...)` for `optim`, or None for the Trainer's AdamW."""
    if optim.name == "adamw":
        return None
    if optim.name != "stable_adamw":
        raise WWMError(f"unknown optim.name {optim.name!r}; use adamw or stable_adamw")
    try:
        from optimi import StableAdamW
    except ImportError as err:
        raise WWMError(
            "optim.name stable_adamw needs torch-optimi in the torch trainer; pip install torch-optimi "
            "(or pip install -e '.[torch]')"
        ) from err
    kwargs = {
        "lr": optim.learning_rate,
        "betas": (optim.beta1, optim.beta2),
        "eps": optim.eps,
        "weight_decay": optim.weight_decay,  # the Trainer's groups set it per group (0 for norms, biases)
        "decouple_lr": optim.decouple_lr,
        "max_lr": optim.learning_rate if optim.decouple_lr else None,
        "kahan_sum": False,  # parameters are float32 in both trainers (bf16 is autocast compute)
    }
    return StableAdamW, kwargs
