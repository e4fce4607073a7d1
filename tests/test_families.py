"""A model family is one record: `model.type` selects the family's own config section (old spellings map
with one deprecation line; keys of another family are refused by name), and the core record (initial-weight
specs, tied keys) agrees with the JAX record (name table, config class) for every family."""

from __future__ import annotations

import dataclasses
import typing
import warnings

import pytest

from wwm.config import BertModelConfig, ModelConfig, ModernBertModelConfig, RunConfig, from_dict, load_config
from wwm.errors import WWMError, WWMWarning
from wwm.families import FAMILIES, family

SHAPE = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 48}


def _load(model: dict, overrides: tuple[str, ...] = ()):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = {"model": model, "output_dir": "unused"}
        config = load_config(None, list(overrides)) if not model else from_dict(RunConfig, data)
    return config, [str(w.message) for w in caught if issubclass(w.category, WWMWarning)]


# ----------------------------------------------------------------------------------------- the sections
def test_model_type_selects_a_section_with_only_its_familys_fields():
    bert, _ = _load({"type": "roberta", **SHAPE})
    modern, warned = _load({"type": "modernbert", **SHAPE, "local_attention": 8})
    assert type(bert.model) is BertModelConfig and type(modern.model) is ModernBertModelConfig
    assert (modern.model.local_attention, warned) == (8, [])
    bert_fields = {f.name for f in dataclasses.fields(BertModelConfig)}
    modern_fields = {f.name for f in dataclasses.fields(ModernBertModelConfig)}
    assert {"layer_norm_eps", "type_vocab_size"} <= bert_fields - modern_fields
    assert {"local_attention", "norm_eps", "global_rope_theta"} <= modern_fields - bert_fields
    assert type(RunConfig().model) is BertModelConfig  # the default family
    # Each family's record names its section, and the section's Literal names the family.
    for name, record in FAMILIES.items():
        assert name in typing.get_args(typing.get_type_hints(record.section)["type"])


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"type": "bert", "local_attention": 8}, r"'model\.local_attention' is not a key of model\.type 'bert' "
                                                 r"\(it is one of model\.type 'modernbert'\)"),
        ({"type": "modernbert", "hiden_size": 8}, r"'model\.hiden_size' is unknown; did you mean 'model\.hidden_size'"),
        ({"type": "modernbert", "local_atention": 8}, r"did you mean 'model\.local_attention'"),
        ({"type": "modernbert", "modernbert": {"local_atention": 8}},
         r"'model\.modernbert\.local_atention' is unknown; did you mean 'model\.modernbert\.local_attention'"),
        ({"type": "modernbert", "modernbert": {"local_attention": 15}}, r"model\.modernbert\.local_attention must be"),
        ({"type": "modernbert", "local_attention": 15}, r"^model\.local_attention must be an even number"),
        ({"type": "gpt2"}, r"'model\.type' must be one of 'bert', 'roberta', 'modernbert'; got 'gpt2'"),
        ({"type": "modernbert", "local_attention": 8, "modernbert": {"local_attention": 16}},
         r"'model\.modernbert\.local_attention' and 'model\.local_attention' set one setting to two values"),
    ],
)  # fmt: skip
def test_wrong_model_keys_are_one_line_errors_that_name_the_key(model, message):
    with pytest.raises(WWMError, match=message):
        from_dict(RunConfig, {"model": model})


