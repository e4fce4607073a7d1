"""Tiny untrained masked-LM directories of each model family, for `wwm eval` / `wwm fill-mask` tests.

Weights are drawn with a large initializer range so that the predictions are far from uniform (a
disagreement between the frameworks would show)."""

from __future__ import annotations

import os

FAMILIES = ("bert", "roberta", "modernbert")
TOKENIZER = {"bert": "wordpiece_tokenizer", "roberta": "bpe_tokenizer", "modernbert": "modernbert_tokenizer"}


def write_model(directory: str, family: str, tokenizer, seq_len: int = 32) -> str:
    """An HF directory (config.json, model.safetensors, the tokenizer) of a random tiny `family` model."""
    from wwm.config.sections import ModelConfig
    from wwm_jax import convert
    from wwm_jax.modeling import EncoderConfig
    from wwm_jax.modernbert import ModernBertConfig

    if family == "modernbert":
        config = ModernBertConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=2, local_attention=8, max_position_embeddings=seq_len,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
            cls_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
            sep_token_id=tokenizer.sep_token_id, initializer_range=0.3,
        )  # fmt: skip
    else:
        hf = ModelConfig(type=family, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, initializer_range=0.3).hf_config_dict(tokenizer, seq_len)  # fmt: skip
        config = EncoderConfig.from_hf_dict(hf)
    model = convert.new_model(config, seed=3)
    os.makedirs(directory, exist_ok=True)
    convert.save_hf(model, directory)
    tokenizer.save_pretrained(directory)
    return directory
