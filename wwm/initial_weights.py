"""The initial weights of a fresh masked-LM model, in numpy: the one place both trainers start from.

    state = initial_state(hf_config, seed)   # {Hugging Face key: float32 array}

`hf_config` is the config.json dict of the model (the model section's `hf_config_dict`, which both trainers
build their fresh models from); the keys are what transformers' `save_pretrained` writes for
BertForMaskedLM, RobertaForMaskedLM or ModernBertForMaskedLM (the tied decoder copies left out:
`tied_keys`, `with_tied`). The JAX trainer loads the state through `wwm_jax.convert`, the torch trainer
with `load_state_dict`, so a fresh model is the same numbers in both frameworks, not only the same
distributions (two frameworks' own draws would make fresh runs end visibly apart).

The distributions are transformers 5.24's own `_init_weights` for each family (its record's
`tensor_specs`, wwm/families/, names the rule of each tensor). Each tensor is drawn from its own numpy stream, keyed by (seed, its key name):
`Generator(PCG64(SeedSequence([seed, crc32(key)])))`. So a tensor does not depend on the order of the
others or on which other tensors exist (a head-only or a larger model draws the shared tensors
identically), and the numbers are the same on every platform (numpy's PCG64 and its float32 ziggurat are
integer and IEEE arithmetic; NEP 19 lets numpy change a Generator's stream between numpy versions, so the
draws are fixed for a given numpy release, not across all of them).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from wwm.errors import WWMError
from wwm.families import FAMILIES as _FAMILIES
from wwm.families import Family, TensorSpec

# The tensor layout of a family (`tensor_specs`) and its tied keys are in its record (wwm.families).
FAMILIES = tuple(_FAMILIES)


def initial_state(hf_config: Mapping[str, Any], seed: int) -> dict[str, np.ndarray]:
    """{HF key: float32 array} of a fresh masked-LM model of `hf_config` (model_type bert, roberta or
    modernbert), drawn as transformers' `_init_weights` draws them; `seed` is the run's seed."""
    _check_seed(seed)
    return {s.key: _draw(s, seed) for s in tensor_specs(hf_config)}


def tensor_specs(hf_config: Mapping[str, Any]) -> list[TensorSpec]:
    """Every tensor of the model, with its shape and its rule, in transformers' state-dict order (the
    tied copies left out): the family record's specs."""
    return _family_of(hf_config).tensor_specs(hf_config)


def tied_keys(hf_config: Mapping[str, Any]) -> dict[str, str]:
    """{tied key: the key it shares its tensor with}: transformers' `_tied_weights_keys` of the family
    (in its state dict, not in `save_pretrained`'s file, so not in `initial_state`)."""
    return dict(_family_of(hf_config).tied)


def _family_of(hf_config: Mapping[str, Any]) -> Family:
    model_type = hf_config.get("model_type")
    if model_type not in _FAMILIES:
        raise WWMError(f"model_type {model_type!r} has no initial weights; use one of {FAMILIES}")
    return _FAMILIES[model_type]


def with_tied(state: Mapping[str, np.ndarray], hf_config: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """`state` plus its tied copies: the key set of the model's `state_dict()` (torch's strict
    `load_state_dict`)."""
    return {**state, **{k: state[v] for k, v in tied_keys(hf_config).items()}}


_EMBEDDINGS = ("word_embeddings.weight", "tok_embeddings.weight")  # (V, H): the token embeddings
_DECODER_BIAS = ("predictions.bias", "lm_head.bias", "decoder.bias")  # (V,): the MLM decoder's bias


def extend_vocab(hf_state: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """`model.extend_vocab`: a pretrained model's tensors with the token embeddings (and an untied decoder
    weight) grown to `rows` rows, each new row the mean of the old rows, and the decoder bias grown with
    the mean of its old entries. No randomness (transformers' `mean_resizing` samples around the mean),
    so both trainers start from the same numbers. Means in float64, stored in each tensor's dtype."""
    out = dict(hf_state)
    for key, value in hf_state.items():
        grow = key.endswith(_EMBEDDINGS) or (key.endswith("decoder.weight") and value.ndim == 2)
        if key.endswith(_DECODER_BIAS) and value.ndim == 1:
            grow = True
        if not grow or value.shape[0] >= rows:
            continue
        mean = value.astype(np.float64).mean(axis=0, keepdims=True).astype(value.dtype)
        out[key] = np.concatenate([value, np.repeat(mean, rows - value.shape[0], axis=0)])
    return out


# ----------------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------------


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise WWMError(f"seed must be an integer in [0, 2^64) for the initial weights; got {seed!r}")


def _stream(seed: int, key: str) -> np.random.Generator:
    """The tensor's own generator: a function of (seed, key) only."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), zlib.crc32(key.encode())])))


def _draw(spec: TensorSpec, seed: int) -> np.ndarray:
    if spec.rule == "zeros":
        return np.zeros(spec.shape, np.float32)
    if spec.rule == "ones":
        return np.ones(spec.shape, np.float32)
    rng = _stream(seed, spec.key)
    z = rng.standard_normal(spec.shape, dtype=np.float32)
    if spec.rule == "truncated":
        _resample_outside(z, spec.cutoff, rng)
    x = z * np.float32(spec.std)  # torch's normal_: mean 0 + std * z, in float32
    if spec.padding_row is not None:
        x[spec.padding_row] = 0.0
    return x


def _resample_outside(z: np.ndarray, cutoff: float, rng: np.random.Generator) -> None:
    """Redraw, in place, every entry with |z| > cutoff until none is left: the standard normal
    conditioned on [-cutoff, cutoff], the distribution torch's trunc_normal_ draws (by inverse CDF)."""
    flat = z.reshape(-1)
    bad = np.flatnonzero(np.abs(flat) > cutoff)
    while bad.size:
        flat[bad] = rng.standard_normal(bad.size, dtype=np.float32)
        bad = bad[np.abs(flat[bad]) > cutoff]


__all__ = ["FAMILIES", "initial_state", "tensor_specs", "tied_keys", "with_tied"]
