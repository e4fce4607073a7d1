"""Checkpoint conversion without torch: errors that name the problem, the formats we accept, the CLI.

Hugging Face directories here are written by `wwm_jax.convert.save_hf` from tiny random models (the
transformers-written ones are exercised in parity_tests/test_model_parity.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

import wwm_cli as cli
from wwm.errors import WWMError
from wwm_jax import convert, modernbert
from wwm_jax.modeling import LOGICAL_AXIS_NAMES, EncoderConfig, build_model, logical_axes
from wwm_jax.modernbert import ModernBertConfig

TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24)


def _config(kind: str = "bert", **overrides) -> EncoderConfig:
    extra = dict(max_position_embeddings=20)
    if kind == "roberta":
        extra.update(
            pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1, max_position_embeddings=22
        )
    return EncoderConfig(model_type=kind, **{**TINY, **extra, **overrides})


def _write_hf(directory, state: dict[str, np.ndarray], config: EncoderConfig | dict) -> str:
    os.makedirs(directory, exist_ok=True)
    hf = config.to_hf_dict() if isinstance(config, EncoderConfig) else config
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf, f)
    save_file(state, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    return str(directory)


@pytest.fixture(scope="module", params=["bert", "roberta"])
def tiny(request):
    """(config, model, its HF state dict)."""
    model = build_model(_config(request.param), seed=1)
    return model.config, model, convert.flax_to_hf_state(model)


def _params_equal(a, b) -> bool:
    pa, pb = convert.flat_params(a), convert.flat_params(b)
    return pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)


# --- what loads ---------------------------------------------------------------------------------------


def test_save_then_load_is_identity(tiny, tmp_path):
    config, model, state = tiny
    loaded = convert.load_hf(_write_hf(tmp_path, state, config))
    assert loaded.config == config and _params_equal(loaded, model)
    assert convert.flax_to_hf_state(loaded).keys() == state.keys()


def test_sharded_index_is_read(tiny, tmp_path):
    config, model, state = tiny
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in halves.items():
        save_file({k: state[k] for k in part}, tmp_path / name)
    weight_map = {k: name for name, part in halves.items() for k in part}
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    (tmp_path / "config.json").write_text(json.dumps(config.to_hf_dict()))
    assert _params_equal(convert.load_hf(tmp_path), model)


def test_bare_encoder_without_prefix_gets_fresh_head(tiny, tmp_path):
    """A bare BertModel/RobertaModel (no "bert."/"roberta." prefix, with pooler and position-id buffer)."""
    config, model, state = tiny
    prefix = f"{config.model_type}."
    bare = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    h = config.hidden_size
    bare.update(
        {
            "pooler.dense.weight": np.ones((h, h), np.float32),
            "pooler.dense.bias": np.zeros(h, np.float32),
            "embeddings.position_ids": np.arange(config.max_position_embeddings)[None],
        }
    )
    loaded, info = convert.load_hf_with_info(_write_hf(tmp_path, bare, config), seed=7)
    assert info.fresh_head
    assert info.ignored_keys == sorted(
        prefix + k for k in ("embeddings.position_ids", "pooler.dense.bias", "pooler.dense.weight")
    )
    ours, theirs = convert.flat_params(loaded), convert.flat_params(model)
    head = "cls" if config.model_type == "bert" else "lm_head"
    for key in theirs:
        if not key.startswith(head):
            assert np.array_equal(ours[key], theirs[key]), key
    # the fresh head is initialised like transformers' (normal kernels), not copied or left empty
    dense = next(k for k in ours if k.startswith(head) and k.endswith("dense/kernel"))
    assert not np.array_equal(ours[dense], theirs[dense]) and 0 < ours[dense].std() < 0.1


def test_prefixed_bare_encoder_loads(tiny, tmp_path):
    config, model, state = tiny
    bare = {k: v for k, v in state.items() if k.startswith(f"{config.model_type}.")}
    loaded, info = convert.load_hf_with_info(_write_hf(tmp_path, bare, config))
    assert info.fresh_head and not info.ignored_keys
    word = f"{config.model_type}/embeddings/word_embeddings/embedding"
    assert np.array_equal(convert.flat_params(loaded)[word], convert.flat_params(model)[word])


def test_tied_decoder_copies_and_legacy_layer_norm_names_are_accepted(tiny, tmp_path):
    config, model, state = tiny
    state = dict(state)
    p = config.model_type
    head, bias = (
        ("cls.predictions.decoder", "cls.predictions.bias")
        if p == "bert"
        else ("lm_head.decoder", "lm_head.bias")
    )
    state[f"{head}.weight"] = state[f"{p}.embeddings.word_embeddings.weight"]
    state[f"{head}.bias"] = state[bias]
    gamma = state.pop(f"{p}.embeddings.LayerNorm.weight")
    state[f"{p}.embeddings.LayerNorm.gamma"] = gamma
    loaded, info = convert.load_hf_with_info(_write_hf(tmp_path, state, config))
    assert _params_equal(loaded, model)
    assert {f"{head}.weight", f"{head}.bias"} <= set(info.ignored_keys)


# --- what is refused, and how the message says it -----------------------------------------------------


def test_missing_key_is_named(tiny, tmp_path):
    config, _, state = tiny
    key = f"{config.model_type}.encoder.layer.1.output.dense.weight"
    state = {k: v for k, v in state.items() if k != key}
    with pytest.raises(WWMError, match=r"missing keys: .*encoder\.layer\.1\.output\.dense\.weight"):
        convert.load_hf(_write_hf(tmp_path, state, config))


def test_unexpected_key_is_named(tiny, tmp_path):
    config, _, state = tiny
    extra = f"{config.model_type}.encoder.layer.2.output.dense.weight"  # a third layer for a 2-layer config
    state = {**state, extra: np.zeros((16, 24), np.float32)}
    with pytest.raises(WWMError, match=r"unexpected keys: .*encoder\.layer\.2\.output\.dense\.weight"):
        convert.load_hf(_write_hf(tmp_path, state, config))


def test_partial_head_is_missing_keys_not_a_fresh_head(tiny, tmp_path):
    config, _, state = tiny
    dense = (
        "cls.predictions.transform.dense.weight" if config.model_type == "bert" else "lm_head.dense.weight"
    )
    state = {k: v for k, v in state.items() if k != dense}
    with pytest.raises(WWMError, match=f"missing keys: {dense}"):
        convert.load_hf(_write_hf(tmp_path, state, config))


def test_shape_mismatch_is_named(tiny, tmp_path):
    config, _, state = tiny
    wrong = dataclasses.replace(config, intermediate_size=config.intermediate_size + 1)
    with pytest.raises(
        WWMError,
        match=r"shape mismatch: .*intermediate\.dense\.weight is \(24, 16\), config.json implies \(25, 16\)",
    ):
        convert.load_hf(_write_hf(tmp_path, state, wrong))


def test_untied_decoder_is_refused(tiny, tmp_path):
    config, _, state = tiny
    key = "cls.predictions.decoder.weight" if config.model_type == "bert" else "lm_head.decoder.weight"
    state = {**state, key: np.ones((config.vocab_size, config.hidden_size), np.float32)}
    with pytest.raises(WWMError, match=f"{key} differs .*untied"):
        convert.load_hf(_write_hf(tmp_path, state, config))


def test_pytorch_bin_only_asks_for_safetensors_and_is_never_unpickled(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(_config().to_hf_dict()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a pickle: unpickling would raise something else")
    with pytest.raises(WWMError, match=r"pytorch_model\.bin.*safetensors"):
        convert.load_hf(tmp_path)


def test_directory_without_weights_or_config(tmp_path):
    with pytest.raises(WWMError, match=r"no config\.json"):
        convert.load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(_config().to_hf_dict()))
    with pytest.raises(WWMError, match=r"neither model\.safetensors nor"):
        convert.load_hf(tmp_path)
    with pytest.raises(WWMError, match="not a directory"):
        convert.load_hf(tmp_path / "nope")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "gpt2"}, "model_type 'gpt2' is not supported"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
        ({"is_decoder": True}, "is_decoder"),
        ({"tie_word_embeddings": False}, "tie_word_embeddings"),
        ({"hidden_act": "swish"}, "hidden_act 'swish'"),
        ({"num_attention_heads": 3}, "not a multiple"),
    ],
)
def test_unsupported_config_is_refused(change, message):
    with pytest.raises(WWMError, match=message):
        EncoderConfig.from_hf_dict({**_config().to_hf_dict(), **change})


def test_hf_config_defaults_follow_the_model_type():
    roberta = EncoderConfig.from_hf_dict({"model_type": "roberta", "torch_dtype": "float16"})
    assert (roberta.vocab_size, roberta.pad_token_id, roberta.checkpoint_dtype) == (50265, 1, "float16")
    assert EncoderConfig.from_hf_dict({"model_type": "bert"}) == EncoderConfig()


# --- our Flax directory and the CLI -------------------------------------------------------------------


def test_flax_dir_round_trip_and_errors(tiny, tmp_path):
    _, model, _ = tiny
    written = convert.save_flax(model, tmp_path / "flax")
    assert sorted(os.path.basename(p) for p in written) == ["config.json", "params.safetensors"]
    assert _params_equal(convert.load_flax(tmp_path / "flax"), model)

    convert.save_hf(model, tmp_path / "hf")
    with pytest.raises(WWMError, match="looks like a Hugging Face directory"):
        convert.load_flax(tmp_path / "hf")
    params = convert.flat_params(model)
    params.pop(next(iter(params)))
    save_file(params, tmp_path / "flax" / "params.safetensors")
    with pytest.raises(WWMError, match="missing keys"):
        convert.load_flax(tmp_path / "flax")


def test_cli_round_trip_is_bit_identical(tiny, tmp_path, capsys):
    config, _, state = tiny
    src = _write_hf(tmp_path / "src", state, config)
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "vocab.txt").write_text("[PAD]\n")
    assert cli.main(["convert", "hf-to-flax", "--src", src, "--out", str(tmp_path / "flax")]) == 0
    cmd = ["convert", "flax-to-hf", "--src", str(tmp_path / "flax"), "--out", str(tmp_path / "hf")]
    assert cli.main([*cmd, "--tokenizer", str(tok)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    n = sum(v.size for v in convert.flat_params(build_model(config)).values())
    assert len(lines) == 2 and all(f"{n:,} parameters" in line for line in lines)
    assert "params.safetensors" in lines[0] and "model.safetensors" in lines[1] and "vocab.txt" in lines[1]
    out = convert.read_hf_weights(tmp_path / "hf")
    assert out.keys() == state.keys() and all(np.array_equal(out[k], state[k]) for k in state)


def test_cli_reports_conversion_errors_in_one_line(tmp_path, capsys):
    assert cli.main(["convert", "hf-to-flax", "--src", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wwm convert: error:") and "\n" not in err


def test_cli_refuses_to_overwrite_a_non_empty_out_without_force(tiny, tmp_path, capsys):
    config, _, state = tiny
    src = _write_hf(tmp_path / "src", state, config)
    out = tmp_path / "flax"
    out.mkdir()
    (out / "config.json").write_text("mine")
    cmd = ["convert", "hf-to-flax", "--src", src, "--out", str(out)]
    assert cli.main(cmd) == 2
    err = capsys.readouterr().err
    assert err.startswith("wwm convert: error: --out") and "--force" in err and err.count("\n") == 1
    assert (out / "config.json").read_text() == "mine" and sorted(os.listdir(out)) == ["config.json"]
    assert cli.main([*cmd, "--force"]) == 0
    assert (out / "config.json").read_text() != "mine" and (out / "params.safetensors").is_file()
    capsys.readouterr()
    assert cli.main(["convert", "flax-to-hf", "--src", str(out), "--out", str(out), "--force"]) == 2
    assert "is the --src folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()  # an existing empty folder is fine
    assert cli.main(["convert", "flax-to-hf", "--src", str(out), "--out", str(tmp_path / "empty")]) == 0


def test_cli_module_imports_nothing_heavy():
    code = (
        "import sys, wwm_cli.commands.convert; "
        "heavy = {'jax', 'flax', 'torch', 'transformers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- logical axes ---------------------------------------------------------------------------------------


def test_every_param_has_logical_axes_of_its_rank(tiny):
    _, model, _ = tiny
    axes = logical_axes(model)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    pairs = []
    jax.tree.map(
        lambda names, v: pairs.append((names, v)), axes, params, is_leaf=lambda x: isinstance(x, tuple)
    )
    assert len(pairs) == len(convert.flat_params(model))
    for names, value in pairs:
        assert len(names) == value.ndim and set(names) <= {*LOGICAL_AXIS_NAMES, None}
        assert len([n for n in names if n]) == len({n for n in names if n})  # no name twice in one spec
    base = axes[model.config.model_type]
    assert base["embeddings"]["word_embeddings"]["embedding"] == ("vocab", "embed")
    assert base["encoder"]["layer"][1]["attention"]["self"]["query"]["kernel"] == ("embed", "heads")
    assert base["encoder"]["layer"][0]["output"]["dense"]["kernel"] == ("mlp", "embed")


def test_logical_axis_rules_give_partition_specs(tiny):
    """The trainer's route: nnx.logical_axis_rules + nnx.get_partition_spec on the parameter state."""
    from jax.sharding import PartitionSpec as P

    _, model, _ = tiny
    rules = [("vocab", "model"), ("heads", "model"), ("mlp", "model"), ("embed", "data")]
    with nnx.logical_axis_rules(rules):
        specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    layer = specs[model.config.model_type]["encoder"]["layer"][0]
    assert layer["attention"]["self"]["query"]["kernel"].get_value() == P("data", "model")
    assert layer["intermediate"]["dense"]["bias"].get_value() == P("model")


