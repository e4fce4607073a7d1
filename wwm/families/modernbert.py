"""ModernBERT: its config section (`model.type: modernbert`), its layer-type rule, and its record.

The section's defaults are the published ModernBERT-base (transformers' ModernBertConfig), except the
shape, which is the shared small default of `ModelFields`. `hidden_act` is the MLP's activation (HF:
hidden_activation); `hidden_dropout_prob` is the embedding and MLP dropout, `attention_probs_dropout_prob`
the attention dropout (ModernBERT-base: all 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from wwm.errors import WWMError
from wwm.families.record import Family, ModelFields, TensorSpec, hf_value, padding_row
from wwm.fields import positive

LAYER_TYPES = ("full_attention", "sliding_attention")


def layer_types(num_hidden_layers: int, global_attn_every_n_layers: int = 3) -> tuple[str, ...]:
    """transformers' default layer_types: layer i is global iff i % n == 0 (the first layer is global)."""
    if global_attn_every_n_layers < 1:
        raise WWMError(f"global_attn_every_n_layers must be >= 1, got {global_attn_every_n_layers}")
    return tuple(
        "sliding_attention" if i % global_attn_every_n_layers else "full_attention"
        for i in range(num_hidden_layers)
    )


@dataclass(frozen=True)
class ModernBertFields:
    """The ModernBERT-only fields of `model.type: modernbert` (defaults: the published ModernBERT-base,
    transformers' ModernBertConfig). Also the old `model.modernbert:` sub-section's type: its keys are now
    keys of `model:` (`ModernBertModelConfig`), and the old spelling still loads, with a deprecation line;
    its errors name the key as it was written."""

    global_attn_every_n_layers: int = 3  # layer i attends globally iff i % n == 0, else within the window
    local_attention: int = 128  # window width: a local layer's token i sees |i - j| <= local_attention // 2
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    # With model.pretrained: the global layers continue with this rope theta (null: the checkpoint's). The
    # context-extension phase raises it: ModernBERT 10,000 at 1,024 tokens -> 160,000 at 8,192.
    context_extension_rope_theta: float | None = None
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    decoder_bias: bool = True
    classifier_bias: bool = False  # the MLM head's dense layer
    classifier_activation: Literal["gelu", "gelu_new", "relu", "silu"] = "gelu"
    initializer_cutoff_factor: float = 2.0  # truncated-normal init at +-2 std

    PREFIX: ClassVar[str] = "model.modernbert"  # how its keys are written (in messages)

    def __post_init__(self) -> None:
        p = self.PREFIX
        positive(f"{p}.global_attn_every_n_layers", self.global_attn_every_n_layers)
        if self.local_attention < 2 or self.local_attention % 2:
            raise WWMError(
                f"{p}.local_attention must be an even number >= 2 (the window is +-half of it); "
                f"got {self.local_attention}"
            )
        for name in ("global_rope_theta", "local_rope_theta", "norm_eps", "initializer_cutoff_factor"):
            positive(f"{p}.{name}", getattr(self, name))
        positive(f"{p}.context_extension_rope_theta", self.context_extension_rope_theta, allow_none=True)


@dataclass(frozen=True)
class ModernBertModelConfig(ModernBertFields, ModelFields):
    """`model:` of `model.type: modernbert`: the shared fields (`ModelFields`) and ModernBERT's own."""

    type: Literal["modernbert"] = "modernbert"

    PREFIX: ClassVar[str] = "model"
    OLD_KEYS: ClassVar[Mapping[str, Any]] = {
        "modernbert": ModernBertFields,
        "layer_norm_eps": "BERT's; ModernBERT's norms use model.norm_eps",
        "type_vocab_size": "BERT's; ModernBERT has no token types",
    }

    def __post_init__(self) -> None:
        ModelFields.__post_init__(self)
        ModernBertFields.__post_init__(self)
        if self.context_extension_rope_theta is not None and not self.pretrained:
            raise WWMError(
                "model.context_extension_rope_theta applies when continuing model.pretrained (the context "
                "extension); for a fresh model set model.global_rope_theta"
            )

    def continue_config(self, hf: Mapping[str, Any], max_seq_len: int) -> dict[str, Any]:
        """The checkpoint's config.json fields; with `context_extension_rope_theta` (the context extension,
        asked for explicitly) that rope theta on the global layers (`rope_parameters`, or the older
        `global_rope_theta` spelling) and `max_position_embeddings` raised to `max_seq_len` (carried:
        rotary embeddings have no table). Without it nothing changes, and a longer `data.max_seq_len` than
        the checkpoint's positions is refused by the preflight (never raised silently)."""
        out = dict(hf)
        theta = self.context_extension_rope_theta
        if theta is not None:
            out["max_position_embeddings"] = max(int(hf.get("max_position_embeddings") or 0), max_seq_len)
            if hf.get("rope_parameters"):
                rope = {k: dict(v) for k, v in hf["rope_parameters"].items()}
                rope.setdefault("full_attention", {"rope_type": "default"})["rope_theta"] = float(theta)
                out["rope_parameters"] = rope
            else:
                out["global_rope_theta"] = float(theta)
        return out

    def hf_config_dict(self, tokenizer: Any, max_seq_len: int) -> dict[str, Any]:
        """transformers' ModernBertConfig fields: no position table (rotary), no token types; the
        special-token ids from the tokenizer."""
        self.check_positions(max_seq_len)  # the length it is trained for: never raised silently

        def first(*ids: Any) -> Any:
            return next((i for i in ids if i is not None), None)

        cls_id = first(tokenizer.cls_token_id, tokenizer.bos_token_id)
        sep_id = first(tokenizer.sep_token_id, tokenizer.eos_token_id)
        thetas = {"full_attention": self.global_rope_theta, "sliding_attention": self.local_rope_theta}
        return {
            "model_type": "modernbert",
            "architectures": [MODERNBERT.architecture],
            "vocab_size": len(tokenizer),
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "initializer_range": self.initializer_range,
            "pad_token_id": tokenizer.pad_token_id,
            "cls_token_id": cls_id,
            "bos_token_id": cls_id,
            "sep_token_id": sep_id,
            "eos_token_id": sep_id,
            "tie_word_embeddings": True,
            "hidden_activation": self.hidden_act,
            "layer_types": list(layer_types(self.num_hidden_layers, self.global_attn_every_n_layers)),
            "rope_parameters": {t: {"rope_type": "default", "rope_theta": v} for t, v in thetas.items()},
            "local_attention": self.local_attention,
            "norm_eps": self.norm_eps,
            "norm_bias": self.norm_bias,
            "attention_bias": self.attention_bias,
            "mlp_bias": self.mlp_bias,
            "decoder_bias": self.decoder_bias,
            "classifier_bias": self.classifier_bias,
            "classifier_activation": self.classifier_activation,
            "initializer_cutoff_factor": self.initializer_cutoff_factor,
            "embedding_dropout": self.hidden_dropout_prob,
            "mlp_dropout": self.hidden_dropout_prob,
            "attention_dropout": self.attention_probs_dropout_prob,
        }


