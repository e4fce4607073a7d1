"""`wwm bench train`: one training step of the same BERT, batch and length, three ways, in one run.

* `jax`: our JAX trainer's step: `wwm_jax.train`'s model, AdamW state and jitted `train_step`
  (`compile_steps`, mode single), fed the way `wwm_jax.train.train` feeds it: `BatchIterator` over
  packed blocks -> `WholeWordMasker` in the background prefetch thread -> device arrays.
* `torch`: our PyTorch trainer: `wwm_torch.train.build_trainer` (WWMTrainer: the JAX path's global
  batches, our collator, the global masked-token loss), driven by `Trainer.train()`.
* `hf_run_mlm`: what transformers' `run_mlm.py` sets up: a plain `Trainer` on `BertForMaskedLM`
  with `DataCollatorForLanguageModeling(whole_word_mask=True)` and the model's default loss.

Every implementation gets the same real text (tokenized once, packed into rows of L tokens), the same
model config (built by the model section's `hf_config_dict`) and batch. A step's time is the wall time from
the end of one optimizer update to the end of the next (data, masking, forward, backward, update and
the trainer's own bookkeeping), the median over the timed steps after `warmup` untimed ones (the first
compiles or warms caches). tokens/s counts every position of the batch (padding included, as the
trainers' metrics do). MFU = FLOPs per step / step time / peak, FLOPs per step =
6 * N_params * T + 12 * H * T * (keys per query, summed over layers: L, or 2w + 1 on local layers) (wwm/flops.py); peak from `--peak-flops`, else the
chip's dense bf16 peak when known (none on a CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import statistics
import tempfile
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

import wwm.flops
from wwm.flops import attention_windows, flops_per_step

if TYPE_CHECKING:
    from wwm.config import RunConfig

# BERT shapes (model.type bert) and ModernBERT shapes (model.type modernbert, its section's defaults:
# ModernBERT-base's global attention every 3rd layer, local window 128, rope thetas): base and large are the
# published ModernBERT-base / -large shapes.
MODELS: dict[str, dict[str, int | str]] = {
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512},
    "small": {
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
    },
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "modernbert-tiny": {
        "type": "modernbert",
        "hidden_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "intermediate_size": 192,
    },
    "modernbert-base": {
        "type": "modernbert",
        "hidden_size": 768,
        "num_hidden_layers": 22,
        "num_attention_heads": 12,
        "intermediate_size": 1152,
    },
    "modernbert-large": {
        "type": "modernbert",
        "hidden_size": 1024,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "intermediate_size": 2624,
    },
}
IMPLS = ("jax", "torch", "hf_run_mlm")


def bert_base_params(vocab_size: int = 30522, seq_len: int = 512) -> int:
    """Parameters of BertForMaskedLM base (tied decoder counted once), as our models count them."""
    H, layers, inter = 768, 12, 3072
    emb = vocab_size * H + max(512, seq_len) * H + 2 * H + 2 * H  # word, position, type, LayerNorm
    layer = 4 * (H * H + H) + 2 * H + (H * inter + inter) + (inter * H + H) + 2 * H
    head = H * H + H + 2 * H + vocab_size  # transform dense, LayerNorm, output bias
    return emb + layers * layer + head


# ---------------------------------------------------------------------------------------------- data
def make_data(seq_len: int, rows: int, texts=None, tokenizer=None) -> SimpleNamespace:
    """`rows` packed rows of real text, [CLS] ... [SEP], with word ids, offsets and special masks."""
    from wwm.data.storage import BlockDataset
    from wwm_cli.bench.common import benchmark_texts, benchmark_tokenizer
    from wwm_cli.bench.masking import _rows, _token_stream

    if texts is None:
        texts, corpus = benchmark_texts()
    else:
        corpus = "given"
    if tokenizer is None:
        tokenizer, tokenizer_name = benchmark_tokenizer(texts)
    else:
        tokenizer_name = getattr(tokenizer, "name_or_path", "given")
    stream = _token_stream(tokenizer, texts, rows * (seq_len - 2))
    r = _rows(stream, tokenizer, rows, seq_len)
    lengths = np.full(rows, seq_len, dtype=np.int32)
    blocks = BlockDataset(r["ids"], r["wids"], lengths, pad_token_id=tokenizer.pad_token_id)
    return SimpleNamespace(
        blocks=blocks, rows=r, tokenizer=tokenizer, corpus=corpus, tokenizer_name=tokenizer_name
    )


def _has_kernel(impl: str, name: str) -> bool:
    """Whether `name` is one of `impl`'s framework's own kernels (not refused, not an old alias)."""
    from wwm.attention import IMPLEMENTATIONS

    framework = "jax" if impl.startswith("jax") else "torch"
    return framework in IMPLEMENTATIONS.get(name, {})


def _packed_data(seq_len: int) -> SimpleNamespace:
    """The benchmark corpus' paragraphs packed into blocks of `seq_len` with segment ids."""
    from wwm_cli.bench.common import benchmark_texts, benchmark_tokenizer
    from wwm_cli.bench.packing import pack_texts

    texts, corpus = benchmark_texts()
    texts = [t for t in texts if t.strip()]
    tokenizer, tokenizer_name = benchmark_tokenizer(texts)
    blocks, _ = pack_texts(texts, tokenizer, seq_len, "packed_documents")
    return SimpleNamespace(blocks=blocks, tokenizer=tokenizer, corpus=corpus, tokenizer_name=tokenizer_name)