def test_bf16_compute_keeps_float32_params_and_logits():
    model = build_model(_config("roberta"), dtype=jnp.bfloat16)
    ids = jnp.array([[0, 5, 6, 2, 1, 1]])
    logits = model(ids, (ids != 1).astype(jnp.int32))
    assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())
    assert {v.dtype for v in convert.flat_params(model).values()} == {np.dtype(np.float32)}


def test_dropout_needs_rngs_and_is_reproducible_per_key():
    model = build_model(_config())
    ids = jnp.full((2, 6), 7)
    with pytest.raises(ValueError, match="rngs"):
        model(ids, deterministic=False)
    a = model(ids, deterministic=False, rngs=jax.random.key(0))
    assert np.array_equal(a, model(ids, deterministic=False, rngs=jax.random.key(0)))
    assert not np.allclose(a, model(ids, deterministic=False, rngs=jax.random.key(1)))
    assert not np.allclose(a, model(ids))


# --- ModernBERT ---------------------------------------------------------------------------------------

MODERNBERT_TINY = dict(
    vocab_size=50,
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=3,
    num_attention_heads=2,
    local_attention=4,
    pad_token_id=3,
    bos_token_id=1,
    cls_token_id=1,
    eos_token_id=2,
    sep_token_id=2,
    max_position_embeddings=32,
)


