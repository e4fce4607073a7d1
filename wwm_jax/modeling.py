"""BERT and RoBERTa masked-LM encoders in Flax NNX, numerically equal to transformers' PyTorch models.

transformers v5 removed its Flax models, so this file re-implements the two encoders we pretrain, in the
style of transformers' `modeling_bert.py`: one self-contained file, module and attribute names that mirror
the Hugging Face checkpoint keys (`bert.encoder.layer.0.attention.self.query` is
`model.bert.encoder.layer[0].attention.self.query` here) so that checkpoint conversion
(`wwm_jax.convert`) is a short name table.

Conventions
- Shapes: B batch, L sequence length, H hidden size, N attention heads, D head size (H = N * D),
  I intermediate size, V vocabulary size.
- Parameters are always float32. `dtype` is the compute dtype of activations and matmuls (e.g. bfloat16);
  layer norms, the attention softmax and the returned logits stay float32.
- Every parameter carries logical axis names in the NNX variable metadata field `out_sharding` (the name
  flax 0.12 uses; `sharding` and `sharding_names` are its deprecated spellings). `logical_axes(model)`
  returns them; a trainer maps them to a device mesh with `nnx.logical_axis_rules` (see docs/models.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wwm.errors import WWMError
from wwm.families import family
from wwm_jax import attention as attn
from wwm_jax.layers import ACTIVATIONS as _ACTIVATIONS
from wwm_jax.layers import as_rngs as _as_rngs
from wwm_jax.layers import axis_metadata as _axes
from wwm_jax.layers import embed_lookup as _lookup
from wwm_jax.layers import float32_layer_norm

MODEL_TYPES = ("bert", "roberta")

# Logical axis names carried by the parameters (see docs/models.md):
#   vocab: vocabulary rows            embed: hidden size (the residual stream)
#   mlp: feed-forward inner size      heads: the fused q/k/v/attention-output dim (N * D)
#   position: position-embedding rows type: token-type-embedding rows
#   norm: layer-norm scale and bias   kv: reserved for a per-head (D) axis; unused while kernels stay 2-D
LOGICAL_AXIS_NAMES = ("vocab", "embed", "mlp", "heads", "kv", "position", "type", "norm")


# ----------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """The fields of a Hugging Face BertConfig / RobertaConfig that these models use, with BertConfig's
    defaults (the one place they are written).

    Frozen (hashable) because NNX keeps it as static module metadata. `checkpoint_dtype` is the dtype of the
    tensors in the checkpoint this config came from; export writes tensors back in it, so a bfloat16
    checkpoint round-trips bit-identically even though the Flax parameters are float32.
    """

    model_type: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    pad_token_id: int = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    checkpoint_dtype: str = "float32"

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise WWMError(f"model_type {self.model_type!r} is not supported; use one of {MODEL_TYPES}")
        if self.hidden_size % self.num_attention_heads:
            raise WWMError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise WWMError(
                f"hidden_act {self.hidden_act!r} is not supported; use one of {sorted(_ACTIVATIONS)}"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise WWMError(f"pad_token_id {self.pad_token_id} is outside the vocabulary ({self.vocab_size})")
        if self.checkpoint_dtype not in ("float32", "float16", "bfloat16"):
            raise WWMError(f"checkpoint dtype {self.checkpoint_dtype!r} is not float32, float16 or bfloat16")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def architecture(self) -> str:
        return family(self.model_type).architecture

    @classmethod
    def from_hf_dict(cls, hf: Mapping[str, Any]) -> EncoderConfig:
        """From the dict in a Hugging Face config.json; rejects features these models do not implement."""
        model_type = hf.get("model_type")
        if model_type not in MODEL_TYPES:
            raise WWMError(
                f"config.json model_type {model_type!r} is not supported; use one of {MODEL_TYPES}"
            )
        _reject_unsupported(hf)
        defaults = _ROBERTA_DEFAULTS if model_type == "roberta" else _BERT_DEFAULTS
        fields = {name: hf.get(name, default) for name, default in defaults.items()}
        if fields["pad_token_id"] is None:  # some configs say null; both models need a padding row
            fields["pad_token_id"] = defaults["pad_token_id"]
        dtype = hf.get("dtype", hf.get("torch_dtype")) or "float32"
        return cls(model_type=model_type, checkpoint_dtype=str(dtype), **fields)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> EncoderConfig:
        path = os.path.join(directory, "config.json")
        if not os.path.isdir(directory):
            raise WWMError(f"{directory} is not a directory")
        if not os.path.isfile(path):
            raise WWMError(f"{directory} has no config.json")
        # local: a model folder on this machine (bucket models are fetched first)
        with open(path, encoding="utf-8") as f:
            return cls.from_hf_dict(json.load(f))

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json that transformers' Bert/RobertaForMaskedLM loads with these weights."""
        out: dict[str, Any] = {"architectures": [self.architecture], "model_type": self.model_type}
        for name in _BERT_DEFAULTS:
            out[name] = getattr(self, name)
        out.update(
            tie_word_embeddings=True,
            is_decoder=False,
            add_cross_attention=False,
            dtype=self.checkpoint_dtype,
        )
        return out


