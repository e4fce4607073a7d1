"""`wwm bench packing`: the same small model on the same corpus with each packing, in each framework.

Corpus: WikiText-2 paragraphs from ../shared/corpora when present, else the built-in corpus
(`benchmark_texts`), one document a paragraph; the benchmark tokenizer. Each packing packs the same
documents with `wwm.data.Packer`; the training step is the trainers' own (`wwm_cli.bench.train`).
Useful tokens are the non-padding ones: per step B * L * (1 - padding share) (batches are drawn at random
from the blocks, so that is each step's expectation), per second that over the median step time.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from wwm.config import RunConfig

PACKINGS = ("full_sentences", "doc_per_block", "packed_documents")


def pack_texts(texts: list[str], tokenizer, seq_len: int, packing: str):
    """(BlockDataset, padding share) of the texts packed with `packing` (word ids from the tokenizer)."""
    from wwm.data import BlockDataset, Packer, SpecialIds

    enc = tokenizer(texts, add_special_tokens=False)
    ids = np.concatenate([np.asarray(x, dtype=np.int32) for x in enc["input_ids"]])
    wids = np.concatenate([np.asarray([-1 if w is None else w for w in enc.word_ids(i)], dtype=np.int32)
                           for i in range(len(texts))])  # fmt: skip
    lengths = np.array([len(x) for x in enc["input_ids"]])
    packer = Packer(seq_len, packing, SpecialIds.from_tokenizer(tokenizer))
    from wwm.data import Blocks

    blocks = Blocks.concat([packer.add(ids, wids, lengths), packer.finish()], seq_len)
    share = packer.stats.padding / max(len(blocks) * seq_len, 1)
    return BlockDataset.from_blocks(blocks, pad_token_id=tokenizer.pad_token_id), share


def run(seq_len: int = 512, batch: int = 8, steps: int = 3, warmup: int = 1, impls=("jax", "torch"),
        model: str = "tiny") -> dict[str, Any]:  # fmt: skip
    from wwm_cli.bench import train as bench_train
    from wwm_cli.bench.common import benchmark_texts, benchmark_tokenizer

    texts, corpus = benchmark_texts()
    texts = [t for t in texts if t.strip()]
    tokenizer, tokenizer_name = benchmark_tokenizer(texts)
    results = []
    import tempfile

    with tempfile.TemporaryDirectory(prefix="wwm-bench-packing-") as tmp:
        for packing in PACKINGS:
            blocks, share = pack_texts(texts, tokenizer, seq_len, packing)
            data = SimpleNamespace(
                blocks=blocks, tokenizer=tokenizer, corpus=corpus, tokenizer_name=tokenizer_name
            )
            for impl in impls:
                config = bench_train.make_config(
                    model, seq_len, batch, warmup + steps, "float32", f"{tmp}/{impl}"
                )
                config = _with_packing(config, packing)
                out = bench_train.RUNNERS[impl](config, data, warmup, steps, None, None)
                useful_per_step = batch * seq_len * (1 - share)
                results.append({
                    "impl": impl, "packing": packing, "seq_len": seq_len, "blocks": len(blocks),
                    "padding_share": share, "step_time_s": out["step_time_s"],
                    "useful_tokens_per_step": useful_per_step,
                    "useful_tokens_per_s": useful_per_step / out["step_time_s"],
                })  # fmt: skip
    for r in results:
        base = next(x for x in results if x["impl"] == r["impl"] and x["packing"] == "doc_per_block")
        r["x_doc_per_block"] = r["useful_tokens_per_s"] / base["useful_tokens_per_s"]
    return {"corpus": corpus, "tokenizer": tokenizer_name, "model": model, "batch": batch,
            "date": time.strftime("%Y-%m-%d"), "results": results}  # fmt: skip


def _with_packing(config: RunConfig, packing: str) -> RunConfig:
    import dataclasses

    return dataclasses.replace(config, data=dataclasses.replace(config.data, packing=packing))


def format_table(report: dict[str, Any]) -> str:
    lines = [f"corpus {report['corpus']}, tokenizer {report['tokenizer']}, model {report['model']}, "
             f"batch {report['batch']}",
             f"{'impl':<7}{'packing':<18}{'L':>6}{'padding':>9}{'useful/step':>13}{'useful/s':>11}{'x doc_per_block':>17}"]  # fmt: skip
    for r in report["results"]:
        lines.append(
            f"{r['impl']:<7}{r['packing']:<18}{r['seq_len']:>6}{r['padding_share']:>9.1%}"
            f"{r['useful_tokens_per_step']:>13,.0f}{r['useful_tokens_per_s']:>11,.0f}{r['x_doc_per_block']:>17.2f}"
        )
    return "\n".join(lines)


__all__ = ["PACKINGS", "format_table", "pack_texts", "run"]
