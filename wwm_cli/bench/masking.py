"""`wwm bench masking`: our masker against transformers' DataCollatorForLanguageModeling.

Both sides get the same real text, tokenized once with the same tokenizer and packed into (B, L)
rows of [CLS] ... [SEP]. Our masker receives arrays with word ids (the data pipeline stores them);
transformers' collators receive the features they need (input_ids, special_tokens_mask, and
offset_mapping for its whole-word mode) as a Trainer would hand them over. Our own collator on
the same kind of features is reported too (`wwm_collator_pt`), so the comparison of collator to
collator is visible.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wwm_cli.bench.common import benchmark_texts, benchmark_tokenizer, median_seconds

SHAPES = ((64, 512), (8, 8192))


def _token_stream(tokenizer, texts: list[str], needed: int) -> dict[str, np.ndarray]:
    """Concatenated tokens of the texts (no specials), with word ids and character offsets."""
    from wwm.words import tokenize_with_word_ids

    ids, wids, offsets = [], [], []
    word_base, total, start = 0, 0, 0
    while total < needed:
        chunk = texts[start : start + 2000]
        if not chunk:
            if start == 0:
                raise RuntimeError("the benchmark corpus is empty")
            start = 0  # reuse the corpus
            continue
        start += 2000
        enc = tokenize_with_word_ids(tokenizer, chunk, add_special_tokens=False)
        off = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        for row_ids, row_wids, row_off in zip(enc["input_ids"], enc["word_ids"], off, strict=True):
            if not row_ids:
                continue
            ids.append(np.asarray(row_ids))
            wids.append(np.asarray(row_wids) + word_base)
            offsets.append(np.asarray(row_off).reshape(-1, 2))
            word_base += int(np.max(row_wids)) + 1
            total += len(row_ids)
    return {"ids": np.concatenate(ids), "wids": np.concatenate(wids), "offsets": np.concatenate(offsets)}


def _rows(stream: dict[str, np.ndarray], tokenizer, B: int, L: int) -> dict[str, Any]:
    body = L - 2
    take = B * body
    # int32, as the data pipeline stores blocks (the masker returns the dtype it is given).
    ids = np.full((B, L), tokenizer.sep_token_id, dtype=np.int32)
    ids[:, 0] = tokenizer.cls_token_id
    ids[:, 1:-1] = stream["ids"][:take].reshape(B, body)
    wids = np.full((B, L), -1, dtype=np.int32)
    wids[:, 1:-1] = stream["wids"][:take].reshape(B, body)
    offsets = np.zeros((B, L, 2), dtype=np.int64)
    offsets[:, 1:-1] = stream["offsets"][:take].reshape(B, body, 2)
    special = np.zeros((B, L), dtype=np.int64)
    special[:, 0] = special[:, -1] = 1
    return {"ids": ids, "wids": wids, "offsets": offsets, "special": special}


def run(repeats: int = 7, shapes=SHAPES) -> dict[str, Any]:
    from transformers import DataCollatorForLanguageModeling

    from wwm.masking import MaskingConfig, WholeWordMasker
    from wwm_torch.collator import WholeWordMaskingCollator

    texts, corpus = benchmark_texts()
    tokenizer, tokenizer_name = benchmark_tokenizer(texts)
    stream = _token_stream(tokenizer, texts, max(B * L for B, L in shapes))
    masker = WholeWordMasker.from_tokenizer(tokenizer, MaskingConfig(mask_prob=0.15))
    ours = WholeWordMaskingCollator(tokenizer, MaskingConfig(mask_prob=0.15), return_tensors="pt")
    ours.set_epoch(0)  # one epoch's masks, timed: no epoch source needed (and no static-mask warning)
    results = []
    for B, L in shapes:
        rows = _rows(stream, tokenizer, B, L)
        features_wwm = [
            {
                "input_ids": rows["ids"][b].tolist(),
                "special_tokens_mask": rows["special"][b].tolist(),
                "offset_mapping": rows["offsets"][b].tolist(),
            }
            for b in range(B)
        ]
        features_tok = [{k: f[k] for k in ("input_ids", "special_tokens_mask")} for f in features_wwm]
        features_ours = [
            {"input_ids": f["input_ids"], "word_ids": rows["wids"][b].tolist(), "example_id": b}
            for b, f in enumerate(features_tok)
        ]
        example_ids = np.arange(B)
        big = B * L > 64 * 512
        n = max(3, repeats // 2) if big else repeats
        impls = {
            "wwm": lambda rows=rows, ex=example_ids: masker(rows["ids"], rows["wids"], ex, 0),
            "wwm_collator_pt": lambda f=features_ours: ours(f),
            "hf_wwm_np": lambda f=features_wwm: DataCollatorForLanguageModeling(
                tokenizer, whole_word_mask=True, return_tensors="np", seed=0
            )(f),
            "hf_wwm_pt": lambda f=features_wwm: DataCollatorForLanguageModeling(
                tokenizer, whole_word_mask=True, return_tensors="pt", seed=0
            )(f),
            "hf_token_np": lambda f=features_tok: DataCollatorForLanguageModeling(
                tokenizer, whole_word_mask=False, return_tensors="np", seed=0
            )(f),
        }
        for impl, fn in impls.items():
            # Every implementation: 3 warm-up calls, then samples of at least 20 ms (one call of
            # transformers' whole-word collator already takes longer; ours take about 0.5 ms).
            seconds = median_seconds(
                fn, repeats=n if not impl.startswith("hf_wwm") or not big else 3, warmup=3, min_sample_s=0.02
            )
            results.append(
                {"impl": impl, "batch": B, "seq_len": L, "tokens_per_s": B * L / seconds, "median_s": seconds}
            )
    return {"corpus": corpus, "tokenizer": tokenizer_name, "repeats": repeats, "results": results}


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"corpus: {report['corpus']}; tokenizer: {report['tokenizer']}; median of {report['repeats']} runs"
    ]
    lines.append(f"{'impl':<17}{'B':>4}{'L':>6}{'M tokens/s':>13}{'x hf_wwm_np':>13}{'x hf_token_np':>15}")
    by_shape: dict[tuple[int, int], dict[str, float]] = {}
    for r in report["results"]:
        by_shape.setdefault((r["batch"], r["seq_len"]), {})[r["impl"]] = r["tokens_per_s"]
    for r in report["results"]:
        shape = by_shape[(r["batch"], r["seq_len"])]
        lines.append(
            f"{r['impl']:<17}{r['batch']:>4}{r['seq_len']:>6}{r['tokens_per_s'] / 1e6:>13.2f}"
            f"{r['tokens_per_s'] / shape['hf_wwm_np']:>13.1f}{r['tokens_per_s'] / shape['hf_token_np']:>15.2f}"
        )
    return "\n".join(lines)