# HF config fields we model, with BertConfig's defaults (EncoderConfig's, written once there); RoBERTa's
# defaults differ in vocabulary and special ids.
_BERT_DEFAULTS: dict[str, Any] = {
    f.name: f.default
    for f in dataclasses.fields(EncoderConfig)
    if f.name not in ("model_type", "checkpoint_dtype")
}
_ROBERTA_DEFAULTS = {
    **_BERT_DEFAULTS,
    "vocab_size": 50265,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}


def _reject_unsupported(hf: Mapping[str, Any]) -> None:
    problems = []
    if hf.get("position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type={hf['position_embedding_type']!r} (only 'absolute')")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        problems.append("is_decoder/add_cross_attention (encoders only)")
    if hf.get("tie_word_embeddings", True) is False:
        problems.append("tie_word_embeddings=false (the MLM decoder must be the word-embedding matrix)")
    if problems:
        raise WWMError("unsupported config.json settings: " + "; ".join(problems))


# ----------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------


def _dense(
    config: EncoderConfig,
    d_in: int,
    d_out: int,
    axes: tuple[str | None, str | None],
    *,
    dtype: Any,
    rngs: nnx.Rngs,
) -> nnx.Linear:
    """A Linear layer initialised like transformers (normal(initializer_range) kernel, zero bias).

    The kernel is (in, out), the transpose of torch's Linear.weight; conversion transposes it.
    """
    return nnx.Linear(
        d_in,
        d_out,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nnx.initializers.normal(config.initializer_range),
        kernel_metadata=_axes(*axes),
        bias_metadata=_axes(axes[1]),
        rngs=rngs,
    )


