"""BERT and RoBERTa: their config section (`model.type: bert | roberta`) and their records.

The two share one section and one tensor layout; RoBERTa differs in its key prefix and head, its position
rows (counting from pad_token_id + 1, like transformers' `create_position_ids_from_input_ids`), one token
type, and the padding row of its position table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from wwm.families.record import Family, ModelFields, TensorSpec, hf_value, padding_row


@dataclass(frozen=True)
class BertModelConfig(ModelFields):
    """`model:` of `model.type: bert | roberta` (transformers' BertConfig / RobertaConfig fields).

    RoBERTa's position table gets the two extra slots its position ids need (padding_idx + 1 offset).
    """

    type: Literal["bert", "roberta"] = "bert"
    type_vocab_size: int | None = None  # null: 2 for bert, 1 for roberta
    layer_norm_eps: float = 1e-12

    OLD_KEYS: ClassVar[Mapping[str, Any]] = {
        "modernbert": "it holds model.type modernbert's keys (run records of earlier wwm versions carry it)"
    }

    def hf_config_dict(self, tokenizer: Any, max_seq_len: int) -> dict[str, Any]:
        """The Hugging Face config.json fields of a fresh model (BertConfig / RobertaConfig)."""
        roberta = self.type == "roberta"
        self.check_positions(max_seq_len)  # never enlarged silently
        positions = self.max_position_embeddings
        d = {
            "model_type": self.type,
            "architectures": [FAMILY_OF[self.type].architecture],
            "vocab_size": len(tokenizer),
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": self.hidden_act,
            "max_position_embeddings": positions,
            "type_vocab_size": self.type_vocab_size or (1 if roberta else 2),
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_dropout_prob": self.hidden_dropout_prob,
            "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
            "initializer_range": self.initializer_range,
            "pad_token_id": tokenizer.pad_token_id,
            "position_embedding_type": "absolute",
            "tie_word_embeddings": True,
        }
        if roberta:
            d["bos_token_id"] = (
                tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
            )
            d["eos_token_id"] = (
                tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
            )
        return d


def tensor_specs(hf: Mapping[str, Any]) -> list[TensorSpec]:
    """BertForMaskedLM / RobertaForMaskedLM. transformers' `PreTrainedModel._init_weights`
    (modeling_utils.py) with std = `initializer_range or 0.02`: nn.Linear weight normal(0, std), bias
    zeros; nn.Embedding normal(0, std) with the padding_idx row zeroed (the word embeddings: padding_idx
    = pad_token_id; RoBERTa's position embeddings too); LayerNorm weight ones, bias zeros. Then
    BertPreTrainedModel / RobertaPreTrainedModel._init_weights: the LM head's own `bias` zeros."""
    model_type = hf["model_type"]
    std = float(hf.get("initializer_range") or 0.02)
    V, H = int(hf_value(hf, "vocab_size")), int(hf_value(hf, "hidden_size"))
    I, P = int(hf_value(hf, "intermediate_size")), int(hf_value(hf, "max_position_embeddings", 512))
    T = int(hf_value(hf, "type_vocab_size", 2))
    pad = padding_row(hf, V)
    p = model_type  # the encoder prefix: "bert." / "roberta."

    def linear(name: str, out: int, inp: int) -> list[TensorSpec]:
        return [
            TensorSpec(f"{name}.weight", (out, inp), "normal", std),
            TensorSpec(f"{name}.bias", (out,), "zeros"),
        ]

    def norm(name: str, n: int = H) -> list[TensorSpec]:
        return [TensorSpec(f"{name}.weight", (n,), "ones"), TensorSpec(f"{name}.bias", (n,), "zeros")]

    position = TensorSpec(f"{p}.embeddings.position_embeddings.weight", (P, H), "normal", std,
                          padding_row=pad if model_type == "roberta" else None)  # fmt: skip
    specs = [
        TensorSpec(f"{p}.embeddings.word_embeddings.weight", (V, H), "normal", std, padding_row=pad),
        TensorSpec(f"{p}.embeddings.token_type_embeddings.weight", (T, H), "normal", std),
        *norm(f"{p}.embeddings.LayerNorm"),
    ]
    specs.insert(1 if model_type == "bert" else len(specs), position)  # where each family declares it
    for i in range(int(hf_value(hf, "num_hidden_layers"))):
        layer = f"{p}.encoder.layer.{i}"
        for name in ("query", "key", "value"):
            specs += linear(f"{layer}.attention.self.{name}", H, H)
        specs += linear(f"{layer}.attention.output.dense", H, H) + norm(f"{layer}.attention.output.LayerNorm")
        specs += linear(f"{layer}.intermediate.dense", I, H)
        specs += linear(f"{layer}.output.dense", H, I) + norm(f"{layer}.output.LayerNorm")
    if model_type == "bert":
        head = "cls.predictions"
        specs += [TensorSpec(f"{head}.bias", (V,), "zeros")]
        specs += linear(f"{head}.transform.dense", H, H) + norm(f"{head}.transform.LayerNorm")
    else:
        specs += [TensorSpec("lm_head.bias", (V,), "zeros")]
        specs += linear("lm_head.dense", H, H) + norm("lm_head.layer_norm")
    return specs


def bert_position_rows(positions: Any, segment_ids: Any, pad_token_id: int) -> Any:
    """BERT looks up the per-piece position itself."""
    return positions


def roberta_position_rows(positions: Any, segment_ids: Any, pad_token_id: int) -> Any:
    """RoBERTa, as transformers computes it for the piece alone in a padded block: `pad_token_id + 1 +
    position`, and `pad_token_id` on padding (its zero row)."""
    return (segment_ids > 0) * (positions + 1) + pad_token_id


BERT = Family(
    name="bert",
    label="BERT",
    section=BertModelConfig,
    architecture="BertForMaskedLM",
    tensor_specs=tensor_specs,
    tied={
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    },
    position_rows=bert_position_rows,
    norm_names=("LayerNorm",),
    mlm_head="cls",
)
ROBERTA = Family(
    name="roberta",
    label="RoBERTa",
    section=BertModelConfig,
    architecture="RobertaForMaskedLM",
    tensor_specs=tensor_specs,
    tied={
        "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
    },
    position_rows=roberta_position_rows,
    norm_names=("LayerNorm",),  # (the head's `layer_norm` is not matched: `wwm parity` perturbs as before)
    mlm_head="lm_head",
)
FAMILY_OF = {f.name: f for f in (BERT, ROBERTA)}
