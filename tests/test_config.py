"""The typed config system: YAML + dotted overrides -> RunConfig, with errors that name the key."""

from __future__ import annotations

import dataclasses
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from wwm.config import (
    DataConfig,
    RunConfig,
    TokenizerConfig,
    TokenizerTrainConfig,
    config_to_dict,
    from_dict,
    load_config,
    parse_overrides,
    path_field,
    save_config,
)
from wwm.errors import WWMError
from wwm.masking import MaskingConfig

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ the shipped configs


@pytest.mark.parametrize("path", sorted(glob.glob(str(REPO / "configs" / "*.yaml"))) or [None])
def test_every_shipped_config_parses(path):
    if path is None:
        pytest.skip("configs/ holds no YAML file")
    config = load_config(path)
    assert isinstance(config, RunConfig)
    assert isinstance(config.masking, MaskingConfig)


def test_tiny_config_is_the_default_run():
    config = load_config(REPO / "configs" / "tiny.yaml")
    assert config.data.source == "builtin"
    assert config.data.max_seq_len == 32  # short blocks: see the comment in configs/tiny.yaml
    assert config.data.packing == "full_sentences"
    assert config.data.validation_fraction == pytest.approx(0.02)
    assert config.tokenizer.train == TokenizerTrainConfig(kind="wordpiece", vocab_size=4000)
    assert config.tokenizer.path is None
    # output_dir is relative to the config file
    assert config.output_dir == str((REPO / "runs" / "tiny-jax").resolve())
    # each trainer gets its own run directory from the same config
    torch_config = load_config(REPO / "configs" / "tiny.yaml", ["train.framework=torch"])
    assert torch_config.output_dir == str((REPO / "runs" / "tiny-torch").resolve())


# ------------------------------------------------------------------ overrides


def test_dotted_overrides_parse_yaml_scalars(tmp_path):
    path = write(tmp_path, "data:\n  max_seq_len: 64\nmasking:\n  mask_prob: 0.1\n")
    config = load_config(
        path,
        [
            "data.max_seq_len=256",
            "masking.mask_prob=0.2",
            "data.validation_fraction=1e-2",  # YAML 1.1 would read a string
            "masking.max_predictions=null",
            "data.streaming=true",
            "masking.max_ngram=2",
            "masking.ngram_probs=[0.75, 0.25]",
            "tokenizer.train.kind=bpe",  # creates the optional section
        ],
    )
    assert config.data.max_seq_len == 256
    assert config.masking.mask_prob == 0.2
    assert config.data.validation_fraction == 0.01
    assert config.masking.max_predictions is None
    assert config.data.streaming is True
    assert config.masking.ngram_probs == (0.75, 0.25)
    assert config.tokenizer.train == TokenizerTrainConfig(kind="bpe")


def test_override_of_an_unknown_key_suggests_the_right_one():
    with pytest.raises(
        WWMError, match=r"'data\.max_seq_lenn' is unknown; did you mean 'data\.max_seq_len'\?"
    ):
        load_config(None, ["data.max_seq_lenn=256"])
    with pytest.raises(WWMError, match=r"'masking\.mask_prop' is unknown; did you mean 'masking\.mask_prob'"):
        parse_overrides(["masking.mask_prop=0.1"])
    with pytest.raises(WWMError, match="has no sub-keys"):
        load_config(None, ["seed.x=1"])


def test_override_without_equals_sign():
    with pytest.raises(WWMError, match="key=value"):
        load_config(None, ["data.max_seq_len"])


def test_later_override_wins():
    config = load_config(None, ["seed=1", "seed=2"])
    assert config.seed == 2


