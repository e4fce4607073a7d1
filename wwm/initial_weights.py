"""The initial weights of a fresh masked-LM model, in numpy: the one place both trainers start from.

    state = initial_state(hf_config, seed)   # {Hugging Face key: float32 array}

`hf_config` is the config.json dict of the model (`ModelConfig.hf_config_dict`, which both trainers
build their fresh models from); the keys are what transformers' `save_pretrained` writes for
BertForMaskedLM, RobertaForMaskedLM or ModernBertForMaskedLM (the tied decoder copies left out:
`tied_keys`, `with_tied`). The JAX trainer loads the state through `wwm_jax.convert`, the torch trainer
with `load_state_dict`, so a fresh model is the same numbers in both frameworks, not only the same
distributions (before, each framework drew its own and fresh runs ended visibly apart).

The distributions are transformers 5.24's own `_init_weights` for each family (rules named at each
`_Spec` below). Each tensor is drawn from its own numpy stream, keyed by (seed, its key name):
`Generator(PCG64(SeedSequence([seed, crc32(key)])))`. So a tensor does not depend on the order of the
others or on which other tensors exist (a head-only or a larger model draws the shared tensors
identically), and the numbers are the same on every platform (numpy's PCG64 and its float32 ziggurat are
integer and IEEE arithmetic; NEP 19 lets numpy change a Generator's stream between numpy versions, so the
draws are fixed for a given numpy release, not across all of them).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import numpy as np

from wwm.errors import WWMError

FAMILIES = ("bert", "roberta", "modernbert")

Rule = Literal["normal", "truncated", "zeros", "ones"]


class _Spec(NamedTuple):
    """How one tensor starts: `rule` with `std` (normal / truncated at +-cutoff * std), and the
    embedding row that is zeroed afterwards (`padding_row`, nn.Embedding's padding_idx), if any."""

    key: str
    shape: tuple[int, ...]
    rule: Rule
    std: float = 0.0
    cutoff: float = 0.0  # truncated only: |x| <= cutoff * std
    padding_row: int | None = None


def initial_state(hf_config: Mapping[str, Any], seed: int) -> dict[str, np.ndarray]:
    """{HF key: float32 array} of a fresh masked-LM model of `hf_config` (model_type bert, roberta or
    modernbert), drawn as transformers' `_init_weights` draws them; `seed` is the run's seed."""
    _check_seed(seed)
    return {s.key: _draw(s, seed) for s in tensor_specs(hf_config)}


def tensor_specs(hf_config: Mapping[str, Any]) -> list[_Spec]:
    """Every tensor of the model, with its shape and its rule, in transformers' state-dict order (the
    tied copies left out)."""
    model_type = hf_config.get("model_type")
    if model_type == "modernbert":
        return _modernbert_specs(hf_config)
    if model_type in ("bert", "roberta"):
        return _bert_specs(hf_config, model_type)
    raise WWMError(f"model_type {model_type!r} has no initial weights; use one of {FAMILIES}")


def tied_keys(hf_config: Mapping[str, Any]) -> dict[str, str]:
    """{tied key: the key it shares its tensor with}: transformers' `_tied_weights_keys` of the family
    (in its state dict, not in `save_pretrained`'s file, so not in `initial_state`)."""
    model_type = hf_config.get("model_type")
    if model_type == "modernbert":
        return {"decoder.weight": "model.embeddings.tok_embeddings.weight"}
    if model_type == "bert":
        return {
            "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
            "cls.predictions.decoder.bias": "cls.predictions.bias",
        }
    if model_type == "roberta":
        return {"lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight", "lm_head.decoder.bias": "lm_head.bias"}  # fmt: skip
    raise WWMError(f"model_type {model_type!r} has no initial weights; use one of {FAMILIES}")


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


def _draw(spec: _Spec, seed: int) -> np.ndarray:
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


# ----------------------------------------------------------------------------------------------------
# The families
# ----------------------------------------------------------------------------------------------------


def _get(hf: Mapping[str, Any], key: str, default: Any = None) -> Any:
    value = hf.get(key, default)
    if value is None and default is None:
        raise WWMError(f"the model config has no {key}; the initial weights need it")
    return value


def _padding_row(hf: Mapping[str, Any], rows: int) -> int | None:
    pad = hf.get("pad_token_id")
    if pad is not None and not 0 <= pad < rows:
        raise WWMError(f"pad_token_id {pad} is outside the vocabulary of {rows} tokens")
    return pad


def _bert_specs(hf: Mapping[str, Any], model_type: str) -> list[_Spec]:
    """BertForMaskedLM / RobertaForMaskedLM. transformers' `PreTrainedModel._init_weights`
    (modeling_utils.py) with std = `initializer_range or 0.02`: nn.Linear weight normal(0, std), bias
    zeros; nn.Embedding normal(0, std) with the padding_idx row zeroed (the word embeddings: padding_idx
    = pad_token_id; RoBERTa's position embeddings too); LayerNorm weight ones, bias zeros. Then
    BertPreTrainedModel / RobertaPreTrainedModel._init_weights: the LM head's own `bias` zeros."""
    std = float(hf.get("initializer_range") or 0.02)
    V, H = int(_get(hf, "vocab_size")), int(_get(hf, "hidden_size"))
    I, P = int(_get(hf, "intermediate_size")), int(_get(hf, "max_position_embeddings", 512))
    T = int(_get(hf, "type_vocab_size", 2))
    pad = _padding_row(hf, V)
    p = model_type  # the encoder prefix: "bert." / "roberta."

    def linear(name: str, out: int, inp: int) -> list[_Spec]:
        return [_Spec(f"{name}.weight", (out, inp), "normal", std), _Spec(f"{name}.bias", (out,), "zeros")]

    def norm(name: str, n: int = H) -> list[_Spec]:
        return [_Spec(f"{name}.weight", (n,), "ones"), _Spec(f"{name}.bias", (n,), "zeros")]

    position = _Spec(f"{p}.embeddings.position_embeddings.weight", (P, H), "normal", std,
                     padding_row=pad if model_type == "roberta" else None)  # fmt: skip
    specs = [
        _Spec(f"{p}.embeddings.word_embeddings.weight", (V, H), "normal", std, padding_row=pad),
        _Spec(f"{p}.embeddings.token_type_embeddings.weight", (T, H), "normal", std),
        *norm(f"{p}.embeddings.LayerNorm"),
    ]
    specs.insert(1 if model_type == "bert" else len(specs), position)  # where each family declares it
    for i in range(int(_get(hf, "num_hidden_layers"))):
        layer = f"{p}.encoder.layer.{i}"
        for name in ("query", "key", "value"):
            specs += linear(f"{layer}.attention.self.{name}", H, H)
        specs += linear(f"{layer}.attention.output.dense", H, H) + norm(f"{layer}.attention.output.LayerNorm")
        specs += linear(f"{layer}.intermediate.dense", I, H)
        specs += linear(f"{layer}.output.dense", H, I) + norm(f"{layer}.output.LayerNorm")
    if model_type == "bert":
        head = "cls.predictions"
        specs += [_Spec(f"{head}.bias", (V,), "zeros")]
        specs += linear(f"{head}.transform.dense", H, H) + norm(f"{head}.transform.LayerNorm")
    else:
        specs += [_Spec("lm_head.bias", (V,), "zeros")]
        specs += linear("lm_head.dense", H, H) + norm("lm_head.layer_norm")
    return specs


def _modernbert_specs(hf: Mapping[str, Any]) -> list[_Spec]:
    """ModernBertForMaskedLM. transformers' `ModernBertPreTrainedModel._init_weights`
    (modeling_modernbert.py): truncated normal(0, std) on [-cutoff * std, cutoff * std], cutoff =
    `initializer_cutoff_factor` (None: 3), with std per module: "in" = initializer_range for attn.Wqkv and
    mlp.Wi; "out" = initializer_range / sqrt(2 * num_hidden_layers) for attn.Wo, mlp.Wo and head.dense;
    "embedding" = initializer_range for tok_embeddings, whose padding row stays drawn (that init runs after
    nn.Embedding's zeroing); Linear biases zeros; LayerNorm weight ones, bias (norm_bias) zeros. The
    decoder's own "out" init does not survive: its weight is tied to tok_embeddings; its bias is zeros."""
    V, H = int(_get(hf, "vocab_size")), int(_get(hf, "hidden_size"))
    I, layers = int(_get(hf, "intermediate_size")), int(_get(hf, "num_hidden_layers"))
    std = float(_get(hf, "initializer_range", 0.02))
    if not std > 0:
        raise WWMError(f"initializer_range must be > 0 for ModernBERT's truncated-normal init; got {std}")
    cutoff = hf.get("initializer_cutoff_factor")
    cutoff = 3.0 if cutoff is None else float(cutoff)
    if not cutoff > 0:
        raise WWMError(f"initializer_cutoff_factor must be > 0; got {cutoff}")
    _padding_row(hf, V)
    stds = {"in": std, "out": std / math.sqrt(2.0 * layers), "embedding": std}
    norm_bias = bool(hf.get("norm_bias", False))

    def linear(name: str, out: int, inp: int, which: str, bias: bool) -> list[_Spec]:
        rows = [_Spec(f"{name}.weight", (out, inp), "truncated", stds[which], cutoff)]
        return rows + ([_Spec(f"{name}.bias", (out,), "zeros")] if bias else [])

    def norm(name: str) -> list[_Spec]:
        rows = [_Spec(f"{name}.weight", (H,), "ones")]
        return rows + ([_Spec(f"{name}.bias", (H,), "zeros")] if norm_bias else [])

    attention_bias, mlp_bias = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
    specs = [_Spec("model.embeddings.tok_embeddings.weight", (V, H), "truncated", stds["embedding"], cutoff)]
    specs += norm("model.embeddings.norm")
    for i in range(layers):
        layer = f"model.layers.{i}"
        specs += norm(f"{layer}.attn_norm") if i else []  # layer 0's attn_norm is nn.Identity
        specs += linear(f"{layer}.attn.Wqkv", 3 * H, H, "in", attention_bias)
        specs += linear(f"{layer}.attn.Wo", H, H, "out", attention_bias)
        specs += norm(f"{layer}.mlp_norm")
        specs += linear(f"{layer}.mlp.Wi", 2 * I, H, "in", mlp_bias)
        specs += linear(f"{layer}.mlp.Wo", H, I, "out", mlp_bias)
    specs += norm("model.final_norm")
    specs += linear("head.dense", H, H, "out", bool(hf.get("classifier_bias", False))) + norm("head.norm")
    if hf.get("decoder_bias", True):
        specs += [_Spec("decoder.bias", (V,), "zeros")]
    return specs


__all__ = ["FAMILIES", "initial_state", "tensor_specs", "tied_keys", "with_tied"]