@pytest.fixture(scope="module", params=["base", "biased"])
def modernbert_tiny(request):
    """(config, model, its HF state dict): ModernBERT-base's switches (no biases) or every bias on."""
    extra = {}
    if request.param == "biased":
        extra = dict(norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True)
    config = ModernBertConfig(**MODERNBERT_TINY, **extra)
    model = modernbert.build_model(config, seed=1)
    return config, model, convert.flax_to_hf_state(model)


def test_modernbert_save_then_load_is_identity(modernbert_tiny, tmp_path):
    config, model, state = modernbert_tiny
    convert.save_hf(model, tmp_path)
    assert convert.read_hf_weights(tmp_path).keys() == state.keys()
    loaded = convert.load_hf(tmp_path)
    assert isinstance(loaded, modernbert.ModernBertForMaskedLM)
    assert loaded.config == config and _params_equal(loaded, model)
    assert "decoder.weight" not in state  # tied: transformers 5 leaves it out too
    assert ("model.layers.0.attn_norm.weight" in state) is False  # layer 0 has no attn_norm
    assert ("model.layers.1.attn.Wqkv.bias" in state) is config.attention_bias
    assert ("model.final_norm.bias" in state) is config.norm_bias


def test_modernbert_flax_dir_and_cli_round_trip(modernbert_tiny, tmp_path, capsys):
    config, model, state = modernbert_tiny
    convert.save_flax(model, tmp_path / "flax")
    assert _params_equal(convert.load_flax(tmp_path / "flax"), model)
    src = _write_hf(tmp_path / "src", state, config.to_hf_dict())
    assert cli.main(["convert", "hf-to-flax", "--src", src, "--out", str(tmp_path / "f2")]) == 0
    assert (
        cli.main(["convert", "flax-to-hf", "--src", str(tmp_path / "f2"), "--out", str(tmp_path / "hf")]) == 0
    )
    assert capsys.readouterr().out.count("ModernBertForMaskedLM") == 2
    out = convert.read_hf_weights(tmp_path / "hf")
    assert out.keys() == state.keys() and all(np.array_equal(out[k], state[k]) for k in state)


