"""Typed run configuration: nested dataclasses read from YAML, with dotted overrides.

A run is described by one ``RunConfig``. Each section is a dataclass whose fields carry type hints;
``from_dict`` walks those hints, so a section needs no parsing code of its own:

    config = load_config("configs/tiny.yaml", ["data.max_seq_len=256", "masking.mask_prob=0.2"])

* YAML is read with ``yaml.safe_load`` semantics, except that ``1e-4`` is a float (YAML 1.2), not a string.
* An override ``a.b.c=VALUE`` parses VALUE as a YAML scalar or flow value (``null``, ``true``, ``[1, 2]``).
* Unknown keys and values of the wrong type raise ``WWMError`` naming the key path, the expected type and,
  for a misspelt key, the closest known key. Types handled: bool, int, float (an int is promoted; a string
  never becomes a number), str, Literal, Optional / unions, tuple/list, dict and nested dataclasses.
* Fields marked with ``path_field`` hold file-system paths: a relative path in the file resolves relative
  to the config file's folder, one given as an override relative to the current directory; ``~`` expands.

Adding a section (model, optim, train, ...) is one field of ``RunConfig`` whose type is a dataclass with
defaults; validation goes into that dataclass's ``__post_init__`` (raise ``WWMError``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from wwm.errors import WWMError
from wwm.masking import MaskingConfig
from wwm.train_config import (
    CheckpointConfig,
    EvalConfig,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
    ParallelConfig,
    TrainConfig,
)

__all__ = [
    "DataConfig",
    "RunConfig",
    "TokenizerConfig",
    "TokenizerTrainConfig",
    "apply_overrides",
    "config_to_dict",
    "from_dict",
    "load_config",
    "parse_overrides",
    "path_field",
    "resolved_dict",
    "save_config",
]

_PATH_KEY = "wwm_path"


def path_field(default: Any = None, *, hub: bool = False, **kwargs: Any) -> Any:
    """A dataclass field that holds a path (or a list of paths).

    ``hub=True``: the value may also be a Hugging Face Hub name ("bert-base-uncased"); it is resolved as a
    path only if that path exists or the value starts with ".", "/" or "~".
    """
    metadata = {_PATH_KEY: "hub" if hub else "file"}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


# --------------------------------------------------------------------------------------------------
# Sections defined by the data pipeline
# --------------------------------------------------------------------------------------------------

SOURCES = ("builtin", "files", "hub")
PACKINGS = ("full_sentences", "doc_per_block")


@dataclass(frozen=True)
class DataConfig:
    """Where the text comes from and how it becomes blocks of ``max_seq_len`` tokens (docs/data.md)."""

    source: Literal["builtin", "files", "hub"] = "builtin"
    builtin_lang: Literal["en", "zh", "ja", "th"] = "en"
    # source: files. Files, folders (every file inside, recursively, sorted) or glob patterns.
    train_files: tuple[str, ...] = path_field(())
    file_format: Literal["auto", "text", "jsonl", "parquet"] = "auto"
    text_column: str = "text"
    document_separator: Literal["line", "blank_line"] = "line"
    # source: hub (needs network on the first run; the download is cached by `datasets`).
    hub_dataset: str | None = None
    hub_config: str | None = None
    hub_split: str = "train"
    hub_revision: str | None = None
    max_documents: int | None = None  # use only the first N non-empty documents (quick runs)
    streaming: bool = False
    shuffle_buffer: int = 10_000  # streaming only: blocks held by the shuffle buffer
    max_seq_len: int = 128
    packing: Literal["full_sentences", "doc_per_block"] = "full_sentences"
    validation_fraction: float = 0.0
    validation_files: tuple[str, ...] = path_field(())
    split_seed: int = 0  # seeds the document hash that picks validation documents
    num_proc: int = 1
    map_batch_size: int = 1000
    cache_dir: str | None = path_field(None)  # null: $WWM_CACHE_DIR or ~/.cache/wwm

    def __post_init__(self) -> None:
        if self.max_seq_len < 8 or self.max_seq_len > 1 << 20:
            raise WWMError(f"data.max_seq_len must be between 8 and 1048576 tokens; got {self.max_seq_len}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise WWMError(
                f"data.validation_fraction must be in [0, 1) (e.g. 0.02); got {self.validation_fraction}"
            )
        if self.validation_fraction > 0 and self.validation_files:
            raise WWMError(
                "set either data.validation_fraction or data.validation_files, not both; "
                "use validation_fraction: 0 with validation_files"
            )
        if self.source == "files" and not self.train_files:
            raise WWMError(
                "data.source is 'files' but data.train_files is empty; list your text/jsonl/parquet files, "
                "folders or glob patterns under data.train_files"
            )
        if self.source == "hub" and not self.hub_dataset:
            raise WWMError(
                "data.source is 'hub' but data.hub_dataset is not set; give a dataset name such as "
                "'wikitext' (with data.hub_config: wikitext-103-raw-v1)"
            )
        for name in ("num_proc", "map_batch_size"):
            if getattr(self, name) < 1:
                raise WWMError(f"data.{name} must be >= 1; got {getattr(self, name)}")
        if self.shuffle_buffer < 0:
            raise WWMError(f"data.shuffle_buffer must be >= 0 (0: stream order); got {self.shuffle_buffer}")
        if self.max_documents is not None and self.max_documents < 1:
            raise WWMError(f"data.max_documents must be >= 1 or null; got {self.max_documents}")
        if not 0 <= self.split_seed < 2**64:
            raise WWMError(f"data.split_seed must be in [0, 2^64); got {self.split_seed}")


@dataclass(frozen=True)
class TokenizerTrainConfig:
    """Train a tokenizer on the training documents (saved to <output_dir>/tokenizer)."""

    kind: Literal["wordpiece", "bpe", "unigram"] = "wordpiece"
    vocab_size: int = 4000
    lowercase: bool | None = None  # null: True for wordpiece, False otherwise
    min_frequency: int = 2


@dataclass(frozen=True)
class TokenizerConfig:
    """A fast tokenizer: ``path`` (a folder, a tokenizer.json file or a Hub name) or ``train``."""

    path: str | None = path_field(None, hub=True)
    train: TokenizerTrainConfig | None = None
    word_policy: Literal["tokenizer", "whitespace", "vocab", "segmenter", "cjk"] = "tokenizer"
    # policy segmenter (old name cjk): auto picks jieba / fugashi / pythainlp per text run (docs/words.md)
    segmenter: Literal["auto", "jieba", "fugashi", "pythainlp", "none"] = "auto"

    def __post_init__(self) -> None:
        if self.path is not None and self.train is not None:
            raise WWMError(
                "set either tokenizer.path (an existing tokenizer) or tokenizer.train (train one), not both"
            )
        if self.segmenter != "auto" and self.word_policy not in ("segmenter", "cjk"):
            raise WWMError(
                f"tokenizer.segmenter {self.segmenter!r} applies only to word_policy 'segmenter', but "
                f"word_policy is {self.word_policy!r}; set word_policy: segmenter, or remove segmenter"
            )


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs. Add a section as one more field (a dataclass with defaults)."""

    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    # The trainers' sections (wwm/train_config.py), shared by the JAX and the PyTorch trainer.
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    seed: int = 0
    # "{framework}" is replaced by train.framework when the config is built (`--framework torch` too),
    # so that the shipped configs give each trainer its own run directory.
    output_dir: str = path_field("runs/wwm-{framework}")

    def __post_init__(self) -> None:
        if "{framework}" in self.output_dir:
            object.__setattr__(
                self, "output_dir", self.output_dir.replace("{framework}", self.train.framework)
            )
        if "{" in self.output_dir or "}" in self.output_dir:
            raise WWMError(
                f"output_dir {self.output_dir!r} holds a placeholder other than {{framework}}; "
                "write the folder name out"
            )


