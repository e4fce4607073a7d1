"""Checks both trainers run before any heavy set-up (data preparation, model building, compilation).

`start_run(config, framework, ...)` is the first thing `wwm_jax.train.run` and `wwm_torch.train.run`
do: it fails in a second, with one line naming the fix, on what would otherwise fail minutes later
or with a traceback:

* output_dir and the data cache folder: directories we can write (not files, not read-only);
* a pretrained model (`model.pretrained`): its config.json readable, its position table long enough
  for `data.max_seq_len`, its embeddings covering the tokenizer's vocabulary;
* the run directory (wwm.rundir): one run per folder, nothing overwritten or mixed.

It then records the run (lead process) and returns the `RunDir` decision the trainer resumes by.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wwm import rundir
from wwm.errors import WWMError

if TYPE_CHECKING:
    from wwm.config import RunConfig


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


def _tokenizer_size(config: RunConfig) -> int | None:
    """The vocabulary the run's tokenizer will have, when known without preparing data."""
    tok = config.tokenizer
    if tok.path is not None:
        from wwm.data.tokenizer import load_tokenizer

        return len(load_tokenizer(tok.path))
    if tok.train is not None:
        return tok.train.vocab_size  # an upper bound: training may find fewer tokens
    return None


def check_pretrained(config: RunConfig) -> None:
    """A pretrained model must fit the data: positions >= data.max_seq_len, embeddings >= vocabulary."""
    path = config.model.pretrained
    if not path:
        return
    hf = pretrained_config(path)
    if hf is None:
        return
    positions = usable_positions(hf)
    if config.data.max_seq_len > positions:
        raise WWMError(
            f"data.max_seq_len is {config.data.max_seq_len} but the model in {path!r} has {positions} positions; "
            f"set data.max_seq_len <= {positions}"
        )
    vocab = hf.get("vocab_size")
    size = _tokenizer_size(config)
    if vocab is not None and size is not None and size > int(vocab):
        which = "tokenizer.train.vocab_size" if config.tokenizer.path is None else "the tokenizer"
        raise WWMError(
            f"{which} has {size} tokens but the model in {path!r} has {vocab} token embeddings; use the "
            f"model's own tokenizer (tokenizer.path: {path})"
        )


def check_paths(config: RunConfig) -> None:
    if "://" not in config.output_dir:  # a bucket (gs://...) is checked by its client
        rundir.check_writable_dir(config.output_dir, "output_dir")
    from wwm.data.pipeline import default_cache_dir

    rundir.check_writable_dir(str(default_cache_dir(config)), "the data cache folder (data.cache_dir)")


def start_run(
    config: RunConfig,
    framework: str,
    *,
    overwrite: bool = False,
    allow_changes: bool = False,
    lead: bool = True,
    barrier: Callable[[str], None] | None = None,
) -> rundir.RunDir:
    """The pre-flight checks, then the run directory's decision, recorded by the lead process.

    `barrier(name)`: with several processes, every process decides before the lead writes, and none
    goes on before it has written (they read the same folder)."""
    check_paths(config)
    check_pretrained(config)
    return rundir.claim(config, framework, overwrite=overwrite, allow_changes=allow_changes, lead=lead,
                        barrier=barrier)  # fmt: skip


__all__ = ["check_paths", "check_pretrained", "pretrained_config", "start_run", "usable_positions"]
