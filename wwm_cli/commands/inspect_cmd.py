"""`wwm inspect`: tokenize a text file, mask it, show examples and masking statistics."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

HELP = "Tokenize a text, mask whole words, show examples (masked words highlighted) and statistics."

_COLOURS = {1: "\x1b[1;37;41m", 2: "\x1b[1;30;43m", 3: "\x1b[1;30;42m"}  # [MASK] / random / kept
_RESET = "\x1b[0m"
_PLAIN = {1: "M", 2: "R", 3: "K"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="UTF-8 text, one document per line (default: a built-in sample)")
    p.add_argument(
        "--lang",
        choices=("en", "zh", "ja", "th", "lo", "km", "my", "bo", "vi"),
        default="en",
        help="built-in sample language (zh, ja, th, lo, km, my, bo, vi: words from a segmenter: jieba, "
        "fugashi, pythainlp, laonlp, khmer-nltk, pyidaungsu, botok, pyvi)",
    )
    p.add_argument(
        "--segmenter",
        default=None,
        help="segmenter of policy segmenter (default: auto; pyvi for --lang vi, Vietnamese is opt-in)",
    )
    p.add_argument(
        "--pre-segment",
        action="store_true",
        help="split the text into segmenter words before the tokenizer (no token straddles two words)",
    )
    p.add_argument(
        "--tokenizer",
        help="tokenizer directory, tokenizer.json or Hub name (default: a WordPiece tokenizer trained "
        "on the text itself in about a second)",
    )
    p.add_argument(
        "--policy",
        default=None,
        help="word policy: tokenizer, whitespace, vocab, segmenter (alias cjk); default: segmenter for the "
        "zh/ja/th samples, tokenizer otherwise",
    )
    p.add_argument("--max-length", type=int, default=128, help="truncate each document to this")
    p.add_argument("--examples", type=int, default=3, help="how many examples to show")
    p.add_argument("--mask-prob", type=float, default=0.15)
    p.add_argument("--budget", choices=("exact", "bernoulli"), default="exact")
    p.add_argument("--max-ngram", type=int, default=1)
    p.add_argument("--mask-token-ratio", type=float, default=0.8)
    p.add_argument("--random-token-ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epoch", type=int, default=0)
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON only")


def main(args: argparse.Namespace) -> int:
    from wwm.data.builtin import builtin_sample_text
    from wwm.errors import WWMError
    from wwm.masking import MaskingConfig, WholeWordMasker
    from wwm.tokenizer_train import train_tokenizer
    from wwm.words import tokenize_with_word_ids

    if args.file:
        from wwm import fs

        path = fs.normalize(args.file) if fs.is_remote(args.file) else str(Path(args.file))
        with fs.errors(path, "read"):  # a bucket's credentials, permission or a missing bucket: one line
            found = fs.isfile(path)
        if not found:
            raise WWMError(f"no such file: {path}; give a UTF-8 text file, one document per line")
        with fs.errors(path, "read"):
            raw = fs.read_bytes(path)
        texts = [line.strip() for line in raw.decode("utf-8", errors="replace").splitlines()]
        texts = [t for t in texts if t]
        if not texts:
            raise WWMError(f"{path} holds no text (only empty lines)")
    else:
        texts = builtin_sample_text(args.lang)
    sample = None if args.file else args.lang
    segmented = sample is not None and sample != "en"
    policy = args.policy or ("segmenter" if segmented else "tokenizer")
    segmenter = args.segmenter or ("pyvi" if sample == "vi" else "auto")
    if args.tokenizer:
        tokenizer = _load_tokenizer(args.tokenizer)
    else:
        import warnings

        from wwm.errors import WWMWarning

        # Lowercasing strips accents (NFD), which would drop Japanese voicing marks, Thai tone marks, the
        # vowel signs of Lao, Khmer, Myanmar and Tibetan, and Vietnamese diacritics.
        lowercase = False if segmented and sample != "zh" else None
        with warnings.catch_warnings():  # 4000 is our pick, not the user's: a smaller vocabulary is fine
            warnings.simplefilter("ignore", WWMWarning)
            tokenizer = train_tokenizer(
                texts,
                kind="wordpiece",
                vocab_size=4000,
                lowercase=lowercase,
                pre_segment=segmenter if args.pre_segment else None,
            )
    config = MaskingConfig(
        mask_prob=args.mask_prob,
        budget=args.budget,
        max_ngram=args.max_ngram,
        mask_token_ratio=args.mask_token_ratio,
        random_token_ratio=args.random_token_ratio,
        seed=args.seed,
    )
    masker = WholeWordMasker.from_tokenizer(tokenizer, config)
    encoded = tokenize_with_word_ids(
        tokenizer,
        texts,
        policy=policy,
        max_length=args.max_length,
        truncation=True,
        segmenter=segmenter,
        pre_segment=args.pre_segment,
    )
    input_ids, word_ids = _pad(encoded["input_ids"], tokenizer.pad_token_id), _pad(encoded["word_ids"], -1)
    out = masker(input_ids, word_ids, np.arange(len(texts)), args.epoch)
    stats = mask_statistics(input_ids, word_ids, out, masker)
    stats.update(
        documents=len(texts),
        policy=policy,
        segmenter=segmenter,
        pre_segment=args.pre_segment,
        tokenizer=args.tokenizer or "wordpiece trained on the text",
    )
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    colour = args.color == "always" or (
        args.color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    )
    print(f"policy {policy!r}, {len(texts)} documents, {config}\n")
    legend = " ".join(_mark(name, cat, colour) for cat, name in ((1, "[MASK]"), (2, "random"), (3, "kept")))
    print(f"legend: {legend}" + ("" if colour else "  (⟦...⟧M = became [MASK], R = random, K = kept)"))
    for row in _readable_rows(texts, out.masked, args.examples):
        print(f"\n--- example {row} ---")
        print(
            render_row(
                tokenizer, input_ids[row], word_ids[row], out.replacement[row], out.input_ids[row], colour
            )
        )
    print()
    for key, value in stats.items():
        print(f"{key:>34}: {value:.4f}" if isinstance(value, float) else f"{key:>34}: {value}")
    return 0


def _readable_rows(texts: list[str], masked: np.ndarray, n: int) -> list[int]:
    """The first n documents that read as prose (mostly letters, a few words) and have a masked token;
    fall back to the first n documents."""

    def prose(text: str) -> bool:
        letters = sum(ch.isalpha() for ch in text)
        return len(text.split()) >= 8 and letters >= 0.7 * len(text.replace(" ", ""))

    rows = [i for i, t in enumerate(texts) if prose(t) and masked[i].any()][:n]
    return rows or list(range(min(n, len(texts))))


def _load_tokenizer(name: str) -> Any:
    from wwm.data.tokenizer import load_tokenizer  # a Hub name offline fails fast, in one line

    return load_tokenizer(name)


def _pad(rows: list, value: int) -> np.ndarray:
    L = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), L), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _word_runs(word_ids: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """(B, L) index of each eligible token's word in its row (same rule as the masker), -1 elsewhere."""
    same = np.zeros_like(eligible)
    same[:, 1:] = eligible[:, :-1] & (word_ids[:, 1:] == word_ids[:, :-1])
    starts = eligible & ~same
    return np.where(eligible, np.cumsum(starts, axis=1) - 1, -1)