def make_config(
    model: str, seq_len: int, batch: int, steps: int, dtype: str, output_dir: str, masking: dict | None = None
):
    """A RunConfig for both trainers: the model size, no dropout change, no checkpoints, no logs."""
    from wwm.config import load_config

    overrides = [f"model.{k}={v}" for k, v in MODELS[model].items()] + [
        f"model.max_position_embeddings={max(512, seq_len)}",
        f"data.max_seq_len={seq_len}",
        f"train.global_batch_size={batch}",
        f"train.max_steps={steps}",
        f"train.dtype={dtype}",
        "train.log_every_steps=1000000",
        "optim.warmup_steps=0",
        "checkpoint.every_steps=1000000",
        "checkpoint.export_hf_at_end=false",
        "checkpoint.resume=false",
        "logging.jsonl=false",
        "logging.tensorboard=false",
        "logging.progress_bar=false",
        "parallel.mode=single",
        f"output_dir={output_dir}",
    ]
    for key, value in (masking or {}).items():
        overrides.append(f"masking.{key}={value}")
    return load_config(None, overrides)


def _summary(step_times: list[float], tokens: int, flops: float, peak: float | None) -> dict[str, Any]:
    median = statistics.median(step_times)
    return {
        "step_time_s": median,
        "step_times_s": step_times,
        "tokens_per_s": tokens / median,
        "flops_per_step": flops,
        "mfu": flops / median / peak if peak else None,
    }


# ---------------------------------------------------------------------------------------------- JAX
def run_jax(
    config, data, warmup: int, steps: int, peak: float | None, profile_dir: str | None = None, full_head=False
):
    """`full_head`: the MLM head at every position (to compare with the masked-positions head).
    The step is the trainer's own (`wwm_jax.train.build_step`)."""
    import jax

    from wwm.data import BatchIterator
    from wwm_jax import sharding as shd
    from wwm_jax import train as jt

    tc = config.train
    hf_config = config.model.hf_config_dict(data.tokenizer, config.data.max_seq_len)
    masker = _masker(data.tokenizer, config)
    setup = jt.build_step(config, hf_config, masker, config.data.max_seq_len, full_head=full_head)
    state, mesh, step_fn, n_params = setup.state, setup.mesh, setup.step_fn, setup.n_params
    batches = BatchIterator(data.blocks, tc.global_batch_size, config.seed)
    stream = jt._prefetch(jt.masked_host_batches(batches, masker, tc.grad_accum_steps))
    times, losses = [], []
    end = time.perf_counter()
    for i in range(warmup + steps):
        if profile_dir and i == warmup:
            jax.profiler.start_trace(profile_dir, create_perfetto_trace=True)
        rows, _, _ = next(stream)
        state, metrics = step_fn(state, shd.global_arrays(rows, mesh, 1))
        metrics = jax.device_get(metrics)
        now = time.perf_counter()
        if i >= warmup:
            times.append(now - end)
        losses.append(float(metrics["loss"]))
        end = now
    if profile_dir:
        jax.profiler.stop_trace()
    stream.close()
    profile = _jax_top_ops(profile_dir) if profile_dir else None
    tokens = tc.global_batch_size * config.data.max_seq_len
    out = {"params": n_params, "losses": losses, **_summary(times, tokens, setup.flops_per_step, peak)}
    return {**out, "top_ops": profile} if profile else out


