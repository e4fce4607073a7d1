"""Lossless conversion between Hugging Face BERT/RoBERTa/ModernBERT checkpoints and our Flax models
(`wwm_jax.modeling`, `wwm_jax.modernbert`).

Reads safetensors only (never torch.load / pickle). The whole mapping is each family's name table
(`wwm_jax.families`): our module paths mirror the HF keys, Linear kernels are transposed (torch stores
(out, in), flax (in, out)), layer-norm `weight` is flax's `scale`, an embedding's `weight` is flax's
`embedding`.

Two on-disk formats:
- a Hugging Face directory: config.json + model.safetensors (or a sharded model.safetensors.index.json),
  as transformers' save_pretrained writes it; `load_hf` / `save_hf`.
- our Flax directory: config.json (the HF config) + params.safetensors whose keys are '/'-joined flax
  parameter paths ("bert/encoder/layer/0/attention/self/query/kernel"); `load_flax` / `save_flax`.

The model family comes from config.json's model_type (`config_from_hf_dict`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from wwm.errors import WWMError
from wwm_jax.families import JAX_FAMILIES, Entry, JaxFamily, jax_family
from wwm_jax.modeling import EncoderConfig, MaskedLM
from wwm_jax.modernbert import ModernBertConfig, ModernBertForMaskedLM

AnyConfig = EncoderConfig | ModernBertConfig
AnyModel = MaskedLM | ModernBertForMaskedLM
SUPPORTED_MODEL_TYPES = tuple(JAX_FAMILIES)

logger = logging.getLogger(__name__)

HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"
FLAX_PARAMS = "params.safetensors"
CONFIG = "config.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
)


def name_table(config: AnyConfig) -> list[Entry]:
    """Every parameter of the model for `config`: HF key <-> flax path, in checkpoint order (the family's
    record, `wwm_jax.families`)."""
    return jax_family(config).name_table(config)


# ----------------------------------------------------------------------------------------------------
# Reading and writing safetensors
# ----------------------------------------------------------------------------------------------------


def _names(keys: Iterable[str], limit: int = 10) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _key_problems(missing: Iterable[str], unexpected: Iterable[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing keys: {_names(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_names(unexpected)}")
    return "; ".join(parts)


def _read_file(path: str, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    with safe_open(path, framework="np") as f:
        return {k: f.get_tensor(k) for k in (f.keys() if keys is None else keys)}


def read_hf_weights(src: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a HF directory (model.safetensors or a sharded index), as numpy arrays."""
    src = os.fspath(src)
    if not os.path.isdir(src):
        raise WWMError(f"{src} is not a directory")
    index_path = os.path.join(src, HF_INDEX)
    if os.path.isfile(index_path):
        # local: a model folder on this machine (bucket models are fetched first)
        with open(index_path, encoding="utf-8") as f:
            weight_map: dict[str, str] = json.load(f)["weight_map"]
        by_file: dict[str, list[str]] = {}
        for key, filename in weight_map.items():
            by_file.setdefault(filename, []).append(key)
        state: dict[str, np.ndarray] = {}
        for filename, keys in sorted(by_file.items()):
            shard = os.path.join(src, filename)
            if not os.path.isfile(shard):
                raise WWMError(f"{HF_INDEX} in {src} names {filename}, which is missing")
            state.update(_read_file(shard, keys))
        return state
    single = os.path.join(src, HF_WEIGHTS)
    if os.path.isfile(single):
        return _read_file(single)
    present = [
        n
        for n in ("pytorch_model.bin", "pytorch_model.bin.index.json")
        if os.path.exists(os.path.join(src, n))
    ]
    if present:
        raise WWMError(
            f"{src} holds only {present[0]}; wwm reads safetensors only (loading .bin runs pickle). "
            "Convert it once where you trust the file: "
            f"AutoModelForMaskedLM.from_pretrained({src!r}).save_pretrained(OUT) writes {HF_WEIGHTS}"
        )
    raise WWMError(f"{src} has neither {HF_WEIGHTS} nor {HF_INDEX}")


