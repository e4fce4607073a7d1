"""The model families: one record each (`Family`), and the config section `model.type` selects.

    from wwm.families import family
    family("roberta").tied            # {"lm_head.decoder.weight": "roberta.embeddings...", ...}
    family(config.model.type).position_rows(positions, segment_ids, pad_token_id)

Adding a family: its module here (a `ModelFields` subclass as its config section, its `Family` record), a
line in `FAMILIES` and in `ModelSection`, its JAX record (`wwm_jax/families.py`) and model file, and parity
tests (docs/architecture.md, "Adding things").
"""

from __future__ import annotations

from wwm.errors import WWMError
from wwm.families.bert import BERT, ROBERTA, BertModelConfig
from wwm.families.modernbert import MODERNBERT, ModernBertFields, ModernBertModelConfig
from wwm.families.record import Family, ModelFields, TensorSpec

__all__ = [
    "FAMILIES",
    "BertModelConfig",
    "Family",
    "ModelFields",
    "ModelSection",
    "ModernBertFields",
    "ModernBertModelConfig",
    "TensorSpec",
    "family",
]

FAMILIES: dict[str, Family] = {f.name: f for f in (BERT, ROBERTA, MODERNBERT)}

# The type of `RunConfig.model`: the section of one family, chosen by its `type` (the config loader reads
# a union of sections by their `type` Literal).
ModelSection = BertModelConfig | ModernBertModelConfig


def family(model_type: str) -> Family:
    """The record of `model_type` (model.type, config.json's model_type); WWMError naming the choices."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise WWMError(f"model_type {model_type!r} is not supported; use one of {tuple(FAMILIES)}") from None
