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
    path.write_text("\n".join(" ".join(d.split()) for d in builtin_documents("en")) + "\n", encoding="utf-8")
    return str(path)


def _run_wwm(path: str, tokenizer: Any, max_seq_len: int, work: Path) -> dict[str, int]:
    from wwm.config import DataConfig, RunConfig
    from wwm.data.packing import SpecialIds
    from wwm.data.pipeline import _build_split, _progress_bars, _write_documents

    config = RunConfig(
        data=DataConfig(source="files", train_files=(path,), max_seq_len=max_seq_len, num_proc=1)
    )
    specials = SpecialIds.from_tokenizer(tokenizer)
    with _progress_bars(False):
        documents, _ = _write_documents(config.data, work)
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