# --------------------------------------------------------------------------------------------------
# Generic dataclass <- dict
# --------------------------------------------------------------------------------------------------


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _describe(tp: Any) -> str:
    """A human name for a type hint, used in error messages."""
    if tp is Any:
        return "any value"
    if _is_union(tp):
        args = typing.get_args(tp)
        parts = [_describe(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"null or {text}" if type(None) in args else text
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return f"a list of {_describe(inner)}"
    if origin is dict:
        args = typing.get_args(tp)
        return f"a mapping of {_describe(args[1]) if args else 'values'}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _type_error(path: str, tp: Any, value: Any) -> WWMError:
    hint = ""
    if isinstance(value, str) and tp in (int, float):
        hint = " (write the number without quotes)"
    elif tp is str and isinstance(value, (int, float, bool)):
        hint = f" (quote it: '{value}')"
    return WWMError(
        f"config key '{path}' expects {_describe(tp)}; got {value!r} ({type(value).__name__}){hint}"
    )


def _convert(tp: Any, value: Any, path: str) -> Any:
    if tp is Any:
        return value
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _type_error(path, tp, value)
        candidates = [a for a in args if a is not type(None)]
        if len(candidates) == 1:
            if candidates[0] in (bool, int, float, str):
                try:
                    return _convert(candidates[0], value, path)
                except WWMError:
                    raise _type_error(path, tp, value) from None
            return _convert(candidates[0], value, path)
        for arg in candidates:
            try:
                return _convert(arg, value, path)
            except WWMError:
                continue
        raise _type_error(path, tp, value)
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            if value == choice and type(value) is type(choice):
                return value
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        suggestion = f"; did you mean {close[0]!r}?" if close else ""
        raise WWMError(
            f"config key '{path}' must be one of {', '.join(repr(c) for c in choices)}; got {value!r}"
            + suggestion
        )
    if origin in (tuple, list) or tp in (tuple, list):
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
            raise _type_error(path, tp, value)
        args = typing.get_args(tp)
        items = list(value)
        if origin is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
            if len(items) != len(args):
                raise WWMError(f"config key '{path}' expects {len(args)} items; got {len(items)}")
            converted = [
                _convert(a, v, _join(path, i)) for i, (a, v) in enumerate(zip(args, items, strict=True))
            ]
        else:
            inner = args[0] if args else Any
            converted = [_convert(inner, v, _join(path, i)) for i, v in enumerate(items)]
        return tuple(converted) if (origin or tp) is tuple else converted
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _type_error(path, tp, value)
        args = typing.get_args(tp) or (Any, Any)
        return {
            _convert(args[0], k, _join(path, str(k))): _convert(args[1], v, _join(path, str(k)))
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(path, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(path, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(path, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(path, tp, value)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _type_error(path, tp, value)
    raise TypeError(f"config field '{path}' has a type hint the loader does not handle: {tp!r}")


def _unknown_key(path: str, key: Any, known: Iterable[str]) -> WWMError:
    full = _join(path, str(key))
    known = list(known)
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    if close:
        return WWMError(f"config key '{full}' is unknown; did you mean '{_join(path, close[0])}'?")
    where = f"section '{path}'" if path else "the top level"
    return WWMError(f"config key '{full}' is unknown; the keys of {where} are: {', '.join(known)}")


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def from_dict(cls: type, data: Mapping[str, Any] | None, path: str = "") -> Any:
    """Build the dataclass ``cls`` from a (YAML) mapping, checking every key and type.

    Missing keys take the field's default; ``path`` is the dotted prefix used in error messages.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        where = f"config key '{path}'" if path else "the config"
        raise WWMError(f"{where} must be a mapping of {cls.__name__} fields; got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = _fields(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown_key(path, key, fields)
        kwargs[key] = _convert(hints[key], value, _join(path, key))
    try:
        return cls(**kwargs)
    except WWMError:
        raise
    except (TypeError, ValueError) as err:
        where = f"config section '{path}'" if path else "the config"
        raise WWMError(f"{where} is invalid: {err}") from err


def config_to_dict(config: Any) -> Any:
    """A config dataclass as plain YAML-ready data (dicts, lists, scalars)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, Mapping):
        return {k: config_to_dict(v) for k, v in config.items()}
    return config


# --------------------------------------------------------------------------------------------------
# YAML, paths and overrides
# --------------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 1e-4 and 5E+3 as floats (YAML 1.2), as people write them."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise WWMError(f"{where} is not valid YAML: {' '.join(str(err).split())}") from err


def _resolve_one(value: Any, kind: str, base: Path) -> Any:
    if not isinstance(value, str) or not value:
        return value
    expanded = os.path.expanduser(value)
    if os.path.isabs(expanded):
        return expanded
    candidate = base / expanded
    if kind == "hub" and not (candidate.exists() or value.startswith((".", "~"))):
        return value  # a Hub name such as "bert-base-uncased" or "org/model"
    return os.path.normpath(str(candidate))


def _resolve_paths(cls: type, data: Any, base: Path) -> Any:
    """A copy of ``data`` with the path fields of ``cls`` (recursively) resolved against ``base``."""
    if not isinstance(data, Mapping):
        return data
    hints = typing.get_type_hints(cls)
    fields = _fields(cls)
    out = dict(data)
    for key, value in data.items():
        if key not in fields:
            continue  # reported by from_dict
        kind = fields[key].metadata.get(_PATH_KEY)
        if kind:
            if isinstance(value, (list, tuple)):
                out[key] = [_resolve_one(v, kind, base) for v in value]
            else:
                out[key] = _resolve_one(value, kind, base)
            continue
        sub = _dataclass_of(hints[key])
        if sub is not None:
            out[key] = _resolve_paths(sub, value, base)
    return out


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass in a hint (``X`` or ``X | None``), or None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if _is_union(tp):
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        if len(inner) == 1:
            return inner[0]
    return None


def parse_overrides(overrides: Iterable[str], cls: type | None = None) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}``, checking each key against ``cls``."""
    cls = cls or RunConfig
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise WWMError(f"override {item!r} is not of the form key=value; write e.g. data.max_seq_len=256")
        parts = key.split(".")
        section: type | None = cls
        node = nested
        for depth, part in enumerate(parts):
            prefix = ".".join(parts[:depth])
            if section is None:
                raise WWMError(f"config key '{prefix}' has no sub-keys; cannot set '{key}'")
            fields = _fields(section)
            if part not in fields:
                raise _unknown_key(prefix, part, fields)
            if depth == len(parts) - 1:
                node[part] = _yaml_load(raw, f"the value of override {key}") if raw.strip() else ""
            else:
                section = _dataclass_of(typing.get_type_hints(section)[part])
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
    return nested


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(
    data: Mapping[str, Any], overrides: Iterable[str], cls: type | None = None
) -> dict[str, Any]:
    """Merge dotted overrides into a config mapping; their relative paths resolve against the cwd."""
    cls = cls or RunConfig
    parsed = _resolve_paths(cls, parse_overrides(overrides, cls), Path.cwd())
    return _deep_merge(data, parsed)


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> RunConfig:
    """Read a ``RunConfig`` from a YAML file (or the defaults when ``path`` is None) plus overrides."""
    data: Any = {}
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise WWMError(f"config file {str(path)!r} does not exist; check the path (see configs/*.yaml)")
        data = _yaml_load(file.read_text(encoding="utf-8"), f"config file {str(path)!r}")
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise WWMError(
                f"config file {str(path)!r} must hold a mapping of sections (data:, tokenizer:, ...); "
                f"got {type(data).__name__}"
            )
        data = _resolve_paths(RunConfig, data, file.resolve().parent)
    data = apply_overrides(data, overrides)
    return from_dict(RunConfig, data)


def resolved_dict(config: Any) -> dict[str, Any]:
    """A config as plain data with absolute paths (relative ones resolve against the current directory):
    what `save_config` writes, and what a run directory's recorded config is compared with."""
    return _resolve_paths(type(config), config_to_dict(config), Path.cwd())


def save_config(config: Any, path: str | os.PathLike) -> None:
    """Write a config as YAML with absolute paths (relative ones resolve against the current directory),
    so that it reloads the same from anywhere."""
    data = resolved_dict(config)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
