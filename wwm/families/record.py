"""What a model family is, framework-free: its record (`Family`), the shape of its initial-weight specs
(`TensorSpec`), and the fields every family's config section has (`ModelFields`).

A family's own module (`wwm/families/bert.py`, `modernbert.py`) defines its config section (a
`ModelFields` subclass, selected by `model.type`) and its `Family` record; `wwm/families/__init__.py`
lists the records. The JAX side has its own record per family (`wwm_jax/families.py`: config class, build
function, name table); the torch side builds the family's Hugging Face class from `architecture`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

from wwm.errors import WWMError
from wwm.fields import path_field, positive

Rule = Literal["normal", "truncated", "zeros", "ones"]


class TensorSpec(NamedTuple):
    """How one tensor of a fresh model starts: `rule` with `std` (normal / truncated at +-cutoff * std),
    and the embedding row that is zeroed afterwards (`padding_row`, nn.Embedding's padding_idx), if any."""

    key: str
    shape: tuple[int, ...]
    rule: Rule
    std: float = 0.0
    cutoff: float = 0.0  # truncated only: |x| <= cutoff * std
    padding_row: int | None = None


@dataclass(frozen=True)
class Family:
    """One model family's facts outside its model files, read wherever code would otherwise branch on
    `model.type` (both trainers, the initial weights, packing, `wwm parity`)."""

    name: str  # model.type and config.json's model_type
    label: str  # how messages name it ("RoBERTa")
    section: type  # its config section (`model:` when model.type is `name`)
    architecture: str  # transformers' masked-LM class (config.json "architectures")
    # Initial weights: every tensor of a fresh model of this config.json dict, in transformers' state-dict
    # order, tied copies left out (`wwm.initial_weights` draws them).
    tensor_specs: Callable[[Mapping[str, Any]], list[TensorSpec]]
    # transformers' `_tied_weights_keys`: tied copy -> the key it shares its tensor with (in the model's
    # state dict, not in `save_pretrained`'s file).
    tied: Mapping[str, str]
    # Packed documents: (per-piece positions, segment ids, pad_token_id) -> the position rows the model
    # looks up (plain arithmetic: numpy, jax.numpy and torch arrays all work).
    position_rows: Callable[[Any, Any, int], Any]
    norm_names: tuple[str, ...]  # parameter-name fragments of its layer norms (`wwm parity` perturbs them)
    mlm_head: str  # the HF model's attribute that maps hidden states to logits (torch: the masked-rows hook)
    packs_documents: bool = True  # both trainers honour data.packing packed_documents
    # Its attention layer types, for models whose layers differ (ModernBERT): (layers, every n) -> types.
    layer_types: Callable[..., tuple[str, ...]] | None = None


@dataclass(frozen=True)
class ModelFields:
    """The fields every family's config section has: the encoder's shape and where a run starts from.

    Sizes apply to a fresh model; `pretrained` starts from a Hugging Face directory (the sizes are then
    ignored). vocab_size and the special-token ids come from the tokenizer.
    """

    # The family: it selects the section (a subclass narrows it to its Literal).
    type: str = "bert"
    # A Hugging Face directory (safetensors + config.json) to start from; the sizes below are then
    # ignored. A path (relative to the config file) or a Hub name.
    pretrained: str | None = path_field(None, hub=True)
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: Literal["gelu", "gelu_new", "relu"] = "gelu"
    max_position_embeddings: int = 512
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    # With `pretrained`: a tokenizer that keeps every id of the model's own and adds tokens after them grows
    # the token embeddings (and the MLM decoder's bias) to its size; each new row is the mean of the old
    # rows (the same numbers in both trainers: wwm.initial_weights.extend_vocab). Without it such a
    # tokenizer is refused (wwm.preflight). A trajectory key: the run's checkpoints hold the grown model.
    extend_vocab: bool = False

    # Old spellings of this section (the config loader maps them, with one deprecation line each): a key
    # -> a dataclass (an old sub-section whose keys are now keys of this section) or a reason it is ignored.
    OLD_KEYS: ClassVar[Mapping[str, Any]] = {}

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            positive(f"model.{name}", getattr(self, name))
        if self.hidden_size % self.num_attention_heads:
            raise WWMError(
                f"model.hidden_size ({self.hidden_size}) must be divisible by model.num_attention_heads "
                f"({self.num_attention_heads})"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise WWMError(f"model.{name} must be in [0, 1); got {getattr(self, name)}")

    def hf_config_dict(self, tokenizer: Any, max_seq_len: int) -> dict[str, Any]:
        """The Hugging Face config.json fields of a fresh model: the one place where our config becomes the
        model's (both trainers build from it, so their models have the same shapes)."""
        raise NotImplementedError(f"{type(self).__name__} does not say its config.json fields")

    def continue_config(self, hf: Mapping[str, Any], max_seq_len: int) -> dict[str, Any]:
        """The config.json fields a run continues `model.pretrained` with: the checkpoint's own (`hf`) and
        what this section changes on a pretrained model (nothing here; ModernBERT's context extension
        raises its global rope theta). Both trainers load the checkpoint's weights into this config."""
        del max_seq_len
        return dict(hf)

    def check_positions(self, max_seq_len: int) -> None:
        """A fresh model's position table must hold `data.max_seq_len` tokens (RoBERTa: two more, its
        position ids start at padding_idx + 1); it is never enlarged behind the user's back."""
        extra = 2 if self.type == "roberta" else 0
        need = max_seq_len + extra
        if self.max_position_embeddings < need:
            why = (
                " (RoBERTa's position ids start at pad + 1: two more than data.max_seq_len)" if extra else ""
            )
            raise WWMError(
                f"model.max_position_embeddings is {self.max_position_embeddings} but data.max_seq_len "
                f"{max_seq_len} needs {need}{why}; set model.max_position_embeddings: {need} or lower "
                "data.max_seq_len"
            )


# ----------------------------------------------------------------------------------------------------
# Reading a config.json dict (the initial-weight specs of every family)
# ----------------------------------------------------------------------------------------------------


def hf_value(hf: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """`hf[key]` (else `default`); WWMError when neither is set."""
    value = hf.get(key, default)
    if value is None and default is None:
        raise WWMError(f"the model config has no {key}; the initial weights need it")
    return value


def padding_row(hf: Mapping[str, Any], rows: int) -> int | None:
    """The embedding row of pad_token_id (None when the config has none), checked against `rows`."""
    pad = hf.get("pad_token_id")
    if pad is not None and not 0 <= pad < rows:
        raise WWMError(f"pad_token_id {pad} is outside the vocabulary of {rows} tokens")
    return pad