def mask_statistics(input_ids: np.ndarray, word_ids: np.ndarray, out, masker) -> dict[str, float]:
    """Masked share of tokens and words, replacement shares, and the share of whole masked words."""
    from wwm.masking import KEPT, REPLACED_BY_MASK, REPLACED_BY_RANDOM

    eligible = (word_ids >= 0) & ~masker.is_special[input_ids]
    runs = _word_runs(word_ids, eligible)
    B = input_ids.shape[0]
    W = int(runs.max()) + 1 if runs.size and runs.max() >= 0 else 0
    flat = np.where(eligible, np.arange(B)[:, None] * W + runs, B * W)
    tokens_per_word = np.bincount(flat.ravel(), minlength=B * W + 1)[: B * W]
    masked_per_word = np.bincount(flat.ravel(), weights=out.masked.ravel(), minlength=B * W + 1)[: B * W]
    words = tokens_per_word > 0
    touched = masked_per_word > 0
    n_masked = int(out.masked.sum())
    return {
        "eligible_tokens": int(eligible.sum()),
        "words": int(words.sum()),
        "masked_tokens": n_masked,
        "masked_share_of_tokens": n_masked / max(1, int(eligible.sum())),
        "masked_share_of_words": float(touched.sum() / max(1, words.sum())),
        "mask_token_share": float((out.replacement == REPLACED_BY_MASK).sum() / max(1, n_masked)),
        "random_token_share": float((out.replacement == REPLACED_BY_RANDOM).sum() / max(1, n_masked)),
        "kept_share": float((out.replacement == KEPT).sum() / max(1, n_masked)),
        "masked_words_fully_masked": float(
            (masked_per_word[touched] == tokens_per_word[touched]).mean() if touched.any() else 1.0
        ),
    }


def _mark(text: str, category: int, colour: bool) -> str:
    return f"{_COLOURS[category]}{text}{_RESET}" if colour else f"⟦{text}⟧{_PLAIN[category]}"


def render_row(tokenizer, ids, word_ids, replacement, new_ids, colour: bool) -> str:
    """The original tokens, masked words highlighted (colour or ⟦..⟧ markers), then the model input."""
    tokens = tokenizer.convert_ids_to_tokens([int(i) for i in ids if i != tokenizer.pad_token_id])
    parts = []
    for i, tok in enumerate(tokens):
        category = int(replacement[i])
        if category and (i == 0 or replacement[i - 1] == 0 or word_ids[i] != word_ids[i - 1]):
            # Show the whole masked word as one marked group.
            j = i
            while j + 1 < len(tokens) and replacement[j + 1] and word_ids[j + 1] == word_ids[i]:
                j += 1
            parts.append(_mark(" ".join(tokens[i : j + 1]), category, colour))
        elif not category:
            parts.append(tok)
    model_input = tokenizer.convert_ids_to_tokens([int(i) for i in new_ids[: len(tokens)]])
    return "text : " + " ".join(parts) + "\ninput: " + " ".join(model_input)
