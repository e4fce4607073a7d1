"""Checks both trainers run before any heavy set-up (data preparation, model building, compilation).

`start_run(config, framework, ...)` is the first thing `wwm_jax.train.run` and `wwm_torch.train.run`
do: it fails in a second, with one line naming the fix, on what would otherwise fail minutes later,
with a traceback, or not at all while training a wrong model:

* output_dir and the data cache folder: directories we can write (not files, not read-only);
* a pretrained model (`model.pretrained`): its config.json readable, its position table long enough
  for `data.max_seq_len`, and the run's tokenizer its own: the vocabulary against the embedding rows
  (config.json and the safetensors header), the special-token ids against config.json, and, when the
  model folder holds its tokenizer, every token's id (`check_tokenizer_fits`);
* the run directory (wwm.rundir): one live run per folder (its lock), nothing overwritten or mixed.

It then records the run (lead process) and returns the `RunDir` decision the trainer resumes by.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wwm import rundir
from wwm.errors import WWMError

if TYPE_CHECKING:
    from wwm.config import RunConfig

# A tokenizer may leave this many embedding rows unused (models pad their vocabulary to a multiple of 64 or
# 128 for speed: ModernBERT-base has 50,368 rows for 50,280 tokens); more is another model's tokenizer.
UNUSED_ROWS = 128
_SPECIAL_IDS = (
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "cls_token_id",
    "sep_token_id",
    "mask_token_id",
)


def pretrained_config(path: str) -> dict[str, Any] | None:
    """The config.json of a local pretrained model directory, or None for a Hub name."""
    if not os.path.exists(path):
        if path.startswith((".", "/", "~")):
            raise WWMError(f"model.pretrained {path!r} does not exist; give a Hugging Face model directory")
        return None  # a Hub name: the trainer's loader reports what goes wrong
    if not os.path.isdir(path):
        raise WWMError(f"model.pretrained {path!r} is not a directory (a Hugging Face model directory)")
    file = os.path.join(path, "config.json")
    try:
        # local: a model folder on this machine (local_inputs fetched a bucket model)
        with open(file, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise WWMError(f"model.pretrained {path!r} has no readable config.json ({err}); it must be a "
                       "Hugging Face model directory (config.json + model.safetensors)") from err  # fmt: skip


def usable_positions(hf_config: dict[str, Any]) -> int:
    """How many tokens a sequence may have under a model's position table (RoBERTa's position ids
    start at padding_idx + 1, so two slots are unusable)."""
    positions = int(hf_config.get("max_position_embeddings", 512))
    if hf_config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        positions -= int(hf_config.get("pad_token_id", 1)) + 1
    return positions


def embedding_rows(path: str, hf_config: dict[str, Any]) -> int | None:
    """The token embedding rows of a local model: the shape in its safetensors header (the header only is
    read), else config.json's vocab_size."""
    files = []
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            # local: a model folder on this machine (local_inputs fetched a bucket model)
            with open(index, encoding="utf-8") as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError):
            files = []
    elif os.path.isfile(os.path.join(path, "model.safetensors")):
        files = ["model.safetensors"]
    for name in files:
        try:
            # local: a model folder on this machine (local_inputs fetched a bucket model)
            with open(os.path.join(path, name), "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
        except (OSError, ValueError, struct.error):
            continue
        for key, info in header.items():
            if key.endswith(("word_embeddings.weight", "tok_embeddings.weight")) and isinstance(info, dict):
                return int(info["shape"][0])
    vocab = hf_config.get("vocab_size")
    return int(vocab) if vocab is not None else None


def _model_tokenizer(path: str) -> Any | None:
    """The tokenizer saved in a model folder, when there is one (None otherwise, or when it will not load)."""
    if not any(os.path.isfile(os.path.join(path, n)) for n in ("tokenizer.json", "vocab.txt", "vocab.json")):
        return None
    from wwm.data.tokenizer import load_tokenizer

    try:
        return load_tokenizer(path)
    except WWMError:
        return None


def _ids(tokenizer: Any) -> dict[str, int | None]:
    return {name: getattr(tokenizer, name, None) for name in _SPECIAL_IDS}


def tokenizer_mismatch(
    tokenizer: Any, path: str, hf_config: dict[str, Any], *, extend: bool = False
) -> str | None:
    """Why `tokenizer` does not belong to the pretrained model in `path` (None: it does). `extend`
    (`model.extend_vocab`): a tokenizer that keeps every id of the model's and adds tokens after them is
    accepted (the embeddings grow)."""
    rows = embedding_rows(path, hf_config)
    size = len(tokenizer)
    own = _model_tokenizer(path)
    if own is not None:
        theirs, ours = own.get_vocab(), tokenizer.get_vocab()
        for token, i in sorted(theirs.items(), key=lambda kv: kv[1]):
            if ours.get(token) != i:
                where = f"id {ours[token]}" if token in ours else "absent"
                return f"token {token!r} is id {i} in the model's own tokenizer and {where} in this one"
        for name, value in _ids(own).items():
            if value is not None and _ids(tokenizer)[name] != value:
                return (
                    f"{name} is {value} in the model's own tokenizer and {_ids(tokenizer)[name]} in this one"
                )
    else:
        for name in _SPECIAL_IDS:
            want = hf_config.get(name)
            have = getattr(tokenizer, name, None)
            if isinstance(want, int) and have is not None and have != want:
                return f"{name} is {want} in the model's config.json and {have} in the tokenizer"
    if rows is not None and size > rows and not extend:
        added = f" (it adds {size - len(own)} tokens to the model's)" if own is not None else ""
        return (
            f"the tokenizer has {size} tokens but the model has {rows} token embeddings{added}; to grow the "
            "embeddings on purpose set model.extend_vocab: true"
        )
    if own is None and rows is not None and rows - size > UNUSED_ROWS:
        return f"the tokenizer has {size} tokens but the model has {rows} token embeddings"
    return None


def check_pretrained(config: RunConfig) -> None:
    """A pretrained model must fit the data and the tokenizer: positions >= data.max_seq_len, and the
    tokenizer its own (`tokenizer_mismatch`)."""
    path = config.model.pretrained
    if not path:
        return
    hf = pretrained_config(path)
    if hf is None:
        return
    # As the run continues it (ModernBERT's context extension raises its carried max_position_embeddings).
    hf = config.model.continue_config(hf, config.data.max_seq_len)
    positions = usable_positions(hf)
    if config.data.max_seq_len > positions:
        raise WWMError(
            f"data.max_seq_len is {config.data.max_seq_len} but the model in {path!r} has {positions} positions; "
            f"set data.max_seq_len <= {positions}"
        )
    if config.tokenizer.path is None and config.tokenizer.train is None:
        return  # no tokenizer at all: the data preparation names the fix
    if config.tokenizer.path is None:
        size = config.tokenizer.train.vocab_size
        sizes = f" ({size} tokens for {embedding_rows(path, hf)} embeddings)" if size else ""
        raise WWMError(
            f"model.pretrained {path!r} with tokenizer.train{sizes}: a newly trained tokenizer's ids mean nothing "
            f"to the model's embeddings; use the model's own tokenizer (tokenizer.path: {path})"
        )
    from wwm.data.tokenizer import load_tokenizer

    problem = tokenizer_mismatch(
        load_tokenizer(config.tokenizer.path), path, hf, extend=config.model.extend_vocab
    )
    if problem:
        raise WWMError(
            f"tokenizer.path {config.tokenizer.path!r} is not the tokenizer of model.pretrained {path!r}: {problem}; "
            f"use the model's own tokenizer (tokenizer.path: {path}), or train a fresh model (no model.pretrained)"
        )


def check_storage(config: RunConfig) -> None:
    """Every bucket URL of the run asked once, in a second, before any set-up: the corpus listed
    (data.train_files / validation_files), tokenizer.path and model.pretrained found, output_dir written
    to (a probe object, deleted), and so is a bucket data.cache_dir. No credentials, a denied permission, a bucket that
    does not exist or a network that does not answer (after its retries) is one line naming the URL, what
    failed and the fix (WWMError, exit 2; wwm.fs.core.explain)."""
    from wwm import fs
    from wwm.data.sources import resolve_files

    data = config.data
    corpus = [("data.train_files", p) for p in (data.train_files if data.source == "files" else ())]
    corpus += [("data.validation_files", p) for p in data.validation_files]
    for key, url in corpus:
        if fs.is_remote(url):
            with _naming(key):
                resolve_files([url], key)
    for key, url in (
        ("tokenizer.path", config.tokenizer.path),
        ("model.pretrained", config.model.pretrained),
    ):
        if url and fs.is_remote(url):
            with _naming(key):
                fs.check_readable(url, key)
    if data.cache_dir and fs.is_remote(data.cache_dir):  # prepared data in a bucket (wwm.data.remote)
        with _naming("data.cache_dir"):
            fs.check_writable_folder(data.cache_dir, "data.cache_dir")
    if fs.is_remote(config.output_dir):
        with _naming("output_dir"):
            fs.check_writable_folder(config.output_dir, "output_dir")


@contextlib.contextmanager
def _naming(key: str):
    """A storage error names the config key it came from."""
    try:
        yield
    except WWMError as err:
        if key in str(err):
            raise
        raise WWMError(f"{key}: {err}") from err


def check_paths(config: RunConfig) -> None:
    check_storage(config)
    if "://" not in config.output_dir:  # a bucket (gs://...): check_storage wrote a probe object into it
        rundir.check_writable_dir(config.output_dir, "output_dir")
    from wwm import fs
    from wwm.data.pipeline import default_cache_dir, remote_cache_root

    if remote_cache_root(config):  # a bucket cache: this host's disk holds its staging folders and copies
        rundir.check_writable_dir(fs.local_root(), "the local folder of bucket copies ($WWM_LOCAL_DIR)")
    else:
        rundir.check_writable_dir(str(default_cache_dir(config)), "the data cache folder (data.cache_dir)")


def local_inputs(config: RunConfig, run_dir: rundir.RunDir | None = None) -> RunConfig:
    """`config` with a bucket `tokenizer.path` / `model.pretrained` (gs://, s3://, hf://) replaced by a
    local copy (`wwm.fs.fetch`: downloaded once per object version, under $WWM_LOCAL_DIR), for the loaders
    that need a local folder (transformers, safetensors). The run records the URLs as written: only the
    loaders see the copies. The corpus files stay URLs (read through wwm.fs as they stream). With the
    `run_dir` of a bucket `output_dir`, output_dir becomes its local staging folder (wwm.runstore)."""
    import dataclasses

    from wwm import fs

    if run_dir is not None and fs.is_remote(config.output_dir):
        config = dataclasses.replace(config, output_dir=run_dir.path)

    model, tokenizer = config.model, config.tokenizer
    if model.pretrained and fs.is_remote(model.pretrained):
        model = dataclasses.replace(model, pretrained=fs.fetch(model.pretrained))
    if tokenizer.path and fs.is_remote(tokenizer.path):
        tokenizer = dataclasses.replace(tokenizer, path=fs.fetch(tokenizer.path))
    if model is config.model and tokenizer is config.tokenizer:
        return config  # (output_dir replaced above when it is a bucket)
    return dataclasses.replace(config, model=model, tokenizer=tokenizer)


def start_run(
    config: RunConfig,
    framework: str,
    *,
    overwrite: bool = False,
    allow_changes: bool = False,
    restart: bool = False,
    lead: bool = True,
    share: Callable[[Any], Any] | None = None,
    process: tuple[int, int] = (0, 1),
    writer: bool = True,
) -> rundir.RunDir:
    """The pre-flight checks, then the run directory's decision (wwm.rundir.claim: the lead takes the
    folder's lock, decides and records; `share` hands its outcome to every process). The returned
    `RunDir` holds the lock until its `close()`. `process`: (this process's index, the process count),
    for a bucket `output_dir` with several processes (wwm.runstore; torchrun: (this node, the node count),
    and `writer` true on each node's local rank 0)."""
    check_paths(config)
    check_pretrained(local_inputs(config))
    if "://" in config.output_dir:  # a bucket: claimed in a local staging folder, carried to the bucket
        from wwm.runstore import start_bucket_run

        return start_bucket_run(config, framework, overwrite=overwrite, allow_changes=allow_changes,
                                restart=restart, lead=lead, share=share, process=process,
                                writer=writer)  # fmt: skip
    return rundir.claim(config, framework, overwrite=overwrite, allow_changes=allow_changes, restart=restart,
                        lead=lead, share=share)  # fmt: skip


__all__ = [
    "check_paths",
    "check_pretrained",
    "check_storage",
    "embedding_rows",
    "local_inputs",
    "pretrained_config",
    "start_run",
    "tokenizer_mismatch",
    "usable_positions",
]
