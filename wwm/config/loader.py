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
* A union of sections told apart by their ``type`` Literal is read as the section its ``type`` names
  (``model``: one section per model family, ``wwm.families``); a key of another member is refused naming
  the type it belongs to.
* A section's ``OLD_KEYS`` are its old spellings: an old sub-section whose keys are now the section's own
  (``model.modernbert: {...}``, checked under its old name) or a key that is ignored; each loads with one
  deprecation line (``WWMWarning``). ``upgraded_spelling`` maps a recorded config the same way.
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
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from wwm.config.sections import RunConfig
from wwm.errors import WWMError, WWMWarning
from wwm.fields import PATH_KEY

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
    if _sections_by_type(tp) is not None:
        return _convert_tagged(tp, value, path)
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


def _sections_by_type(tp: Any) -> dict[Any, type] | None:
    """{type value: section} of a union of sections told apart by their `type` Literal (`RunConfig.model`:
    one section per model family), else None."""
    if not _is_union(tp):
        return None
    members = typing.get_args(tp)
    if len(members) < 2 or not all(dataclasses.is_dataclass(m) for m in members):
        return None
    by_type: dict[Any, type] = {}
    for member in members:
        hint = typing.get_type_hints(member).get("type")
        if typing.get_origin(hint) is not Literal:
            return None
        by_type.update(dict.fromkeys(typing.get_args(hint), member))
    return by_type


def _tagged_section(tp: Any, value: Any, path: str) -> type:
    """The section of a tagged union that `value`'s `type` selects (absent: the first member's default)."""
    by_type = _sections_by_type(tp)
    first = typing.get_args(tp)[0]
    chosen = value.get("type", _fields(first)["type"].default) if isinstance(value, Mapping) else None
    return by_type[_convert_literal(Literal[tuple(by_type)], chosen, _join(path, "type"))]