def _masker(tokenizer, config: RunConfig):
    from wwm.masking import WholeWordMasker

    return WholeWordMasker.from_tokenizer(tokenizer, config.masking)


# ---------------------------------------------------------------------------------------------- torch
def _step_timer(warmup: int):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []
            self.start = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

        def step_times(self) -> list[float]:
            marks = [self.start, *self.ends]
            return [b - a for a, b in itertools.pairwise(marks)][warmup:]

    return StepTimer()


def _no_saving(trainer) -> None:
    from transformers.trainer_utils import SaveStrategy

    trainer.args.save_strategy = SaveStrategy.NO


def run_torch(
    config, data, warmup: int, steps: int, peak: float | None, profile_dir: str | None = None, full_head=False
):
    """`full_head`: the MLM head at every position (to compare with the masked-positions head)."""
    from wwm_torch.train import build_trainer

    prepared = SimpleNamespace(train=data.blocks, validation=None, tokenizer=data.tokenizer)
    from wwm_torch.callbacks import MetricsCallback

    trainer, _, _ = build_trainer(config, prepared, masked_head=not full_head)
    _no_saving(trainer)
    timer = _step_timer(warmup)
    trainer.add_callback(timer)
    metrics = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, MetricsCallback))
    with _torch_profile(profile_dir, warmup) as prof:
        if prof is not None:
            trainer.add_callback(_ProfilerStep(prof))
        trainer.train()
    profile = _torch_top_ops(prof, profile_dir)
    losses = [r["loss"] for r in metrics.records]
    model = trainer.model
    n_params = sum(p.numel() for p in model.parameters())
    tokens = config.train.global_batch_size * config.data.max_seq_len
    c = model.config
    flops = flops_per_step(n_params, c.num_hidden_layers, config.data.max_seq_len, c.hidden_size, tokens,
                           windows=attention_windows(c))  # fmt: skip
    del trainer
    out = {"params": n_params, "losses": losses, **_summary(timer.step_times(), tokens, flops, peak)}
    return {**out, "top_ops": profile} if profile else out


def run_hf_run_mlm(
    config: RunConfig, data, warmup: int, steps: int, peak: float | None, profile_dir: str | None = None
):
    """run_mlm.py's set-up: plain Trainer, transformers' WWM collator, the model's own (mean) loss."""
    import torch
    from transformers import (
        AutoModelForMaskedLM,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from wwm_torch.model import transformers_config

    set_seed(config.seed)
    hf_config = config.model.hf_config_dict(data.tokenizer, config.data.max_seq_len)
    model = AutoModelForMaskedLM.from_config(transformers_config(hf_config))
    r = data.rows
    n, L = r["ids"].shape
    features = [
        {
            "input_ids": r["ids"][i].tolist(),
            "attention_mask": [1] * L,
            "special_tokens_mask": r["special"][i].tolist(),
            "offset_mapping": r["offsets"][i].tolist(),
        }
        for i in range(n)
    ]
    collator = DataCollatorForLanguageModeling(
        data.tokenizer, mlm_probability=config.masking.mask_prob, whole_word_mask=True
    )
    args = TrainingArguments(
        output_dir=os.path.join(config.output_dir, "hf_run_mlm"),
        per_device_train_batch_size=config.train.global_batch_size,
        max_steps=config.train.max_steps,
        learning_rate=config.optim.learning_rate,
        weight_decay=config.optim.weight_decay,
        bf16=config.train.dtype == "bfloat16",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_strategy="no",
        use_cpu=not torch.cuda.is_available(),
        seed=config.seed,
        remove_unused_columns=False,  # a list dataset: nothing to remove; the collator drops its fields
    )
    trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=collator)
    timer = _step_timer(warmup)
    trainer.add_callback(timer)
    with _torch_profile(profile_dir, warmup) as prof:
        if prof is not None:
            trainer.add_callback(_ProfilerStep(prof))
        trainer.train()
    profile = _torch_top_ops(prof, profile_dir)
    n_params = sum(p.numel() for p in model.parameters())
    tokens = config.train.global_batch_size * L
    c = model.config
    flops = flops_per_step(
        n_params, c.num_hidden_layers, L, c.hidden_size, tokens, windows=attention_windows(c)
    )
    out = {"params": n_params, **_summary(timer.step_times(), tokens, flops, peak)}
    return {**out, "top_ops": profile} if profile else out