def _layer_norm(config: EncoderConfig, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm computed in float32 whatever the compute dtype.

    use_fast_variance=False computes var = mean((x - mean)^2) like torch, not E[x^2] - E[x]^2, which
    loses digits when |mean| >> std.
    """
    return float32_layer_norm(config.hidden_size, config.layer_norm_eps, use_bias=True, rngs=rngs)


def _embed(
    config: EncoderConfig, rows: int, axes: tuple[str, str], *, padding_idx: int | None, rngs: nnx.Rngs
) -> nnx.Embed:
    """An embedding table initialised like torch's nn.Embedding in transformers (padding row zeroed)."""
    normal = nnx.initializers.normal(config.initializer_range)

    def init(key, shape, dtype=jnp.float32):
        table = normal(key, shape, dtype)
        return table if padding_idx is None else table.at[padding_idx].set(0.0)

    return nnx.Embed(
        rows,
        config.hidden_size,
        param_dtype=jnp.float32,
        embedding_init=init,
        embedding_metadata=_axes(*axes),
        rngs=rngs,
    )


def _position_ids(config: EncoderConfig, input_ids: jax.Array) -> jax.Array:
    """(B, L) position ids as transformers computes them for each model type."""
    if config.model_type == "roberta":
        # transformers' create_position_ids_from_input_ids: non-pad tokens count up from pad_token_id + 1,
        # pad tokens keep position pad_token_id (a row that stays zero-gradient like the word pad row).
        not_pad = (input_ids != config.pad_token_id).astype(jnp.int32)  # (B, L)
        return jnp.cumsum(not_pad, axis=1) * not_pad + config.pad_token_id
    seq_len = input_ids.shape[1]
    return jnp.broadcast_to(jnp.arange(seq_len, dtype=jnp.int32)[None, :], input_ids.shape)


# ----------------------------------------------------------------------------------------------------
# Encoder (HF: BertModel / RobertaModel without the pooler)
# ----------------------------------------------------------------------------------------------------


class Embeddings(nnx.Module):
    """HF: embeddings.{word_embeddings, position_embeddings, token_type_embeddings, LayerNorm}."""

    def __init__(self, config: EncoderConfig, *, dtype: Any, rngs: nnx.Rngs):
        self.config = config
        self.dtype = dtype
        pad = config.pad_token_id
        self.word_embeddings = _embed(
            config, config.vocab_size, ("vocab", "embed"), padding_idx=pad, rngs=rngs
        )
        # RoBERTa's position table has padding_idx=pad_token_id too (pad tokens sit at that position).
        position_pad = pad if config.model_type == "roberta" else None
        self.position_embeddings = _embed(
            config, config.max_position_embeddings, ("position", "embed"), padding_idx=position_pad, rngs=rngs
        )
        self.token_type_embeddings = _embed(
            config, config.type_vocab_size, ("type", "embed"), padding_idx=None, rngs=rngs
        )
        self.LayerNorm = _layer_norm(config, rngs=rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob)

    def __call__(
        self, input_ids, token_type_ids, *, deterministic: bool, rngs, position_ids=None
    ) -> jax.Array:
        cfg = self.config
        if position_ids is None:
            position_ids = _position_ids(cfg, input_ids)  # (B, L)
        position_ids = jnp.asarray(position_ids)
        position_pad = cfg.pad_token_id if cfg.model_type == "roberta" else None
        # Summed in float32 in transformers' order: (word + token_type) + position.
        x = _lookup(self.word_embeddings, input_ids, cfg.pad_token_id)  # (B, L, H)
        x = x + _lookup(self.token_type_embeddings, token_type_ids, None)
        x = x + _lookup(self.position_embeddings, position_ids, position_pad)
        x = self.LayerNorm(x).astype(self.dtype)
        return self.dropout(x, deterministic=deterministic, rngs=rngs)  # (B, L, H)


class SelfAttention(nnx.Module):
    """HF: attention.self.{query, key, value}. Scaled dot-product attention through `wwm_jax.attention`
    with the kernel `attention` (default eager, the parity reference), softmax in float32."""

    def __init__(self, config: EncoderConfig, *, dtype: Any, rngs: nnx.Rngs, attention: str = "eager"):
        self.config = config
        self.dtype = dtype
        self.attention = attention  # the kernel (a key of wwm_jax.attention.KERNELS), static
        h = config.hidden_size
        self.query = _dense(config, h, h, ("embed", "heads"), dtype=dtype, rngs=rngs)
        self.key = _dense(config, h, h, ("embed", "heads"), dtype=dtype, rngs=rngs)
        self.value = _dense(config, h, h, ("embed", "heads"), dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(config.attention_probs_dropout_prob)

    def _split_heads(self, x: jax.Array) -> jax.Array:
        b, length, _ = x.shape
        return x.reshape(b, length, self.config.num_attention_heads, self.config.head_dim)  # (B, L, N, D)

    def __call__(self, x, mask: attn.AttentionMask, *, deterministic: bool, rngs) -> jax.Array:
        q = self._split_heads(self.query(x))  # (B, L, N, D)
        k = self._split_heads(self.key(x))
        v = self._split_heads(self.value(x))
        dropout = None
        if not deterministic and self.config.attention_probs_dropout_prob > 0:
            attn.check_kernel(self.attention, attention_dropout=self.config.attention_probs_dropout_prob)

            def dropout(probs):
                return self.dropout(probs, deterministic=deterministic, rngs=rngs)

        scale = self.config.head_dim**-0.5
        context = attn.attention(q, k, v, mask, kernel=self.attention, scale=scale, dropout=dropout)
        return context.reshape(x.shape)  # (B, L, H)


class SelfOutput(nnx.Module):
    """HF: attention.output.{dense, LayerNorm}: project heads back, dropout, residual, post-norm."""

    def __init__(self, config: EncoderConfig, *, dtype: Any, rngs: nnx.Rngs):
        self.dtype = dtype
        h = config.hidden_size
        self.dense = _dense(config, h, h, ("heads", "embed"), dtype=dtype, rngs=rngs)
        self.LayerNorm = _layer_norm(config, rngs=rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob)

    def __call__(self, context, residual, *, deterministic: bool, rngs) -> jax.Array:
        x = self.dropout(self.dense(context), deterministic=deterministic, rngs=rngs)  # (B, L, H)
        return self.LayerNorm(x + residual).astype(self.dtype)


class Attention(nnx.Module):
    """HF: attention.{self, output}."""

    def __init__(self, config: EncoderConfig, *, dtype: Any, rngs: nnx.Rngs, attention: str = "eager"):
        # The attribute is called `self` because the checkpoint key is `attention.self.query`.
        self.self = SelfAttention(config, dtype=dtype, rngs=rngs, attention=attention)
        self.output = SelfOutput(config, dtype=dtype, rngs=rngs)

    def __call__(self, x, mask, *, deterministic: bool, rngs) -> jax.Array:
        context = self.self(x, mask, deterministic=deterministic, rngs=rngs)
        return self.output(context, x, deterministic=deterministic, rngs=rngs)  # (B, L, H)


class Intermediate(nnx.Module):
    """HF: intermediate.dense, the feed-forward up-projection and activation."""

    def __init__(self, config: EncoderConfig, *, dtype: Any, rngs: nnx.Rngs):
        self.act = _ACTIVATIONS[config.hidden_act]
        self.dense = _dense(
            config, config.hidden_size, config.intermediate_size, ("embed", "mlp"), dtype=dtype, rngs=rngs
        )

    def __call__(self, x) -> jax.Array:
        return self.act(self.dense(x))  # (B, L, I)


class Output(nnx.Module):
    """HF: output.{dense, LayerNorm}, the feed-forward down-projection, residual, post-norm."""

    def __init__(self, config: EncoderConfig, *, dtype: Any, rngs: nnx.Rngs):
        self.dtype = dtype
        self.dense = _dense(
            config, config.intermediate_size, config.hidden_size, ("mlp", "embed"), dtype=dtype, rngs=rngs
        )
        self.LayerNorm = _layer_norm(config, rngs=rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob)

    def __call__(self, x, residual, *, deterministic: bool, rngs) -> jax.Array:
        x = self.dropout(self.dense(x), deterministic=deterministic, rngs=rngs)  # (B, L, H)
        return self.LayerNorm(x + residual).astype(self.dtype)


class Layer(nnx.Module):
    """HF: encoder.layer[i] = {attention, intermediate, output}, a post-LN transformer block."""

    def __init__(self, config: EncoderConfig, *, dtype: Any, rngs: nnx.Rngs, attention: str = "eager"):
        self.attention = Attention(config, dtype=dtype, rngs=rngs, attention=attention)
        self.intermediate = Intermediate(config, dtype=dtype, rngs=rngs)
        self.output = Output(config, dtype=dtype, rngs=rngs)

    def __call__(self, x, mask, *, deterministic: bool, rngs) -> jax.Array:
        x = self.attention(x, mask, deterministic=deterministic, rngs=rngs)  # (B, L, H)
        return self.output(self.intermediate(x), x, deterministic=deterministic, rngs=rngs)


class Encoder(nnx.Module):
    """HF: encoder.layer[0 .. num_hidden_layers - 1]."""

    def __init__(self, config: EncoderConfig, *, dtype: Any, rngs: nnx.Rngs, attention: str = "eager"):
        self.layer = nnx.List(
            [
                Layer(config, dtype=dtype, rngs=rngs, attention=attention)
                for _ in range(config.num_hidden_layers)
            ]
        )

    def __call__(self, x, mask, *, deterministic: bool, rngs) -> jax.Array:
        for layer in self.layer:
            x = layer(x, mask, deterministic=deterministic, rngs=rngs)
        return x  # (B, L, H)


class EncoderModel(nnx.Module):
    """HF: BertModel / RobertaModel without the pooler (masked-LM pretraining does not use it)."""

    def __init__(self, config: EncoderConfig, *, dtype: Any, rngs: nnx.Rngs, attention: str = "eager"):
        self.config = config
        self.embeddings = Embeddings(config, dtype=dtype, rngs=rngs)
        self.encoder = Encoder(config, dtype=dtype, rngs=rngs, attention=attention)

    def __call__(
        self, input_ids, attention_mask=None, token_type_ids=None, *, deterministic: bool = True, rngs=None,
        segment_ids=None, position_ids=None,
    ) -> jax.Array:  # fmt: skip
        """(B, L) int ids [, (B, L) 0/1 mask, (B, L) type ids] -> last hidden state (B, L, H).

        Packed documents: `segment_ids` (B, L) (0 = padding, 1..k = the pieces of a row) make attention
        block-diagonal (a token sees its own piece only: `wwm_jax.attention.AttentionMask`), and
        `position_ids` (B, L) are the position-embedding rows (the family record's `position_rows`:
        restarting per piece). Without them a row is one document: its real tokens attend each other."""
        input_ids = jnp.asarray(input_ids)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        rngs = _as_rngs(rngs)
        x = self.embeddings(
            input_ids, jnp.asarray(token_type_ids), deterministic=deterministic, rngs=rngs,
            position_ids=position_ids,
        )  # fmt: skip
        # Rows without segment ids keep transformers' BERT rule (padding queries attend the real keys), so
        # every position's output, padding included, equals theirs.
        mask = attn.AttentionMask.build(jnp.asarray(attention_mask), segment_ids, key_padding=True)
        return self.encoder(x, mask, deterministic=deterministic, rngs=rngs)


# ----------------------------------------------------------------------------------------------------
# Masked-LM heads
# ----------------------------------------------------------------------------------------------------


def _tied_decoder(hidden: jax.Array, embeddings: Embeddings, bias: nnx.Param) -> jax.Array:
    """(B, L, H) -> (B, L, V) float32 logits with the word-embedding matrix as the decoder weight."""
    table = embeddings.word_embeddings.embedding[...].astype(hidden.dtype)  # (V, H)
    logits = jnp.einsum("blh,vh->blv", hidden, table, preferred_element_type=jnp.float32)
    return logits + bias[...]


class BertPredictionHeadTransform(nnx.Module):
    """HF: cls.predictions.transform.{dense, LayerNorm}; activation is config.hidden_act."""

    def __init__(self, config: EncoderConfig, *, dtype: Any, rngs: nnx.Rngs):
        self.dtype = dtype
        self.act = _ACTIVATIONS[config.hidden_act]
        h = config.hidden_size
        # A square projection cannot name "embed" twice (one mesh axis may appear once per spec).
        self.dense = _dense(config, h, h, ("embed", None), dtype=dtype, rngs=rngs)
        self.LayerNorm = _layer_norm(config, rngs=rngs)

    def __call__(self, x) -> jax.Array:
        return self.LayerNorm(self.act(self.dense(x))).astype(self.dtype)  # (B, L, H)


class BertLMPredictionHead(nnx.Module):
    """HF: cls.predictions.{transform, bias}; the decoder weight is tied to the word embeddings."""

    def __init__(self, config: EncoderConfig, *, dtype: Any, rngs: nnx.Rngs):
        self.transform = BertPredictionHeadTransform(config, dtype=dtype, rngs=rngs)
        self.bias = nnx.Param(jnp.zeros((config.vocab_size,), jnp.float32), **_axes("vocab"))


class BertOnlyMLMHead(nnx.Module):
    """HF: cls.predictions."""

    def __init__(self, config: EncoderConfig, *, dtype: Any, rngs: nnx.Rngs):
        self.predictions = BertLMPredictionHead(config, dtype=dtype, rngs=rngs)


class RobertaLMHead(nnx.Module):
    """HF: lm_head.{dense, layer_norm, bias}. Uses exact GELU whatever hidden_act is, as transformers does."""

    def __init__(self, config: EncoderConfig, *, dtype: Any, rngs: nnx.Rngs):
        self.dtype = dtype
        h = config.hidden_size
        self.dense = _dense(config, h, h, ("embed", None), dtype=dtype, rngs=rngs)
        self.layer_norm = _layer_norm(config, rngs=rngs)
        self.bias = nnx.Param(jnp.zeros((config.vocab_size,), jnp.float32), **_axes("vocab"))

    def transform(self, x) -> jax.Array:
        x = _ACTIVATIONS["gelu"](self.dense(x))
        return self.layer_norm(x).astype(self.dtype)  # (B, L, H)


class _MaskedLM(nnx.Module):
    """Shared forward of the two masked-LM models; subclasses name the encoder and head like HF."""

    config: EncoderConfig
    dtype: Any

    @property
    def base_model(self) -> EncoderModel:
        raise NotImplementedError

    def mlm_logits(self, hidden: jax.Array) -> jax.Array:
        """The MLM head: (..., H) hidden states -> (..., V) float32 logits. Public because the trainers
        run it on the masked positions only (`encode`, gather the masked rows, `head`): the logits of the
        other positions are never needed for the loss."""
        raise NotImplementedError

    def encode(
        self, input_ids, attention_mask=None, token_type_ids=None, *, deterministic: bool = True, rngs=None,
        segment_ids=None, position_ids=None,
    ) -> jax.Array:  # fmt: skip
        """Last hidden state (B, L, H) in the compute dtype (HF: `last_hidden_state`). `segment_ids` and
        `position_ids`: packed documents (`EncoderModel.__call__`)."""
        return self.base_model(
            input_ids, attention_mask, token_type_ids, deterministic=deterministic, rngs=rngs,
            segment_ids=segment_ids, position_ids=position_ids,
        )  # fmt: skip

    def __call__(
        self, input_ids, attention_mask=None, token_type_ids=None, *, deterministic: bool = True, rngs=None,
        segment_ids=None, position_ids=None,
    ) -> jax.Array:  # fmt: skip
        """(B, L) ids, optional (B, L) 0/1 attention mask and type ids -> (B, L, V) float32 logits.

        `deterministic=False` applies dropout and needs `rngs` (an nnx.Rngs with a "dropout" stream, or
        a jax PRNG key).
        """
        hidden = self.encode(
            input_ids, attention_mask, token_type_ids, deterministic=deterministic, rngs=rngs,
            segment_ids=segment_ids, position_ids=position_ids,
        )  # fmt: skip
        return self.mlm_logits(hidden)


class BertForMaskedLM(_MaskedLM):
    """HF: BertForMaskedLM = {bert, cls}."""

    def __init__(
        self, config: EncoderConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs, attention: str = "eager"
    ):
        self.config = config
        self.dtype = dtype
        self.bert = EncoderModel(config, dtype=dtype, rngs=rngs, attention=attention)
        self.cls = BertOnlyMLMHead(config, dtype=dtype, rngs=rngs)

    @property
    def base_model(self) -> EncoderModel:
        return self.bert

    def mlm_logits(self, hidden):
        head = self.cls.predictions
        return _tied_decoder(head.transform(hidden), self.bert.embeddings, head.bias)


class RobertaForMaskedLM(_MaskedLM):
    """HF: RobertaForMaskedLM = {roberta, lm_head}."""

    def __init__(
        self, config: EncoderConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs, attention: str = "eager"
    ):
        self.config = config
        self.dtype = dtype
        self.roberta = EncoderModel(config, dtype=dtype, rngs=rngs, attention=attention)
        self.lm_head = RobertaLMHead(config, dtype=dtype, rngs=rngs)

    @property
    def base_model(self) -> EncoderModel:
        return self.roberta

    def mlm_logits(self, hidden):
        return _tied_decoder(self.lm_head.transform(hidden), self.roberta.embeddings, self.lm_head.bias)


MaskedLM = BertForMaskedLM | RobertaForMaskedLM

# The attribute name of the encoder in each model, as in the HF checkpoint ("bert.embeddings...").
BASE_PREFIX = {"bert": "bert", "roberta": "roberta"}


def build_model(
    config: EncoderConfig, *, dtype: Any = jnp.float32, seed: int = 0, attention: str = "eager"
) -> MaskedLM:
    """A freshly initialised masked-LM model for `config` (float32 params, `dtype` compute); `attention`
    is the attention kernel (a key of `wwm_jax.attention.KERNELS`; `wwm_jax.attention.set_kernel` switches
    a built model).

    Parameters are created without eager sharding (flax 0.12 would otherwise demand a mesh for every
    annotated variable); shard them afterwards from `logical_axes` / `nnx.get_partition_spec`.
    """
    cls = RobertaForMaskedLM if config.model_type == "roberta" else BertForMaskedLM
    with nnx.use_eager_sharding(False):
        return cls(config, dtype=dtype, rngs=nnx.Rngs(params=seed), attention=attention)


def logical_axes(model: nnx.Module) -> dict:
    """Nested dict shaped like `nnx.to_pure_dict(nnx.state(model, nnx.Param))` with a tuple of logical axis
    names (or None per replicated dimension) at each leaf. Tuples are leaves: map over it with
    `jax.tree.map(f, axes, ..., is_leaf=lambda x: isinstance(x, tuple))`.
    """
    out: dict = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        names = var.get_metadata().get("out_sharding")
        if names is None or len(names) != len(var.shape):
            raise ValueError(f"parameter {'/'.join(map(str, path))} has no logical axes matching its rank")
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = tuple(names)
    return out


def num_params(model: nnx.Module) -> int:
    return int(sum(np.prod(v.shape) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param))))
