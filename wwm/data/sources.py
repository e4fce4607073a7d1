"""Document sources: the text of a run, one document at a time, in a fixed order.

Every source is read by one generator, ``iter_documents``, so that the streaming and the non-streaming
pipelines see the same documents in the same order:

* ``builtin``: the built-in corpus (``wwm.data.builtin``);
* ``files``: local files, folders (every file inside, recursively, in sorted order) and glob patterns,
  or the same in a bucket (gs://, s3://, hf://, memory://: read through ``wwm.fs``, docs/scale.md).
  Text files (``.txt`` and anything not listed below; ``.gz``/``.bz2``/``.xz`` are decompressed) hold one
  document per line (``document_separator: line``) or documents separated by blank lines
  (``blank_line``). JSON lines (``.jsonl``/``.json``/``.ndjson``) and Parquet (``.parquet``) files are read
  with Hugging Face ``datasets`` (``load_dataset("json"|"parquet", streaming=True)``) and give the
  ``text_column`` of each record;
* ``hub``: a Hugging Face Hub dataset, ``load_dataset(hub_dataset, hub_config, split=hub_split)``
  (downloaded and cached by ``datasets``, or streamed when ``data.streaming`` is true).

Text is decoded with ``data.encoding`` (UTF-8 by default). A byte that is not valid in it stops the
read with one line naming the file, the byte and its line (``data.on_decode_error: error``, the default:
a Latin-1 file read as UTF-8 would otherwise lose every accented letter), or, with ``on_decode_error:
replace``, becomes U+FFFD and is counted (``SourceStats.replaced``: one per invalid sequence, as Python's
"replace" error handler; ``wwm prepare`` prints the count). Empty and whitespace-only documents are skipped
and counted (``empty_skipped``; in ``blank_line`` mode blank lines are separators and are not counted),
as are empty files (``empty_files``). A missing path raises ``WWMError``.
"""

from __future__ import annotations

import bz2
import codecs
import glob
import gzip
import lzma
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wwm.errors import WWMError

if TYPE_CHECKING:
    from wwm.config import DataConfig

__all__ = [
    "SourceStats",
    "file_format",
    "file_size",
    "iter_documents",
    "iter_file_documents",
    "open_binary",
    "resolve_files",
    "source_fingerprint",
    "stamp",
]

_TEXT_CHUNK = 1 << 20
# A text file whose first chunk is more than this share of U+FFFD (from invalid UTF-8) and NUL characters is
# not text (a binary file, or text in another encoding): it is refused rather than trained on.
_NOT_TEXT_SHARE = 0.3
_GLOB_CHARS = set("*?[")
_JSON_EXT = (".jsonl", ".json", ".ndjson")
_COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


