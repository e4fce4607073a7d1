"""The run's tokenizer: load one (folder, tokenizer.json, Hub name) or train one, and fingerprint it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from wwm.errors import WWMError

__all__ = [
    "TRAINED_META",
    "load_tokenizer",
    "prepare_tokenizer",
    "tokenize_table",
    "tokenizer_fingerprint",
]

TRAINED_META = "wwm_tokenizer.json"  # written next to a tokenizer trained by `prepare`

# Special tokens of a bare tokenizer.json, recognised by name.
_ROLES = {
    "mask_token": ("[MASK]", "<mask>"),
    "pad_token": ("[PAD]", "<pad>"),
    "cls_token": ("[CLS]", "<s>"),
    "sep_token": ("[SEP]", "</s>"),
    "unk_token": ("[UNK]", "<unk>"),
    "bos_token": ("<s>",),
    "eos_token": ("</s>",),
}


def _quiet(tokenizer: Any) -> Any:
    """Documents are tokenized whole, then cut into blocks: no "sequence longer than max" warning."""
    warnings = getattr(tokenizer, "deprecation_warnings", None)
    if isinstance(warnings, dict):
        warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
    return tokenizer


def _require_fast(tokenizer: Any, where: str) -> Any:
    if not getattr(tokenizer, "is_fast", False) or not hasattr(tokenizer, "backend_tokenizer"):
        raise WWMError(
            f"the tokenizer at {where} is not a fast tokenizer; word ids need one: save it with a "
            "tokenizer.json (convert it with transformers' convert_slow_tokenizer) or train one with "
            "`wwm train-tokenizer`"
        )
    return _quiet(tokenizer)


def load_tokenizer(path: str) -> Any:
    """A ``PreTrainedTokenizerFast`` from a folder, a tokenizer.json file or a Hub name."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    p = Path(path).expanduser()
    if p.is_file():
        if (p.parent / "tokenizer_config.json").is_file():
            return load_tokenizer(str(p.parent))
        try:
            tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(p))
        except Exception as err:
            raise WWMError(
                f"could not read {path!r} as a tokenizer.json: {type(err).__name__}: {err}; "
                "point tokenizer.path at a tokenizer folder or a tokenizers JSON file"
            ) from err
        vocab = tokenizer.get_vocab()
        roles = {}
        for role, names in _ROLES.items():
            name = next((n for n in names if n in vocab), None)
            if name is not None:
                roles[role] = name
        tokenizer.add_special_tokens(roles)
        return _quiet(tokenizer)
    if p.is_dir():
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(p))
        except Exception as err:
            raise WWMError(
                f"could not load a tokenizer from the folder {path!r}: {type(err).__name__}: {err}; "
                "it needs a tokenizer.json (and tokenizer_config.json), as save_pretrained writes"
            ) from err
        return _require_fast(tokenizer, repr(path))
    if os.path.isabs(path) or path.startswith((".", "~")):
        raise WWMError(
            f"tokenizer.path {path!r} does not exist; give a tokenizer folder, a tokenizer.json file or a "
            "Hub name, or use tokenizer.train to train one"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:
        raise WWMError(
            f"could not load the tokenizer {path!r} from the Hugging Face Hub: {type(err).__name__}: "
            f"{' '.join(str(err).split())[:200]}; check the name and your network, or point tokenizer.path "
            "at a local folder"
        ) from err
    return _require_fast(tokenizer, repr(path))


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the tokenizer's full definition (tokenizer.json) and of its special-token roles."""
    backend = tokenizer.backend_tokenizer
    roles = {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())}
    h = hashlib.sha256()
    h.update(backend.to_str().encode("utf-8"))
    h.update(json.dumps(roles, sort_keys=True).encode("utf-8"))
    h.update(str(len(tokenizer)).encode())
    return h.hexdigest()


def prepare_tokenizer(
    config: Any, train_documents: Callable[[], Iterable[str]], training_fingerprint: dict[str, Any]
) -> tuple[Any, str]:
    """The run's tokenizer and where it lives: ``tokenizer.path``, or one trained on the training
    documents and saved to ``<output_dir>/tokenizer`` (reused when it was trained with the same settings
    on the same documents)."""
    tok_cfg = config.tokenizer
    if tok_cfg.path is not None:
        return load_tokenizer(tok_cfg.path), tok_cfg.path
    if tok_cfg.train is None:
        raise WWMError(
            "no tokenizer configured: set tokenizer.path (a folder, tokenizer.json or Hub name) or "
            "tokenizer.train (e.g. {kind: wordpiece, vocab_size: 4000})"
        )
    from wwm.config import config_to_dict

    out = Path(config.output_dir) / "tokenizer"
    fingerprint = {"train": config_to_dict(tok_cfg.train), "documents": training_fingerprint}
    meta_path = out / TRAINED_META
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("fingerprint") == json.loads(json.dumps(fingerprint)):
            return load_tokenizer(str(out)), str(out)
        raise WWMError(
            f"{out} holds a tokenizer trained with other settings or on other data; a run's tokenizer must "
            "not change under its model: delete that folder to retrain, or use another output_dir"
        )
    if out.exists() and any(out.iterdir()):
        raise WWMError(
            f"{out} exists but was not written by `wwm prepare`; delete it, or point tokenizer.path at it "
            "(and remove tokenizer.train) to use it"
        )
    from wwm.tokenizer_train import train_tokenizer

    train = tok_cfg.train
    texts = list(train_documents())
    tokenizer = train_tokenizer(
        texts, train.kind, train.vocab_size, train.lowercase, min_frequency=train.min_frequency
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=out.parent))
    try:
        tokenizer.save_pretrained(str(tmp))
        (tmp / TRAINED_META).write_text(json.dumps({"fingerprint": fingerprint}, indent=1), encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_tokenizer(str(out)), str(out)


def tokenize_table(
    table: Any, tokenizer: Any, policy: str, column: str = "text", segmenter: str = "auto"
) -> Any:
    """``datasets.map`` function (Arrow format): texts -> list<int32> columns input_ids and word_ids.

    Tokens without the tokenizer's added special tokens; word ids local to each document (``wwm.words``).
    ``segmenter`` is a name (``tokenizer.segmenter``), so that each ``num_proc`` worker builds its own.
    """
    import pyarrow as pa

    from wwm.words import tokenize_with_word_ids

    texts = table.column(column).to_pylist()
    out = tokenize_with_word_ids(
        tokenizer, texts, policy=policy, add_special_tokens=False, segmenter=segmenter
    )
    lengths = np.fromiter(map(len, out["input_ids"]), dtype=np.int64, count=len(texts))
    offsets = np.zeros(len(texts) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    ids = np.fromiter(chain.from_iterable(out["input_ids"]), dtype=np.int32, count=total)
    wids = np.concatenate(out["word_ids"]).astype(np.int32) if total else np.zeros(0, dtype=np.int32)
    return pa.table(
        {
            "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids)),
            "word_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(wids)),
        }
    )


def flat_columns(table: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids (T,), word_ids (T,), lengths (D,)) of a tokenized Arrow table."""
    import pyarrow.compute as pc

    arrays = []
    for name in ("input_ids", "word_ids"):
        column = table.column(name)
        column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
        arrays.append(np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.int32))
    column = table.column("input_ids")
    lengths = np.asarray(pc.list_value_length(column).to_numpy(zero_copy_only=False), dtype=np.int64)
    return arrays[0], arrays[1], lengths
