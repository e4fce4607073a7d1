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
from typing import TYPE_CHECKING, Any

import numpy as np

from wwm.data.pieces import MAX_PIECE_CHARS, text_pieces  # document chopping (also the tokenizer trainer's)
from wwm.errors import WWMError
from wwm.files import normalize_permissions

if TYPE_CHECKING:
    from wwm.config import RunConfig

__all__ = [
    "TRAINED_META",
    "load_tokenizer",
    "prepare_tokenizer",
    "tokenize_table",
    "tokenizer_fingerprint",
]

TRAINED_META = "wwm_tokenizer.json"  # written next to a tokenizer trained by `prepare`
# A tokenizer folder holds at least one of these (the vocabulary itself, not only its settings).
_VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "*.model", "spiece.model")

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
    from wwm.words import is_word_structured

    if is_word_structured(tokenizer):  # BertJapaneseTokenizer & co: words first, then sub-words
        return _quiet(tokenizer)
    if not getattr(tokenizer, "is_fast", False) or not hasattr(tokenizer, "backend_tokenizer"):
        raise WWMError(
            f"the tokenizer at {where} is not a fast tokenizer; word ids need one (or a word-structured "
            "slow one such as BertJapaneseTokenizer): save it with a tokenizer.json (convert it with "
            "transformers' convert_slow_tokenizer) or train one with `wwm train-tokenizer`"
        )
    return _quiet(tokenizer)


def load_tokenizer(path: str) -> Any:
    """A ``PreTrainedTokenizerFast`` from a folder, a tokenizer.json file or a Hub name; a bucket URL
    (gs://, s3://, hf://) through a local copy (``wwm.fs.fetch``)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if "://" in path:
        from wwm import fs

        path = fs.fetch(path)
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
        if not any(next(p.glob(pattern), None) for pattern in _VOCABULARY_FILES):
            # transformers would build a tokenizer of the special tokens alone from a tokenizer_config.json
            raise WWMError(
                f"the folder {path!r} holds no tokenizer files (tokenizer.json, vocab.txt, vocab.json + merges.txt "
                "or a SentencePiece .model); point tokenizer.path at a tokenizer folder, as save_pretrained writes"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(p))
        except Exception as err:
            raise WWMError(
                f"could not load a tokenizer from the folder {path!r}: {type(err).__name__}: "
                f"{' '.join(str(err).split())[:300]}; it needs a tokenizer.json (and tokenizer_config.json), as "
                "save_pretrained writes"
            ) from err
        return _require_fast(tokenizer, repr(path))
    if os.path.isabs(path) or path.startswith((".", "~")):
        raise WWMError(
            f"tokenizer.path {path!r} does not exist; give a tokenizer folder, a tokenizer.json file or a "
            "Hub name, or use tokenizer.train to train one"
        )
    return _hub_tokenizer(path)


_HUB_TIMEOUT_S = 10.0  # the one request that tells whether the Hub answers


def _hub_offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(
        (f or "").upper() in {"1", "ON", "YES", "TRUE"} for f in flags
    )


def _probe_hub(name: str) -> None:
    """One request with a short timeout and no retries (a download retries for ~50 s when offline)."""
    from huggingface_hub import HfApi

    HfApi().model_info(name, timeout=_HUB_TIMEOUT_S)


def _one_line(err: Exception, limit: int = 200) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:limit]}"


def _hub_tokenizer(name: str) -> Any:
    """A Hub tokenizer: from the local Hugging Face cache when it is there (no network at all), else
    downloaded once the Hub has answered one short request; offline (HF_HUB_OFFLINE) or unreachable,
    one line that names the fix."""
    from transformers import AutoTokenizer

    try:
        cached = AutoTokenizer.from_pretrained(name, local_files_only=True)
        if getattr(cached, "is_fast", False) or hasattr(cached, "word_tokenizer"):
            return _require_fast(cached, repr(name))
    except Exception:  # not (completely) in the local cache
        pass
    fix = (
        f"download it once with network (`hf download {name}`, then it loads from the cache), or give "
        "a local tokenizer folder instead"
    )
    if _hub_offline():
        raise WWMError(
            f"the tokenizer {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {fix}"
        )
    try:
        _probe_hub(name)
    except Exception as err:
        from huggingface_hub.errors import RepositoryNotFoundError

        if isinstance(err, RepositoryNotFoundError):
            raise WWMError(
                f"the Hugging Face Hub has no model {name!r} (or it is private or gated: log in with "
                "`hf auth login`); check tokenizer.path"
            ) from err
        raise WWMError(
            f"the tokenizer {name!r} is not in the local Hugging Face cache and the Hub cannot be reached "
            f"({_one_line(err, 120)}); {fix}"
        ) from err
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as err:
        raise WWMError(
            f"could not load the tokenizer {name!r} from the Hugging Face Hub: {_one_line(err)}; check the "
            "name and your network, or point tokenizer.path at a local folder"
        ) from err
    return _require_fast(tokenizer, repr(name))


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the tokenizer's full definition (tokenizer.json; for a word-structured slow tokenizer its
    class, settings, vocabulary and the versions of its word tokenizer's packages) and of its
    special-token roles."""
    roles = {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())}
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(_fast_definition(backend) if backend is not None else _slow_definition(tokenizer))
    h.update(json.dumps(roles, sort_keys=True).encode("utf-8"))
    h.update(str(len(tokenizer)).encode())
    return h.hexdigest()