def test_modernbert_bare_encoder_gets_fresh_head(modernbert_tiny, tmp_path):
    """A bare ModernBertModel (keys without "model.", no head) loads, with a freshly initialised head."""
    config, model, state = modernbert_tiny
    bare = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    loaded, info = convert.load_hf_with_info(_write_hf(tmp_path, bare, config.to_hf_dict()), seed=7)
    assert info.fresh_head and not info.ignored_keys
    ours, theirs = convert.flat_params(loaded), convert.flat_params(model)
    assert all(np.array_equal(ours[k], theirs[k]) for k in theirs if k.startswith("model/"))
    assert not np.array_equal(ours["head/dense/kernel"], theirs["head/dense/kernel"])
    assert 0 < ours["head/dense/kernel"].std() < 0.1


def test_modernbert_tied_decoder_copy_is_checked(modernbert_tiny, tmp_path):
    config, model, state = modernbert_tiny
    tied = {**state, "decoder.weight": state["model.embeddings.tok_embeddings.weight"]}
    loaded, info = convert.load_hf_with_info(_write_hf(tmp_path / "a", tied, config.to_hf_dict()))
    assert _params_equal(loaded, model) and info.ignored_keys == ["decoder.weight"]
    untied = {**state, "decoder.weight": np.ones((config.vocab_size, config.hidden_size), np.float32)}
    with pytest.raises(WWMError, match=r"decoder\.weight differs .*untied"):
        convert.load_hf(_write_hf(tmp_path / "b", untied, config.to_hf_dict()))


