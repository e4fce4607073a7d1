"""`model.type: modernbert` in both trainers: one fresh-model config for both frameworks, the torch
masked-positions head on ModernBertForMaskedLM, and a fresh model trained by each trainer end to end."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from wwm.config import ModelConfig
from wwm.errors import WWMError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(type="modernbert", hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=48,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip


def _model_config(**modernbert):
    from wwm.config.sections import ModernBertFields

    return ModelConfig(**TINY, modernbert=ModernBertFields(**modernbert))


def test_modernbert_config_is_the_same_model_in_both_frameworks(modernbert_tokenizer):
    """hf_config_dict -> transformers' ModernBertConfig and our ModernBertConfig read the same architecture,
    and the fresh models have the same tensors (names and shapes)."""
    import transformers

    from wwm_jax import convert
    from wwm_torch.trainer import build_model

    mc = _model_config(global_attn_every_n_layers=2, local_attention=16, local_rope_theta=500.0)
    d = mc.hf_config_dict(modernbert_tokenizer, 64)
    ours = convert.config_from_hf_dict(d)
    torch_model = build_model(mc, modernbert_tokenizer, 64, "eager")
    theirs = torch_model.config
    assert type(torch_model) is transformers.ModernBertForMaskedLM
    assert (
        list(ours.layer_types)
        == list(theirs.layer_types)
        == ["full_attention", "sliding_attention"] * 1 + ["full_attention"]
    )
    assert (
        ours.local_attention == theirs.local_attention == 16
        and theirs.sliding_window == ours.sliding_window == 8
    )
    assert (
        ours.rope_theta("sliding_attention")
        == theirs.rope_parameters["sliding_attention"]["rope_theta"]
        == 500
    )
    assert (
        ours.rope_theta("full_attention") == theirs.rope_parameters["full_attention"]["rope_theta"] == 160_000
    )
    assert ours.vocab_size == theirs.vocab_size == len(modernbert_tokenizer)
    assert ours.pad_token_id == theirs.pad_token_id == modernbert_tokenizer.pad_token_id
    assert (ours.norm_eps, ours.norm_bias, ours.mlp_bias, ours.attention_bias) == (1e-5, False, False, False)
    assert (theirs.norm_eps, theirs.norm_bias, theirs.mlp_bias, theirs.attention_bias) == (
        1e-5,
        False,
        False,
        False,
    )
    # Every torch tensor has its Flax parameter of the same shape, and every Flax parameter is filled
    # (hf_to_flax_params refuses missing, unexpected or misshapen keys).
    state = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    params, info = convert.hf_to_flax_params(state, ours)
    assert not info.fresh_head and params.keys() == convert.expected_shapes(ours).keys()


def test_modernbert_defaults_are_the_published_base():
    from wwm.config.sections import ModernBertFields

    f = ModernBertFields()
    assert (f.global_attn_every_n_layers, f.local_attention) == (3, 128)
    assert (f.global_rope_theta, f.local_rope_theta, f.norm_eps) == (160_000.0, 10_000.0, 1e-5)


@pytest.mark.parametrize(
    "bad", [{"local_attention": 15}, {"local_attention": 0}, {"global_attn_every_n_layers": 0}]
)
def test_modernbert_bad_fields_are_one_line_errors(bad):
    from wwm.errors import WWMError

    with pytest.raises(WWMError, match=r"model\.modernbert"):
        _model_config(**bad)


def test_modernbert_torch_head_at_rows_gives_the_full_heads_rows(modernbert_tokenizer):
    """head_at_rows on ModernBertForMaskedLM (hook on `head`, then `decoder`): logits (M, V) equal the full
    (B, L, V) logits at the masked positions."""
    import torch

    from wwm_torch.trainer import build_model, head_at_rows, mlm_head

    torch.manual_seed(0)
    model = build_model(_model_config(local_attention=8), modernbert_tokenizer, 32, "eager").eval()
    assert mlm_head(model) is model.head
    ids = torch.randint(5, len(modernbert_tokenizer), (3, 32))
    attention = torch.ones_like(ids)
    attention[2, 20:] = 0
    rows = torch.zeros_like(ids, dtype=torch.bool)
    rows[0, [1, 5, 30]] = rows[1, 0] = rows[2, [3, 19]] = True
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=attention).logits  # (B, L, V)
        with head_at_rows(model, rows):
            gathered = model(input_ids=ids, attention_mask=attention).logits  # (M, V)
    assert gathered.shape == (6, len(modernbert_tokenizer))
    torch.testing.assert_close(gathered, full[rows], rtol=1e-5, atol=1e-6)


def _train(config) -> int:
    if config.train.framework == "jax":
        from wwm_jax.train import run
    else:
        from wwm_torch.train import run
    return run(config)


def _phase1(out, framework: str):
    """configs/parity-modernbert-tiny.yaml (packed documents, StableAdamW), 3 steps, exported."""
    from wwm.config import load_config

    config = load_config(
        os.path.join(ROOT, "configs", "parity-modernbert-tiny.yaml"),
        [f"output_dir={out / 'run'}", f"data.cache_dir={out / 'cache'}", "train.max_steps=3",
         "optim.warmup_steps=1", "optim.decay_steps=1", "data.max_documents=100", "tokenizer.train.vocab_size=1000", f"train.framework={framework}",
         "checkpoint.export_hf_at_end=true"],
    )  # fmt: skip
    assert _train(config) == 0
    return out / "run"


@pytest.fixture(scope="module")
def phase1_jax(tmp_path_factory):
    return _phase1(tmp_path_factory.mktemp("phase1"), "jax")


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_modernbert_fresh_model_trains_and_exports(tmp_path, framework, request):
    """A run config with model.type modernbert and tokenizer.train.kind modernbert, no initial weights: each
    trainer builds the fresh model, trains 3 steps with the masked-positions head and exports a directory
    that transformers' ModernBertForMaskedLM loads."""
    import json

    import transformers

    run_dir = request.getfixturevalue("phase1_jax") if framework == "jax" else _phase1(tmp_path, framework)
    model = transformers.AutoModelForMaskedLM.from_pretrained(run_dir / "hf")
    assert type(model) is transformers.ModernBertForMaskedLM
    assert model.config.layer_types == ["full_attention", "sliding_attention", "full_attention"]
    assert model.config.local_attention == 32
    with open(run_dir / "metrics.jsonl") as f:
        losses = [json.loads(line)["loss"] for line in f if '"loss"' in line]
    assert len(losses) == 3 and np.all(np.isfinite(losses))