def test_the_old_spelling_loads_the_same_config_with_one_deprecation_line(tmp_path):
    """`model.modernbert: {...}` (the spelling before per-family sections), in a file or as an override,
    is the same run as the keys under `model:`; one WWMWarning says so. An old run record's BERT section
    (which carried `model.modernbert` and BERT's keys for every family) loads too."""
    new, none = _load({"type": "modernbert", **SHAPE, "local_attention": 8, "global_attn_every_n_layers": 2})
    old, warned = _load({"type": "modernbert", **SHAPE, "modernbert": {"local_attention": 8,
                                                                       "global_attn_every_n_layers": 2}})  # fmt: skip
    assert old == new and none == []
    assert len(warned) == 1 and "config key 'model.modernbert' is deprecated" in warned[0]
    assert "model.local_attention" in warned[0]
    by_override, warned = _load({}, ("model.type=modernbert", "model.modernbert.local_attention=8",
                                     *(f"model.{k}={v}" for k, v in SHAPE.items()), "model.global_attn_every_n_layers=2",
                                     "output_dir=unused"))  # fmt: skip
    assert by_override.model == new.model and len(warned) == 1
    recorded_bert, warned = _load({"type": "bert", **SHAPE, "layer_norm_eps": 1e-12,
                                   "modernbert": {"local_attention": 128}})  # fmt: skip
    assert recorded_bert.model == BertModelConfig(**SHAPE) and len(warned) == 1 and "ignored" in warned[0]
    recorded_modern, warned = _load(
        {"type": "modernbert", **SHAPE, "layer_norm_eps": 1e-12, "type_vocab_size": None}
    )
    assert recorded_modern.model == ModernBertModelConfig(**SHAPE) and len(warned) == 2


def test_a_run_recorded_in_the_old_spelling_resumes_without_a_changed_setting(tmp_path):
    """rundir compares the recorded config (old spelling) with today's in today's spelling."""
    import yaml

    from wwm.config import resolved_dict
    from wwm.rundir import decide

    config = load_config(None, ["model.type=modernbert", "model.local_attention=8", f"output_dir={tmp_path}"])
    recorded = resolved_dict(config)
    modern = {k: recorded["model"].pop(k) for k in ("local_attention", "norm_eps", "global_rope_theta")}
    recorded["model"] |= {"modernbert": modern, "layer_norm_eps": 1e-12, "type_vocab_size": None}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(recorded))
    (tmp_path / "run.json").write_text('{"format": 1, "framework": "jax", "history": []}')
    assert decide(config, "jax").changed == {}
    other = dataclasses.replace(config, model=dataclasses.replace(config.model, local_attention=16))
    assert decide(other, "jax").changed == {"model.local_attention": (8, 16)}


def test_model_config_builds_the_section_of_its_type():
    assert ModelConfig(**SHAPE) == BertModelConfig(**SHAPE)
    assert ModelConfig(type="modernbert", **SHAPE, local_attention=8).local_attention == 8
    from wwm.config.sections import ModernBertFields

    with pytest.warns(WWMWarning, match="deprecated"):
        old = ModelConfig(type="modernbert", **SHAPE, modernbert=ModernBertFields(local_attention=8))
    assert old == ModelConfig(type="modernbert", **SHAPE, local_attention=8)
    with pytest.raises(WWMError, match="model_type 'gpt2' is not supported"):
        ModelConfig(type="gpt2")


# ----------------------------------------------------------------------------------------- the records
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_core_and_the_jax_records_describe_one_model(name, wordpiece_tokenizer):
    """For every family: the initial weights' tensors are exactly the JAX name table's HF keys, with the
    shapes of the Flax model the config class builds; every tied key's source is one of them; the section's
    config.json names the record's architecture; the JAX record carries the core one."""
    from wwm.initial_weights import tensor_specs
    from wwm_jax import convert
    from wwm_jax.families import JAX_FAMILIES

    record, jax_record = family(name), JAX_FAMILIES[name]
    assert jax_record.core is record and jax_record.tied == record.tied
    section = record.section(type=name, **SHAPE)
    hf = section.hf_config_dict(wordpiece_tokenizer, 32)
    assert hf["model_type"] == name and hf["architectures"] == [record.architecture]
    config = convert.config_from_hf_dict(hf)
    assert type(config) is jax_record.config_class and config.architecture == record.architecture
    specs = {s.key: s.shape for s in tensor_specs(hf)}
    table = jax_record.name_table(config)
    assert sorted(e.hf_key for e in table) == sorted(specs)  # the same tensors
    shapes = convert.expected_shapes(config)
    for entry in table:
        assert (shapes[entry.flax_path][::-1] if entry.transpose else shapes[entry.flax_path]) == specs[
            entry.hf_key
        ]
    assert set(record.tied.values()) <= specs.keys() and not set(record.tied) & specs.keys()