def _fast_definition(backend: Any) -> bytes:
    """tokenizer.json without its truncation and padding: those are the settings of the last call (a
    transformers call with truncation=True leaves them on the backend, a file may carry them), never part of
    what the tokens are, since wwm passes its own to every call. With them, the same tokenizer hashed
    differently before and after tokenizing, and a resume that found its data in the cache was refused."""
    definition = json.loads(backend.to_str())
    definition.pop("truncation", None)
    definition.pop("padding", None)
    return json.dumps(definition, sort_keys=True, ensure_ascii=False).encode("utf-8")


# The packages a word-structured tokenizer's words come from, by its word_tokenizer_type.
_WORD_TOKENIZER_PACKAGES = {
    "mecab": ("fugashi", "unidic-lite", "unidic", "ipadic"),
    "sudachi": ("sudachipy", "sudachidict-core", "sudachidict-small", "sudachidict-full"),
    "jumanpp": ("rhoknp",),
}


def _slow_definition(tokenizer: Any) -> bytes:
    """What a slow (word-structured) tokenizer's tokens depend on, as bytes: class, init settings,
    vocabulary and added tokens, and the versions of its word tokenizer's packages."""
    from importlib.metadata import PackageNotFoundError, version

    settings = {
        k: v
        for k, v in sorted(getattr(tokenizer, "init_kwargs", {}).items())
        if k not in ("vocab_file", "spm_file", "name_or_path")
    }
    versions = {}
    for package in _WORD_TOKENIZER_PACKAGES.get(getattr(tokenizer, "word_tokenizer_type", ""), ()):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    definition = {
        "class": type(tokenizer).__name__,
        "settings": settings,
        "vocab": sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]),
        "versions": versions,
    }
    return json.dumps(definition, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8")


def prepare_tokenizer(
    config: RunConfig, train_documents: Callable[[], Iterable[str]], training_fingerprint: dict[str, Any]
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

    output_dir = config.output_dir
    if "://" in output_dir:  # a bucket output_dir: its staging folder on this host (wwm.runstore uploads it)
        from wwm import fs

        output_dir = fs.staging_dir(fs.normalize(output_dir))
    out = Path(output_dir) / "tokenizer"
    fingerprint = {"train": config_to_dict(tok_cfg.train), "documents": training_fingerprint}
    meta_path = out / TRAINED_META
    if meta_path.is_file():
        # local: the run folder or a bucket run's staging folder (above)
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
    pre_segment = tok_cfg.segmenter if tok_cfg.pre_segment else None  # learnt as it will be tokenized
    tokenizer = train_tokenizer(
        texts,
        train.kind,
        train.vocab_size,
        train.lowercase,
        min_frequency=train.min_frequency,
        pre_segment=pre_segment,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=out.parent))
    normalize_permissions(str(tmp))  # mkdtemp makes 0700; the folder is renamed into place as it is
    try:
        tokenizer.save_pretrained(str(tmp))
        # local: a temporary folder beside it
        (tmp / TRAINED_META).write_text(json.dumps({"fingerprint": fingerprint}, indent=1), encoding="utf-8")
        normalize_permissions(str(tmp))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_tokenizer(str(out)), str(out)


_CALL_CHARS = 1 << 18  # characters per tokenizer call (at least one piece)


def _call_groups(sizes: list[int], budget: int) -> list[tuple[int, int]]:
    """[begin, end) ranges of consecutive pieces with at most ``budget`` characters in all (or one)."""
    groups, begin, total = [], 0, 0
    for i, n in enumerate(sizes):
        if i > begin and total + n > budget:
            groups.append((begin, i))
            begin, total = i, 0
        total += n
    if begin < len(sizes):
        groups.append((begin, len(sizes)))
    return groups


def tokenize_table(
    table: Any,
    tokenizer: Any,
    policy: str,
    column: str = "text",
    segmenter: str = "auto",
    pre_segment: bool = False,
) -> Any:
    """``datasets.map`` function (Arrow format): texts -> list<int32> columns input_ids and word_ids.

    Tokens without the tokenizer's added special tokens; word ids local to each document (``wwm.words``).
    ``segmenter`` is a name (``tokenizer.segmenter``), so that each ``num_proc`` worker builds its own.
    Long documents are tokenized in pieces (``text_pieces``) and at most ``_CALL_CHARS`` characters go to
    one tokenizer call, so memory stays bounded; the pieces of a document are joined again, their word
    ids shifted past those of the piece before.
    """
    import pyarrow as pa

    from wwm.words import tokenize_with_word_ids

    texts = table.column(column).to_pylist()
    pieces: list[str] = []
    owner: list[int] = []  # the document of each piece
    for d, text in enumerate(texts):
        cut = text_pieces(text, MAX_PIECE_CHARS)
        pieces += cut
        owner += [d] * len(cut)
    ids_parts, wids_parts, piece_lengths = [], [], []
    for begin, end in _call_groups([len(p) for p in pieces], _CALL_CHARS):
        out = tokenize_with_word_ids(
            tokenizer,
            pieces[begin:end],
            policy=policy,
            add_special_tokens=False,
            segmenter=segmenter,
            pre_segment=pre_segment,
        )
        lengths = np.fromiter(map(len, out["input_ids"]), dtype=np.int64, count=end - begin)
        total = int(lengths.sum())
        ids_parts.append(np.fromiter(chain.from_iterable(out["input_ids"]), dtype=np.int32, count=total))
        wids_parts += [np.asarray(w, dtype=np.int32) for w in out["word_ids"]]
        piece_lengths.append(lengths)
    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype=np.int32)
    wids = _join_word_ids(wids_parts, owner) if len(pieces) > len(texts) else _concat(wids_parts)
    piece_len = np.concatenate(piece_lengths) if piece_lengths else np.zeros(0, dtype=np.int64)
    lengths = np.bincount(np.asarray(owner, dtype=np.int64), weights=piece_len, minlength=len(texts))
    lengths = lengths.astype(np.int64)  # bincount with weights counts in float64
    offsets = np.zeros(len(texts) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.table(
        {
            "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids)),
            "word_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(wids)),
        }
    )


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int32, copy=False) if parts else np.zeros(0, dtype=np.int32)


def _join_word_ids(parts: list[np.ndarray], owner: list[int]) -> np.ndarray:
    """The word ids of all pieces laid out flat, those of a document's later pieces shifted past the
    largest id of its earlier pieces (so each piece starts a new word; -1 stays -1)."""
    shifted, shift = [], 0
    for k, w in enumerate(parts):
        if k and owner[k] != owner[k - 1]:
            shift = 0
        shifted.append(np.where(w >= 0, w + shift, w).astype(np.int32) if shift else w)
        shift += int(w.max(initial=-1)) + 1
    return _concat(shifted)


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
