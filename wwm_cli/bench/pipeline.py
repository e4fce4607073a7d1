"""`wwm bench pipeline`: how many tokens/s the input pipeline sustains on one host CPU core, against
the rate a trainer consumes them at the reference GPU speed (the headroom).

Measured, one thread, on real text packed into blocks of L tokens (the trainers' own code):

* `jax`: what `wwm_jax.train` runs per step: `BatchIterator` over the blocks -> `WholeWordMasker`
  -> int32 (A, M, L) micro-batch arrays (`masked_host_batches`) -> `jax.device_put`, waited for.
* `torch`: what the torch trainer's data loader runs per step: `GlobalBatchDataset` items (one
  `BatchIterator` batch, one feature dict per row) -> `WholeWordMaskingCollator` -> torch tensors
  (moved to the GPU when there is one).
* `masker`: `WholeWordMasker` alone on the same batches (the part that scales with the mask spec).

tokens/s per core = tokens / CPU seconds of the process (`time.process_time`, all its threads), so a
shared machine's other load does not count; the wall-clock rate is reported too.

Reference consumption: BERT-base (L = 512) on one H100 at 50% MFU of 989 TFLOP/s (dense bf16):
tokens/s = 0.5 * 989e12 / FLOPs per token, FLOPs per token = 6 * N + 12 * layers * L * H (forward +
backward; bidirectional attention, not halved). Headroom = pipeline tokens/s per core / that rate.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

H100_BF16_DENSE = 989e12
TARGET_MFU = 0.5
TARGET_HEADROOM = 10.0


def reference_rate(seq_len: int = 512, vocab_size: int = 30522) -> dict[str, float]:
    """Tokens/s one H100 consumes training BERT-base at 50% MFU (module docstring)."""
    from wwm.flops import flops_per_token
    from wwm_cli.bench.train import bert_base_params

    n = bert_base_params(vocab_size, seq_len)
    per_token = flops_per_token(n, 12, seq_len, 768)
    return {
        "params": n,
        "flops_per_token": per_token,
        "peak_flops": H100_BF16_DENSE,
        "mfu": TARGET_MFU,
        "tokens_per_s": TARGET_MFU * H100_BF16_DENSE / per_token,
    }


def _time(fn, steps: int, warmup: int = 1) -> tuple[float, float]:
    """(median wall s, median CPU s) per call."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(steps):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def _jax_step(data, masker, batch: int):
    import jax

    from wwm.data import BatchIterator
    from wwm_jax.train import masked_host_batches

    device = jax.devices()[0]
    batches = masked_host_batches(BatchIterator(data.blocks, batch, seed=0), masker, 1)

    def step():
        rows, _, _ = next(batches)
        jax.block_until_ready(jax.device_put(rows, device))

    return step


def _torch_step(data, masker_config, batch: int):
    import torch

    from wwm_torch.collator import WholeWordMaskingCollator
    from wwm_torch.data import GlobalBatchDataset

    dataset = GlobalBatchDataset(data.blocks, batch, seed=0, num_steps=10**6)
    collator = WholeWordMaskingCollator(data.tokenizer, masker_config, return_example_ids=True)
    device = torch.device("cuda") if torch.cuda.is_available() else None
    position = [0]

    def step():
        start = position[0]
        position[0] += batch
        out = collator([dataset[i] for i in range(start, start + batch)])
        if device is not None:
            out = {k: v.to(device, non_blocking=True) for k, v in out.items()}
            torch.cuda.synchronize()

    return step


def _masker_step(data, masker, batch: int):
    from wwm.data import BatchIterator

    batches = iter(BatchIterator(data.blocks, batch, seed=0))
    cached = [next(batches) for _ in range(2)]
    i = [0]

    def step():
        b = cached[i[0] % 2]
        i[0] += 1
        masker(
            b["input_ids"], b["word_ids"], b["example_ids"], b["epoch"], attention_mask=b["attention_mask"]
        )

    return step


def run(
    seq_len: int = 512,
    batch: int = 32,
    steps: int = 10,
    impls: tuple[str, ...] = ("masker", "jax", "torch"),
    data=None,
) -> dict[str, Any]:
    from wwm.masking import MaskingConfig, WholeWordMasker
    from wwm_cli.bench.train import make_data

    if data is None:
        data = make_data(seq_len, batch * (steps + 2) * 2)
    config = MaskingConfig(mask_prob=0.15)
    masker = WholeWordMasker.from_tokenizer(data.tokenizer, config)
    makers = {
        "masker": lambda: _masker_step(data, masker, batch),
        "jax": lambda: _jax_step(data, masker, batch),
        "torch": lambda: _torch_step(data, config, batch),
    }
    ref = reference_rate(seq_len, len(data.tokenizer))
    tokens = batch * seq_len
    results = []
    for impl in impls:
        wall, cpu = _time(makers[impl](), steps)
        per_core = tokens / cpu if cpu > 0 else float("nan")
        results.append(
            {
                "impl": impl,
                "wall_s": wall,
                "cpu_s": cpu,
                "tokens_per_s_wall": tokens / wall,
                "tokens_per_s_per_core": per_core,
                "headroom": per_core / ref["tokens_per_s"],
            }
        )
    return {
        "seq_len": seq_len,
        "batch": batch,
        "steps": steps,
        "corpus": data.corpus,
        "tokenizer": data.tokenizer_name,
        "reference": ref,
        "target_headroom": TARGET_HEADROOM,
        "results": results,
        "date": time.strftime("%Y-%m-%d"),
    }


def format_table(report: dict[str, Any]) -> str:
    ref = report["reference"]
    lines = [
        f"input pipeline, B={report['batch']}, L={report['seq_len']}, median of {report['steps']} batches, "
        f"one thread; corpus {report['corpus']}",
        f"reference: BERT-base ({ref['params'] / 1e6:.1f}M params, {ref['flops_per_token'] / 1e6:.0f} MFLOP/token) "
        f"on one H100 at {100 * ref['mfu']:.0f}% of {ref['peak_flops'] / 1e12:.0f} TFLOP/s = "
        f"{ref['tokens_per_s']:,.0f} tokens/s",
        f"{'impl':<8}{'M tokens/s/core':>17}{'M tokens/s wall':>17}{'headroom':>10}",
    ]
    for r in report["results"]:
        ok = "ok" if r["headroom"] >= report["target_headroom"] else f"< {report['target_headroom']:.0f}x"
        lines.append(
            f"{r['impl']:<8}{r['tokens_per_s_per_core'] / 1e6:>17.2f}{r['tokens_per_s_wall'] / 1e6:>17.2f}"
            f"{r['headroom']:>9.1f}x {ok}"
        )
    return "\n".join(lines)


__all__ = ["format_table", "reference_rate", "run"]
