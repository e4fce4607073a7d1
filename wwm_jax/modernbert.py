"""ModernBERT masked-LM encoder in Flax NNX, numerically equal to transformers 5's ModernBertForMaskedLM.

The same conventions as `wwm_jax.modeling` (read its docstring first), in the style of transformers'
`modeling_modernbert.py`: module and attribute names mirror the checkpoint keys
(`model.layers.3.attn.Wqkv.weight` is `model.model.layers[3].attn.Wqkv.kernel` here), parameters are float32,
`dtype` is the compute dtype, every parameter names its logical axes in `out_sharding`.

The architecture (docs/models.md has the field-by-field table):
- token embeddings -> LayerNorm -> dropout (no position table: rotary embeddings in every layer);
- pre-norm layers: x + attn(attn_norm(x)), then x + mlp(mlp_norm(x)); layer 0 has no attn_norm (identity);
- attention: one fused Wqkv projection, rotary embeddings with a per-layer-type theta, and on
  "sliding_attention" layers a bidirectional window |i - j| <= local_attention // 2;
- MLP: GeGLU, Wi projects to 2 * intermediate_size, act(first half) * second half, Wo back;
- final LayerNorm; MLM head: dense -> classifier_activation -> LayerNorm; decoder tied to the embeddings.

Beyond transformers' inputs, the attention takes per-token segment ids (B, L) for packed documents:
0 = padding, 1..k = documents; a token attends only to keys of its own document (and, on local layers,
within the window: the rule of `wwm_jax.attention.AttentionMask`, run by any of its kernels), and position
ids restart at 0 with each document.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wwm.data.packing import run_positions
from wwm.errors import WWMError
from wwm.families.modernbert import LAYER_TYPES, MODERNBERT
from wwm.families.modernbert import layer_types as alternating_layer_types
from wwm_jax import attention as attn
from wwm_jax import layers
from wwm_jax.layers import as_rngs as _as_rngs
from wwm_jax.layers import axis_metadata as _axes
from wwm_jax.layers import embed_lookup as _lookup
from wwm_jax.layers import float32_layer_norm

MODEL_TYPE = MODERNBERT.name
ARCHITECTURE = MODERNBERT.architecture

# ACT2FN names transformers maps to these functions (hidden_activation, classifier_activation).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    **layers.ACTIVATIONS,
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


# ----------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModernBertConfig:
    """The fields of transformers' ModernBertConfig, with its defaults (ModernBERT-base).

    `layer_types` None means transformers' default (global every 3rd layer, see `alternating_layer_types`);
    the rope thetas are `rope_parameters["full_attention" / "sliding_attention"]["rope_theta"]`.
    Fields marked "carried" do not change the masked-LM function; they are kept so that an exported
    config.json says what the source said. `checkpoint_dtype` as in `EncoderConfig`.
    """

    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192  # carried: RoPE has no table; the longest sequence trained on
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0
    norm_eps: float = 1e-5
    norm_bias: bool = False
    pad_token_id: int = 50283
    eos_token_id: int | tuple[int, ...] | None = 50282
    bos_token_id: int | None = 50281
    cls_token_id: int | None = 50281
    sep_token_id: int | None = 50282
    attention_bias: bool = False
    attention_dropout: float = 0.0
    layer_types: tuple[str, ...] | None = None
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    local_attention: int = 128
    embedding_dropout: float = 0.0
    mlp_bias: bool = False
    mlp_dropout: float = 0.0
    decoder_bias: bool = True
    classifier_pooling: str = "cls"  # carried (sequence classification)
    classifier_dropout: float = 0.0  # carried (sequence classification)
    classifier_bias: bool = False
    classifier_activation: str = "gelu"
    deterministic_flash_attn: bool = False  # carried (a flash-attention kernel switch)
    sparse_prediction: bool = False  # carried (transformers' loss path; our trainers gather masked rows)
    sparse_pred_ignore_index: int = -100  # carried
    checkpoint_dtype: str = "float32"
    model_type: str = MODEL_TYPE

    def __post_init__(self):
        if self.layer_types is None:
            object.__setattr__(self, "layer_types", alternating_layer_types(self.num_hidden_layers))
        else:
            object.__setattr__(self, "layer_types", tuple(self.layer_types))
        problems = []
        if self.model_type != MODEL_TYPE:
            problems.append(f"model_type {self.model_type!r} is not {MODEL_TYPE!r}")
        if self.hidden_size % self.num_attention_heads:
            problems.append(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                f"{self.num_attention_heads}"
            )
        elif self.head_dim % 2:
            problems.append(f"head size {self.head_dim} is odd (rotary embeddings rotate pairs)")
        for name in ("hidden_activation", "classifier_activation"):
            if getattr(self, name) not in ACTIVATIONS:
                problems.append(f"{name} {getattr(self, name)!r} is not one of {sorted(ACTIVATIONS)}")
        if len(self.layer_types) != self.num_hidden_layers or not set(self.layer_types) <= set(LAYER_TYPES):
            problems.append(
                f"layer_types must list {self.num_hidden_layers} entries of {LAYER_TYPES}, got "
                f"{list(self.layer_types)}"
            )
        if self.local_attention < 2:
            problems.append(f"local_attention {self.local_attention} is below 2 (a window of +-0 tokens)")
        if not 0 <= self.pad_token_id < self.vocab_size:
            problems.append(f"pad_token_id {self.pad_token_id} is outside the vocabulary ({self.vocab_size})")
        if self.checkpoint_dtype not in ("float32", "float16", "bfloat16"):
            problems.append(f"checkpoint dtype {self.checkpoint_dtype!r} is not float32, float16 or bfloat16")
        if problems:
            raise WWMError("unsupported ModernBERT config: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def sliding_window(self) -> int:
        """Half-window: a local-layer query at i sees keys j with |i - j| <= sliding_window."""
        return self.local_attention // 2

    @property
    def architecture(self) -> str:
        return ARCHITECTURE

    def rope_theta(self, layer_type: str) -> float:
        return self.global_rope_theta if layer_type == "full_attention" else self.local_rope_theta

    @classmethod
    def from_hf_dict(cls, hf: Mapping[str, Any]) -> ModernBertConfig:
        """From a config.json dict (transformers 5 or the older `global_attn_every_n_layers` /
        `global_rope_theta` spelling); refuses, naming each field, what this model does not implement."""
        if hf.get("model_type") != MODEL_TYPE:
            raise WWMError(f"config.json model_type {hf.get('model_type')!r} is not {MODEL_TYPE!r}")
        _reject_unsupported(hf)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        plain = set(defaults) - {"layer_types", "global_rope_theta", "local_rope_theta", "checkpoint_dtype"}
        fields = {name: hf[name] for name in plain if name in hf and hf[name] is not None}
        if hf.get("pad_token_id", 0) is None:
            raise WWMError("config.json pad_token_id is null; ModernBERT's embedding needs a padding row")
        # null is a real value for these ids; a list (transformers allows several eos ids) becomes a tuple.
        for name in ("eos_token_id", "bos_token_id", "cls_token_id", "sep_token_id"):
            if name in hf:
                fields[name] = tuple(hf[name]) if isinstance(hf[name], list) else hf[name]
        if "initializer_cutoff_factor" in hf and hf["initializer_cutoff_factor"] is None:
            fields["initializer_cutoff_factor"] = 3.0  # transformers' _init_weights reads None as 3
        if "local_attention" not in hf and hf.get("sliding_window") is not None:
            fields["local_attention"] = 2 * int(hf["sliding_window"])
        num_layers = fields.get("num_hidden_layers", defaults["num_hidden_layers"])
        if hf.get("layer_types") is not None:
            fields["layer_types"] = tuple(hf["layer_types"])
        else:
            fields["layer_types"] = alternating_layer_types(
                num_layers, hf.get("global_attn_every_n_layers", 3)
            )
        rope = hf.get("rope_parameters") or {}
        for layer_type, name in (
            ("full_attention", "global_rope_theta"),
            ("sliding_attention", "local_rope_theta"),
        ):
            theta = (rope.get(layer_type) or {}).get("rope_theta", hf.get(name))
            if theta is not None:
                fields[name] = float(theta)
        fields["checkpoint_dtype"] = str(hf.get("dtype", hf.get("torch_dtype")) or "float32")
        return cls(**fields)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> ModernBertConfig:
        path = os.path.join(directory, "config.json")
        if not os.path.isfile(path):
            raise WWMError(f"{directory} has no config.json")
        # local: a model folder on this machine (bucket models are fetched first)
        with open(path, encoding="utf-8") as f:
            return cls.from_hf_dict(json.load(f))

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json that transformers' ModernBertForMaskedLM loads with these weights."""
        out: dict[str, Any] = {"architectures": [ARCHITECTURE], "model_type": MODEL_TYPE}
        skip = {"model_type", "checkpoint_dtype", "global_rope_theta", "local_rope_theta"}
        for field in dataclasses.fields(self):
            if field.name not in skip:
                out[field.name] = getattr(self, field.name)
        out["layer_types"] = list(self.layer_types)
        out["rope_parameters"] = {
            t: {"rope_type": "default", "rope_theta": self.rope_theta(t)} for t in LAYER_TYPES
        }
        out.update(tie_word_embeddings=True, dtype=self.checkpoint_dtype)
        return out