def _dtype_name(array: np.ndarray) -> str:
    return jnp.dtype(array.dtype).name  # "float32", "float16", "bfloat16" (ml_dtypes)


# ----------------------------------------------------------------------------------------------------
# HF state dict <-> flat flax params
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class LoadInfo:
    """What `hf_to_flax_params` did besides copying tensors."""

    fresh_head: bool  # the checkpoint had no MLM head (bare BertModel/RobertaModel): keep a fresh one
    ignored_keys: list[str]  # pooler, NSP head, position-id buffer, verified tied decoder copies
    checkpoint_dtype: str


def _canonical_key(key: str, family: JaxFamily) -> str:
    """HF keys as transformers 5 names them: the encoder prefix ("bert.", "model.") before encoder keys,
    LayerNorm weight/bias."""
    for old, new in ((".gamma", ".weight"), (".beta", ".bias")):  # TF-era LayerNorm names
        if key.endswith(old) and ("LayerNorm" in key or "layer_norm" in key):
            key = key[: -len(old)] + new
    if key.startswith(family.bare):  # a bare BertModel / ModernBertModel without the prefix
        key = f"{family.prefix}.{key}"
    return key


def _canonical_state(state: Mapping[str, np.ndarray], family: JaxFamily) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        new = _canonical_key(key, family)
        if new in out:
            raise WWMError(f"checkpoint has {new} twice (as {key} and under another name)")
        out[new] = value
    return out


def expected_shapes(config: AnyConfig) -> dict[str, tuple[int, ...]]:
    """Flax path -> parameter shape, from an abstract (never allocated) model."""
    abstract = nnx.eval_shape(lambda: new_model(config))
    return {
        "/".join(map(str, p)): tuple(v.shape) for p, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))
    }


def hf_to_flax_params(
    hf_state: Mapping[str, np.ndarray], config: AnyConfig
) -> tuple[dict[str, np.ndarray], LoadInfo]:
    """HF tensors -> {flax path: float32 array}; raises WWMError naming missing/unexpected/misshapen keys.

    Without any head key the head is left out of the result (the caller keeps a fresh one).
    """
    family = jax_family(config)
    state = _canonical_state(hf_state, family)
    table = name_table(config)
    head_keys = {e.hf_key for e in table if e.hf_key.startswith(family.head)} | family.tied.keys()
    fresh_head = not head_keys & state.keys()
    required = [e for e in table if not (fresh_head and e.hf_key in head_keys)]
    ignored = set(family.ignored) & state.keys()
    tied = {k: v for k, v in family.tied.items() if k in state}

    missing = {e.hf_key for e in required} - state.keys()
    unexpected = state.keys() - {e.hf_key for e in table} - ignored - tied.keys()
    if missing or unexpected:
        raise WWMError(
            f"checkpoint does not match the {config.architecture} config.json; "
            + _key_problems(missing, unexpected)
        )

    shapes = expected_shapes(config)
    params, bad = {}, []
    for entry in required:
        array = state[entry.hf_key]
        array = array.T if entry.transpose else array
        want = shapes[entry.flax_path]
        if tuple(array.shape) != want:
            want_hf = want[::-1] if entry.transpose else want
            bad.append(f"{entry.hf_key} is {tuple(state[entry.hf_key].shape)}, config.json implies {want_hf}")
            continue
        params[entry.flax_path] = np.ascontiguousarray(array, dtype=np.float32)
    if bad:
        raise WWMError("shape mismatch: " + "; ".join(bad))

    for tied_key, source_key in tied.items():
        if source_key not in state or not np.array_equal(state[tied_key], state[source_key]):
            raise WWMError(f"{tied_key} differs from {source_key}: untied decoders are not supported")
    dtype = _dtype_name(state[table[0].hf_key])  # the word embeddings
    info = LoadInfo(fresh_head, sorted(ignored | tied.keys()), dtype)
    return params, info