# ------------------------------------------------------------------ types


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.max_seq_len=abc", r"'data\.max_seq_len' expects an integer; got 'abc'"),
        (
            "data.max_seq_len='256'",
            r"'data\.max_seq_len' expects an integer; got '256' \(str\)",
        ),  # no str->int
        ("data.max_seq_len=1.5", r"'data\.max_seq_len' expects an integer; got 1\.5"),
        ("seed=true", r"'seed' expects an integer; got True \(bool\)"),
        ("data.streaming=1", r"'data\.streaming' expects a boolean"),
        ("masking.mask_prob=high", r"'masking\.mask_prob' expects a number"),
        ("data.text_column=3", r"'data\.text_column' expects a string; got 3 \(int\) \(quote it"),
        ("data.packing=full_sentence", r"must be one of 'full_sentences', 'doc_per_block'.*did you mean"),
        ("data.train_files=abc.txt", r"'data\.train_files' expects a list of a string"),
        ("masking.ngram_probs=[0.5, x]", r"'masking\.ngram_probs\[1\]' expects a number"),
        ("tokenizer.train=5", r"'tokenizer\.train' must be a mapping of TokenizerTrainConfig"),
        ("masking.max_predictions=0.5", r"'masking\.max_predictions' expects null or an integer"),
    ],
)
def test_wrong_types_name_the_key_and_the_expected_type(override, message):
    with pytest.raises(WWMError, match=message):
        load_config(None, [override])


def test_int_is_promoted_to_float():
    config = load_config(None, ["masking.mask_prob=1", "data.validation_fraction=0"])
    assert isinstance(config.masking.mask_prob, float)
    assert isinstance(config.data.validation_fraction, float)


def test_unknown_key_in_a_file(tmp_path):
    path = write(tmp_path, "data:\n  max_seq_lenn: 3\n")
    with pytest.raises(WWMError, match=r"did you mean 'data\.max_seq_len'"):
        load_config(path)
    path = write(tmp_path, "modle:\n  hidden: 3\n")
    with pytest.raises(WWMError, match=r"config key 'modle' is unknown"):
        load_config(path)


def test_section_validation_runs(tmp_path):
    with pytest.raises(WWMError, match=r"masking\.mask_prob must be a probability"):
        load_config(None, ["masking.mask_prob=2"])
    with pytest.raises(WWMError, match=r"data\.validation_fraction must be in \[0, 1\)"):
        load_config(None, ["data.validation_fraction=1.5"])
    with pytest.raises(WWMError, match=r"data\.train_files is empty"):
        load_config(None, ["data.source=files"])
    with pytest.raises(WWMError, match="not both"):
        load_config(None, ["data.validation_fraction=0.1", "data.validation_files=[a.txt]"])
    with pytest.raises(WWMError, match=r"either tokenizer\.path"):
        load_config(None, ["tokenizer.path=bert-base-uncased", "tokenizer.train.kind=bpe"])
    with pytest.raises(WWMError, match="max_seq_len must be between"):
        load_config(None, ["data.max_seq_len=4"])