def _reject_unsupported(hf: Mapping[str, Any]) -> None:
    """config.json settings that change the function in a way this model does not implement."""
    problems = []
    rope = hf.get("rope_parameters") or {}
    for layer_type in LAYER_TYPES:
        rope_type = (rope.get(layer_type) or {}).get("rope_type", "default")
        if rope_type != "default":
            problems.append(f"rope_parameters[{layer_type!r}].rope_type={rope_type!r} (only 'default')")
    scaling = hf.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type", "default")) != "default":
        problems.append(f"rope_scaling={scaling!r} (only the default rotary embedding)")
    heads = hf.get("num_attention_heads", 12)
    head_dim = hf.get("head_dim")
    if head_dim is not None and head_dim * heads != hf.get("hidden_size", 768):
        problems.append(f"head_dim={head_dim} (must be hidden_size / num_attention_heads)")
    local, window = hf.get("local_attention"), hf.get("sliding_window")
    if local is not None and window is not None and window != local // 2:
        problems.append(f"sliding_window={window} (disagrees with local_attention={local}, half of it)")
    if hf.get("tie_word_embeddings", True) is False:
        problems.append("tie_word_embeddings=false (the MLM decoder must be the token-embedding matrix)")
    if problems:
        raise WWMError("unsupported config.json settings: " + "; ".join(problems))