def _phase2_config(phase1, out, framework: str):
    """configs/modernbert-base-wwm-8k.yaml itself, shrunk: the tiny phase-1 export, 4 steps of 2 rows of
    256 tokens (the last 2 steps decaying), the built-in corpus, float32 on one device."""
    from wwm.config import load_config

    return load_config(
        os.path.join(ROOT, "configs", "modernbert-base-wwm-8k.yaml"),
        [f"model.pretrained={phase1 / 'hf'}", f"tokenizer.path={phase1 / 'hf'}", f"output_dir={out}",
         f"data.cache_dir={out.parent / 'cache'}", "data.source=builtin", "data.max_documents=100",
         "data.max_seq_len=256", "data.num_proc=1", "data.validation_fraction=0.0", "train.global_batch_size=2",
         "train.grad_accum_steps=1", "train.max_steps=4", "optim.decay_steps=2", "train.dtype=float32",
         "parallel.mode=single", "checkpoint.every_steps=1000", "checkpoint.export_hf_at_end=true",
         "logging.tensorboard=false", "logging.progress_bar=false", f"train.framework={framework}"],
    )  # fmt: skip


def test_context_extension_loads_the_phase1_model_with_the_new_rope_theta(modernbert_tokenizer, tmp_path):
    """Both trainers load a phase-1 checkpoint (global rope theta 10,000 and 128 positions, as the recipe's
    phase 1 at a shorter length) into the config the 8k config continues it with: global rope theta 160,000
    (rotary frequencies rebuilt), local 10,000, max_position_embeddings raised to data.max_seq_len 256, the
    phase-1 weights. Without the extension nothing changes and the longer data is refused before any work;
    a fresh model cannot take the key."""
    import json

    from wwm.config import load_config
    from wwm.preflight import check_pretrained
    from wwm_jax.train import make_model
    from wwm_torch.model import build_model

    src = tmp_path / "phase1"  # a tiny phase-1 export (no training needed: only the loading is tested)
    build_model(_model_config(local_attention=8), modernbert_tokenizer, 64, "eager").save_pretrained(
        src / "hf"
    )
    modernbert_tokenizer.save_pretrained(src / "hf")
    cfg_path = src / "hf" / "config.json"
    hf = json.loads(cfg_path.read_text())
    hf["rope_parameters"]["full_attention"]["rope_theta"] = 10_000.0  # as phase 1 of the recipe
    hf["max_position_embeddings"] = 128
    cfg_path.write_text(json.dumps(hf))
    config = _phase2_config(src, tmp_path / "out", "jax")
    check_pretrained(config)  # the extension raises the positions: accepted
    ours = make_model(config, None)
    assert ours.config.global_rope_theta == 160_000.0 and ours.config.local_rope_theta == 10_000.0
    assert ours.config.max_position_embeddings == 256
    theirs = build_model(config.model, modernbert_tokenizer, 256, "flash")
    assert theirs.config.rope_parameters["full_attention"]["rope_theta"] == 160_000.0
    assert theirs.config.rope_parameters["sliding_attention"]["rope_theta"] == 10_000.0
    assert theirs.config.max_position_embeddings == 256
    inv = theirs.model.rotary_emb.full_attention_inv_freq
    assert float(inv[1]) == pytest.approx(160_000.0 ** (-2 / ours.config.head_dim), rel=1e-6)
    emb = np.asarray(ours.model.embeddings.tok_embeddings.embedding[...])
    assert np.array_equal(emb, theirs.model.embeddings.tok_embeddings.weight.detach().numpy())
    # Without the extension the checkpoint's theta and positions stay, and 256 tokens are refused.
    plain = load_config(None, ["model.type=modernbert", f"model.pretrained={src / 'hf'}"])
    assert plain.model.continue_config(hf, 256) == hf
    plain = dataclasses.replace(
        config, model=dataclasses.replace(config.model, context_extension_rope_theta=None)
    )
    with pytest.raises(WWMError, match=r"data\.max_seq_len is 256 but the model in .* has 128 positions"):
        check_pretrained(plain)
    with pytest.raises(
        WWMError, match=r"context_extension_rope_theta applies when continuing model\.pretrained"
    ):
        load_config(None, ["model.type=modernbert", "model.context_extension_rope_theta=160000"])


