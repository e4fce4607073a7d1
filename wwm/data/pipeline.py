"""``prepare_dataset(config)``: raw text -> tokenized, word-aligned, packed blocks, cached on disk.

Steps (docs/data.md):

1. read the documents of the source (``wwm.data.sources``), in a fixed order; split off validation
   documents by a hash of their index (``data.validation_fraction``) or read ``data.validation_files``;
2. get the tokenizer (``tokenizer.path``) or train one on the training documents (``tokenizer.train``);
3. tokenize with word ids (``wwm.words``, policy ``tokenizer.word_policy``) through
   ``datasets.Dataset.map(batched=True, num_proc=data.num_proc)``;
4. pack into blocks of ``data.max_seq_len`` (``wwm.data.packing``) and store them
   (``wwm.data.storage``) under ``<cache_dir>/<key>``, where the key is a hash of everything the blocks
   depend on. A second run with the same inputs opens the stored blocks.

Steps 1, 3 and 4 run segment by segment (``wwm.data.segments``: one file, or ``data.segment_bytes`` of a
text file), each on its own and marked done, and ``manifest.json`` is written last. The launchers share that
one segment function (``prepare_segment``) and give the same bytes: one machine (``prepare_dataset``),
worker i of n (``prepare_share``, ``finalize_prepared``), host h of a training job (``prepare_dataset(...,
share=(h, H), barrier=...)``) and Ray tasks (``prepare_with_ray``).

With ``data.streaming: true`` nothing is stored: steps 3 and 4 run on the fly each time the blocks are
iterated (``StreamingBlocks``), on a ``datasets.IterableDataset``, and give the same blocks in the same
order.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wwm import fs, rng
from wwm.data import cache, remote, segments
from wwm.data.cache import cache_inputs, cache_key
from wwm.data.packing import Blocks, Packer, PackStats, SpecialIds
from wwm.data.sources import SourceStats, iter_documents, source_fingerprint
from wwm.data.storage import BlockDataset, BlockWriter
from wwm.errors import RESUME_HINT, DiskFull, WWMError, is_disk_full, os_error

if TYPE_CHECKING:
    from wwm.config import DataConfig, MaskingConfig, RunConfig
    from wwm.masking import WholeWordMasker

__all__ = [
    "PrepareStats",
    "PreparedData",
    "StreamingBlocks",
    "default_cache_dir",
    "format_summary",
    "prepare_dataset",
    "validation_mask",
]

SPLIT_EPOCH = 0x53504C54  # "SPLT": the epoch slot of the validation hash (docs/data.md)
_ROUTE_CHUNK = 4096
_PACK_CHUNK = 1024  # documents per packing call


# --------------------------------------------------------------------------------------------------
# Validation split
# --------------------------------------------------------------------------------------------------


def validation_mask(doc_indices: np.ndarray, fraction: float, split_seed: int) -> np.ndarray:
    """True for the documents held out for validation: document i (its index among the non-empty
    documents of the source) is held out iff ``uniform24(example_keys(split_seed, SPLIT_EPOCH, i)) <
    round(fraction * 2^24)`` (``wwm.rng``)."""
    doc_indices = np.asarray(doc_indices, dtype=np.int64)
    if fraction <= 0:
        return np.zeros(doc_indices.shape, dtype=bool)
    keys = rng.example_keys(int(split_seed), SPLIT_EPOCH, doc_indices)
    return rng.uniform24(keys) < rng.probability_threshold(fraction)


def _chunks(items: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def split_documents(
    data: DataConfig, split: str, stats: SourceStats, counts: dict[str, int] | None = None
) -> Iterator[str]:
    """The documents of ``split`` ("train" or "validation") in source order, segment after segment.
    ``counts`` (optional) gets the number of documents routed to each split by the held-out fraction."""
    if split == "validation" and data.validation_files:
        for segment in segments.plan(data, "validation"):
            yield from segments.documents(data, segment, stats)
        return
    if split == "validation" and data.validation_fraction <= 0:
        return
    for segment in segments.plan(data, "train"):
        yield from _segment_split(data, segment, split, stats, counts)


def _routed(
    data: DataConfig, segment: segments.Segment, stats: SourceStats
) -> Iterator[tuple[list[str], list[bool]]]:
    """Chunks of a segment's documents with their held-out flags: document id = segment.index * 2^32 +
    its index in the segment (``segments.document_ids``), so a document's split needs nothing outside
    its segment."""
    first = 0
    for chunk in _chunks(segments.documents(data, segment, stats), _ROUTE_CHUNK):
        ids = segments.document_ids(segment, first, len(chunk))
        first += len(chunk)
        yield chunk, validation_mask(ids, data.validation_fraction, data.split_seed).tolist()


def _segment_split(
    data: DataConfig,
    segment: segments.Segment,
    split: str,
    stats: SourceStats,
    counts: dict[str, int] | None = None,
) -> Iterator[str]:
    """The documents of one segment that go to ``split``."""
    if segment.which == "validation":
        if split == "validation":
            yield from segments.documents(data, segment, stats)
        return
    for chunk, held_out in _routed(data, segment, stats):
        if counts is not None:
            held = sum(held_out)
            counts["train"] = counts.get("train", 0) + len(chunk) - held
            counts["validation"] = counts.get("validation", 0) + held
        want = split == "validation"
        for doc, flag in zip(chunk, held_out, strict=True):
            if flag == want:
                yield doc


def has_validation(data: DataConfig) -> bool:
    """Whether the `data` config section holds documents out for validation (files or a fraction)."""
    return bool(data.validation_files) or data.validation_fraction > 0


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


@dataclass
class PrepareStats:
    """What ``prepare`` read and produced, per split ("train", "validation")."""

    source: dict[str, dict[str, int]] = field(default_factory=dict)  # SourceStats per split
    packing: dict[str, dict[str, int]] = field(default_factory=dict)  # PackStats per split
    seconds: float = 0.0  # time of this call
    build_seconds: float = 0.0  # time the blocks took to build (on a cache hit: when they were built)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrepareStats:
        return cls(**data)

    def total(self, key: str) -> int:
        return sum(s.get(key, 0) for s in list(self.source.values()) + list(self.packing.values()))


def _source_dict(stats: SourceStats) -> dict[str, int]:
    return {
        "documents_read": stats.documents,
        "empty_skipped": stats.empty_skipped,
        "replaced": stats.replaced,
        "empty_files": stats.empty_files,
        "files": len(stats.files),
    }


@dataclass
class PreparedData:
    """The result of ``prepare_dataset``: blocks, tokenizer and statistics."""

    train: Any  # BlockDataset, or StreamingBlocks when data.streaming
    validation: Any | None
    tokenizer: Any
    tokenizer_path: str
    specials: SpecialIds
    stats: PrepareStats
    config: RunConfig
    cache_path: str | None = None
    cache_hit: bool = False

    @property
    def max_seq_len(self) -> int:
        return self.config.data.max_seq_len

    @property
    def vocab_size(self) -> int:
        return self.specials.vocab_size

    def masker(self, masking: MaskingConfig | None = None) -> WholeWordMasker:
        """A ``WholeWordMasker`` for this tokenizer (``masking`` defaults to the run's masking config)."""
        from wwm.masking import WholeWordMasker

        return WholeWordMasker.from_tokenizer(self.tokenizer, masking or self.config.masking)

    def train_batches(self, global_batch_size: int, **kwargs: Any) -> Any:
        """``BatchIterator`` over the training blocks with the run's seed (kwargs: host_index, host_count,
        start, epochs)."""
        from wwm.data.loader import BatchIterator

        return BatchIterator(self.train, global_batch_size, self.config.seed, **kwargs)

    def validation_batches(self, global_batch_size: int, **kwargs: Any) -> Any:
        from wwm.data.loader import validation_batches

        if self.validation is None:
            raise WWMError(
                "this run has no validation set; set data.validation_fraction (e.g. 0.02) or "
                "data.validation_files"
            )
        return validation_batches(self.validation, global_batch_size, **kwargs)


# --------------------------------------------------------------------------------------------------
# Tokenize + pack
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _progress_bars(enabled: bool):
    import datasets as hf_tqdm

    was_enabled = not hf_tqdm.are_progress_bars_disabled()
    if enabled:
        hf_tqdm.enable_progress_bars()
    else:
        hf_tqdm.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            hf_tqdm.enable_progress_bars()
        else:
            hf_tqdm.disable_progress_bars()


class _DocumentFile:
    """Documents written to an Arrow stream file (the format ``datasets.Dataset.from_file`` maps)."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa

        self.path = path
        self.count = 0
        self._pa = pa
        self._schema = pa.schema([("text", pa.large_string())])
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self._schema)

    def write(self, docs: list[str]) -> None:
        if docs:
            array = self._pa.array(docs, self._pa.large_string())
            self._writer.write_batch(self._pa.record_batch([array], schema=self._schema))
            self.count += len(docs)

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


def _write_documents(
    data: DataConfig, segment: segments.Segment, work: Path
) -> tuple[dict[str, _DocumentFile], SourceStats]:
    """One pass over a segment: the documents of each split, written to Arrow files in ``work``."""
    stats = SourceStats()
    if segment.which == "validation":
        files = {"validation": _DocumentFile(work / "validation-documents.arrow")}
    else:
        files = {"train": _DocumentFile(work / "train-documents.arrow")}
        if data.validation_fraction > 0:
            files["validation"] = _DocumentFile(work / "validation-documents.arrow")
    try:
        if segment.which == "validation":
            for chunk in _chunks(segments.documents(data, segment, stats), _ROUTE_CHUNK):
                files["validation"].write(chunk)
        else:
            for chunk, held_out in _routed(data, segment, stats):
                files["train"].write([d for d, v in zip(chunk, held_out, strict=True) if not v])
                if "validation" in files:
                    files["validation"].write([d for d, v in zip(chunk, held_out, strict=True) if v])
    finally:
        for f in files.values():
            f.close()
    return files, stats


def _pack_tables(tables: Iterator[Any], packer: Packer) -> Iterator[Blocks]:
    from wwm.data.tokenizer import flat_columns

    for table in tables:
        ids, wids, lengths = flat_columns(table)
        blocks = packer.add(ids, wids, lengths)
        if len(blocks):
            yield blocks
    last = packer.finish()
    if len(last):
        yield last


def _map_kwargs(config: RunConfig, tokenizer: Any) -> dict[str, Any]:
    from wwm.data.tokenizer import tokenize_table

    return {
        "function": tokenize_table,
        "batched": True,
        "batch_size": config.data.map_batch_size,
        "remove_columns": ["text"],
        "fn_kwargs": {
            "tokenizer": tokenizer,
            "policy": config.tokenizer.word_policy,
            "segmenter": config.tokenizer.segmenter,
            "pre_segment": config.tokenizer.pre_segment,
        },
    }


class StreamingBlocks:
    """Blocks made on the fly from a document stream (``data.streaming: true``).

    ``iter_chunks()`` yields ``(Blocks, first_example_id)`` in stream order; example ids count the blocks
    of the stream from 0. Each call reads and tokenizes the source again. ``stats`` holds the counts of the
    last complete pass.
    """

    def __init__(self, config: RunConfig, split: str, tokenizer: Any, specials: SpecialIds) -> None:
        self.config = config
        self.split = split
        self.tokenizer = tokenizer
        self.specials = specials
        self.max_seq_len = config.data.max_seq_len
        self.shuffle_buffer = config.data.shuffle_buffer
        self.pad_token_id = specials.pad
        self.stats: dict[str, dict[str, int]] | None = None

    def iter_chunks(self) -> Iterator[tuple[Blocks, int]]:
        import datasets

        data = self.config.data
        source_stats = SourceStats()
        packing = PackStats()
        next_id = 0
        which = "validation" if self.split == "validation" and data.validation_files else "train"
        for segment in segments.plan(data, which):  # packed segment by segment, as prepare_dataset does
            documents = datasets.IterableDataset.from_generator(
                _generate_documents,
                gen_kwargs={"data": data, "segment": segment, "split": self.split, "stats": source_stats},
            )
            tokenized = documents.with_format("arrow").map(**_map_kwargs(self.config, self.tokenizer))
            packer = Packer(data.max_seq_len, data.packing, self.specials)
            for blocks in _pack_tables(tokenized.iter(batch_size=_PACK_CHUNK), packer):
                yield blocks, next_id
                next_id += len(blocks)
            packing.merge(packer.stats)
        self.stats = {"source": _source_dict(source_stats), "packing": asdict(packing)}

    def __iter__(self) -> Iterator[Blocks]:
        for blocks, _ in self.iter_chunks():
            yield blocks


def _generate_documents(
    data: DataConfig, segment: segments.Segment, split: str, stats: SourceStats
) -> Iterator[dict[str, str]]:
    for doc in _segment_split(data, segment, split, stats):
        yield {"text": doc}


def _build_split(
    config: RunConfig, split: str, documents: _DocumentFile, tokenizer: Any, specials: SpecialIds, work: Path,
    out: Path, progress: bool,
) -> dict[str, int]:  # fmt: skip
    """Tokenize, pack and store the documents of one split; returns its packing statistics."""
    import datasets

    data = config.data
    packer = Packer(data.max_seq_len, data.packing, specials)
    # Token ids that never belong to a word (wwm.words: the special tokens, the unknown token excepted);
    # the writer stores the rare exception, so this only keeps the files small.
    unk = getattr(tokenizer, "unk_token_id", None)
    non_word = set(specials.all) | {i for i in getattr(tokenizer, "all_special_ids", []) if i != unk}
    writer = BlockWriter(out / split, data.max_seq_len, specials.vocab_size,
                         segments=data.packing == "packed_documents", pad_token_id=specials.pad,
                         non_word_ids=non_word)  # fmt: skip
    n_docs = documents.count
    if 0 < n_docs <= data.map_batch_size:  # one map batch (a small segment): no datasets.map to set up
        import pyarrow as pa

        kwargs = _map_kwargs(config, tokenizer)
        with pa.OSFile(str(documents.path), "rb") as f:
            table = pa.ipc.open_stream(f).read_all()
        for blocks in _pack_tables(iter([kwargs["function"](table, **kwargs["fn_kwargs"])]), packer):
            writer.write(blocks)
    elif n_docs:
        dataset = datasets.Dataset.from_file(str(documents.path))
        tokenized = dataset.with_format("arrow").map(
            **_map_kwargs(config, tokenizer),
            num_proc=data.num_proc if data.num_proc > 1 and n_docs > data.map_batch_size else None,
            load_from_cache_file=False,
            cache_file_name=str(work / f"{split}-tokenized.arrow"),
            new_fingerprint=f"wwm-{split}-{os.getpid()}-{time.time_ns()}",
            desc=f"tokenizing {split}",
        )
        tables = tokenized.with_format("arrow").iter(batch_size=_PACK_CHUNK)
        bar = _tqdm(progress, total=n_docs, desc=f"packing {split}", unit="doc")
        for blocks in _pack_tables(_count_rows(tables, bar), packer):
            writer.write(blocks)
        bar.close()
    writer.close({"pad_token_id": specials.pad, "split": split})
    return asdict(packer.stats)


def _count_rows(tables: Iterator[Any], bar: Any) -> Iterator[Any]:
    for table in tables:
        bar.update(table.num_rows)
        yield table


def _tqdm(enabled: bool, **kwargs: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(disable=not enabled, **kwargs)


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------


def default_cache_dir(config: RunConfig) -> Path:
    """``data.cache_dir``, else ``$WWM_CACHE_DIR``, else ``~/.cache/wwm`` (blocks go to its data/ folder)."""
    return cache.cache_root(config.data.cache_dir)


def remote_cache_root(config: RunConfig) -> str | None:
    """The bucket URL of ``data.cache_dir`` (or ``$WWM_CACHE_DIR`` when it is unset), else None."""
    root = config.data.cache_dir or os.environ.get("WWM_CACHE_DIR")
    return root if root and fs.is_remote(root) else None


def _manifest(setup: _Setup) -> dict[str, Any] | None:
    """The entry's manifest (local, or in the bucket), None before it is written."""
    if setup.remote:
        return remote.read_json(fs.join(setup.remote, segments.MANIFEST_FILE))
    return segments.read_manifest(setup.final)


def _done(setup: _Setup, segment: segments.Segment) -> dict[str, Any] | None:
    """A segment's done record (local, or in the bucket), None when it is not done."""
    if setup.remote:
        record = remote.read_json(
            fs.join(setup.remote, segments.SEGMENTS_DIR, segment.name, segments.DONE_FILE)
        )
        return record if record is not None and record.get("segment") == segment.to_dict() else None
    return segments.done_record(setup.final, segment)


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def _training_fingerprint(config: RunConfig) -> dict[str, Any]:
    data = config.data
    return {
        "source": source_fingerprint(data, "train"),
        "validation": [data.validation_fraction, data.split_seed] if data.validation_fraction > 0 else None,
    }


def _checked_training_documents(config: RunConfig) -> list[str]:
    """The training documents (to train a tokenizer on), once the splits are known to be usable."""
    data = config.data
    stats, counts = SourceStats(), {"train": 0}
    documents = list(split_documents(data, "train", stats, counts))
    if data.validation_files:
        counts["validation"] = sum(1 for _ in iter_documents(data, "validation"))
    _check_documents(config, {"train": _source_dict(stats)}, counts)
    return documents


def _warn_pre_segment(config: RunConfig, tokenizer_path: str) -> None:
    """A tokenizer that `wwm train-tokenizer` learnt from pre-segmented text, used without pre-segmentation
    (or the other way round): its tokens are not the ones it was trained for; say so."""
    marker = Path(tokenizer_path) / "wwm_pre_segment.json"
    trained = marker.is_file()
    if trained != config.tokenizer.pre_segment and Path(tokenizer_path).is_dir():
        import warnings

        from wwm.errors import WWMWarning

        if trained:
            message = (
                f"the tokenizer at {tokenizer_path} was trained on text cut at segmenter words "
                "(wwm_pre_segment.json) but tokenizer.pre_segment is false: set it to true"
            )
        else:
            message = (
                f"tokenizer.pre_segment is true but the tokenizer at {tokenizer_path} was not trained "
                "pre-segmented; its tokens then miss pieces it learnt across words (fine, but retrain "
                "with `wwm train-tokenizer --pre-segment` for the best vocabulary)"
            )
        if config.tokenizer.train is None:
            warnings.warn(message, WWMWarning, stacklevel=3)


@dataclass
class _Setup:
    """What every preparation of a config starts from: its tokenizer, its cache entry, its segments."""

    config: RunConfig
    tokenizer: Any
    tokenizer_path: str
    specials: SpecialIds
    inputs: dict[str, Any] | None = None
    final: Path | None = None  # the cache entry <cache_dir>/data/<key> (a bucket's: a local staging folder)
    remote: str | None = None  # a bucket cache entry's URL (wwm.data.remote), else None
    # The segments: the training source's, then the validation files'.
    plan: list[segments.Segment] = field(default_factory=list)

    def parts(self, split: str) -> list[segments.Segment]:
        """The segments whose blocks make ``split``, in example-id order."""
        which = "validation" if split == "validation" and self.config.data.validation_files else "train"
        return [seg for seg in self.plan if seg.which == which]


def _setup(config: RunConfig, *, may_train: bool = True) -> _Setup:
    """Check the inputs, get the tokenizer (train it when ``may_train``), find the cache entry and plan the
    segments. Raises WWMError for unusable input before any slow work."""
    data = config.data
    # Resolve and check the sources before any work (a missing path fails here).
    source_fingerprint(data, "train")
    if data.validation_files:
        source_fingerprint(data, "validation")
    if config.tokenizer.word_policy in ("segmenter", "cjk") or config.tokenizer.pre_segment:
        from wwm.words import require_segmenter  # a missing segmenter package fails here

        require_segmenter(config.tokenizer.segmenter)

    from wwm.data.tokenizer import prepare_tokenizer

    def documents() -> list[str]:
        if not may_train:
            raise WWMError(
                f"tokenizer.train: the tokenizer is not trained yet ({config.output_dir}/tokenizer); workers share "
                "one tokenizer: train it once first with `wwm prepare --config FILE --tokenizer-only`, then start "
                "the workers"
            )
        return _checked_training_documents(config)

    tokenizer, tokenizer_path = prepare_tokenizer(config, documents, _training_fingerprint(config))
    _warn_pre_segment(config, tokenizer_path)
    specials = SpecialIds.from_tokenizer(tokenizer)
    if specials.vocab_size > np.iinfo(np.int32).max:
        raise WWMError(f"vocabulary of {specials.vocab_size} tokens does not fit int32 ids")
    setup = _Setup(config, tokenizer, tokenizer_path, specials)
    if not data.streaming:
        setup.inputs = cache_inputs(config, tokenizer)
        bucket = remote_cache_root(config)
        if bucket:  # segments are built in a local staging folder, then uploaded (wwm.data.remote)
            setup.remote = fs.join(bucket, "data", cache_key(setup.inputs))
            setup.final = Path(fs.staging_dir(setup.remote, "prepared-build"))
        else:
            setup.final = default_cache_dir(config) / "data" / cache_key(setup.inputs)
        setup.plan = segments.plan(data, "train")
        if data.validation_files:
            setup.plan += segments.plan(data, "validation")
    return setup


def prepare_dataset(
    config: RunConfig,
    *,
    progress: bool = False,
    rebuild: bool = False,
    share: tuple[int, int] | None = None,
    barrier: Any = None,
) -> PreparedData:
    """Run the data pipeline of a ``RunConfig`` (see the module docstring) and return the blocks.

    ``progress`` shows progress bars; ``rebuild`` ignores a cached result (and replaces it).
    ``share=(h, H)`` with ``barrier(name)``: host h of the H processes of a training job, each preparing
    its share of the segments (docs/data.md, "Segments"); every host then reads all of them, so
    ``data.cache_dir`` must be shared (a common disk or a bucket).
    Raises ``WWMError`` for unusable input (missing files, no documents, a tokenizer without the special
    tokens MLM needs, a corpus that gives no block).
    """
    start = time.perf_counter()
    if share is not None and share[1] > 1 and not config.data.streaming:
        return _prepare_shared(config, share, barrier, progress, start)
    setup = _setup(config)
    if config.data.streaming:
        data = config.data
        train = StreamingBlocks(config, "train", setup.tokenizer, setup.specials)
        validation = (
            StreamingBlocks(config, "validation", setup.tokenizer, setup.specials)
            if has_validation(data)
            else None
        )
        stats = PrepareStats(seconds=time.perf_counter() - start)
        return PreparedData(
            train, validation, setup.tokenizer, setup.tokenizer_path, setup.specials, stats, config
        )
    final = setup.final
    if rebuild and final.exists():
        shutil.rmtree(final)
    if rebuild and setup.remote:
        fs.remove(setup.remote, recursive=True)
    manifest = _manifest(setup)
    hit = manifest is not None
    if not hit:
        todo = [seg for seg in setup.plan if _done(setup, seg) is None]
        _build_segments(setup, todo, progress, whole=True)
        manifest = _finalize(setup, write=True)
    return _open(setup, manifest, hit, start)


def prepare_tokenizer_only(config: RunConfig) -> tuple[str, int]:
    """``wwm prepare --tokenizer-only``: the run's tokenizer, trained when it must be (before workers start,
    which share it). Returns its path and size."""
    setup = _setup(config)
    return setup.tokenizer_path, setup.specials.vocab_size


def prepare_share(
    config: RunConfig, worker: int, workers: int, *, progress: bool = False
) -> tuple[PreparedData | None, dict[str, int]]:
    """``wwm prepare --worker i/n``: build the segments worker i of n owns that are not done yet; the worker
    that finds every segment done writes the manifest and gets the data (else None). Returns it with
    counts: built, skipped (already done), done and total segments."""
    start = time.perf_counter()
    if config.data.streaming:
        raise WWMError(
            "data.streaming stores nothing: there is nothing for workers to prepare; set streaming: false"
        )
    setup = _setup(config, may_train=False)
    mine = segments.owned(setup.plan, worker, workers)
    if _manifest(setup) is not None:
        counts = {"built": 0, "skipped": len(mine), "done": len(setup.plan), "total": len(setup.plan)}
        return _open(setup, _manifest(setup), True, start), counts
    todo = [seg for seg in mine if _done(setup, seg) is None]
    _build_segments(setup, todo, progress, whole=False)
    done = sum(_done(setup, seg) is not None for seg in setup.plan)
    counts = {"built": len(todo), "skipped": len(mine) - len(todo), "done": done, "total": len(setup.plan)}
    if done < len(setup.plan):
        return None, counts
    return _open(setup, _finalize(setup, write=True), False, start), counts


def finalize_prepared(config: RunConfig) -> PreparedData:
    """``wwm prepare --finalize``: write the manifest of a preparation whose segments are all done (WWMError
    naming the missing ones otherwise) and return the data."""
    start = time.perf_counter()
    setup = _setup(config, may_train=False)
    manifest = _manifest(setup)
    if manifest is not None:
        return _open(setup, manifest, True, start)
    return _open(setup, _finalize(setup, write=True), False, start)


def prepare_with_ray(
    config: RunConfig, address: str | None = None, *, progress: bool = False, retries: int = 3
) -> PreparedData:
    """``wwm prepare --ray [ADDRESS]``: the segments not done yet as Ray tasks (each ``prepare_segment``,
    retried up to ``retries`` times when its worker dies or an OSError stops it), then the manifest. The
    driver gets the tokenizer first (it may train it). ``address``: a running cluster (``ray start
    --head``; "auto": the local one); None starts a Ray instance on this machine. Needs ``pip install
    "wwm[ray]"``."""
    start = time.perf_counter()
    try:
        import ray
    except ImportError as err:
        raise WWMError('wwm prepare --ray needs Ray: pip install "wwm[ray]" (or ray)') from err
    if config.data.streaming:
        raise WWMError(
            "data.streaming stores nothing: there is nothing for Ray to prepare; set streaming: false"
        )
    setup = _setup(config)
    manifest = _manifest(setup)
    if manifest is not None:
        return _open(setup, manifest, True, start)
    todo = [seg for seg in setup.plan if _done(setup, seg) is None]
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        task = ray.remote(max_retries=retries, retry_exceptions=[OSError])(prepare_segment)
        pending = {task.remote(config, seg): seg for seg in todo}
        bar = _tqdm(progress, total=len(todo), desc="segments (Ray)", unit="segment")
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                ray.get(ref)  # a task's WWMError (bad input) stops the preparation here, in one line
                bar.update(1)
        bar.close()
    except ray.exceptions.RayTaskError as err:
        cause = err.as_instanceof_cause()
        if isinstance(cause, WWMError):
            raise WWMError(str(cause).splitlines()[-1]) from None
        raise
    finally:
        if started:
            ray.shutdown()
    return _open(setup, _finalize(setup, write=True), False, start)


def prepare_segment(config: RunConfig, segment: segments.Segment) -> dict[str, Any]:
    """Build one segment of ``config`` and mark it done (a no-op when it is done): the unit of work of
    every launcher (a worker's loop, a training host's share, a Ray task). Returns its done record."""
    setup = _setup(config, may_train=False)
    if _done(setup, segment) is None:
        _build_segments(setup, [segment], False, whole=False)
    return _done(setup, segment)


def _prepare_shared(
    config: RunConfig, share: tuple[int, int], barrier: Any, progress: bool, start: float
) -> PreparedData:
    """Host h of H: the lead gets the tokenizer first (it may train it), then every host builds its share of
    the segments, and after a barrier every host checks that it sees all of them (a shared cache) and
    reads them; the lead writes the manifest."""
    host, hosts = share
    setup = _setup(config) if host == 0 else None
    barrier("wwm: tokenizer ready")
    if setup is None:
        setup = _setup(config, may_train=False)
    if _manifest(setup) is None:
        mine = segments.owned(setup.plan, host, hosts)
        todo = [seg for seg in mine if _done(setup, seg) is None]
        _build_segments(setup, todo, progress and host == 0, whole=False)
    barrier("wwm: segments prepared")
    manifest = _manifest(setup)
    hit = manifest is not None
    if not hit:
        manifest = _finalize(setup, write=host == 0, hosts=hosts)
    return _open(setup, manifest, hit, start)


# --------------------------------------------------------------------------------------------------
# Segments: build, finalize, open
# --------------------------------------------------------------------------------------------------


def _build_segments(setup: _Setup, todo: list[segments.Segment], progress: bool, whole: bool) -> None:
    """``_build_segments_in`` with a read-only or full cache disk said in one line (naming the folder)."""
    root = setup.final.parent
    try:
        _build_segments_in(setup, todo, progress, whole)
    except WWMError:
        raise
    except OSError as err:  # a read-only or full cache disk: one line naming the folder and the fix
        in_cache = str(err.filename or "").startswith(str(root.parent)) or err.filename is None
        raise os_error(
            err, f"the data cache folder {root.parent} (data.cache_dir)" if in_cache else None
        ) from err
    except Exception as err:
        if is_disk_full(err):  # datasets / pyarrow wrap the OSError of a full disk
            raise DiskFull(
                f"the data cache folder {root.parent} (data.cache_dir): no space left on device while building "
                f"the blocks; free space or set data.cache_dir elsewhere, {RESUME_HINT}"
            ) from err
        raise


def _build_segments_in(setup: _Setup, todo: list[segments.Segment], progress: bool, whole: bool) -> None:
    """Build the segments ``todo`` and mark each done. ``whole``: they are all the source's segments not
    done yet, on one machine: read them all, check the splits, then build every validation split before any
    training split, so unusable input fails before the slow work (workers check at finalize)."""
    if not todo:
        return
    cache.remove_stale_builds(setup.final.parent)  # interrupted builds of older wwm versions
    folder = setup.final / segments.SEGMENTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_work(folder)  # segments interrupted here (never a live build's)
    works: dict[segments.Segment, Path] = {}
    try:
        with _progress_bars(progress):
            if not whole:  # a worker: one segment after the other, each done as soon as it is built
                for seg in todo:
                    works[seg] = cache.new_build_folder(folder, seg.name)
                    built = time.perf_counter()
                    documents, stats = _write_documents(setup.config.data, seg, works[seg])
                    packing = {split: _build_segment_split(setup, seg, split, documents, works[seg], progress)
                               for split in sorted(documents, key=lambda s: s != "validation")}  # fmt: skip
                    _mark_done(setup, seg, works.pop(seg), stats, packing, time.perf_counter() - built)
                return
            built = time.perf_counter()
            read = {}
            for seg in todo:
                works[seg] = cache.new_build_folder(folder, seg.name)
                read[seg] = _write_documents(setup.config.data, seg, works[seg])
            records = _done_records(setup, exclude=todo)
            source = _merge_source(setup, [r["stats"]["source"] for r in records.values()]
                                   + [(seg.which, _source_dict(read[seg][1])) for seg in todo])  # fmt: skip
            counts = _merge_counts([r["stats"]["packing"] for r in records.values()])
            for seg in todo:
                for split, docs in read[seg][0].items():
                    counts[split] = counts.get(split, 0) + docs.count
            _check_documents(setup.config, source, counts)
            packing: dict[segments.Segment, dict[str, dict[str, int]]] = {seg: {} for seg in todo}
            for split in ("validation", "train"):  # the small validation split first
                for seg in todo:
                    if split in read[seg][0]:
                        packing[seg][split] = _build_segment_split(setup, seg, split, read[seg][0], works[seg],
                                                                   progress)  # fmt: skip
                    if split == "train":
                        seconds = (time.perf_counter() - built) / len(todo)
                        _mark_done(setup, seg, works.pop(seg), read[seg][1], packing[seg], seconds)
                if split == "validation" and has_validation(setup.config.data):
                    total = _merge_packing([r["stats"]["packing"] for r in records.values()]
                                           + [packing[seg] for seg in todo]).get("validation")  # fmt: skip
                    if total is not None:
                        _check_blocks(setup.config, "validation", total)
    finally:
        for work in works.values():
            shutil.rmtree(work, ignore_errors=True)


def _build_segment_split(
    setup: _Setup, segment: segments.Segment, split: str, documents: dict[str, _DocumentFile], work: Path,
    progress: bool,
) -> dict[str, int]:  # fmt: skip
    stats = _build_split(
        setup.config, split, documents[split], setup.tokenizer, setup.specials, work, work, progress
    )
    for name in (f"{split}-documents.arrow", f"{split}-tokenized.arrow"):  # intermediate files
        with contextlib.suppress(OSError):
            (work / name).unlink()
    return stats


def _mark_done(
    setup: _Setup, segment: segments.Segment, work: Path, source: SourceStats, packing: dict[str, dict[str, int]],
    seconds: float,
) -> None:  # fmt: skip
    for name in os.listdir(work):  # what remains of the intermediate files (an Arrow cache folder)
        if name.endswith(".arrow") or name.startswith("cache-"):
            shutil.rmtree(work / name, ignore_errors=True) if (work / name).is_dir() else (
                work / name
            ).unlink()
    record = {"blocks": {split: stats["blocks"] for split, stats in packing.items()},
              "stats": {"source": [segment.which, _source_dict(source)], "packing": packing}, "seconds": seconds,
              "built_by": {"host": socket.gethostname(), "pid": os.getpid()},
              "files": remote.checksums(work)}  # fmt: skip
    segments.mark_done(work, setup.final, segment, record)
    if setup.remote:  # a bucket entry: the blocks up, the done marker last; this host keeps no copy
        folder = segments.segment_folder(setup.final, segment)
        remote.upload_segment(
            folder, fs.join(setup.remote, segments.SEGMENTS_DIR, segment.name), segments.DONE_FILE
        )
        shutil.rmtree(folder, ignore_errors=True)


def _remove_stale_work(folder: Path) -> None:
    """Segment work folders that interrupted builds left behind (never a live build's)."""
    for path in folder.glob(f"{cache.BUILD_PREFIX}*"):
        if path.is_dir() and cache.build_folder(path).stale:
            shutil.rmtree(path, ignore_errors=True)


def _done_records(
    setup: _Setup, exclude: list[segments.Segment] = ()
) -> dict[segments.Segment, dict[str, Any]]:
    skip = set(exclude)
    records = {seg: _done(setup, seg) for seg in setup.plan if seg not in skip}
    return {seg: r for seg, r in records.items() if r is not None}


def _merge_source(setup: _Setup, parts: list[Any]) -> dict[str, dict[str, int]]:
    """SourceStats dicts of segments, summed per source ("train": the training source, "validation": the
    validation files)."""
    out: dict[str, dict[str, int]] = {}
    for which, stats in parts:
        total = out.setdefault(which, {})
        for key, value in stats.items():
            total[key] = total.get(key, 0) + value
    return out


def _merge_packing(parts: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    out: dict[str, PackStats] = {}
    for packing in parts:
        for split, stats in packing.items():
            out.setdefault(split, PackStats()).merge(PackStats(**stats))
    return {split: asdict(stats) for split, stats in out.items()}


def _merge_counts(parts: list[dict[str, dict[str, int]]]) -> dict[str, int]:
    """Documents routed to each split (with or without tokens)."""
    return {split: s["documents"] + s["empty_documents"] for split, s in _merge_packing(parts).items()}


def _finalize(setup: _Setup, write: bool, hosts: int = 1) -> dict[str, Any]:
    """The manifest, from the done markers of every segment: checked (the splits have documents and blocks)
    and written last (when ``write``). WWMError names the segments not done."""
    records = _done_records(setup)
    missing = [seg for seg in setup.plan if seg not in records]
    if missing:
        names = ", ".join(seg.name for seg in missing[:5]) + (
            f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        )
        if hosts > 1:
            raise WWMError(
                f"this host sees {len(records)} of the {len(setup.plan)} prepared segments in {setup.final} "
                f"(missing {names}): the {hosts} hosts prepare a share each and read all of them, so "
                "data.cache_dir must be shared (a common disk or a bucket); or prepare the data first with "
                "`wwm prepare` (--worker i/n)"
            )
        raise WWMError(
            f"{len(missing)} of the {len(setup.plan)} segments of {setup.final} are not prepared yet ({names}); "
            "run the workers that own them (segment k belongs to worker k mod n) and finalize again"
        )
    data = setup.config.data
    packing = _merge_packing([r["stats"]["packing"] for r in records.values()])
    source = _merge_source(setup, [r["stats"]["source"] for r in records.values()])
    _check_documents(setup.config, source, _merge_counts([r["stats"]["packing"] for r in records.values()]))
    splits = ("train", "validation") if has_validation(data) else ("train",)
    for split in splits:
        _check_blocks(setup.config, split, packing.get(split, asdict(PackStats())))
    stats = PrepareStats(source=source, packing={s: packing[s] for s in splits})
    # The manifest depends on the inputs only (any worker count writes the same bytes); when and where it
    # was built goes to build.json, written just before it.
    manifest = {
        "inputs": setup.inputs,
        "stats": stats.to_dict(),
        "specials": asdict(setup.specials),
        "max_seq_len": data.max_seq_len,
        # Each segment's files with their size and SHA-256 (wwm.data.remote): a reader of a bucket entry
        # checks its copy against them without listing.
        "segments": [{"segment": seg.to_dict(), "blocks": records[seg]["blocks"],
                      **({"files": records[seg]["files"]} if "files" in records[seg] else {})}
                     for seg in setup.plan],
    }  # fmt: skip
    if write:
        build = {"built_from": _built_from(setup.config, setup.tokenizer_path),
                 "build_seconds": sum(r.get("seconds", 0.0) for r in records.values())}  # fmt: skip
        if setup.remote:  # the manifest last, after every segment's done marker
            remote.write_json(fs.join(setup.remote, segments.BUILD_FILE), build)
            remote.write_json(fs.join(setup.remote, segments.MANIFEST_FILE),
                              {"manifest_format": segments.MANIFEST_FORMAT, **manifest})  # fmt: skip
        else:
            # local: a local cache entry (the bucket branch above writes through wwm.fs)
            (setup.final / segments.BUILD_FILE).write_text(
                json.dumps(build, indent=1, default=str), encoding="utf-8"
            )
            segments.write_manifest(setup.final, manifest)
    return manifest


def _open(setup: _Setup, manifest: dict[str, Any], hit: bool, start: float) -> PreparedData:
    """The prepared splits of a manifest: each split's segments read as one BlockDataset."""
    data = setup.config.data
    stats = PrepareStats.from_dict(manifest["stats"])
    stats.seconds = time.perf_counter() - start
    build = (remote.read_json(fs.join(setup.remote, segments.BUILD_FILE)) if setup.remote
             else segments.read_json(setup.final / segments.BUILD_FILE))  # fmt: skip
    stats.build_seconds = float((build or {}).get("build_seconds", 0.0))
    listed = {segments.Segment.from_dict(e["segment"]): e["blocks"] for e in manifest["segments"]}
    copied = None
    if setup.remote and not data.remote_read:
        files = {segments.Segment.from_dict(e["segment"]).name: e.get("files") for e in manifest["segments"]}
        copied = remote.LocalCopy(setup.remote, files)

    def split_data(split: str) -> BlockDataset:
        parts = [seg for seg in setup.parts(split) if seg in listed]
        if setup.remote:
            return _open_remote(setup, manifest, split, parts, listed, copied)
        return BlockDataset.open_parts(
            [segments.segment_folder(setup.final, seg) / split for seg in parts],
            [int(listed[seg].get(split, 0)) for seg in parts], data.max_seq_len,
            segments=data.packing == "packed_documents", pad_token_id=setup.specials.pad, path=str(setup.final),
        )  # fmt: skip

    validation = split_data("validation") if has_validation(data) else None
    return PreparedData(split_data("train"), validation, setup.tokenizer, setup.tokenizer_path, setup.specials,
                        stats, setup.config, cache_path=setup.remote or str(setup.final), cache_hit=hit)  # fmt: skip


def _open_remote(
    setup: _Setup, manifest: dict[str, Any], split: str, parts: list[segments.Segment],
    listed: dict[segments.Segment, dict[str, int]], copied: remote.LocalCopy | None,
) -> BlockDataset:  # fmt: skip
    """A split of a bucket entry: its local copy (made when a batch first needs it), or with
    data.remote_read its rows read from the bucket (wwm.data.remote)."""
    data = setup.config.data
    files = {segments.Segment.from_dict(e["segment"]): e.get("files") for e in manifest["segments"]}
    if any(files[seg] is None for seg in parts):
        raise WWMError(
            f"the manifest of {setup.remote} lists no checksums (written by another wwm); prepare the data "
            "again (wwm prepare --rebuild)"
        )
    counts = [int(listed[seg].get(split, 0)) for seg in parts]
    packed = data.packing == "packed_documents"
    if data.remote_read:
        sizes = [{rel.split("/", 1)[1]: int(spec["size"]) for rel, spec in files[seg].items()
                  if rel.startswith(f"{split}/")} for seg in parts]  # fmt: skip
        source: Any = remote.RemoteParts(
            [fs.join(setup.remote, segments.SEGMENTS_DIR, seg.name, split) for seg in parts], counts,
            data.max_seq_len, packed, cache_bytes=data.remote_cache_mb << 20,
            prefetch_steps=data.remote_prefetch_steps, sizes=sizes,
        )  # fmt: skip
    else:
        source = remote.CopiedParts(
            copied, [(seg.name, split) for seg in parts], counts, data.max_seq_len, packed
        )
    return BlockDataset._over(source, setup.remote, setup.specials.pad)


def _built_from(config: RunConfig, tokenizer_path: str) -> dict[str, Any]:
    """What ``wwm cache list`` shows and compares (wwm.data.cache): the configured corpus and tokenizer
    paths, and the tokenizer's files as they were (the corpus files are in the cache inputs)."""
    data = config.data
    local = Path(tokenizer_path).expanduser()
    if local.is_dir():
        tokenizer_files = sorted(str(p.resolve()) for p in local.iterdir() if p.is_file())
    else:
        tokenizer_files = [str(local.resolve())] if local.is_file() else []  # a Hub name: nothing to stat
    return {
        "created": time.time(),
        "host": socket.gethostname(),
        "source": data.source,
        "train_files": [_absolute(p) for p in data.train_files] if data.source == "files" else None,
        "file_format": data.file_format,
        "validation_files": [_absolute(p) for p in data.validation_files] or None,
        "tokenizer": str(local.resolve()) if local.exists() else tokenizer_path,
        "tokenizer_files": cache.file_stats(tokenizer_files),
    }


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)  # a bucket URL is absolute already


def _validation_empty(detail: str) -> WWMError:
    return WWMError(
        f"the validation split is empty ({detail}); raise data.validation_fraction, give "
        "data.validation_files with text, or set validation_fraction: 0 for no validation"
    )


def _check_documents(config: RunConfig, source: dict[str, dict[str, int]], counts: dict[str, int]) -> None:
    """Before any tokenizing: the source gave documents, and each split counted in ``counts`` has some
    (WWMError otherwise). ``source["train"]``: what the training source read, when known."""
    data = config.data
    read = source.get("train")
    if read is not None and read["documents_read"] == 0:
        where = {
            "builtin": "the built-in corpus",
            "files": f"data.train_files {list(data.train_files)}",
            "hub": f"the Hub dataset {data.hub_dataset!r}",
        }[data.source]
        raise WWMError(
            f"{where} gave no document: the files are empty or hold only blank lines "
            f"({read['empty_skipped']} empty lines skipped, {read['empty_files']} empty files); "
            "point the config at files with text"
        )
    if counts.get("train") == 0 and data.validation_fraction > 0 and read is not None:
        raise WWMError(
            f"all {read['documents_read']} documents went to validation; lower "
            "data.validation_fraction or add documents"
        )
    if has_validation(data) and counts.get("validation") == 0:
        if data.validation_files:
            raise _validation_empty(f"data.validation_files {list(data.validation_files)} hold no document")
        raise _validation_empty(
            f"data.validation_fraction {data.validation_fraction:g} held out none of the "
            f"{read['documents_read'] if read else 0:,} documents"
        )


def _check_blocks(config: RunConfig, split: str, packing: dict[str, int]) -> None:
    """After tokenizing and packing a split: it gave blocks (WWMError otherwise)."""
    if packing["blocks"]:
        return
    if split == "validation":
        raise _validation_empty(f"its {packing['empty_documents']:,} documents have no token")
    raise WWMError(
        f"the training documents gave no block ({packing['documents']} documents with tokens, "
        f"{packing['empty_documents']} without any); check that the tokenizer fits the text"
    )


def measure_stream(prepared: PreparedData, progress: bool = False) -> PrepareStats:
    """One pass over the streaming splits to count what they hold (fills ``prepared.stats``); the
    validation split first, so that an empty one fails before the long training pass."""
    start = time.perf_counter()
    stats = prepared.stats
    config = prepared.config
    counts: dict[str, int] = {}
    for split, stream in (("validation", prepared.validation), ("train", prepared.train)):
        if stream is None:
            continue
        bar = _tqdm(progress, desc=f"streaming {split}", unit="block")
        with _progress_bars(False):
            for blocks, _ in stream.iter_chunks():
                bar.update(len(blocks))
        bar.close()
        packing, source = stream.stats["packing"], stream.stats["source"]
        stats.packing[split] = packing
        counts[split] = packing["documents"] + packing["empty_documents"]
        # A held-out fraction reads the whole training source; validation files are a source of their own.
        read = source if split == "train" or not config.data.validation_files else None
        if split == "train" or config.data.validation_files:
            stats.source[split] = source
        _check_documents(config, {"train": read} if read else {}, counts)
        _check_blocks(config, split, packing)
    stats.packing = {s: stats.packing[s] for s in ("train", "validation") if s in stats.packing}
    stats.build_seconds = time.perf_counter() - start
    stats.seconds += stats.build_seconds
    return stats


# --------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------


def format_summary(prepared: PreparedData) -> str:
    """The human summary that ``wwm prepare`` prints."""
    stats = prepared.stats
    data = prepared.config.data
    splits = [s for s in ("train", "validation") if s in stats.packing]
    lines = []
    if prepared.cache_path is not None:
        state = "hit" if prepared.cache_hit else "miss (built)"
        lines.append(f"cache            {state}: {prepared.cache_path}")
    else:
        lines.append("cache            none (streaming)")
    source = {"builtin": f"built-in ({data.builtin_lang})", "files": f"{len(data.train_files)} path(s)",
              "hub": f"Hub {data.hub_dataset}"}[data.source]  # fmt: skip
    lines.append(f"source           {source}; max_seq_len {data.max_seq_len}, packing {data.packing}")
    lines.append(f"tokenizer        {prepared.tokenizer_path} ({prepared.vocab_size} tokens), "
                 f"word policy {prepared.config.tokenizer.word_policy!r}")  # fmt: skip
    header = f"{'':22}" + "".join(f"{s:>14}" for s in splits)
    lines.append(header)

    def row(label: str, values: list[str]) -> None:
        lines.append(f"{label:22}" + "".join(f"{v:>14}" for v in values))

    pk = [stats.packing[s] for s in splits]
    row("documents", [f"{p['documents']:,}" for p in pk])
    row("tokens", [f"{p['tokens']:,}" for p in pk])
    row("blocks", [f"{p['blocks']:,}" for p in pk])
    row("words per token", [f"{p['words'] / max(p['tokens'], 1):.3f}" for p in pk])
    row("padding share", [f"{p['padding'] / max(p['blocks'] * data.max_seq_len, 1):.2%}" for p in pk])
    if data.packing == "packed_documents":
        row("pieces per block", [f"{p.get('pieces', 0) / max(p['blocks'], 1):.2f}" for p in pk])
    row("long docs split", [f"{p['long_documents']:,}" for p in pk])
    row("docs without tokens", [f"{p['empty_documents']:,}" for p in pk])
    for name, src in stats.source.items():
        label = "read (train source)" if name == "train" else "read (validation files)"
        lines.append(
            f"{label:22}{src['documents_read']:,} documents from {src['files'] or 'built-in/Hub'} file(s); "
            f"{src['empty_skipped']:,} empty lines skipped, {src['replaced']:,} undecodable byte "
            f"sequences replaced, {src['empty_files']:,} empty files"
        )
    took = f"time             {stats.seconds:.1f} s"
    if prepared.cache_hit:
        took += f" (the blocks took {stats.build_seconds:.1f} s to build)"
    lines.append(took)
    return "\n".join(lines)