def flax_to_hf_state(model: AnyModel, dtype: str | None = None) -> dict[str, np.ndarray]:
    """Model -> the tensors transformers' save_pretrained writes, in `dtype` (default: the checkpoint's).

    Tied copies (decoder.weight/bias) are left out, as transformers 5 does.
    """
    dtype = jnp.dtype(dtype or model.config.checkpoint_dtype)
    params = flat_params(model)
    out = {}
    for entry in name_table(model.config):
        array = params[entry.flax_path]
        array = array.T if entry.transpose else array
        out[entry.hf_key] = np.ascontiguousarray(array.astype(dtype))
    return out


# ----------------------------------------------------------------------------------------------------
# Model <-> flat params
# ----------------------------------------------------------------------------------------------------


def flat_params(model: nnx.Module) -> dict[str, np.ndarray]:
    """{'/'-joined flax path: numpy array} of every nnx.Param."""
    return {
        "/".join(map(str, path)): np.asarray(jax.device_get(var[...]))
        for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }


def set_flat_params(model: nnx.Module, params: Mapping[str, np.ndarray], *, strict: bool = True) -> None:
    """Write `params` ({flax path: array}) into `model`. strict: every parameter must be given."""
    state = nnx.state(model, nnx.Param)
    flat = {"/".join(map(str, path)): (path, var) for path, var in nnx.to_flat_state(state)}
    missing = flat.keys() - params.keys() if strict else set()
    unexpected = params.keys() - flat.keys()
    if missing or unexpected:
        raise WWMError("flax params do not match the model; " + _key_problems(missing, unexpected))
    bad = [
        f"{k} {tuple(v.shape)} vs {tuple(flat[k][1].shape)}"
        for k, v in params.items()
        if v.shape != flat[k][1].shape
    ]
    if bad:
        raise WWMError("shape mismatch: " + "; ".join(bad))
    for key, value in params.items():
        flat[key][1].set_value(jnp.asarray(value, dtype=flat[key][1].dtype))
    nnx.update(model, state)


# ----------------------------------------------------------------------------------------------------
# Configs and directories
# ----------------------------------------------------------------------------------------------------


def config_from_hf_dict(hf: Mapping[str, Any]) -> AnyConfig:
    """The config for a config.json dict: EncoderConfig (bert, roberta) or ModernBertConfig (modernbert)."""
    model_type = hf.get("model_type")
    if model_type not in JAX_FAMILIES:
        raise WWMError(
            f"config.json model_type {model_type!r} is not supported; use one of {SUPPORTED_MODEL_TYPES}"
        )
    return JAX_FAMILIES[model_type].config_class.from_hf_dict(hf)


def read_config_dict(directory: str | os.PathLike) -> dict[str, Any]:
    """`directory`/config.json as a dict."""
    if not os.path.isdir(directory):
        raise WWMError(f"{directory} is not a directory")
    path = os.path.join(directory, CONFIG)
    if not os.path.isfile(path):
        raise WWMError(f"{directory} has no config.json")
    # local: a model folder on this machine (bucket models are fetched first)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_config(directory: str | os.PathLike) -> AnyConfig:
    """`config_from_hf_dict` of `directory`/config.json."""
    return config_from_hf_dict(read_config_dict(directory))


def new_model(config: AnyConfig, *, dtype: Any = jnp.float32, seed: int = 0) -> AnyModel:
    """A freshly initialised model of `config`'s family (its record's build function)."""
    return jax_family(config).build(config, dtype=dtype, seed=seed)


def load_hf_with_info(
    src: str | os.PathLike, *, dtype: Any = jnp.float32, seed: int = 0
) -> tuple[AnyModel, LoadInfo]:
    """A HF directory -> (model, LoadInfo). A bare BertModel/RobertaModel/ModernBertModel gets a fresh
    head (from `seed`)."""
    config = read_config(src)  # first: a directory without config.json says so
    model, info = model_from_hf_state(read_hf_weights(src), config, dtype=dtype, seed=seed)
    if info.fresh_head:
        logger.info("%s has no masked-LM head; initialised a fresh one (seed %d)", src, seed)
    return model, info