def _torch_profile(profile_dir: str | None, warmup: int):
    if not profile_dir:
        return contextlib.nullcontext()
    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return torch.profiler.profile(
        activities=activities,
        schedule=torch.profiler.schedule(wait=0, warmup=warmup, active=2, repeat=1),
        record_shapes=False,
    )


def _ProfilerStep(prof):
    from transformers import TrainerCallback

    class Step(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            prof.step()

    return Step()


def _torch_top_ops(prof, profile_dir: str | None, limit: int = 12) -> list[dict[str, Any]] | None:
    """The ops with the most self time over the profiled steps; the Chrome trace goes to profile_dir."""
    if prof is None:
        return None
    os.makedirs(profile_dir, exist_ok=True)
    prof.export_chrome_trace(os.path.join(profile_dir, "trace.json"))
    events = [
        e for e in prof.key_averages() if e.self_cpu_time_total > 0 or getattr(e, "self_device_time_total", 0)
    ]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        {
            "op": e.key,
            "self_ms": e.self_cpu_time_total / 1e3,
            "share": e.self_cpu_time_total / total,
            "calls": e.count,
        }
        for e in events[:limit]
    ]


def _jax_top_ops(profile_dir: str, limit: int = 12) -> list[dict[str, Any]] | None:
    """Self time by op name from the perfetto trace jax.profiler wrote (XLA ops of the step)."""
    import glob
    import gzip
    import json

    paths = sorted(glob.glob(os.path.join(profile_dir, "**", "*.trace.json.gz"), recursive=True))
    if not paths:
        return None
    with gzip.open(paths[-1], "rt", encoding="utf-8") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    threads = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            threads[(e.get("pid"), e.get("tid"))] = e.get("args", {}).get("name", "")
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        thread = threads.get((e.get("pid"), e.get("tid")), "")
        args = e.get("args", {})
        # XLA's CPU/GPU executors tag each HLO op with its hlo_op / long_name; keep only those
        if "hlo_op" not in args and "long_name" not in args and "XLA Ops" not in thread:
            continue
        name = e["name"]
        totals[name] = totals.get(name, 0.0) + float(e["dur"])
        counts[name] = counts.get(name, 0) + 1
    if not totals:
        return None
    total = sum(totals.values())
    top = sorted(totals.items(), key=lambda kv: kv[1], reverse=True)[:limit]
    return [{"op": k, "self_ms": v / 1e3, "share": v / total, "calls": counts[k]} for k, v in top]


RUNNERS = {
    "jax": run_jax,
    "torch": run_torch,
    "hf_run_mlm": run_hf_run_mlm,
    # not run by default: the step with the MLM head at every position (the masked-positions head's peer)
    "jax_full_head": lambda *a, **k: run_jax(*a, **k, full_head=True),
    "torch_full_head": lambda *a, **k: run_torch(*a, **k, full_head=True),
}


