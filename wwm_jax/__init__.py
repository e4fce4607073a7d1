"""JAX/Flax side of wwm: BERT/RoBERTa masked-LM encoders (`wwm_jax.modeling`) and lossless Hugging Face
checkpoint conversion (`wwm_jax.convert`). Submodules are imported on first use, so `import wwm_jax` stays
cheap."""

from __future__ import annotations

import importlib

_LAZY = {
    "EncoderConfig": "wwm_jax.modeling",
    "build_model": "wwm_jax.modeling",
    "logical_axes": "wwm_jax.modeling",
    "load_hf": "wwm_jax.convert",
    "save_hf": "wwm_jax.convert",
    "load_flax": "wwm_jax.convert",
    "save_flax": "wwm_jax.convert",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wwm_jax' has no attribute {name!r}")