@dataclass
class SourceStats:
    """Counts gathered while reading documents."""

    documents: int = 0  # non-empty documents given out
    empty_skipped: int = 0  # empty or whitespace-only lines / records skipped
    replaced: int = 0  # invalid UTF-8 sequences replaced by U+FFFD
    empty_files: int = 0  # files of 0 bytes (or no document) skipped
    files: list[str] = field(default_factory=list)

    def merge(self, other: SourceStats) -> None:
        self.documents += other.documents
        self.empty_skipped += other.empty_skipped
        self.replaced += other.replaced
        self.empty_files += other.empty_files
        self.files += other.files


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def _walk_folder(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
    return found


def _resolve_remote(pattern: str, key: str) -> list[str]:
    """A bucket URL (gs://, s3://, hf://, memory://) through the storage layer: the same rules as a local
    path (a folder's files in os.walk order, hidden names skipped)."""
    from wwm import fs

    if _GLOB_CHARS & set(pattern):
        matches = fs.glob(pattern)
        if not matches:
            raise WWMError(
                f"{key}: the pattern {pattern!r} matches no file; check the pattern and bucket folder"
            )
    elif fs.isdir(pattern):
        matches = fs.find(pattern)
        if not matches:
            raise WWMError(f"{key}: the folder {pattern!r} holds no file; put your text files in it")
    elif fs.isfile(pattern):
        matches = [fs.normalize(pattern)]
    else:
        raise WWMError(f"{key}: {pattern!r} does not exist; give an existing file, folder or glob pattern")
    return matches


def resolve_files(patterns: Sequence[str], key: str = "data.train_files") -> list[str]:
    """Expand files, folders and glob patterns into a list of files (order kept, duplicates dropped).
    Bucket URLs stay URLs (read through ``wwm.fs``)."""
    out: list[str] = []
    for pattern in patterns:
        if "://" in pattern:
            out += _resolve_remote(pattern, key)
            continue
        if _GLOB_CHARS & set(pattern):
            matches = [p for p in sorted(glob.glob(pattern, recursive=True)) if os.path.isfile(p)]
            if not matches:
                raise WWMError(
                    f"{key}: the pattern {pattern!r} matches no file; check the pattern and folder"
                )
        elif os.path.isdir(pattern):
            matches = _walk_folder(pattern)
            if not matches:
                raise WWMError(f"{key}: the folder {pattern!r} holds no file; put your text files in it")
        elif os.path.isfile(pattern):
            matches = [pattern]
        else:
            raise WWMError(
                f"{key}: {pattern!r} does not exist; give an existing file, folder or glob pattern "
                "(relative paths in a config file are relative to that file)"
            )
        out += [os.path.abspath(m) for m in matches]
    return list(dict.fromkeys(out))


def file_format(path: str, configured: str = "auto") -> str:
    """ "text", "jsonl" or "parquet" for a file (by extension unless ``configured`` says otherwise)."""
    if configured != "auto":
        return configured
    name = path.lower()
    for ext in _COMPRESSED:
        if name.endswith(ext):
            name = name[: -len(ext)]
    if name.endswith(_JSON_EXT):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "text"


class _ReplacementCounter:
    """A codecs error handler: replace like "replace" and count each invalid sequence."""

    count = 0

    @classmethod
    def handler(cls, err: UnicodeError) -> tuple[str, int]:
        if not isinstance(err, UnicodeDecodeError):
            raise err
        cls.count += 1
        return "\ufffd", err.end


_HANDLER = "wwm.count_replacements"
codecs.register_error(_HANDLER, _ReplacementCounter.handler)


def open_binary(path: str):
    """A corpus file opened for reading bytes: decompressed by its extension; a bucket URL through wwm.fs."""
    if "://" in path:  # a bucket object, streamed (and decompressed by its extension) by the storage layer
        from wwm import fs

        return fs.open_file(path, "rb", compression="infer")
    for ext, opener in _COMPRESSED.items():
        if path.lower().endswith(ext):
            return opener(path, "rb")
    # local: a local path (URLs are streamed through wwm.fs above)
    return open(path, "rb")


def _check_text(path: str, chunk: bytes, text: str, replaced: int, encoding: str = "utf-8") -> None:
    """Refuse a file whose first chunk is mostly invalid UTF-8 or NUL bytes (docs/data.md, Documents)."""
    bad = replaced + text.count("\0")
    if text and bad > _NOT_TEXT_SHARE * len(text):
        utf16 = chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        raise WWMError(
            f"{path!r} is not {encoding} text{' (it looks like UTF-16)' if utf16 else ''}: {bad / len(text):.0%} "
            f"of its first {len(text):,} characters are invalid {encoding} or NUL bytes; set data.encoding to its "
            "encoding, convert it (e.g. iconv -f ENCODING -t UTF-8) or remove it from the corpus"
        )


def _decode_error(
    path: str, data: Any, err: UnicodeDecodeError, offset: int, line: int, chunk: bytes, start: int = 0
) -> WWMError:
    """One line for the first byte of a text file that `data.encoding` cannot decode (``line``: counted from
    byte ``start``, the first line of a segment, wwm.data.segments)."""
    bad = err.object[err.start : err.end].hex(" ")
    utf16 = offset == 0 and chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    hint = " (it looks like UTF-16: data.encoding: utf-16)" if utf16 else ""
    where = f"line {line:,}" if not start else f"line {line:,} of the segment from byte {start:,}"
    return WWMError(
        f"{path!r} is not valid {data.encoding} text{hint}: byte(s) {bad} at byte offset {offset + err.start:,} ("
        f"{where}) cannot be decoded ({err.reason}); set data.encoding to the file's encoding (e.g. latin-1, "
        "cp1252), or data.on_decode_error: replace to replace such bytes with U+FFFD (counted in the summary)"
    )


def _iter_decoded_lines(
    path: str, stats: SourceStats, data: Any = None, start: int = 0, stop: int | None = None
) -> Iterator[str]:
    """The lines of a file (without their "\\n" / "\\r\\n"), decoded with `data.encoding` (UTF-8 when
    `data` is None); invalid bytes raise WWMError (`on_decode_error: error`) or are replaced and counted.
    Only those of bytes [start, stop) when given (a segment: ``start`` is a line start)."""
    encoding = getattr(data, "encoding", "utf-8")
    strict = getattr(data, "on_decode_error", "replace") == "error"
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict" if strict else _HANDLER)
    tail = ""
    first = True
    offset, lines_before = start, 0  # bytes decoded before this chunk, lines seen before it (in the range)
    left = None if stop is None else stop - start  # bytes of the range still to read
    with open_binary(path) as f:
        if start:
            f.seek(start)
        while True:
            chunk = f.read(_TEXT_CHUNK if left is None else min(_TEXT_CHUNK, left))
            if left is not None:
                left -= len(chunk)
            final = not chunk
            before = _ReplacementCounter.count
            try:
                text = decoder.decode(chunk, final=final)
            except UnicodeDecodeError as err:
                pending = len(err.object) - len(chunk)  # bytes of the previous chunk the decoder held back
                line = lines_before + err.object[: err.start].count(b"\n") + 1
                raise _decode_error(path, data, err, offset - pending, line, chunk, start) from None
            offset += len(chunk)
            lines_before += text.count("\n")
            stats.replaced += _ReplacementCounter.count - before
            if first and text:
                _check_text(path, chunk, text, _ReplacementCounter.count - before, encoding)
                if not start:
                    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark
                first = False
            lines = (tail + text).split("\n")
            tail = "" if final else lines.pop()
            if final and lines and lines[-1] == "":
                lines.pop()  # the file's last newline ends a line, it does not start one
            for line in lines:
                yield line.removesuffix("\r")
            if final:
                return


def _iter_text_file(
    path: str, data: Any, stats: SourceStats, start: int = 0, stop: int | None = None
) -> Iterator[str]:
    if data.document_separator == "line":
        for line in _iter_decoded_lines(path, stats, data, start, stop):
            if line.strip():
                yield line
            else:
                stats.empty_skipped += 1
        return
    paragraph: list[str] = []
    for line in _iter_decoded_lines(path, stats, data):
        if line.strip():
            paragraph.append(line)
        elif paragraph:
            yield "\n".join(paragraph)
            paragraph = []
    if paragraph:
        yield "\n".join(paragraph)


def _count_replacements(path: str, data: Any = None) -> int:
    """Invalid sequences in a file under `data.encoding` (JSON lines are read by `datasets`, which replaces
    them); with `on_decode_error: error` the first one raises WWMError instead."""
    if getattr(data, "on_decode_error", "replace") == "error":
        for _ in _iter_decoded_lines(path, SourceStats(), data):
            pass
        return 0
    decoder = codecs.getincrementaldecoder(getattr(data, "encoding", "utf-8"))(errors=_HANDLER)
    before = _ReplacementCounter.count
    with open_binary(path) as f:
        while chunk := f.read(_TEXT_CHUNK):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    return _ReplacementCounter.count - before


def _iter_records(dataset: Any, column: str, where: str, stats: SourceStats) -> Iterator[str]:
    checked = False
    for batch in dataset.iter(batch_size=1000):
        if not checked:
            if column not in batch:
                raise WWMError(
                    f"{where} has no column {column!r}; its columns are {sorted(batch)}: "
                    "set data.text_column to the one that holds the text"
                )
            checked = True
        for text in batch[column]:
            if text is None or (isinstance(text, str) and not text.strip()):
                stats.empty_skipped += 1
                continue
            if not isinstance(text, str):
                raise WWMError(
                    f"{where}: column {column!r} holds {type(text).__name__} values, not text; "
                    "set data.text_column to a string column"
                )
            yield text


def _iter_table_file(path: str, fmt: str, data: Any, stats: SourceStats) -> Iterator[str]:
    import datasets

    column = data.text_column
    kwargs: dict[str, Any] = {}
    if "://" in path:  # `datasets` reads a local copy (wwm.fs.fetch: downloaded once per object version)
        from wwm import fs

        where, path = path, fs.fetch(path)
    else:
        where = path
    if fmt == "jsonl":
        replaced = _count_replacements(path, data)
        stats.replaced += replaced
        if replaced or data.encoding != "utf-8":
            # The json builder decodes (and applies encoding_errors) only for an encoding spelt other
            # than "utf-8"; "utf_8" is the same codec.
            encoding = "utf_8" if data.encoding == "utf-8" else data.encoding
            kwargs.update(encoding=encoding, encoding_errors="replace" if replaced else "strict")
    try:
        dataset = datasets.load_dataset(fmt if fmt != "jsonl" else "json", data_files=[path], split="train",
                                        streaming=True, **kwargs)  # fmt: skip
        yield from _iter_records(dataset, column, f"the file {where!r}", stats)
    except WWMError:
        raise
    except Exception as err:  # pyarrow / json errors: name the file and the fix
        raise WWMError(
            f"could not read {where!r} as {fmt}: {type(err).__name__}: {' '.join(str(err).split())[:300]}; "
            "check the file, or set data.file_format"
        ) from err


def file_size(path: str) -> int:
    """The size of a corpus file, local or in a bucket (wwm.fs)."""
    if "://" in path:
        from wwm import fs

        return fs.size(path)
    return os.path.getsize(path)


def _iter_files(files: Sequence[str], data: DataConfig, stats: SourceStats) -> Iterator[str]:
    for path in files:
        yield from _iter_file(path, data, stats)


def _iter_file(
    path: str, data: Any, stats: SourceStats, start: int = 0, stop: int | None = None
) -> Iterator[str]:
    """The documents of one file, or of bytes [start, stop) of a line-separated text file (a segment; the
    file is counted, as empty or not, by the segment that starts it)."""
    whole = not start
    if whole:
        stats.files.append(path)
    if file_size(path) == 0:
        stats.empty_files += 1
        return
    fmt = file_format(path, data.file_format)
    if fmt == "text":
        docs = _iter_text_file(path, data, stats, start, stop)
    else:
        docs = _iter_table_file(path, fmt, data, stats)
    count = 0
    for doc in docs:
        count += 1
        yield doc
    if count == 0 and whole and stop is None:
        stats.empty_files += 1


def iter_file_documents(
    path: str, data: Any, stats: SourceStats, start: int = 0, stop: int | None = None
) -> Iterator[str]:
    """The non-empty documents of one file (or of the byte range [start, stop) of a line-separated text
    file, ``start`` a line start), counted as ``iter_documents`` counts them (a segment, wwm.data.segments)."""
    for doc in _iter_file(path, data, stats, start, stop):
        if not doc.strip():
            stats.empty_skipped += 1
            continue
        stats.documents += 1
        yield doc


def _iter_hub(data: DataConfig, stats: SourceStats) -> Iterator[str]:
    import datasets

    where = f"the Hub dataset {data.hub_dataset!r}"
    try:
        dataset = datasets.load_dataset(
            data.hub_dataset,
            data.hub_config,
            split=data.hub_split,
            revision=data.hub_revision,
            streaming=data.streaming,
        )
    except Exception as err:
        raise WWMError(
            f"could not load {where} (config {data.hub_config!r}, split {data.hub_split!r}): "
            f"{type(err).__name__}: {' '.join(str(err).split())[:300]}; check the name and your network, "
            "or download the data and set data.source: files"
        ) from err
    yield from _iter_records(dataset, data.text_column, where, stats)


def iter_documents(data: DataConfig, which: str = "train", stats: SourceStats | None = None) -> Iterator[str]:
    """The non-empty documents of ``data`` (a DataConfig): ``which`` is "train" (the configured source)
    or "validation" (``data.validation_files``). Stops after ``data.max_documents`` documents (train)."""
    stats = stats if stats is not None else SourceStats()
    if which == "validation":
        docs = _iter_files(resolve_files(data.validation_files, "data.validation_files"), data, stats)
        limit = None
    elif data.source == "builtin":
        from wwm.data.builtin import builtin_documents

        docs = iter(builtin_documents(data.builtin_lang))
        limit = data.max_documents
    elif data.source == "files":
        docs = _iter_files(resolve_files(data.train_files), data, stats)
        limit = data.max_documents
    elif data.source == "hub":
        docs = _iter_hub(data, stats)
        limit = data.max_documents
    else:
        raise WWMError(f"unknown data.source {data.source!r}; use 'builtin', 'files' or 'hub'")
    for doc in docs:
        if not doc.strip():
            stats.empty_skipped += 1
            continue
        stats.documents += 1
        yield doc
        if limit is not None and stats.documents >= limit:
            return


def stamp(path: str) -> tuple[int, Any]:
    """(size, version) of a file without reading it: the mtime here, the generation / ETag of a bucket
    object (wwm.fs.identity): a changed object is a changed input, a copied one with the same ETag is not."""
    if "://" in path:
        from wwm import fs

        ident = fs.identity(path)
        return ident["size"], ident["version"]
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def source_fingerprint(data: DataConfig, which: str = "train") -> dict[str, Any]:
    """What the documents of ``which`` depend on; cheap (file sizes and times, no reading)."""
    common = {"document_separator": data.document_separator, "text_column": data.text_column,
              "decode": [data.encoding, data.on_decode_error]}  # fmt: skip
    if which == "validation" or data.source == "files":
        patterns = data.validation_files if which == "validation" else data.train_files
        files = resolve_files(
            patterns, "data.validation_files" if which == "validation" else "data.train_files"
        )
        stats = [(p, *stamp(p), file_format(p, data.file_format)) for p in files]
        return {
            "files": stats,
            **common,
            "max_documents": None if which == "validation" else data.max_documents,
        }
    if data.source == "builtin":
        from wwm.data.builtin import builtin_fingerprint

        return {"builtin": builtin_fingerprint(data.builtin_lang), "max_documents": data.max_documents}
    return {
        "hub": [data.hub_dataset, data.hub_config, data.hub_split, data.hub_revision],
        "text_column": data.text_column,
        "max_documents": data.max_documents,
    }