@pytest.mark.slow
def test_context_extension_config_runs_tiny_in_both_frameworks(phase1_jax, tmp_path):
    """configs/modernbert-base-wwm-8k.yaml, shrunk (`_phase2_config`), continues the tiny phase-1 model in
    each trainer: flash attention, packed documents, StableAdamW, the decay; both start from the same
    weights and data, so their first losses agree; the export carries the new rope theta."""
    import json

    losses = {}
    for framework in ("jax", "torch"):
        out = tmp_path / framework
        config = _phase2_config(phase1_jax, out, framework)
        assert config.train.attn_implementation == "flash" and config.data.packing == "packed_documents"
        assert _train(config) == 0
        with open(out / "metrics.jsonl") as f:
            losses[framework] = [json.loads(line)["loss"] for line in f if '"loss"' in line]
        exported = json.loads((out / "hf" / "config.json").read_text())
        assert exported["rope_parameters"]["full_attention"]["rope_theta"] == 160_000.0
        assert exported["max_position_embeddings"] >= 256
    assert len(losses["jax"]) == len(losses["torch"]) == 4 and np.all(np.isfinite(losses["jax"]))
    assert losses["jax"][0] == pytest.approx(losses["torch"][0], rel=1e-4)


def test_modernbert_with_packed_documents_is_accepted():
    """Both trainers take packed documents for ModernBERT (the torch side: wwm_torch.model.packed_inputs)."""
    from wwm.config import load_config

    config = load_config(None, ["model.type=modernbert", "data.packing=packed_documents"])
    assert config.data.packing == "packed_documents"
