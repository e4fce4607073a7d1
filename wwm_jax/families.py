"""The JAX record of each model family: its config class, its build function, its name table (HF key <->
flax path), and what else its checkpoints may hold. `wwm_jax.convert` and the trainer read these records
instead of branching on the family; the framework-free facts (tied keys, initial weights, position rows)
are in the family's core record (`wwm.families`), which each record here carries as `core`.

The name tables: our module paths mirror the HF keys, Linear kernels are transposed (torch stores
(out, in), flax (in, out)), layer-norm `weight` is flax's `scale`, an embedding's `weight` is flax's
`embedding`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from wwm.errors import WWMError
from wwm.families import FAMILIES, Family
from wwm_jax import modeling, modernbert
from wwm_jax.modeling import EncoderConfig
from wwm_jax.modernbert import ModernBertConfig


class Entry(NamedTuple):
    hf_key: str  # full key as transformers 5 saves it, e.g. "bert.encoder.layer.0.output.dense.weight"
    flax_path: str  # '/'-joined flax path, e.g. "bert/encoder/layer/0/output/dense/kernel"
    transpose: bool  # torch Linear.weight (out, in) <-> flax Linear.kernel (in, out)


# --- The name table: (HF key, flax path, transpose), relative to the encoder ("bert." / "roberta.") ----
_EMBEDDINGS = [
    ("embeddings.word_embeddings.weight", "embeddings/word_embeddings/embedding", False),
    ("embeddings.position_embeddings.weight", "embeddings/position_embeddings/embedding", False),
    ("embeddings.token_type_embeddings.weight", "embeddings/token_type_embeddings/embedding", False),
    ("embeddings.LayerNorm.weight", "embeddings/LayerNorm/scale", False),
    ("embeddings.LayerNorm.bias", "embeddings/LayerNorm/bias", False),
]
_LAYER = [  # under "encoder.layer.{i}." / "encoder/layer/{i}/"
    ("attention.self.query.weight", "attention/self/query/kernel", True),
    ("attention.self.query.bias", "attention/self/query/bias", False),
    ("attention.self.key.weight", "attention/self/key/kernel", True),
    ("attention.self.key.bias", "attention/self/key/bias", False),
    ("attention.self.value.weight", "attention/self/value/kernel", True),
    ("attention.self.value.bias", "attention/self/value/bias", False),
    ("attention.output.dense.weight", "attention/output/dense/kernel", True),
    ("attention.output.dense.bias", "attention/output/dense/bias", False),
    ("attention.output.LayerNorm.weight", "attention/output/LayerNorm/scale", False),
    ("attention.output.LayerNorm.bias", "attention/output/LayerNorm/bias", False),
    ("intermediate.dense.weight", "intermediate/dense/kernel", True),
    ("intermediate.dense.bias", "intermediate/dense/bias", False),
    ("output.dense.weight", "output/dense/kernel", True),
    ("output.dense.bias", "output/dense/bias", False),
    ("output.LayerNorm.weight", "output/LayerNorm/scale", False),
    ("output.LayerNorm.bias", "output/LayerNorm/bias", False),
]
# The masked-LM heads (full keys; the flax paths mirror them).
_HEADS = {
    "bert": [
        ("cls.predictions.bias", "cls/predictions/bias", False),
        ("cls.predictions.transform.dense.weight", "cls/predictions/transform/dense/kernel", True),
        ("cls.predictions.transform.dense.bias", "cls/predictions/transform/dense/bias", False),
        ("cls.predictions.transform.LayerNorm.weight", "cls/predictions/transform/LayerNorm/scale", False),
        ("cls.predictions.transform.LayerNorm.bias", "cls/predictions/transform/LayerNorm/bias", False),
    ],
    "roberta": [
        ("lm_head.bias", "lm_head/bias", False),
        ("lm_head.dense.weight", "lm_head/dense/kernel", True),
        ("lm_head.dense.bias", "lm_head/dense/bias", False),
        ("lm_head.layer_norm.weight", "lm_head/layer_norm/scale", False),
        ("lm_head.layer_norm.bias", "lm_head/layer_norm/bias", False),
    ],
}
# Keys that HF checkpoints may carry and masked-LM training does not use: the position-id buffer of
# older transformers, the pooler of a bare BertModel/RobertaModel, BertForPreTraining's NSP head.
_IGNORED = (
    "embeddings.position_ids",
    "pooler.dense.weight",
    "pooler.dense.bias",
    "cls.seq_relationship.weight",
    "cls.seq_relationship.bias",
)


def modernbert_name_table(config: ModernBertConfig) -> list[Entry]:
    """ModernBertForMaskedLM: the flax paths are the HF keys with '/' (bias and norm-bias rows only where
    the config has them; layer 0 has no attn_norm). decoder.weight is tied, so not in the table."""

    def linear(hf: str, bias: bool) -> list[Entry]:
        fx = hf.replace(".", "/")
        rows = [Entry(f"{hf}.weight", f"{fx}/kernel", True)]
        return rows + ([Entry(f"{hf}.bias", f"{fx}/bias", False)] if bias else [])

    def norm(hf: str) -> list[Entry]:
        fx = hf.replace(".", "/")
        rows = [Entry(f"{hf}.weight", f"{fx}/scale", False)]
        return rows + ([Entry(f"{hf}.bias", f"{fx}/bias", False)] if config.norm_bias else [])

    rows = [
        Entry("model.embeddings.tok_embeddings.weight", "model/embeddings/tok_embeddings/embedding", False)
    ]
    rows += norm("model.embeddings.norm")
    for i in range(config.num_hidden_layers):
        layer = f"model.layers.{i}"
        rows += norm(f"{layer}.attn_norm") if i else []
        rows += linear(f"{layer}.attn.Wqkv", config.attention_bias)
        rows += linear(f"{layer}.attn.Wo", config.attention_bias)
        rows += norm(f"{layer}.mlp_norm")
        rows += linear(f"{layer}.mlp.Wi", config.mlp_bias)
        rows += linear(f"{layer}.mlp.Wo", config.mlp_bias)
    rows += norm("model.final_norm") + linear("head.dense", config.classifier_bias) + norm("head.norm")
    return rows + ([Entry("decoder.bias", "decoder/bias", False)] if config.decoder_bias else [])


def bert_name_table(config: EncoderConfig) -> list[Entry]:
    """BertForMaskedLM / RobertaForMaskedLM: the encoder's rows under its prefix, then the head's."""
    prefix = modeling.BASE_PREFIX[config.model_type]
    rows = list(_EMBEDDINGS)
    for i in range(config.num_hidden_layers):
        rows += [(f"encoder.layer.{i}.{hf}", f"encoder/layer/{i}/{fx}", t) for hf, fx, t in _LAYER]
    entries = [Entry(f"{prefix}.{hf}", f"{prefix}/{fx}", t) for hf, fx, t in rows]
    return entries + [Entry(*row) for row in _HEADS[config.model_type]]


@dataclass(frozen=True)
class JaxFamily:
    """One family's JAX side: what `wwm_jax.convert` and the trainer need besides the model file."""

    core: Family  # the framework-free record (tied keys, initial weights, position rows, ...)
    config_class: type  # from_hf_dict / to_hf_dict / architecture
    build: Callable[..., Any]  # (config, *, dtype, seed) -> a freshly initialised model
    name_table: Callable[[Any], list[Entry]]  # every parameter: HF key <-> flax path, in checkpoint order
    prefix: str  # the encoder's key prefix ("bert.embeddings...")
    bare: tuple[str, ...]  # how the keys of a bare encoder saved without the prefix begin
    head: tuple[str, ...]  # how the MLM head's keys begin
    ignored: tuple[str, ...] = ()  # full keys of tensors masked-LM training does not use

    @property
    def tied(self) -> Mapping[str, str]:
        """Tied copies some checkpoints store (transformers 5 does not): each must equal its source; they
        are checked, then dropped."""
        return self.core.tied