def model_from_hf_state(
    hf_state: Mapping[str, np.ndarray], config: AnyConfig, *, dtype: Any = jnp.float32, seed: int = 0
) -> tuple[AnyModel, LoadInfo]:
    """HF tensors (a checkpoint's, or `wwm.initial_weights.initial_state`) -> (model of `config`,
    LoadInfo). Without a head in `hf_state` the model keeps a fresh one (Flax init from `seed`)."""
    params, info = hf_to_flax_params(hf_state, config)
    config = dataclasses.replace(config, checkpoint_dtype=info.checkpoint_dtype)
    if info.fresh_head:
        model = new_model(config, dtype=dtype, seed=seed)  # the head keeps its Flax init
    else:  # every parameter comes from hf_state: build the shapes only, no random draw to overwrite
        model = nnx.eval_shape(lambda: new_model(config, dtype=dtype, seed=seed))
    set_flat_params(model, params, strict=not info.fresh_head)
    return model, info


def load_hf(src: str | os.PathLike, *, dtype: Any = jnp.float32, seed: int = 0) -> AnyModel:
    """A HF directory (Bert/Roberta/ModernBertForMaskedLM, or a bare encoder) -> our model."""
    return load_hf_with_info(src, dtype=dtype, seed=seed)[0]


def _write_config(out_dir: str, config: AnyConfig, **extra: Any) -> str:
    path = os.path.join(out_dir, CONFIG)
    # local: a local export folder (wwm convert uploads a bucket --out)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({**config.to_hf_dict(), **extra}, f, indent=2, sort_keys=True)
        f.write("\n")
    return path


def save_hf(
    model: AnyModel, out_dir: str | os.PathLike, *, tokenizer_dir: str | os.PathLike | None = None
) -> list[str]:
    """Write a directory that transformers' AutoModelForMaskedLM loads with no missing/unexpected keys.

    Returns the paths written. Tokenizer files found in `tokenizer_dir` are copied alongside.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    weights = os.path.join(out_dir, HF_WEIGHTS)
    save_file(flax_to_hf_state(model), weights, metadata={"format": "pt"})
    written = [_write_config(out_dir, model.config), weights]
    if tokenizer_dir is not None:
        written += copy_tokenizer(tokenizer_dir, out_dir)
    return written


def copy_tokenizer(tokenizer_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[str]:
    found = [n for n in TOKENIZER_FILES if os.path.isfile(os.path.join(tokenizer_dir, n))]
    if not found:
        raise WWMError(f"{tokenizer_dir} has no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    return [shutil.copy2(os.path.join(tokenizer_dir, n), os.path.join(out_dir, n)) for n in found]


def save_flax(model: AnyModel, out_dir: str | os.PathLike) -> list[str]:
    """Our format: config.json + params.safetensors keyed by '/'-joined flax paths (float32)."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    weights = os.path.join(out_dir, FLAX_PARAMS)
    save_file(flat_params(model), weights, metadata={"format": "flax", "producer": "wwm"})
    return [_write_config(out_dir, model.config), weights]


def load_flax(src: str | os.PathLike, *, dtype: Any = jnp.float32) -> AnyModel:
    """Read a directory written by `save_flax`."""
    src = os.fspath(src)
    weights = os.path.join(src, FLAX_PARAMS)
    if not os.path.isfile(weights):
        hint = (
            " (it looks like a Hugging Face directory: use hf-to-flax / load_hf)"
            if os.path.isfile(os.path.join(src, HF_WEIGHTS))
            else ""
        )
        raise WWMError(f"{src} has no {FLAX_PARAMS}{hint}")
    model = new_model(read_config(src), dtype=dtype)
    set_flat_params(model, _read_file(weights))
    return model