def test_bad_files(tmp_path):
    with pytest.raises(WWMError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(WWMError, match="not valid YAML"):
        load_config(write(tmp_path, "data: [1, 2\n"))
    with pytest.raises(WWMError, match="must hold a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))
    assert load_config(write(tmp_path, "")) == RunConfig()


# ------------------------------------------------------------------ paths


def test_relative_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    sub = tmp_path / "configs"
    sub.mkdir()
    (tmp_path / "tok").mkdir()
    path = write(
        sub,
        "output_dir: ../runs/a\n"
        "data:\n  source: files\n  train_files: [../corpus/*.txt, ~/x.txt]\n"
        "  cache_dir: cache\n"
        "tokenizer:\n  path: ../tok\n",
    )
    monkeypatch.chdir(REPO)
    config = load_config(path)
    assert config.output_dir == str(tmp_path / "runs" / "a")
    assert config.data.train_files == (str(tmp_path / "corpus" / "*.txt"), os.path.expanduser("~/x.txt"))
    assert config.data.cache_dir == str(sub / "cache")
    assert config.tokenizer.path == str(tmp_path / "tok")
    # Hub names stay names; overrides resolve against the current directory.
    monkeypatch.chdir(tmp_path)
    config = load_config(path, ["tokenizer.path=bert-base-uncased", "data.cache_dir=here"])
    assert config.tokenizer.path == "bert-base-uncased"
    assert config.data.cache_dir == str(tmp_path / "here")
    config = load_config(path, ["tokenizer.path=./tok"])
    assert config.tokenizer.path == str(tmp_path / "tok")


def test_save_and_reload_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None, ["data.max_seq_len=64", "masking.ngram_probs=[0.5, 0.5]", "masking.max_ngram=2",
                                "tokenizer.train.vocab_size=1234", "data.train_files=[/a.txt]"])  # fmt: skip
    save_config(config, tmp_path / "sub" / "saved.yaml")
    reloaded = load_config(tmp_path / "sub" / "saved.yaml")
    # The relative default output_dir was written as an absolute path (relative to the cwd).
    assert reloaded == dataclasses.replace(config, output_dir=str(tmp_path / "runs" / "wwm-jax"))
    as_dict = config_to_dict(config)
    assert as_dict["masking"]["ngram_probs"] == [0.5, 0.5]
    assert as_dict["data"]["train_files"] == ["/a.txt"]


# ------------------------------------------------------------------ a section added by someone else


@dataclass(frozen=True)
class _Optim:
    lr: float = 1e-3
    schedule: Literal["linear", "cosine"] = "linear"
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int | None = None
    decay_exclude: list[str] = field(default_factory=lambda: ["bias"])
    per_layer: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Run:
    optim: _Optim = field(default_factory=_Optim)
    data: DataConfig = field(default_factory=DataConfig)
    checkpoint_dir: str | None = path_field(None)


def test_a_new_section_needs_no_parsing_code():
    run = from_dict(
        _Run,
        {
            "optim": {
                "lr": 1,
                "schedule": "cosine",
                "betas": [0.9, 0.98],
                "warmup_steps": None,
                "decay_exclude": ["bias", "norm"],
                "per_layer": {"emb": 0.1},
            },
            "data": {"max_seq_len": 64},
        },
    )
    assert run.optim == _Optim(1.0, "cosine", (0.9, 0.98), None, ["bias", "norm"], {"emb": 0.1})
    assert isinstance(run.optim.lr, float)
    with pytest.raises(WWMError, match=r"'optim\.betas' expects 2 items; got 3"):
        from_dict(_Run, {"optim": {"betas": [1, 2, 3]}})
    with pytest.raises(WWMError, match=r"'optim\.per_layer\.emb' expects a number"):
        from_dict(_Run, {"optim": {"per_layer": {"emb": "x"}}})
    with pytest.raises(WWMError, match=r"'optim\.sched' is unknown; did you mean 'optim\.schedule'"):
        parse_overrides(["optim.sched=cosine"], _Run)
    assert parse_overrides(["optim.lr=3e-4"], _Run) == {"optim": {"lr": 3e-4}}


def test_every_field_of_the_sections_has_a_default():
    # RunConfig() must be constructible so that a config file only lists what it changes.
    for cls in (RunConfig, DataConfig, TokenizerConfig, TokenizerTrainConfig):
        for f in dataclasses.fields(cls):
            assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, (
                f.name
            )


def test_cli_prints_config_errors_as_one_line(tmp_path, capsys):
    from wwm_cli import main

    rc = main(["prepare", "--config", str(write(tmp_path, "data:\n  packing: wrong\n")), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "data.packing" in err and "Traceback" not in err


# ------------------------------------------------------------------ issue 21: what YAML and floats let through


def test_a_key_written_twice_is_refused_naming_both_lines(tmp_path, capsys):
    """A second `masking:` section silently replaced the first (PyYAML keeps the last key)."""
    path = write(tmp_path, "masking:\n  mask_prob: 0.3\nseed: 1\nmasking:\n  max_ngram: 3\n")
    with pytest.raises(WWMError, match=r"the key 'masking' appears twice in one mapping \(lines 1 and 4\)"):
        load_config(path)
    with pytest.raises(WWMError, match=r"'mask_prob' appears twice .*lines 2 and 3"):
        load_config(write(tmp_path, "masking:\n  mask_prob: 0.3\n  mask_prob: 0.2\n"))
    from wwm_cli import main

    assert main(["prepare", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "appears twice" in err
    # YAML merge keys may still override what they bring in.
    merged = load_config(
        write(tmp_path, "masking:\n  <<: {mask_prob: 0.3, max_ngram: 2}\n  mask_prob: 0.2\n")
    )
    assert merged.masking.mask_prob == 0.2 and merged.masking.max_ngram == 2


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN"])
def test_nan_and_infinite_floats_are_refused_in_any_float_field(tmp_path, value):
    with pytest.raises(
        WWMError, match=r"config key 'optim.learning_rate' is (nan|inf|-inf); give a finite number"
    ):
        load_config(None, [f"optim.learning_rate={value}"])
    with pytest.raises(WWMError, match=r"'model.global_rope_theta' is"):
        load_config(write(tmp_path, f"model:\n  type: modernbert\n  global_rope_theta: {value}\n"))
    with pytest.raises(WWMError, match=r"optim.learning_rate must be a finite number > 0"):
        from wwm.config import OptimConfig

        OptimConfig(learning_rate=float(value.replace(".", "").replace("NaN", "nan")))


def test_the_position_table_is_never_enlarged_silently_and_wsd_is_checked_before_any_work():
    with pytest.raises(
        WWMError, match=r"model.max_position_embeddings is 64 but data.max_seq_len 128 needs 128"
    ):
        load_config(None, ["model.max_position_embeddings=64"])
    with pytest.raises(WWMError, match=r"needs 130 \(RoBERTa's position ids start at pad \+ 1"):
        load_config(None, ["model.type=roberta", "model.max_position_embeddings=128"])
    assert (
        load_config(
            None, ["model.type=roberta", "model.max_position_embeddings=130"]
        ).model.max_position_embeddings
        == 130
    )
    with pytest.raises(WWMError, match=r"optim.warmup_steps \(100\) \+ optim.decay_steps \(950\) exceed"):
        load_config(None, ["optim.schedule=wsd", "optim.decay_steps=950"])  # at load time, not after the data


def test_logging_report_to_takes_the_older_tensorboard_switch():
    assert load_config(None).logging.report_to == ("tensorboard",)
    assert load_config(None, ["logging.tensorboard=false"]).logging.report_to == ()
    assert load_config(None, ["logging.report_to=[wandb, mlflow]", "logging.tensorboard=true"]).logging.report_to == (
        "wandb", "mlflow", "tensorboard")  # fmt: skip
    with pytest.raises(WWMError, match="must be one of 'tensorboard', 'wandb', 'mlflow'; got 'comet'"):
        load_config(None, ["logging.report_to=[comet]"])


# ------------------------------------------------------------------ Literals and the code that reads them
def _choices(section: type, name: str) -> tuple:
    import typing

    return typing.get_args(typing.get_type_hints(section)[name])


def test_every_closed_choice_of_the_config_equals_the_constant_of_the_code_that_reads_it():
    """A Literal of the config and the table of the module that acts on it are written in two places: they
    must name the same choices (a value added to one only would pass the config and fail at use)."""
    from wwm import tokenizer_train, words
    from wwm.attention import NAMES as ATTENTION_NAMES
    from wwm.config import BertModelConfig, ModernBertModelConfig, OptimConfig, TrainConfig
    from wwm.data.builtin import SAMPLE_LANGS
    from wwm.data.packing import PACKING_RULE
    from wwm.families import FAMILIES
    from wwm_jax.families import JAX_FAMILIES
    from wwm_jax.layers import ACTIVATIONS
    from wwm_jax.modernbert import ACTIVATIONS as MODERNBERT_ACTIVATIONS
    from wwm_torch.trainer import SCHEDULES

    assert _choices(TokenizerConfig, "word_policy") == (*words.POLICIES, *words.POLICY_ALIASES)
    assert _choices(TokenizerConfig, "segmenter") == words.SEGMENTERS
    assert _choices(TokenizerTrainConfig, "kind") == tokenizer_train.ALL_KINDS
    assert _choices(TrainConfig, "attn_implementation") == ATTENTION_NAMES
    assert _choices(OptimConfig, "schedule") == tuple(SCHEDULES)
    assert _choices(DataConfig, "packing") == tuple(PACKING_RULE)
    assert _choices(DataConfig, "builtin_lang") == SAMPLE_LANGS
    model_types = (*_choices(BertModelConfig, "type"), *_choices(ModernBertModelConfig, "type"))
    assert model_types == tuple(FAMILIES) == tuple(JAX_FAMILIES)
    assert set(_choices(BertModelConfig, "hidden_act")) == set(ACTIVATIONS)
    assert set(_choices(ModernBertModelConfig, "classifier_activation")) <= set(MODERNBERT_ACTIVATIONS)


def test_the_literal_check_can_fail():
    """Negative control: a Literal with one choice more than its constant is told apart."""

    @dataclass(frozen=True)
    class Section:
        kind: Literal["wordpiece", "bpe", "unigram", "modernbert", "sentencepiece"] = "bpe"

    from wwm import tokenizer_train

    assert _choices(Section, "kind") != tokenizer_train.KINDS