def tensor_specs(hf: Mapping[str, Any]) -> list[TensorSpec]:
    """ModernBertForMaskedLM. transformers' `ModernBertPreTrainedModel._init_weights`
    (modeling_modernbert.py): truncated normal(0, std) on [-cutoff * std, cutoff * std], cutoff =
    `initializer_cutoff_factor` (None: 3), with std per module: "in" = initializer_range for attn.Wqkv and
    mlp.Wi; "out" = initializer_range / sqrt(2 * num_hidden_layers) for attn.Wo, mlp.Wo and head.dense;
    "embedding" = initializer_range for tok_embeddings, whose padding row stays drawn (that init runs after
    nn.Embedding's zeroing); Linear biases zeros; LayerNorm weight ones, bias (norm_bias) zeros. The
    decoder's own "out" init does not survive: its weight is tied to tok_embeddings; its bias is zeros."""
    V, H = int(hf_value(hf, "vocab_size")), int(hf_value(hf, "hidden_size"))
    I, layers = int(hf_value(hf, "intermediate_size")), int(hf_value(hf, "num_hidden_layers"))
    std = float(hf_value(hf, "initializer_range", 0.02))
    if not std > 0:
        raise WWMError(f"initializer_range must be > 0 for ModernBERT's truncated-normal init; got {std}")
    cutoff = hf.get("initializer_cutoff_factor")
    cutoff = 3.0 if cutoff is None else float(cutoff)
    if not cutoff > 0:
        raise WWMError(f"initializer_cutoff_factor must be > 0; got {cutoff}")
    padding_row(hf, V)
    stds = {"in": std, "out": std / math.sqrt(2.0 * layers), "embedding": std}
    norm_bias = bool(hf.get("norm_bias", False))

    def linear(name: str, out: int, inp: int, which: str, bias: bool) -> list[TensorSpec]:
        rows = [TensorSpec(f"{name}.weight", (out, inp), "truncated", stds[which], cutoff)]
        return rows + ([TensorSpec(f"{name}.bias", (out,), "zeros")] if bias else [])

    def norm(name: str) -> list[TensorSpec]:
        rows = [TensorSpec(f"{name}.weight", (H,), "ones")]
        return rows + ([TensorSpec(f"{name}.bias", (H,), "zeros")] if norm_bias else [])

    attention_bias, mlp_bias = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
    specs = [
        TensorSpec("model.embeddings.tok_embeddings.weight", (V, H), "truncated", stds["embedding"], cutoff)
    ]
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
        specs += [TensorSpec("decoder.bias", (V,), "zeros")]
    return specs


def position_rows(positions: Any, segment_ids: Any, pad_token_id: int) -> Any:
    """Rotary positions: the per-piece position itself."""
    return positions


MODERNBERT = Family(
    name="modernbert",
    label="ModernBERT",
    section=ModernBertModelConfig,
    architecture="ModernBertForMaskedLM",
    tensor_specs=tensor_specs,
    tied={"decoder.weight": "model.embeddings.tok_embeddings.weight"},
    position_rows=position_rows,
    # Its norms ("norm", "attn_norm", "final_norm", ...) have weights and (norm_bias: false) no bias.
    norm_names=("norm",),
    mlm_head="head",  # dense, act, norm; its output goes straight to `decoder`
    layer_types=layer_types,
)