def _convert_tagged(tp: Any, value: Any, path: str) -> Any:
    """A section of a tagged union: the one its `type` names. A key of another member's section gets a
    message that names the type it belongs to."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise _type_error(path, tp, value)
    section = _tagged_section(tp, value, path)
    own = _fields(section).keys() | getattr(section, "OLD_KEYS", {}).keys()
    for key in value:
        if key in own:
            continue
        others = [t for t, m in _sections_by_type(tp).items() if key in _fields(m)]
        if others:
            raise WWMError(
                f"config key '{_join(path, key)}' is not a key of {path}.type "
                f"{value.get('type', _fields(section)['type'].default)!r} "
                f"(it is one of {path}.type {', '.join(map(repr, others))}); remove it, or set {path}.type"
            )
    return from_dict(section, value, path)


def _old_spellings(cls: type, data: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """`data` with the old spellings of section `cls` (its `OLD_KEYS`) mapped, one deprecation line each:
    an old sub-section's keys become keys of `cls` (checked under their old name first); an ignored key
    is dropped."""
    old = getattr(cls, "OLD_KEYS", {})
    found = [key for key in data if key in old and key not in _fields(cls)]
    if not found:
        return data
    out = dict(data)
    for key in found:
        where, value, meaning = _join(path, key), out.pop(key), old[key]
        if isinstance(meaning, str):
            warnings.warn(
                f"config key '{where}' is not read ({meaning}); it is ignored", WWMWarning, stacklevel=4
            )
            continue
        given = dict(value or {}) if isinstance(value, Mapping) else value
        checked = from_dict(meaning, given, where)  # its keys, types and values, named as written
        moved = {k: getattr(checked, k) for k in given}
        for k, v in moved.items():
            if k in out and _convert(typing.get_type_hints(cls)[k], out[k], _join(path, k)) != v:
                raise WWMError(
                    f"config keys '{_join(where, k)}' and '{_join(path, k)}' set one setting to two values; "
                    f"keep '{_join(path, k)}' only"
                )
        out.update(moved)
        warnings.warn(
            f"config key '{where}' is deprecated: its keys are keys of '{path}' now "
            f"({', '.join(_join(path, k) for k in moved) or 'none given'}); read as such",
            WWMWarning,
            stacklevel=4,
        )
    return out


def upgraded_spelling(cls: type, data: Any) -> Any:
    """A config mapping of `cls` (a RunConfig's, as YAML or a run's record holds it) with every old
    spelling mapped as `from_dict` maps it, without warnings: a recorded config in this version's spelling,
    to compare with a config of this version."""
    if not isinstance(data, Mapping):
        return data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WWMWarning)
        data = _old_spellings(cls, data, "")
        hints = typing.get_type_hints(cls)
        out = dict(data)
        for key, value in data.items():
            if key in hints and isinstance(value, Mapping):
                section = _section_of(hints[key], value)
                if section is not None:
                    out[key] = upgraded_spelling(section, value)
        return out


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
    data = _old_spellings(cls, data, path)
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


def _resolve_one(value: Any, kind: str, base: Path | str) -> Any:
    if not isinstance(value, str) or not value:
        return value
    if "://" in value:  # a bucket URL (gs://, s3://, hf://, memory://) as written; file:// a local path
        from wwm import fs

        return fs.normalize(value) if fs.is_remote(value) else os.path.normpath(fs.local_path(value))
    if isinstance(base, str):  # the folder (a URL) of a config file read from a bucket
        from wwm import fs

        if os.path.isabs(value) or value.startswith("~"):
            return os.path.expanduser(value)  # a path on this host, as written
        candidate = fs.join(base, value)
        if kind == "hub" and not (value.startswith(".") or fs.exists(candidate)):
            return value  # a Hub name such as "bert-base-uncased" or "org/model"
        return candidate
    expanded = os.path.expanduser(value)
    if os.path.isabs(expanded):
        return expanded
    candidate = base / expanded
    if kind == "hub" and not (candidate.exists() or value.startswith((".", "~"))):
        return value  # a Hub name such as "bert-base-uncased" or "org/model"
    return os.path.normpath(str(candidate))


def _resolve_paths(cls: type, data: Any, base: Path | str) -> Any:
    """A copy of ``data`` with the path fields of ``cls`` (recursively) resolved against ``base`` (a local
    folder, or the URL of a bucket folder for a config file read from a bucket)."""
    if not isinstance(data, Mapping):
        return data
    hints = typing.get_type_hints(cls)
    fields = _fields(cls)
    out = dict(data)
    for key, value in data.items():
        if key not in fields:
            continue  # reported by from_dict
        kind = fields[key].metadata.get(PATH_KEY)
        if kind:
            if isinstance(value, (list, tuple)):
                out[key] = [_resolve_one(v, kind, base) for v in value]
            else:
                out[key] = _resolve_one(value, kind, base)
            continue
        sub = _section_of(hints[key], value)
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


def _section_of(tp: Any, value: Any) -> type | None:
    """The dataclass `value` is read as under hint `tp` (of a tagged union: the one its type selects)."""
    if _sections_by_type(tp) is not None:
        try:
            return _tagged_section(tp, value, "")
        except WWMError:
            return None  # reported by from_dict
    return _dataclass_of(tp)


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
        sections: list[type] = [cls]  # the sections the key may be in (every member of a tagged union)
        node = nested
        for depth, part in enumerate(parts):
            prefix = ".".join(parts[:depth])
            if not sections:
                raise WWMError(f"config key '{prefix}' has no sub-keys; cannot set '{key}'")
            fields = {k: v for s in sections for k, v in _fields(s).items()}
            old = {k: v for s in sections for k, v in getattr(s, "OLD_KEYS", {}).items()}
            if part not in fields and part not in old:
                raise _unknown_key(prefix, part, fields)
            if depth == len(parts) - 1:
                node[part] = _yaml_load(raw, f"the value of override {key}") if raw.strip() else ""
            else:
                sections = _sections_under(sections, part)
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
    return nested


def _sections_under(sections: list[type], part: str) -> list[type]:
    """The sections key `part` of any of `sections` may hold: its dataclass, every member of a tagged
    union, or an old sub-section (`OLD_KEYS`)."""
    found: list[type] = []
    for section in sections:
        hint = typing.get_type_hints(section).get(part) if part in _fields(section) else None
        old = getattr(section, "OLD_KEYS", {}).get(part)
        if hint is not None and _sections_by_type(hint) is not None:
            found += typing.get_args(hint)
        elif hint is not None and _dataclass_of(hint) is not None:
            found.append(_dataclass_of(hint))
        elif isinstance(old, type):
            found.append(old)
    return list(dict.fromkeys(found))


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
        text, base = _read_config_file(path)
        data = _yaml_load(text, f"config file {str(path)!r}")
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise WWMError(
                f"config file {str(path)!r} must hold a mapping of sections (data:, tokenizer:, ...); "
                f"got {type(data).__name__}"
            )
        data = _resolve_paths(RunConfig, data, base)
    data = apply_overrides(data, overrides)
    return from_dict(RunConfig, data)


def _read_config_file(path: str | os.PathLike) -> tuple[str, Path | str]:
    """(the text of a config file, the folder its relative paths resolve against). A file in a bucket
    (gs://, s3://, hf://) is read through the storage layer, and its relative paths resolve against its
    bucket folder, as a local file's resolve against its own folder."""
    from wwm import fs

    if fs.is_remote(path):
        url = fs.normalize(path)
        fs.check_readable(url, "config file")  # one line: no credentials, denied, no such bucket
        if not fs.isfile(url):
            raise WWMError(f"config file {url!r} does not exist; check the URL (see configs/*.yaml)")
        with fs.errors(url, "read"):
            return fs.read_text(url), fs.parent(url)
    file = Path(fs.local_path(path)).expanduser()
    if not file.is_file():
        raise WWMError(f"config file {str(path)!r} does not exist; check the path (see configs/*.yaml)")
    return file.read_text(encoding="utf-8"), file.resolve().parent  # local: the file checked above


def resolved_dict(config: Any) -> dict[str, Any]:
    """A config as plain data with absolute paths (relative ones resolve against the current directory):
    what `save_config` writes, and what a run directory's recorded config is compared with."""
    return _resolve_paths(type(config), config_to_dict(config), Path.cwd())


def save_config(config: Any, path: str | os.PathLike) -> None:
    """Write a config as YAML with absolute paths (relative ones resolve against the current directory),
    so that it reloads the same from anywhere."""
    data = resolved_dict(config)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # local: the run folder or a bucket run's staging folder (wwm.runstore uploads it)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
