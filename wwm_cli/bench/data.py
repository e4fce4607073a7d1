"""Throughput of the prepare path against the transformers ``run_mlm.py`` recipe, on one corpus and tokenizer.

``bench_data(corpus, tokenizer, max_seq_len, repeats)`` times, ``repeats`` times each, alternating:

``wwm_prepare``
    our path from the text file to stored blocks: read the documents (one per line, empty lines skipped),
    write them to an Arrow file, ``Dataset.map`` with ``tokenize_table`` (tokens + word ids, num_proc 1),
    pack (``full_sentences``) and write the blocks. No cache is read.
``hf_run_mlm``
    transformers' examples/pytorch/language-modeling/run_mlm.py without --line_by_line:
    ``load_dataset("text")`` (fresh cache folder), ``map(tokenize_function)`` with
    ``tokenizer(examples["text"], return_special_tokens_mask=True)``, then ``map(group_texts)`` (concatenate
    with ``itertools.chain`` and split into ``max_seq_len`` chunks, the remainder dropped), both batched
    with the default batch size 1000, as in the script.

Both report ``tokens_per_s`` = (text tokens of the corpus, without special tokens, as counted by our
packer) / median seconds, so the ratio of the two figures is the ratio of their times. Only the first
produces word ids.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from itertools import chain
from pathlib import Path
from typing import Any

__all__ = ["bench_data"]


def _corpus_file(corpus: str, work: Path) -> str:
    if corpus != "builtin":
        if not os.path.isfile(corpus):
            from wwm.errors import WWMError

            raise WWMError(f"corpus {corpus!r} is not a file; give a text file or 'builtin'")
        return corpus
    from wwm.data.builtin import builtin_documents

    path = work / "builtin.txt"
    # local: the benchmark's temporary folder
    path.write_text("\n".join(" ".join(d.split()) for d in builtin_documents("en")) + "\n", encoding="utf-8")
    return str(path)


def _run_wwm(path: str, tokenizer: Any, max_seq_len: int, work: Path) -> dict[str, int]:
    from wwm.config import DataConfig, RunConfig
    from wwm.data.packing import SpecialIds
    from wwm.data.pipeline import _build_split, _progress_bars, _write_documents
    from wwm.data.segments import Segment  # the whole source, one segment

    config = RunConfig(
        data=DataConfig(source="files", train_files=(path,), max_seq_len=max_seq_len, num_proc=1)
    )
    specials = SpecialIds.from_tokenizer(tokenizer)
    with _progress_bars(False):
        documents, _ = _write_documents(config.data, Segment(0, "train"), work)
        return _build_split(
            config, "train", documents["train"], tokenizer, specials, work, work / "out", False
        )


def _run_hf(path: str, tokenizer: Any, max_seq_len: int, work: Path) -> int:
    import datasets

    with _quiet_datasets():
        raw = datasets.load_dataset("text", data_files={"train": path}, cache_dir=str(work / "hf"))
        column_names = raw["train"].column_names
        text_column_name = "text" if "text" in column_names else column_names[0]

        def tokenize_function(examples):
            return tokenizer(examples[text_column_name], return_special_tokens_mask=True)

        tokenized = raw.map(tokenize_function, batched=True, remove_columns=column_names)

        def group_texts(examples):
            concatenated_examples = {k: list(chain(*examples[k])) for k in examples}
            total_length = len(concatenated_examples[next(iter(examples.keys()))])
            total_length = (total_length // max_seq_length) * max_seq_length
            return {
                k: [t[i : i + max_seq_length] for i in range(0, total_length, max_seq_length)]
                for k, t in concatenated_examples.items()
            }

        max_seq_length = max_seq_len
        grouped = tokenized.map(group_texts, batched=True)
        return grouped["train"].num_rows


class _quiet_datasets:
    def __enter__(self):
        import datasets

        self.was = not datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()
        self.level = datasets.logging.get_verbosity()
        datasets.logging.set_verbosity_error()

    def __exit__(self, *exc):
        import datasets

        if self.was:
            datasets.enable_progress_bars()
        datasets.logging.set_verbosity(self.level)


def bench_data(
    corpus_path_or_builtin: str = "builtin", tokenizer: Any = None, max_seq_len: int = 128, repeats: int = 3
) -> list[dict[str, Any]]:
    """Median tokens/s of ``wwm_prepare`` and ``hf_run_mlm`` (see the module docstring), in one run.

    ``tokenizer``: a fast tokenizer object, or a path / Hub name for ``AutoTokenizer``; None trains a
    4000-token WordPiece on the built-in corpus.
    """
    from wwm.data.tokenizer import _quiet, load_tokenizer

    if tokenizer is None:
        from wwm.data.builtin import builtin_documents
        from wwm.tokenizer_train import train_tokenizer

        tokenizer = train_tokenizer(builtin_documents("en"), "wordpiece", 4000)
    elif isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(str(tokenizer))
    _quiet(tokenizer)
    root = Path(tempfile.mkdtemp(prefix="wwm-bench-data-"))
    try:
        path = _corpus_file(corpus_path_or_builtin, root)
        times: dict[str, list[float]] = {"wwm_prepare": [], "hf_run_mlm": []}
        tokens = blocks = hf_blocks = 0
        for r in range(repeats):
            for impl in times:
                work = root / f"{impl}-{r}"
                work.mkdir()
                t0 = time.perf_counter()
                if impl == "wwm_prepare":
                    stats = _run_wwm(path, tokenizer, max_seq_len, work)
                else:
                    hf_blocks = _run_hf(path, tokenizer, max_seq_len, work)
                times[impl].append(time.perf_counter() - t0)
                if impl == "wwm_prepare":
                    tokens, blocks = stats["tokens"], stats["blocks"]
                shutil.rmtree(work, ignore_errors=True)
        out = []
        for impl, seconds in times.items():
            median = statistics.median(seconds)
            out.append(
                {
                    "impl": impl,
                    "tokens_per_s": tokens / median,
                    "seconds": median,
                    "tokens": tokens,
                    "blocks": blocks if impl == "wwm_prepare" else hf_blocks,
                    "word_ids": impl == "wwm_prepare",
                    "corpus": corpus_path_or_builtin,
                    "max_seq_len": max_seq_len,
                    "repeats": repeats,
                }
            )
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Segmentation: word ids and `wwm prepare` with and without a segmenter (`wwm bench data --lang L`)
# --------------------------------------------------------------------------------------------------

#: Per language: the segmenter of policy 'segmenter' (auto, except opt-in Vietnamese).
_LANG_SEGMENTER = {"vi": "pyvi"}


def _lang_documents(lang: str, corpus: str | None, count: int, lines: int) -> list[str]:
    """``count`` documents: the lines of ``corpus`` (a file, one document per line), or, without one,
    ``lines`` random lines of the built-in sample of ``lang`` joined (seed 0)."""
    if corpus is not None:
        from wwm import fs
        from wwm.errors import WWMError

        with fs.errors(corpus, "read"):  # a local file or a bucket object
            if not fs.isfile(corpus):
                raise WWMError(f"corpus {corpus!r} is not a file; give a text file, one document per line")
            text = fs.read_bytes(corpus).decode("utf-8", errors="replace")
        docs = [line.strip() for line in text.splitlines() if line.strip()]
        return docs[:count] if count else docs
    import random

    from wwm.data.builtin import builtin_sample_text

    sample = builtin_sample_text(lang)
    rng = random.Random(0)
    return ["".join(rng.choice(sample) for _ in range(lines)) for _ in range(count)]


def bench_segmentation(
    lang: str,
    corpus: str | None = None,
    tokenizer: Any = None,
    *,
    repeats: int = 3,
    num_procs: tuple[int, ...] = (1, 2),
    max_seq_len: int = 128,
    documents: int = 10000,
    batch_size: int = 1000,
) -> dict[str, Any]:
    """Word-id throughput with and without segmentation, and ``wwm prepare``'s tokenize-and-pack step
    (``_build_split``, as ``bench_data``) with each ``num_proc``, for one language.

    Variants: ``tokenizer`` (policy tokenizer, no segmenter), ``segmenter`` (policy segmenter: the
    segmenter groups the tokens), ``pre_segment`` (policy segmenter on text cut at segmenter words before
    the tokenizer). Each figure is a median over ``repeats`` runs alternating the variants; ratios are
    the ``tokenizer`` variant's median time over the variant's.
    ``tokenizer``: a tokenizer or a path; None trains a 4000-token WordPiece (not lowercased) on the
    documents.
    """
    from wwm.config import DataConfig, RunConfig, TokenizerConfig
    from wwm.data.packing import SpecialIds
    from wwm.data.pipeline import _build_split, _progress_bars, _write_documents
    from wwm.data.segments import Segment  # the whole source, one segment
    from wwm.data.tokenizer import _quiet, load_tokenizer
    from wwm.words import tokenize_with_word_ids

    segmenter = _LANG_SEGMENTER.get(lang, "auto")
    docs = _lang_documents(lang, corpus, documents, 3)
    if tokenizer is None:
        import warnings

        from wwm.errors import WWMWarning
        from wwm.tokenizer_train import train_tokenizer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", WWMWarning)
            tokenizer = train_tokenizer(docs[:5000], "wordpiece", 4000, lowercase=lang == "zh")
    elif isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(str(tokenizer))
    _quiet(tokenizer)
    variants = {
        "tokenizer": {"policy": "tokenizer"},
        "segmenter": {"policy": "segmenter", "segmenter": segmenter},
        "pre_segment": {"policy": "segmenter", "segmenter": segmenter, "pre_segment": True},
    }
    characters = sum(map(len, docs))
    # 1. word ids: one call per batch of `batch_size` documents over the first 1000 documents
    sample = docs[:1000]
    word_times: dict[str, list[float]] = {v: [] for v in variants}
    tokens: dict[str, int] = {}
    for _ in range(repeats):
        for name, kwargs in variants.items():
            t0 = time.perf_counter()
            out = tokenize_with_word_ids(tokenizer, sample, add_special_tokens=False, **kwargs)
            word_times[name].append(time.perf_counter() - t0)
            tokens[name] = sum(map(len, out["input_ids"]))  # (pre-segmented text has more tokens)
    word_ids = {
        name: {
            "tokens_per_s": tokens[name] / statistics.median(t),
            "characters_per_s": sum(map(len, sample)) / statistics.median(t),
            "vs_tokenizer": statistics.median(word_times["tokenizer"]) / statistics.median(t),
        }
        for name, t in word_times.items()
    }
    # 2. prepare: Dataset.map(tokenize_table) with num_proc workers, packing, writing blocks
    root = Path(tempfile.mkdtemp(prefix="wwm-bench-seg-"))
    try:
        path = root / "corpus.txt"
        # local: the benchmark's temporary folder
        path.write_text("\n".join(" ".join(d.split()) for d in docs) + "\n", encoding="utf-8")
        specials = SpecialIds.from_tokenizer(tokenizer)
        prep_times: dict[tuple[str, int], list[float]] = {}
        prep_tokens: dict[str, int] = {}
        for r in range(repeats):
            for num_proc in num_procs:
                for name, kwargs in variants.items():
                    config = RunConfig(
                        data=DataConfig(source="files", train_files=(str(path),), max_seq_len=max_seq_len,
                                        num_proc=num_proc, map_batch_size=batch_size),
                        tokenizer=TokenizerConfig(
                            word_policy=kwargs["policy"], segmenter=kwargs.get("segmenter", "auto"),
                            pre_segment=kwargs.get("pre_segment", False),
                        ),
                    )  # fmt: skip
                    work = root / f"{name}-{num_proc}-{r}"
                    work.mkdir()
                    with _progress_bars(False), _quiet_datasets():
                        documents_files, _ = _write_documents(config.data, Segment(0, "train"), work)
                        t0 = time.perf_counter()
                        stats = _build_split(
                            config, "train", documents_files["train"], tokenizer, specials, work,
                            work / "out", False,
                        )  # fmt: skip
                        prep_times.setdefault((name, num_proc), []).append(time.perf_counter() - t0)
                    prep_tokens[name] = stats["tokens"]
                    shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    prepare = []
    for (name, num_proc), t in prep_times.items():
        base = prep_times[("tokenizer", num_proc)]
        prepare.append(
            {
                "variant": name,
                "num_proc": num_proc,
                "tokens_per_s": prep_tokens[name] / statistics.median(t),
                "characters_per_s": characters / statistics.median(t),
                "seconds": statistics.median(t),
                "vs_tokenizer": statistics.median(base) / statistics.median(t),
            }
        )
    return {
        "lang": lang,
        "segmenter": segmenter,
        "corpus": corpus or f"builtin {lang} sample: {len(docs)} documents of 3 random lines",
        "documents": len(docs),
        "characters": characters,
        "tokenizer": getattr(tokenizer, "name_or_path", "") or "wordpiece 4000 trained on the documents",
        "word_ids": word_ids,
        "word_ids_documents": len(sample),
        "prepare": prepare,
        "prepare_tokens": prep_tokens.get("tokenizer", 0),
        "repeats": repeats,
    }


def format_segmentation(report: dict[str, Any]) -> str:
    lines = [
        f"{report['lang']}: {report['corpus']} ({report['characters']:,} characters), segmenter "
        f"{report['segmenter']}, tokenizer {report['tokenizer']}; medians of {report['repeats']}",
        f"word ids ({report['word_ids_documents']} documents, one call):",
    ]
    for name, r in report["word_ids"].items():
        lines.append(f"  {name:<12} {r['tokens_per_s']:>12,.0f} tokens/s  {r['characters_per_s']:>12,.0f} "
                     f"characters/s  {r['vs_tokenizer']:.2f} of tokenizer")  # fmt: skip
    lines.append(f"wwm prepare, tokenize and pack ({report['characters']:,} characters, "
                 f"{report['prepare_tokens']:,} tokens unsegmented):")  # fmt: skip
    for r in report["prepare"]:
        lines.append(f"  {r['variant']:<12} num_proc {r['num_proc']}  {r['characters_per_s']:>12,.0f} characters/s  "
                     f"{r['tokens_per_s']:>10,.0f} tokens/s  {r['seconds']:7.2f} s  {r['vs_tokenizer']:.2f} of tokenizer")  # fmt: skip
    return "\n".join(lines)


def straddle_stats(tokenizer: Any, texts: list[str], segmenter: str, pre_segment: bool) -> dict[str, Any]:
    """How many tokens straddle a segmenter word boundary (one between two characters of which either is
    in a segmented script; a token straddles it when the boundary lies after the token's first non-space
    character and before its end), and how many segmenter words of segmented characters share a token
    with a neighbour, so that whole-word masking cannot mask them alone."""
    import numpy as np

    from wwm.words import _placement, _Scripts, _segment_ids, _segment_spans, tokenize_with_word_ids

    out = tokenize_with_word_ids(
        tokenizer, texts, add_special_tokens=False, segmenter=segmenter, pre_segment=pre_segment,
        return_offsets_mapping=True, policy="segmenter",
    )  # fmt: skip
    placement = _placement(texts, None)
    from wwm.words import _codepoints

    scripts = _Scripts(_codepoints(placement.full))
    segmented = np.append(scripts.decided(segmenter), False)
    spans = _segment_spans(placement.placed, scripts, segmented, segmenter)
    n = len(placement.full)
    seg = _segment_ids(n, spans)
    boundary = np.zeros(n + 1, dtype=bool)
    boundary[1:n] = (seg[1:n] != seg[: n - 1]) & (segmented[1:n] | segmented[: n - 1])
    before = np.concatenate([[0], np.cumsum(boundary)])  # boundaries at positions < p
    space = np.append([c.isspace() for c in placement.full], False)
    tokens = straddling = 0
    split_words: set[int] = set()
    for (_text, at), offsets in zip(placement.placed[::2], out["offset_mapping"], strict=True):
        for s, e in offsets:
            if e <= s:
                continue
            a = at + s
            while a < at + e and space[a]:
                a += 1
            tokens += 1
            if before[at + e] - before[a + 1] > 0:  # a boundary b with a < b < e
                straddling += 1
                split_words.update(int(w) for w in np.unique(seg[a : at + e]))
    words = {int(w) for w in np.unique(seg[:n][segmented[:n]])}
    return {
        "tokens": tokens,
        "straddling_tokens": straddling,
        "straddling_share": straddling / max(1, tokens),
        "segmenter_words": len(words),
        "words_not_maskable_alone": len(split_words & words),
        "words_not_maskable_alone_share": len(split_words & words) / max(1, len(words)),
    }


def bench_straddle(
    lang: str, corpus: str | None = None, *, documents: int = 1000, vocab_size: int = 8000
) -> dict[str, Any]:
    """Straddling tokens of a WordPiece and a byte-level BPE tokenizer trained on the documents, without
    pre-segmentation (trained and used on raw text) and with it (trained and used on text cut at
    segmenter words)."""
    import warnings

    from wwm.errors import WWMWarning
    from wwm.tokenizer_train import train_tokenizer

    segmenter = _LANG_SEGMENTER.get(lang, "auto")
    docs = _lang_documents(lang, corpus, documents, 3)
    lowercase = lang == "zh"
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WWMWarning)
        for kind in ("wordpiece", "bpe"):
            for pre in (False, True):
                tok = train_tokenizer(docs, kind, vocab_size, lowercase if kind == "wordpiece" else False,
                                      pre_segment=segmenter if pre else None)  # fmt: skip
                rows.append({"kind": kind, "pre_segment": pre, "vocab": len(tok),
                             **straddle_stats(tok, docs, segmenter, pre)})  # fmt: skip
    return {"lang": lang, "segmenter": segmenter, "documents": len(docs), "characters": sum(map(len, docs)),
            "corpus": corpus or f"builtin {lang} sample", "rows": rows}  # fmt: skip


def format_straddle(report: dict[str, Any]) -> str:
    lines = [f"{report['lang']}: {report['corpus']}, {report['documents']} documents "
             f"({report['characters']:,} characters), segmenter {report['segmenter']}"]  # fmt: skip
    for r in report["rows"]:
        lines.append(f"  {r['kind']:<10} vocab {r['vocab']:>6}  pre_segment {'yes' if r['pre_segment'] else 'no ':<3}  "
                     f"straddling tokens {r['straddling_share']:7.2%} ({r['straddling_tokens']:,} of {r['tokens']:,})  "
                     f"words not maskable alone {r['words_not_maskable_alone_share']:7.2%} "
                     f"({r['words_not_maskable_alone']:,} of {r['segmenter_words']:,})")  # fmt: skip
    return "\n".join(lines)