# ---------------------------------------------------------------------------------------------- run
def device_description() -> dict[str, Any]:
    import platform

    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        import jax

        d = jax.devices()[0]
        info["jax_device"] = f"{d.platform}:{d.device_kind}"
    except Exception:  # jax missing or no backend
        info["jax_device"] = None
    try:
        import torch

        info["torch_device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    except Exception:
        info["torch_device"] = None
    return info


def run(
    model: str = "tiny",
    seq_len: int = 128,
    batch: int = 8,
    steps: int = 5,
    warmup: int = 2,
    dtype: str = "float32",
    impls: tuple[str, ...] = IMPLS,
    peak_flops: float | None = None,
    profile_dir: str | None = None,
    data=None,
    attn: str = "auto",
    packing: str = "full_sentences",
) -> dict[str, Any]:
    """`attn`: train.attn_implementation names, comma-separated: each implementation runs with each name
    its framework has a kernel for (wwm/attention.py; "flash,cudnn,sdpa" runs JAX's flash and cudnn,
    torch's flash and sdpa); any other value than auto sets the attention dropout to 0 (only eager has it). `packing`: full_sentences (rows of running text) or packed_documents (the corpus'
    paragraphs packed with `wwm.data.Packer`: segment ids, positions restarting per paragraph; `wwm bench
    packing`'s data)."""
    # jax and torch may share one GPU here: jax must not preallocate 75% of it (no effect once jax runs).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}; got {model!r}")
    unknown = set(impls) - set(RUNNERS)
    if unknown:
        raise ValueError(f"unknown implementations {sorted(unknown)}; choose from {list(RUNNERS)}")
    device = device_description()
    # --peak-flops, else the dense bf16 peak of a known accelerator (jax's device, else torch's), else None (CPU)
    peak = wwm.flops.peak_flops(device["jax_device"] or device["torch_device"], peak_flops)
    total = warmup + steps
    if data is None and packing == "packed_documents":
        data = _packed_data(seq_len)
    elif data is None:
        data = make_data(seq_len, max(batch * total, 4 * batch))
    results = []
    names = [a for a in attn.split(",") if a]
    with tempfile.TemporaryDirectory(prefix="wwm-bench-train-") as tmp:
        for impl, name in itertools.product(impls, names):
            if len(names) > 1 and not _has_kernel(impl, name):
                continue
            config = make_config(model, seq_len, batch, total, dtype, os.path.join(tmp, f"{impl}-{name}"))
            model_config = config.model
            if attn != "auto":  # one model for every backend: only eager has attention dropout
                model_config = dataclasses.replace(model_config, attention_probs_dropout_prob=0.0)
            config = dataclasses.replace(
                config,
                model=model_config,
                data=dataclasses.replace(config.data, packing=packing),
                train=dataclasses.replace(config.train, attn_implementation=name),
            )
            sub = os.path.join(profile_dir, impl) if profile_dir else None
            t0 = time.perf_counter()
            try:
                out = RUNNERS[impl](config, data, warmup, steps, peak, sub)
            except Exception as err:  # out of memory, a kernel this device lacks: a row with its reason
                if len(names) == 1:
                    raise
                results.append({"impl": impl, "attn": name, "error": f"{type(err).__name__}: {err}"[:300]})
                continue
            out.update(
                impl=impl, attn=name, wall_s=time.perf_counter() - t0, timed_steps=len(out["step_times_s"])
            )
            results.append(out)
    if not any("error" not in r for r in results):
        raise RuntimeError("no implementation ran: " + "; ".join(r["error"] for r in results))
    results_ok = [r for r in results if "error" not in r]
    base = next((r for r in results_ok if r["impl"] == "hf_run_mlm"), results_ok[0])
    for r in results_ok:
        r["x_hf_run_mlm"] = r["tokens_per_s"] / base["tokens_per_s"] if base["impl"] == "hf_run_mlm" else None
    return {
        "model": model,
        "attn_implementation": attn,
        "packing": packing,
        "model_sizes": MODELS[model],
        "vocab_size": len(data.tokenizer),
        "seq_len": seq_len,
        "batch": batch,
        "dtype": dtype,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "peak_flops": peak,
        "corpus": data.corpus,
        "tokenizer": data.tokenizer_name,
        "device": device,
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"{report['model']} {report['model_sizes']}, vocab {report['vocab_size']}, B={report['batch']}, "
        f"L={report['seq_len']}, {report['dtype']}, attention {report.get('attn_implementation', 'auto')}, "
        f"{report.get('packing', 'full_sentences')}; median of {report['timed_steps']} steps after "
        f"{report['warmup_steps']} warm-up; device {report['device']}",
        f"{'impl':<16}{'params':>12}{'step s':>10}{'tokens/s':>12}{'MFU':>8}{'x hf_run_mlm':>14}",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"{r['impl'] + '/' + r['attn']:<16}  failed: {r['error']}")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        ratio = f"{r['x_hf_run_mlm']:.2f}" if r["x_hf_run_mlm"] is not None else "-"
        name = (
            r["impl"]
            if report.get("attn_implementation", "auto") == r.get("attn", "auto")
            else f"{r['impl']}/{r['attn']}"
        )
        lines.append(
            f"{name:<16}{r['params']:>12,}{r['step_time_s']:>10.3f}{r['tokens_per_s']:>12,.0f}"
            f"{mfu:>8}{ratio:>14}"
        )
    if report["peak_flops"] is None:
        lines.append("MFU: no peak known for this device (give --peak-flops)")
    return "\n".join(lines)


def json_ready(report: dict[str, Any]) -> dict[str, Any]:
    """The report without float NaNs (JSON null instead)."""

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return clean(dataclasses.asdict(report) if dataclasses.is_dataclass(report) else report)


# ---------------------------------------------------------------------------------------------- gpu.sh summary
def summarize(paths: list[str], device: str, out_dir: str) -> dict[str, Any]:
    """Merge `wwm bench train --json` reports (one per length and implementation) into
    `<out_dir>/summary.json` and `<out_dir>/summary.md` (benchmarks/gpu.sh calls this)."""
    import json

    rows = []
    for path in paths:
        # local: benchmark result files on this machine (benchmarks/gpu.sh)
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        for r in report["results"]:
            common = {"impl": r["impl"], "attn": r.get("attn", report.get("attn_implementation", "auto")),
                      "packing": report.get("packing", "full_sentences"), "model": report["model"],
                      "seq_len": report["seq_len"], "batch": report["batch"], "dtype": report["dtype"]}  # fmt: skip
            if "error" in r:
                rows.append({**common, "error": r["error"]})
                continue
            rows.append(
                {
                    **common,
                    "impl": r["impl"],
                    "model": report["model"],
                    "seq_len": report["seq_len"],
                    "batch": report["batch"],
                    "dtype": report["dtype"],
                    "params": r["params"],
                    "step_time_s": r["step_time_s"],
                    "tokens_per_s": r["tokens_per_s"],
                    "mfu": r["mfu"],
                    "peak_flops": report["peak_flops"],
                }
            )
    rows.sort(key=lambda r: (r["model"], r["seq_len"], IMPLS.index(r["impl"]) if r["impl"] in IMPLS else 99))
    for r in rows:
        if "error" in r:
            continue
        base = next((x for x in rows if (x["model"], x["seq_len"]) == (r["model"], r["seq_len"])
                     and x["impl"] == "hf_run_mlm" and "error" not in x), None)  # fmt: skip
        r["x_hf_run_mlm"] = r["tokens_per_s"] / base["tokens_per_s"] if base else None
    summary = {"device": device, "date": time.strftime("%Y-%m-%d"), "results": rows}
    os.makedirs(out_dir, exist_ok=True)
    # local: the benchmark's local output folder
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    lines = [
        f"# Training throughput on {device} ({summary['date']})",
        "",
        "| impl | attention | packing | model | L | B | dtype | step s | tokens/s | MFU | x hf_run_mlm |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['impl']} | {r['attn']} | {r['packing']} | {r['model']} | {r['seq_len']} | {r['batch']} | {r['dtype']} | "
        if "error" in r:
            lines.append(head + f"failed: {r['error'][:120]} | | | |")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        ratio = f"{r['x_hf_run_mlm']:.2f}" if r["x_hf_run_mlm"] is not None else "-"
        lines.append(head + f"{r['step_time_s']:.4f} | {r['tokens_per_s']:,.0f} | {mfu} | {ratio} |")
    text = "\n".join(lines) + "\n"
    # local: the benchmark's local output folder
    with open(os.path.join(out_dir, "summary.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return summary


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m wwm_cli.bench.train")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summarize", help="merge bench train JSON files into summary.json / summary.md")
    s.add_argument("paths", nargs="+")
    s.add_argument("--device", default="unknown")
    s.add_argument("--out", required=True)
    a = parser.parse_args()
    summarize(a.paths, a.device, a.out)