def _bert(name: str, head: tuple[str, ...]) -> JaxFamily:
    prefix = modeling.BASE_PREFIX[name]
    return JaxFamily(
        core=FAMILIES[name],
        config_class=EncoderConfig,
        build=modeling.build_model,
        name_table=bert_name_table,
        prefix=prefix,
        bare=("embeddings.", "encoder.", "pooler."),
        head=head,
        ignored=tuple(k if k.startswith("cls.") else f"{prefix}.{k}" for k in _IGNORED),
    )


JAX_FAMILIES: dict[str, JaxFamily] = {
    "bert": _bert("bert", ("cls.predictions.",)),
    "roberta": _bert("roberta", ("lm_head.",)),
    "modernbert": JaxFamily(
        core=FAMILIES["modernbert"],
        config_class=ModernBertConfig,
        build=modernbert.build_model,
        name_table=modernbert_name_table,
        prefix=modernbert.BASE_PREFIX,
        bare=("embeddings.", "layers.", "final_norm."),
        head=("head.", "decoder."),
    ),
}


def jax_family(config: EncoderConfig | ModernBertConfig | str) -> JaxFamily:
    """The record of a model config (EncoderConfig, ModernBertConfig) or of a model_type name."""
    name = config if isinstance(config, str) else config.model_type
    if name not in JAX_FAMILIES:
        raise WWMError(f"model_type {name!r} is not supported; use one of {tuple(JAX_FAMILIES)}")
    return JAX_FAMILIES[name]