def test_modernbert_key_and_shape_problems_are_named(modernbert_tiny, tmp_path):
    config, _, state = modernbert_tiny
    missing = {k: v for k, v in state.items() if k != "model.layers.1.attn_norm.weight"}
    with pytest.raises(WWMError, match=r"missing keys: model\.layers\.1\.attn_norm\.weight"):
        convert.load_hf(_write_hf(tmp_path / "a", missing, config.to_hf_dict()))
    extra = {**state, "model.layers.0.attn_norm.weight": np.ones(16, np.float32)}
    with pytest.raises(WWMError, match=r"unexpected keys: model\.layers\.0\.attn_norm\.weight"):
        convert.load_hf(_write_hf(tmp_path / "b", extra, config.to_hf_dict()))
    wrong = {**config.to_hf_dict(), "intermediate_size": 25}
    with pytest.raises(
        WWMError, match=r"model\.layers\.0\.mlp\.Wi\.weight is \(48, 16\), config.json implies \(50, 16\)"
    ):
        convert.load_hf(_write_hf(tmp_path / "c", state, wrong))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 2.0}}},
            "rope_type='linear'",
        ),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_scaling"),
        ({"head_dim": 4}, "head_dim=4"),
        ({"tie_word_embeddings": False}, "tie_word_embeddings"),
        ({"sliding_window": 5}, "sliding_window=5"),
        ({"hidden_activation": "xielu"}, "hidden_activation 'xielu'"),
        ({"classifier_activation": "mish"}, "classifier_activation 'mish'"),
        ({"layer_types": ["full_attention"]}, "layer_types must list 3"),
        ({"layer_types": ["full_attention", "chunked_attention", "full_attention"]}, "layer_types"),
        ({"num_attention_heads": 3}, "not a multiple"),
        ({"pad_token_id": None}, "pad_token_id is null"),
    ],
)
def test_modernbert_unsupported_config_is_refused(change, message):
    hf = {**ModernBertConfig(**MODERNBERT_TINY).to_hf_dict(), **change}
    with pytest.raises(WWMError, match=message):
        convert.config_from_hf_dict(hf)


