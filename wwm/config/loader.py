"""Typed run configuration: nested dataclasses read from YAML, with dotted overrides.

A run is described by one ``RunConfig``. Each section is a dataclass whose fields carry type hints;
``from_dict`` walks those hints, so a section needs no parsing code of its own:

    config = load_config("configs/tiny.yaml", ["data.max_seq_len=256", "masking.mask_prob=0.2"])

* YAML is read with ``yaml.safe_load`` semantics, except that ``1e-4`` is a float (YAML 1.2), not a string,
  and that a key written twice in one mapping is refused (PyYAML would keep the last silently).
* A float field refuses NaN and infinities (``.nan``, ``.inf``), from the file or an override.
* An override ``a.b.c=VALUE`` parses VALUE as a YAML scalar or flow value (``null``, ``true``, ``[1, 2]``).
* Unknown keys and values of the wrong type raise ``WWMError`` naming the key path, the expected type and,
  for a misspelt key, the closest known key. Types handled: bool, int, float (an int is promoted; a string
  never becomes a number), str, Literal, Optional / unions, tuple/list, dict and nested dataclasses.
* Fields marked with ``path_field`` hold file-system paths: a relative path in the file resolves relative
  to the config file's folder, one given as an override relative to the current directory; ``~`` expands.

The sections themselves are in ``wwm.config.sections``; adding one is a dataclass there and a field of
``RunConfig``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from wwm.config.sections import _PATH_KEY, RunConfig
from wwm.errors import WWMError

__all__ = [
    "apply_overrides",
    "config_to_dict",
    "from_dict",
    "load_config",
    "parse_overrides",
    "resolved_dict",
    "save_config",
]

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
    """`value` (from YAML) as type hint `tp`, or WWMError naming `path`."""
    if tp is Any:
        return value
    if _is_union(tp):
        return _convert_union(tp, value, path)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return _convert_literal(tp, value, path)
    if origin in (tuple, list) or tp in (tuple, list):
        return _convert_sequence(tp, value, path)
    if origin is dict or tp is dict:
        return _convert_mapping(tp, value, path)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    return _convert_scalar(tp, value, path)


def _convert_union(tp: Any, value: Any, path: str) -> Any:
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


def _convert_literal(tp: Any, value: Any, path: str) -> Any:
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


def _convert_sequence(tp: Any, value: Any, path: str) -> Any:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise _type_error(path, tp, value)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    items = list(value)
    if origin is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):  # a fixed-length tuple
        if len(items) != len(args):
            raise WWMError(f"config key '{path}' expects {len(args)} items; got {len(items)}")
        converted = [_convert(a, v, _join(path, i)) for i, (a, v) in enumerate(zip(args, items, strict=True))]
    else:
        inner = args[0] if args else Any
        converted = [_convert(inner, v, _join(path, i)) for i, v in enumerate(items)]
    return tuple(converted) if (origin or tp) is tuple else converted


def _convert_mapping(tp: Any, value: Any, path: str) -> Any:
    if not isinstance(value, Mapping):
        raise _type_error(path, tp, value)
    args = typing.get_args(tp) or (Any, Any)
    return {
        _convert(args[0], k, _join(path, str(k))): _convert(args[1], v, _join(path, str(k)))
        for k, v in value.items()
    }


def _convert_scalar(tp: Any, value: Any, path: str) -> Any:
    """bool, int, float (an int is promoted; a bool is never a number), str, or any other class."""
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise WWMError(f"config key '{path}' is {value}; give a finite number")
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, float),
        str: lambda v: isinstance(v, str),
    }.get(tp)
    if ok is None and not isinstance(tp, type):
        raise TypeError(f"config field '{path}' has a type hint the loader does not handle: {tp!r}")
    if ok(value) if ok is not None else isinstance(value, tp):
        return value
    raise _type_error(path, tp, value)


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


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    """SafeLoader's mappings, refusing a key written twice in one mapping (YAML says keys are unique; PyYAML
    keeps the last, so a second `masking:` section would silently replace the first). Keys brought in by
    a merge (`<<: *anchor`) may be overridden, as YAML intends."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
        except TypeError:  # an unhashable key: SafeConstructor reports it
            continue
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_load(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except _DuplicateKey as dup:
        raise WWMError(
            f"{where}: the key {dup.key!r} appears twice in one mapping (lines {dup.first} and {dup.second}); the "
            "second would silently replace the first: merge them into one"
        ) from None
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