# ----------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------


def _init(config: ModernBertConfig, std: float) -> Callable:
    """transformers' ModernBERT init: normal(std) truncated at +-initializer_cutoff_factor * std."""
    cutoff = config.initializer_cutoff_factor
    return nnx.initializers.truncated_normal(std, lower=-cutoff, upper=cutoff)


def _stds(config: ModernBertConfig) -> dict[str, float]:
    return {
        "in": config.initializer_range,
        "out": config.initializer_range / math.sqrt(2.0 * config.num_hidden_layers),
        "embedding": config.initializer_range,
    }


def _dense(d_in, d_out, axes, *, bias: bool, std: float, config, dtype, rngs) -> nnx.Linear:
    """A Linear layer with a (in, out) kernel (torch's weight transposed), zero bias if any."""
    return nnx.Linear(
        d_in,
        d_out,
        use_bias=bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=_init(config, std),
        kernel_metadata=_axes(*axes),
        bias_metadata=_axes(axes[1]),
        rngs=rngs,
    )


def _layer_norm(config: ModernBertConfig, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm in float32 with torch's variance (see modeling._layer_norm); bias only if norm_bias."""
    return float32_layer_norm(config.hidden_size, config.norm_eps, use_bias=config.norm_bias, rngs=rngs)


def packed_position_ids(segment_ids: jax.Array) -> jax.Array:
    """(B, L) segment ids -> (B, L) position ids that restart at 0 wherever the segment id changes (the rule
    of `wwm.data.packing.run_positions`, in jax.numpy)."""
    return run_positions(segment_ids, jnp)


def rotary_cos_sin(config: ModernBertConfig, layer_type: str, position_ids: jax.Array):
    """transformers' default RoPE: (B, L) positions -> cos, sin (B, L, D) float32 (halves repeated)."""
    dim = config.head_dim
    # 1 / base ** (arange(0, D, 2) / D) with torch's float32 rounding: its pow is (nearly always) correctly
    # rounded, which a float64 pow rounded to float32 reproduces (numpy's float32 pow is not, at D = 64).
    exponent = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    power = (np.float64(config.rope_theta(layer_type)) ** exponent.astype(np.float64)).astype(np.float32)
    inv_freq = np.float32(1.0) / power
    freqs = position_ids[..., None].astype(jnp.float32) * jnp.asarray(inv_freq, jnp.float32)  # (B, L, D/2)
    emb = jnp.concatenate([freqs, freqs], axis=-1)  # (B, L, D)
    return jnp.cos(emb), jnp.sin(emb)


def _rotate(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x (B, L, N, D) rotated in float32: x * cos + rotate_half(x) * sin (rotate_half = (-x2, x1))."""
    xf = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    return (xf * cos[:, :, None, :] + rotated * sin[:, :, None, :]).astype(x.dtype)


# ----------------------------------------------------------------------------------------------------
# Encoder (HF: ModernBertModel)
# ----------------------------------------------------------------------------------------------------


class ModernBertEmbeddings(nnx.Module):
    """HF: embeddings.{tok_embeddings, norm}; token lookup, LayerNorm, dropout (no position table)."""

    def __init__(self, config: ModernBertConfig, *, dtype: Any, rngs: nnx.Rngs):
        self.config = config
        self.dtype = dtype
        # transformers' init overwrites the padding row too, so it is not zeroed here either.
        self.tok_embeddings = nnx.Embed(
            config.vocab_size,
            config.hidden_size,
            param_dtype=jnp.float32,
            embedding_init=_init(config, _stds(config)["embedding"]),
            embedding_metadata=_axes("vocab", "embed"),
            rngs=rngs,
        )
        self.norm = _layer_norm(config, rngs=rngs)
        self.drop = nnx.Dropout(config.embedding_dropout)

    def __call__(self, input_ids, *, deterministic: bool, rngs) -> jax.Array:
        x = _lookup(self.tok_embeddings, input_ids, self.config.pad_token_id)  # (B, L, H) float32
        x = self.norm(x).astype(self.dtype)
        return self.drop(x, deterministic=deterministic, rngs=rngs)


class ModernBertAttention(nnx.Module):
    """HF: attn.{Wqkv, Wo}. Rotary q and k, then scaled dot-product attention through `wwm_jax.attention`
    with the kernel `attention` (default eager, the parity reference) and this layer's window."""

    def __init__(self, config: ModernBertConfig, *, dtype: Any, rngs: nnx.Rngs, attention: str = "eager"):
        self.config = config
        self.dtype = dtype
        self.attention = attention  # the kernel (a key of wwm_jax.attention.KERNELS), static
        h, stds = config.hidden_size, _stds(config)
        bias = config.attention_bias
        kw = dict(config=config, dtype=dtype, rngs=rngs, bias=bias)
        # The fused output is [q | k | v], each N heads of D (transformers' view(3, N, D)).
        self.Wqkv = _dense(h, 3 * h, ("embed", "heads"), std=stds["in"], **kw)
        self.Wo = _dense(h, h, ("heads", "embed"), std=stds["out"], **kw)
        self.attn_drop = nnx.Dropout(config.attention_dropout)
        self.out_drop = nnx.Dropout(config.attention_dropout)

    def __call__(
        self, x, cos, sin, mask: attn.AttentionMask, window, *, deterministic: bool, rngs
    ) -> jax.Array:
        cfg = self.config
        b, length, _ = x.shape
        qkv = self.Wqkv(x).reshape(b, length, 3, cfg.num_attention_heads, cfg.head_dim)  # (B, L, 3, N, D)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, L, N, D)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        dropout = None
        if not deterministic and cfg.attention_dropout > 0:
            attn.check_kernel(self.attention, attention_dropout=cfg.attention_dropout)

            def dropout(probs):
                return self.attn_drop(probs, deterministic=deterministic, rngs=rngs)

        context = attn.attention(
            q, k, v, mask, kernel=self.attention, window=window, scale=cfg.head_dim**-0.5, dropout=dropout
        )  # (B, L, N, D)
        return self.out_drop(self.Wo(context.reshape(x.shape)), deterministic=deterministic, rngs=rngs)


class ModernBertMLP(nnx.Module):
    """HF: mlp.{Wi, Wo}, a GLU: Wo(drop(act(input) * gate)) with [input | gate] = Wi(x)."""

    def __init__(self, config: ModernBertConfig, *, dtype: Any, rngs: nnx.Rngs):
        h, i, stds = config.hidden_size, config.intermediate_size, _stds(config)
        kw = dict(config=config, dtype=dtype, rngs=rngs, bias=config.mlp_bias)
        self.act = ACTIVATIONS[config.hidden_activation]
        self.Wi = _dense(h, 2 * i, ("embed", "mlp"), std=stds["in"], **kw)
        self.Wo = _dense(i, h, ("mlp", "embed"), std=stds["out"], **kw)
        self.drop = nnx.Dropout(config.mlp_dropout)

    def __call__(self, x, *, deterministic: bool, rngs) -> jax.Array:
        inputs, gate = jnp.split(self.Wi(x), 2, axis=-1)  # (B, L, I) each
        return self.Wo(self.drop(self.act(inputs) * gate, deterministic=deterministic, rngs=rngs))


class ModernBertEncoderLayer(nnx.Module):
    """HF: layers[i] = {attn_norm (absent in layer 0), attn, mlp_norm, mlp}, a pre-norm block."""

    def __init__(
        self,
        config: ModernBertConfig,
        layer_idx: int,
        *,
        dtype: Any,
        rngs: nnx.Rngs,
        attention: str = "eager",
    ):
        self.dtype = dtype
        self.attention_type = config.layer_types[layer_idx]
        # +-w on a local layer (transformers' sliding_window), None: global
        self.window = config.sliding_window if self.attention_type == "sliding_attention" else None
        self.attn_norm = _layer_norm(config, rngs=rngs) if layer_idx else None  # HF: nn.Identity
        self.attn = ModernBertAttention(config, dtype=dtype, rngs=rngs, attention=attention)
        self.mlp_norm = _layer_norm(config, rngs=rngs)
        self.mlp = ModernBertMLP(config, dtype=dtype, rngs=rngs)

    def __call__(self, x, cos, sin, mask: attn.AttentionMask, *, deterministic: bool, rngs) -> jax.Array:
        h = x if self.attn_norm is None else self.attn_norm(x).astype(self.dtype)
        x = x + self.attn(h, cos, sin, mask, self.window, deterministic=deterministic, rngs=rngs)
        h = self.mlp_norm(x).astype(self.dtype)
        return x + self.mlp(h, deterministic=deterministic, rngs=rngs)  # (B, L, H)


class ModernBertModel(nnx.Module):
    """HF: ModernBertModel = {embeddings, layers, final_norm}."""

    def __init__(self, config: ModernBertConfig, *, dtype: Any, rngs: nnx.Rngs, attention: str = "eager"):
        self.config = config
        self.dtype = dtype
        self.embeddings = ModernBertEmbeddings(config, dtype=dtype, rngs=rngs)
        self.layers = nnx.List(
            [
                ModernBertEncoderLayer(config, i, dtype=dtype, rngs=rngs, attention=attention)
                for i in range(config.num_hidden_layers)
            ]
        )
        self.final_norm = _layer_norm(config, rngs=rngs)

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        *,
        segment_ids=None,
        position_ids=None,
        deterministic: bool = True,
        rngs=None,
    ) -> jax.Array:
        """(B, L) ids -> last hidden state (B, L, H). See `ModernBertForMaskedLM.__call__` for the inputs."""
        cfg = self.config
        input_ids = jnp.asarray(input_ids)
        mask = attn.AttentionMask.build(attention_mask, segment_ids, shape=input_ids.shape)  # 0 = padding
        if position_ids is None:
            if segment_ids is None:
                position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
            else:
                position_ids = packed_position_ids(mask.segments)
        position_ids = jnp.asarray(position_ids)
        rngs = _as_rngs(rngs)
        x = self.embeddings(input_ids, deterministic=deterministic, rngs=rngs)  # (B, L, H)
        used = sorted(set(cfg.layer_types))
        rope = {t: rotary_cos_sin(cfg, t, position_ids) for t in used}  # (B, L, D) each
        for layer in self.layers:
            x = layer(x, *rope[layer.attention_type], mask, deterministic=deterministic, rngs=rngs)
        return self.final_norm(x).astype(self.dtype)


# ----------------------------------------------------------------------------------------------------
# Masked-LM head (HF: ModernBertForMaskedLM = {model, head, decoder})
# ----------------------------------------------------------------------------------------------------


class ModernBertPredictionHead(nnx.Module):
    """HF: head.{dense, norm}: norm(act(dense(x))), act = classifier_activation."""

    def __init__(self, config: ModernBertConfig, *, dtype: Any, rngs: nnx.Rngs):
        self.dtype = dtype
        self.act = ACTIVATIONS[config.classifier_activation]
        h = config.hidden_size
        # A square kernel cannot name "embed" twice (one mesh axis may appear once per spec).
        self.dense = _dense(
            h, h, ("embed", None), bias=config.classifier_bias, std=_stds(config)["out"],
            config=config, dtype=dtype, rngs=rngs,
        )  # fmt: skip
        self.norm = _layer_norm(config, rngs=rngs)

    def __call__(self, x) -> jax.Array:
        return self.norm(self.act(self.dense(x))).astype(self.dtype)  # (..., H)


class ModernBertDecoder(nnx.Module):
    """HF: decoder, a Linear(H, V) whose weight is tied to the token embeddings: only its bias lives here."""

    def __init__(self, config: ModernBertConfig):
        self.bias = (
            nnx.Param(jnp.zeros((config.vocab_size,), jnp.float32), **_axes("vocab"))
            if config.decoder_bias
            else None
        )

    def __call__(self, x, table) -> jax.Array:
        """x (..., H), the (V, H) embedding table -> (..., V) float32 logits."""
        logits = jnp.einsum("...h,vh->...v", x, table.astype(x.dtype), preferred_element_type=jnp.float32)
        return logits if self.bias is None else logits + self.bias[...]


class ModernBertForMaskedLM(nnx.Module):
    """HF: ModernBertForMaskedLM = {model, head, decoder}.

    The trainers run the head at masked positions only: `encode` gives the hidden states (B, L, H) and
    `mlm_logits` maps any (..., H) rows to (..., V) logits (`model.head` is the HF-named prediction-head
    module, so the method cannot share its name).
    """

    def __init__(
        self, config: ModernBertConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs, attention: str = "eager"
    ):
        self.config = config
        self.dtype = dtype
        self.model = ModernBertModel(config, dtype=dtype, rngs=rngs, attention=attention)
        self.head = ModernBertPredictionHead(config, dtype=dtype, rngs=rngs)
        self.decoder = ModernBertDecoder(config)

    @property
    def base_model(self) -> ModernBertModel:
        return self.model

    def encode(
        self,
        input_ids,
        attention_mask=None,
        *,
        segment_ids=None,
        position_ids=None,
        deterministic: bool = True,
        rngs=None,
    ) -> jax.Array:
        """Last hidden state (B, L, H) in the compute dtype (HF: `last_hidden_state`)."""
        return self.model(
            input_ids,
            attention_mask,
            segment_ids=segment_ids,
            position_ids=position_ids,
            deterministic=deterministic,
            rngs=rngs,
        )

    def mlm_logits(self, hidden: jax.Array) -> jax.Array:
        """Hidden rows (..., H) -> (..., V) float32 logits: decoder(head(hidden)), decoder tied."""
        return self.decoder(self.head(hidden), self.model.embeddings.tok_embeddings.embedding[...])

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        *,
        segment_ids=None,
        position_ids=None,
        deterministic: bool = True,
        rngs=None,
    ) -> jax.Array:
        """(B, L) ids -> (B, L, V) float32 logits.

        attention_mask: (B, L) 0/1, 1 = attend (default all ones).
        segment_ids: (B, L) int, packed documents: 0 = padding, 1..k = documents; attention stays inside a
            document. position_ids then default to restarting at 0 with each document.
        position_ids: (B, L) int rotary positions (default 0..L-1, or per document as above).
        deterministic=False applies dropout and needs `rngs` (nnx.Rngs with a "dropout" stream, or a key).
        """
        hidden = self.encode(
            input_ids,
            attention_mask,
            segment_ids=segment_ids,
            position_ids=position_ids,
            deterministic=deterministic,
            rngs=rngs,
        )
        return self.mlm_logits(hidden)


BASE_PREFIX = "model"  # the encoder's attribute name and HF key prefix ("model.layers.0...")


def build_model(
    config: ModernBertConfig, *, dtype: Any = jnp.float32, seed: int = 0, attention: str = "eager"
) -> ModernBertForMaskedLM:
    """A freshly initialised ModernBertForMaskedLM (float32 params, `dtype` compute, the attention kernel
    `attention`); as modeling.build_model."""
    with nnx.use_eager_sharding(False):
        return ModernBertForMaskedLM(config, dtype=dtype, rngs=nnx.Rngs(params=seed), attention=attention)