def test_model_type_dispatch_names_every_supported_type():
    assert isinstance(convert.config_from_hf_dict({"model_type": "modernbert"}), ModernBertConfig)
    assert convert.config_from_hf_dict({"model_type": "modernbert"}) == ModernBertConfig()
    assert isinstance(convert.config_from_hf_dict({"model_type": "roberta"}), EncoderConfig)
    legacy = {
        "model_type": "modernbert",
        "num_hidden_layers": 4,
        "global_attn_every_n_layers": 2,
        "sliding_window": 32,
    }
    read = convert.config_from_hf_dict(legacy)
    assert read.local_attention == 64 and read.layer_types == ("full_attention", "sliding_attention") * 2
    with pytest.raises(
        WWMError, match=r"'gpt2' is not supported; use one of \('bert', 'roberta', 'modernbert'\)"
    ):
        convert.config_from_hf_dict({"model_type": "gpt2"})


def test_modernbert_every_param_has_logical_axes(modernbert_tiny):
    from jax.sharding import PartitionSpec as P

    _, model, _ = modernbert_tiny
    axes = logical_axes(model)
    flat = convert.flat_params(model)
    pairs = []
    jax.tree.map(lambda names, v: pairs.append((names, v)), axes, nnx.to_pure_dict(nnx.state(model, nnx.Param)),
                 is_leaf=lambda x: isinstance(x, tuple))  # fmt: skip
    assert len(pairs) == len(flat)
    for names, value in pairs:
        assert len(names) == value.ndim and set(names) <= {*LOGICAL_AXIS_NAMES, None}
        assert len([n for n in names if n]) == len({n for n in names if n})
    layer = axes["model"]["layers"][1]
    assert layer["attn"]["Wqkv"]["kernel"] == ("embed", "heads") and layer["mlp"]["Wo"]["kernel"] == (
        "mlp",
        "embed",
    )
    assert axes["model"]["embeddings"]["tok_embeddings"]["embedding"] == ("vocab", "embed")
    with nnx.logical_axis_rules(
        [("vocab", "model"), ("heads", "model"), ("mlp", "model"), ("embed", "data")]
    ):
        specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    assert specs["model"]["layers"][0]["mlp"]["Wi"]["kernel"].get_value() == P("data", "model")
