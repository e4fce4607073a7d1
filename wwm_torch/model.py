"""The torch model: built from our config (or a pretrained directory), its attention backend, packed inputs,
and its MLM head run at chosen rows.

* `build_model`: BertForMaskedLM / RobertaForMaskedLM / ModernBertForMaskedLM from the model section's
  `hf_config_dict` (the one place a fresh model's config is built) with the weights of
  `wwm.initial_weights` (the JAX trainer's, bit for bit), or from a pretrained safetensors directory.
* `torch_attention`: transformers' `attn_implementation` for `train.attn_implementation`.
* `packed_inputs`: packed documents' segment and position ids -> what a transformers model honours.
* `mlm_head`, `head_at_rows`: the MLM head, and a scoped hook that runs it at the masked rows only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from wwm.errors import WWMError
from wwm.families import FAMILIES, family

if TYPE_CHECKING:
    from wwm.config import ModelSection

__all__ = [
    "build_model",
    "head_at_rows",
    "mlm_head",
    "packed_inputs",
    "segment_mask",
    "torch_attention",
    "transformers_config",
]


def torch_attention(name: str) -> str:
    """transformers' attn_implementation for `train.attn_implementation` `name` (one name, one meaning in
    both trainers: the table in wwm/attention.py), or WWMError when it cannot run here (never a silent
    fallback). `flash` is `wwm_blockwise` (wwm_torch/attention.py), registered in transformers here."""
    from wwm.attention import implementation

    impl = implementation(name, "torch")
    if impl == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available():
            raise WWMError(
                "train.attn_implementation flash_attention_2 needs the flash-attn package and a CUDA GPU "
                f"(flash_attn installed: {importlib.util.find_spec('flash_attn') is not None}, CUDA: "
                f"{torch.cuda.is_available()}); use flash (O(L) memory on CPU and GPU), sdpa or eager"
            )
    if impl == "wwm_blockwise":
        from wwm_torch.attention import register

        register()
    return impl


def segment_mask(seg: torch.Tensor, dtype: torch.dtype, window: int | None = None) -> torch.Tensor:
    """(B, L) segment ids -> (B, 1, L, L) additive float mask of the attention rule (wwm_jax/attention.py):
    query i attends key j iff seg[i] == seg[j] (padding is a segment of its own) and, with a window,
    |i - j| <= window. Masked entries get dtype's most negative value (eager adds the mask to the scores,
    sdpa hands it to scaled_dot_product_attention; every row keeps at least itself)."""
    keep = seg[:, :, None] == seg[:, None, :]  # (B, L, L)
    if window is not None:
        index = torch.arange(seg.shape[1], device=seg.device)
        keep = keep & ((index[:, None] - index[None, :]).abs() <= window)
    mask = torch.zeros(keep.shape, dtype=dtype, device=seg.device).masked_fill(~keep, torch.finfo(dtype).min)
    return mask[:, None]


def packed_inputs(model: torch.nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
    """Packed documents: `segment_ids` (B, L) (0 padding, 1..k pieces) and per-piece `position_ids` -> what
    a transformers model honours, through its own mechanisms:

    * `flash` (`wwm_blockwise`): the segment ids as the keyword argument `wwm_segment_ids`, which the model's
      forward hands down to the attention function (no L x L mask is made);
    * eager / sdpa: the attention rule as (B, 1, L, L) additive float masks — one for BERT/RoBERTa (their
      create_bidirectional_mask passes a 4D mask through as is); a dict {layer type: mask} for a model whose
      config has `layer_types` (ModernBERT's forward takes one mask per layer type as given: full, and the
      +-sliding_window local one);
    * the position rows (the family record's `position_rows`: RoBERTa's count from pad_token_id + 1;
      ModernBERT's rotary positions restart with each piece). Other inputs pass unchanged."""
    if "segment_ids" not in inputs:
        return inputs

    inputs = dict(inputs)
    seg = inputs.pop("segment_ids")
    positions = inputs.pop("position_ids")
    cfg = model.config
    impl = getattr(cfg, "_attn_implementation", None)
    if impl == "flash_attention_2":
        raise WWMError("packed documents with flash_attention_2 are not wired yet; use flash, sdpa or eager")
    if impl == "wwm_blockwise":
        from wwm_torch.attention import SEGMENT_KWARG

        inputs.pop("attention_mask", None)
        inputs[SEGMENT_KWARG] = seg
    elif getattr(cfg, "layer_types", None):
        window = {"full_attention": None, "sliding_attention": getattr(cfg, "sliding_window", None)}
        inputs["attention_mask"] = {
            t: segment_mask(seg, model.dtype, window[t]) for t in set(cfg.layer_types)
        }
    else:
        inputs["attention_mask"] = segment_mask(seg, model.dtype)
    inputs["position_ids"] = family(cfg.model_type).position_rows(positions, seg, cfg.pad_token_id)
    return inputs


def transformers_config(hf_config: Mapping[str, Any]) -> Any:
    """transformers' config object (BertConfig, RobertaConfig, ModernBertConfig) of a config.json dict
    (`hf_config_dict`): the family's class, its fields, its architectures."""
    from transformers import AutoConfig

    d = dict(hf_config)
    architectures = d.pop("architectures", None)
    config = AutoConfig.for_model(d.pop("model_type"), **d)
    config.architectures = architectures
    return config


def build_model(
    model_config: ModelSection,
    tokenizer: Any,
    max_seq_len: int,
    attn_implementation: str = "sdpa",
    *,
    seed: int = 0,
):
    """A masked-LM model: loaded from `model_config.pretrained`, or fresh from `model_config` with the
    weights `wwm.initial_weights.initial_state(config dict, seed)` (the JAX trainer's, bit for bit)."""
    from transformers import AutoModelForMaskedLM

    attn_implementation = torch_attention(attn_implementation)

    if model_config.pretrained:
        path = model_config.pretrained
        if not os.path.isdir(path):
            raise WWMError(f"model.pretrained {path!r} is not a directory (a Hugging Face model directory)")
        # The checkpoint's config.json as the section continues it (ModernBERT's context extension).
        kwargs: dict[str, Any] = {}
        config_path = os.path.join(path, "config.json")
        if os.path.isfile(config_path):
            import json

            # local: a model folder on this machine (bucket models are fetched first)
            with open(config_path, encoding="utf-8") as f:
                hf = json.load(f)
            continued = model_config.continue_config(hf, max_seq_len)
            if continued != hf:
                kwargs["config"] = transformers_config(continued)
        try:
            model = AutoModelForMaskedLM.from_pretrained(
                path, use_safetensors=True, attn_implementation=attn_implementation, **kwargs
            )
        except OSError as err:
            raise WWMError(
                f"could not load the masked-LM model in {path!r} (safetensors weights and config.json needed): {err}"
            ) from err
        if model.config.vocab_size < len(tokenizer) and model_config.extend_vocab:
            return _extend_vocab(model, len(tokenizer))
        if model.config.vocab_size < len(tokenizer):
            raise WWMError(
                f"the model in {path!r} has {model.config.vocab_size} token embeddings but the tokenizer has "
                f"{len(tokenizer)} tokens; use the model's own tokenizer (tokenizer.path: {path})"
            )
        return model
    from wwm.initial_weights import initial_state, with_tied

    hf_config = model_config.hf_config_dict(tokenizer, max_seq_len)
    model = AutoModelForMaskedLM.from_config(
        transformers_config(hf_config), attn_implementation=attn_implementation
    )
    # Strict: every tensor of the state dict, the tied decoder copies given as their (shared) sources.
    state = with_tied(initial_state(hf_config, seed), hf_config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model


def _extend_vocab(model: Any, rows: int) -> Any:
    """`model.extend_vocab`: the token embeddings and the decoder bias grown to `rows`, the new rows the
    mean of the old (`wwm.initial_weights.extend_vocab`: the JAX trainer's numbers, bit for bit)."""
    from wwm.initial_weights import extend_vocab

    before = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    grown = extend_vocab(before, rows)
    model.resize_token_embeddings(rows, mean_resizing=False)
    changed = {k: torch.from_numpy(v) for k, v in grown.items() if v.shape != before[k].shape}
    with torch.no_grad():
        state = model.state_dict()
        for key, value in changed.items():
            state[key].copy_(value)
    model.tie_weights()
    return model


def mlm_head(model: torch.nn.Module) -> torch.nn.Module:
    """The module of a masked-LM model whose input is the hidden states (..., H) on their way to the logits.

    BertForMaskedLM `cls`, RobertaForMaskedLM `lm_head`: hidden -> logits. ModernBertForMaskedLM: `head`
    (dense, act, norm), whose output goes straight to `decoder` (`logits = decoder(head(hidden))`), so rows
    taken at its input give the logits of those rows. (transformers' own `sparse_prediction` gathers the
    same rows but only when `labels` are passed, and then also computes its mean loss: not used.)"""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    # The family's head (its record); a masked-LM model of another type (xlm-roberta, camembert, ...): the
    # BERT-style names.
    names = (FAMILIES[model_type].mlm_head,) if model_type in FAMILIES else ("cls", "lm_head")
    for name in names:
        head = getattr(model, name, None)
        if head is not None:
            return head
    raise WWMError(f"{type(model).__name__} has no MLM head the trainer knows (cls, lm_head, or head)")


@contextlib.contextmanager
def head_at_rows(model: torch.nn.Module, rows: torch.Tensor):
    """Within the block, `model(...)` runs its MLM head on `hidden[rows]` (M, H) instead of every
    position (B, L, H), so the logits are (M, V): the loss needs no other position's logits.

    Why a scoped forward pre-hook and not `head(encoder(...)[rows])` at the call site: the forward must
    go through `model` as the Trainer wrapped it (DDP, FSDP, torch.compile): DDP prepares its gradient
    all-reduce in its own forward, and calling the unwrapped encoder would skip that. The hook exists
    only inside this block (registered on entry, removed on exit)."""
    handle = mlm_head(model).register_forward_pre_hook(lambda module, args: (args[0][rows], *args[1:]))
    try:
        yield
    finally:
        handle.remove()
