"""Cross-framework parity: run the JAX and the PyTorch trainer on one config and compare them.

    report = run_parity(load_config("configs/parity-tiny.yaml"), steps=50, out_dir="runs/parity")

What `run_parity` does (docs/parity.md):

1. Prepares the data once (training the tokenizer if the config asks for it) and pins the tokenizer
   (`tokenizer.path`) so that both trainers read the same cached blocks.
2. Writes the initial weights once, a fresh `BertForMaskedLM`/`RobertaForMaskedLM`/`ModernBertForMaskedLM` saved as a Hugging Face
   directory with safetensors (unless `model.pretrained` is set), and points `model.pretrained` of both runs
   at it.
3. Runs `wwm_jax.train.run(config)` and `wwm_torch.train.run(config)` (in this process, one after the
   other), each recording the batches its trainer feeds the model through the trainers' `on_batch`
   hook (`batch_recorder`). Nothing is re-derived from `BatchIterator`.
4. Compares per-step masked batches (input_ids, labels, attention_mask), losses, learning rates, gradient
   norms, masked-token counts, and the exported final parameters, and writes a report.

Framework imports happen inside the functions: `import wwm_cli.parity` is cheap.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from wwm.errors import WWMError

if TYPE_CHECKING:
    from wwm.config import RunConfig
    from wwm.data import PreparedData

# Tolerances (docs/parity.md explains them). Float32 on CPU, dropout off, the same initial weights.
LOSS_RTOL = 1e-4  # per-step |loss_jax - loss_torch| / |loss_torch|
PARAM_ATOL = 1e-5  # final parameters, max |p_jax - p_torch| over every tensor (measured 2.4e-7)
LR_RTOL = 1e-6  # learning rate of each update (both follow transformers' schedules)
BATCH_KEYS = ("input_ids", "labels", "attention_mask")
PACKED_KEYS = ("segment_ids", "position_ids")  # also compared when present (data.packing packed_documents)


# --------------------------------------------------------------------------------------------------
# Config helpers
# --------------------------------------------------------------------------------------------------


def with_values(config: RunConfig, values: dict[str, Any]) -> RunConfig:
    """A copy of a (nested, frozen) dataclass config with dotted keys replaced: {"train.max_steps": 5}."""
    for key, value in values.items():
        config = _replace_path(config, key.split("."), value)
    return config


def _replace_path(obj: Any, parts: list[str], value: Any) -> Any:
    if not dataclasses.is_dataclass(obj):
        raise WWMError(f"cannot set {'.'.join(parts)} on {type(obj).__name__}")
    if parts[0] not in {f.name for f in dataclasses.fields(obj)}:
        raise WWMError(f"config key {parts[0]!r} is unknown in {type(obj).__name__}")
    if len(parts) == 1:
        return dataclasses.replace(obj, **{parts[0]: value})
    return dataclasses.replace(obj, **{parts[0]: _replace_path(getattr(obj, parts[0]), parts[1:], value)})


# --------------------------------------------------------------------------------------------------
# Preparation: data, tokenizer, initial weights
# --------------------------------------------------------------------------------------------------


def prepare(config: RunConfig, out_dir: str) -> tuple[RunConfig, PreparedData]:
    """(config with a pinned tokenizer, the prepared data). A trained tokenizer goes to <out_dir>/tokenizer."""
    from wwm.data import prepare_dataset

    if config.tokenizer.train is not None:
        config = with_values(config, {"output_dir": out_dir})
    prepared = prepare_dataset(config)
    pinned = dataclasses.replace(config.tokenizer, path=prepared.tokenizer_path, train=None)
    config = with_values(config, {"tokenizer": pinned})
    return config, prepared


def write_initial_weights(config: RunConfig, tokenizer: Any, out_dir: str) -> str:
    """A fresh masked-LM model from `config.model` (the trainers' `wwm.initial_weights` of `config.seed`,
    through the torch trainer's `build_model`), perturbed as below, saved with safetensors."""
    import torch

    from wwm.families import family
    from wwm_torch.model import build_model

    model = build_model(config.model, tokenizer, config.data.max_seq_len, "eager", seed=config.seed)
    norms = family(config.model.type).norm_names
    with torch.no_grad():  # a fresh model's biases are 0 and its norms 1: perturb them so nothing hides
        generator = torch.Generator().manual_seed(config.seed)
        for name, param in model.named_parameters():
            if "bias" in name or any(n in name for n in norms):
                param.add_(0.02 * torch.randn(param.shape, generator=generator))
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# --------------------------------------------------------------------------------------------------
# Running each path with a batch recorder
# --------------------------------------------------------------------------------------------------


@dataclass
class PathResult:
    """One trainer's run: its metrics.jsonl records, the batches it fed its model, its HF export."""

    framework: str
    output_dir: str
    records: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    batches: list[dict[str, np.ndarray]] = field(default_factory=list)  # per step: global rows (B, L)
    hf_dir: str | None = None
    seconds: float = 0.0
    status: int | None = None
    error: str | None = None


def read_metrics(output_dir: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training records, eval records) of a run's metrics.jsonl (either trainer, any machine)."""
    path = output_dir if output_dir.endswith(".jsonl") else os.path.join(output_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return [], []
    # local: parity's local run folders (bucket folders are refused)
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if "loss" in r], [r for r in rows if "eval_loss" in r]


def batch_recorder(sink: list[dict[str, np.ndarray]], limit: int | None = None):
    """An `on_batch(step, rows)` hook for either trainer that keeps, per step, this process's rows as fed
    to the model ({input_ids, labels, attention_mask}: (b, L)), the first `limit` steps."""

    def on_batch(step: int, rows: dict[str, Any]) -> None:
        if limit is None or len(sink) < limit:
            sink.append({k: np.asarray(rows[k]) for k in BATCH_KEYS + PACKED_KEYS if k in rows})

    return on_batch


def _fresh_dir(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)


def _run_path(
    framework: str, config: RunConfig, prepared: Any, record_steps: int | None, log: Any, fresh: bool = True
) -> PathResult:
    out = config.output_dir
    if fresh:
        _fresh_dir(out)
    result = PathResult(framework, out)
    batches: list[dict[str, np.ndarray]] = []
    on_batch = batch_recorder(batches, record_steps)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):
            if framework == "jax":
                from wwm_jax.train import run

                result.status = run(config, on_batch=on_batch)
            else:
                from wwm_torch.train import run

                result.status = run(config, prepared=prepared, on_batch=on_batch)
        result.batches = batches
    except Exception as err:  # reported, not raised: the other path still runs and the verdict fails
        result.error = f"{type(err).__name__}: {err}"
        print(traceback.format_exc(), file=log)
    result.seconds = time.perf_counter() - start
    result.records, result.evals = read_metrics(out)
    hf = os.path.join(out, "hf")
    result.hf_dir = hf if os.path.isfile(os.path.join(hf, "model.safetensors")) else None
    return result


def run_jax(
    config: RunConfig, *, record_steps: int | None = None, log: Any = None, fresh: bool = True
) -> PathResult:
    """`wwm_jax.train.run(config)` with its fed batches recorded. `fresh`: empty the output folder first
    (False: a resume test continues from the checkpoints there)."""
    return _run_path("jax", config, None, record_steps, log or sys.stderr, fresh)


def run_torch(
    config: RunConfig,
    prepared: Any = None,
    *,
    record_steps: int | None = None,
    log: Any = None,
    fresh: bool = True,
) -> PathResult:
    """`wwm_torch.train.run(config, prepared=prepared)` with its fed batches recorded."""
    return _run_path("torch", config, prepared, record_steps, log or sys.stderr, fresh)


# --------------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------------


def compare_batches(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Step by step, key by key equality. Returns {"identical", "steps", "first_difference"}."""
    first = None
    if len(a) != len(b):
        first = f"{len(a)} vs {len(b)} steps recorded"
    for step, (x, y) in enumerate(zip(a, b, strict=False), start=1):
        if first is not None:
            break
        keys = BATCH_KEYS + tuple(k for k in PACKED_KEYS if k in x or k in y)
        for key in keys:
            if key not in x or key not in y:
                first = f"step {step} {key}: recorded by one trainer only"
                break
            if x[key].shape != y[key].shape:
                first = f"step {step} {key}: shapes {x[key].shape} vs {y[key].shape}"
                break
            if not np.array_equal(x[key], y[key]):
                rows = np.nonzero((np.asarray(x[key]) != np.asarray(y[key])).any(-1))[0]
                first = f"step {step} {key}: rows {rows[:8].tolist()} differ"
                break
    return {
        "identical": first is None and len(a) > 0,
        "steps": min(len(a), len(b)),
        "first_difference": first,
    }


def compare_params(dir_a: str | None, dir_b: str | None) -> dict[str, Any]:
    """Every tensor of two HF exports: max abs diff, max rel diff (vs the larger magnitude), worst key."""
    if not dir_a or not dir_b:
        return {"compared": 0, "max_abs": None, "max_rel": None, "worst": None, "only_in_one": []}
    from safetensors.numpy import load_file

    a = load_file(os.path.join(dir_a, "model.safetensors"))
    b = load_file(os.path.join(dir_b, "model.safetensors"))
    common = sorted(set(a) & set(b))
    worst, max_abs, max_rel = None, 0.0, 0.0
    for key in common:
        if a[key].shape != b[key].shape:
            return {"compared": len(common), "max_abs": math.inf, "max_rel": math.inf,
                    "worst": f"{key} shapes {a[key].shape} vs {b[key].shape}", "only_in_one": []}  # fmt: skip
        diff = np.abs(a[key].astype(np.float64) - b[key].astype(np.float64))
        d = float(diff.max(initial=0.0))
        scale = float(np.maximum(np.abs(a[key]), np.abs(b[key])).max(initial=0.0))
        if d > max_abs:
            worst, max_abs = key, d
        max_rel = max(max_rel, d / scale if scale else 0.0)
    return {"compared": len(common), "max_abs": max_abs, "max_rel": max_rel, "worst": worst,
            "only_in_one": sorted(set(a) ^ set(b))}  # fmt: skip


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def compare_runs(
    jax_result: PathResult,
    torch_result: PathResult,
    *,
    steps: int,
    loss_rtol: float = LOSS_RTOL,
    param_atol: float | None = PARAM_ATOL,
) -> dict[str, Any]:
    """The report: per-step rows, maxima, mask equality, parameter diffs, problems and the verdict."""
    rows = []
    for j, t in zip(jax_result.records, torch_result.records, strict=False):
        rows.append({
            "step": j["step"], "jax_loss": j["loss"], "torch_loss": t["loss"],
            "abs_diff": abs(j["loss"] - t["loss"]), "rel_diff": _rel(j["loss"], t["loss"]),
            "jax_lr": j["learning_rate"], "torch_lr": t["learning_rate"],
            "jax_grad_norm": j["grad_norm"], "torch_grad_norm": t["grad_norm"],
            "jax_masked": j["masked_tokens"], "torch_masked": t["masked_tokens"],
        })  # fmt: skip
    masks = compare_batches(jax_result.batches, torch_result.batches)
    params = compare_params(jax_result.hf_dir, torch_result.hf_dir)
    max_abs = max((r["abs_diff"] for r in rows), default=math.nan)
    max_rel = max((r["rel_diff"] for r in rows), default=math.nan)
    grad_rel = max((_rel(r["jax_grad_norm"], r["torch_grad_norm"]) for r in rows
                    if r["jax_grad_norm"] is not None and r["torch_grad_norm"] is not None), default=math.nan)  # fmt: skip

    problems = []
    for r in (jax_result, torch_result):
        if r.error:
            problems.append(f"the {r.framework} run failed: {r.error}")
        elif len(r.records) != steps:
            problems.append(f"the {r.framework} run logged {len(r.records)} of {steps} steps")
    if [r["step"] for r in rows] != list(range(1, len(rows) + 1)):
        problems.append("the step numbers of the two metrics files do not line up")
    if not masks["identical"]:
        problems.append(f"the masked batches differ: {masks['first_difference']}")
    bad_counts = [r["step"] for r in rows if r["jax_masked"] != r["torch_masked"]]
    if bad_counts:
        problems.append(f"masked-token counts differ at steps {bad_counts[:10]}")
    bad_lr = [
        r["step"] for r in rows if abs(r["jax_lr"] - r["torch_lr"]) > LR_RTOL * max(abs(r["torch_lr"]), 1e-12)
    ]
    if bad_lr:
        problems.append(f"learning rates differ at steps {bad_lr[:10]}")
    if not rows or not max_rel <= loss_rtol:
        problems.append(f"max relative loss difference {max_rel:.3g} > {loss_rtol:g}")
    if param_atol is not None:
        if params["compared"] == 0:
            problems.append("final parameters not compared (an export is missing)")
        elif not params["max_abs"] <= param_atol:
            problems.append(
                f"final parameters differ by {params['max_abs']:.3g} > {param_atol:g} ({params['worst']})"
            )
    last_eval = lambda r: r.evals[-1]["eval_loss"] if r.evals else None  # noqa: E731
    return {
        "steps": len(rows),
        "requested_steps": steps,
        "masks_identical": bool(masks["identical"]),
        "mask_steps_compared": masks["steps"],
        "mask_first_difference": masks["first_difference"],
        "max_abs_loss_diff": max_abs,
        "max_rel_loss_diff": max_rel,
        "max_rel_grad_norm_diff": grad_rel,
        "final_eval_loss": {"jax": last_eval(jax_result), "torch": last_eval(torch_result)},
        "params": params,
        "tolerances": {"loss_rtol": loss_rtol, "param_atol": param_atol, "lr_rtol": LR_RTOL},
        "seconds": {"jax": jax_result.seconds, "torch": torch_result.seconds},
        "output_dirs": {"jax": jax_result.output_dir, "torch": torch_result.output_dir},
        "problems": problems,
        "passed": not problems,
        "rows": rows,
    }


def compare_metrics_files(jax_run: str, torch_run: str, *, loss_rtol: float = LOSS_RTOL) -> dict[str, Any]:
    """Compare two finished runs (their output folders or metrics.jsonl files), e.g. from a GPU/TPU."""
    results = []
    for framework, path in (("jax", jax_run), ("torch", torch_run)):
        folder = os.path.dirname(path) if path.endswith(".jsonl") else path
        records, evals = read_metrics(path)
        hf = os.path.join(folder, "hf")
        results.append(PathResult(framework, folder, records, evals,
                                  hf_dir=hf if os.path.isfile(os.path.join(hf, "model.safetensors")) else None))  # fmt: skip
    steps = min(len(results[0].records), len(results[1].records))
    report = compare_runs(*results, steps=steps, loss_rtol=loss_rtol, param_atol=None)
    report["problems"] = [p for p in report["problems"] if not p.startswith("the masked batches")]
    report["masks_identical"] = None  # not recorded by a plain run
    report["passed"] = not report["problems"]
    return report


# --------------------------------------------------------------------------------------------------
# Report files
# --------------------------------------------------------------------------------------------------


def summary_json(report: dict[str, Any]) -> dict[str, Any]:
    """The five fields `wwm parity --json` prints."""
    return {
        "steps": report["steps"],
        "masks_identical": report["masks_identical"],
        "max_abs_loss_diff": report["max_abs_loss_diff"],
        "max_rel_loss_diff": report["max_rel_loss_diff"],
        "passed": report["passed"],
    }


def write_report(report: dict[str, Any], out_dir: str) -> dict[str, str]:
    """losses.csv, report.md, report.json and losses.png in `out_dir`. Returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, n) for k, n in
             (("csv", "losses.csv"), ("md", "report.md"), ("json", "report.json"), ("png", "losses.png"))}  # fmt: skip
    columns = ["step", "jax_loss", "torch_loss", "abs_diff", "rel_diff", "jax_lr", "torch_lr",
               "jax_grad_norm", "torch_grad_norm", "jax_masked", "torch_masked"]  # fmt: skip
    # local: parity's local report folder
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(report["rows"])
    # local: parity's local report folder
    with open(paths["json"], "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, default=str)
    # local: parity's local report folder
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write(format_markdown(report))
    plot_losses(report, paths["png"])
    return paths


def _fmt(x: Any, spec: str = ".3g") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


_NO_PARAMS = "not compared (a run has no hf/model.safetensors)"


def _params_text(p: dict[str, Any]) -> str:
    return f"{_fmt(p['max_abs'])} ({p['worst']})" if p["compared"] else _NO_PARAMS


def _masks_text(report: dict[str, Any]) -> str:
    if report["masks_identical"] is None:  # --compare: plain runs do not record their batches
        return "not compared (finished runs keep no batches; `wwm parity --config` records and compares them)"
    return f"{report['masks_identical']} ({report['mask_steps_compared']} steps)"


def format_markdown(report: dict[str, Any]) -> str:
    p, tol = report["params"], report["tolerances"]
    lines = [
        "# wwm parity: JAX vs PyTorch",
        "",
        f"**Verdict: {'PASSED' if report['passed'] else 'FAILED'}**",
        "",
        "| check | value | tolerance |",
        "|---|---|---|",
        f"| steps | {report['steps']} of {report['requested_steps']} | |",
        f"| masked batches identical (input_ids, labels, attention_mask) | {_masks_text(report)} | bit-exact |",
        f"| max abs loss diff | {_fmt(report['max_abs_loss_diff'])} | |",
        f"| max rel loss diff | {_fmt(report['max_rel_loss_diff'])} | {tol['loss_rtol']:g} |",
        f"| max rel grad-norm diff | {_fmt(report['max_rel_grad_norm_diff'])} | (reported) |",
        f"| final parameters, max abs diff ({p['compared']} tensors) | "
        f"{_params_text(p)} | "
        f"{_fmt(tol['param_atol'], 'g')} |",
        f"| final parameters, max rel diff | {_fmt(p['max_rel'])} | (reported) |",
        f"| final eval loss jax / torch | {_fmt(report['final_eval_loss']['jax'], '.6f')} / "
        f"{_fmt(report['final_eval_loss']['torch'], '.6f')} | (reported) |",
        f"| time jax / torch | {report['seconds']['jax']:.1f} s / {report['seconds']['torch']:.1f} s | |",
        "",
    ]
    if report["problems"]:
        lines += ["Problems:", ""] + [f"* {x}" for x in report["problems"]] + [""]
    lines += ["| step | jax loss | torch loss | abs diff | rel diff | lr | grad norm jax | grad norm torch | masked |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["rows"]:
        lines.append(
            f"| {r['step']} | {r['jax_loss']:.7f} | {r['torch_loss']:.7f} | {r['abs_diff']:.2e} | "
            f"{r['rel_diff']:.2e} | {r['jax_lr']:.3e} | {_fmt(r['jax_grad_norm'], '.5f')} | "
            f"{_fmt(r['torch_grad_norm'], '.5f')} | {r['jax_masked']} |"
        )
    return "\n".join(lines) + "\n"


def plot_losses(report: dict[str, Any], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    steps = [r["step"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=(3, 1))
    top.plot(steps, [r["jax_loss"] for r in rows], label="JAX/Flax", lw=2)
    top.plot(steps, [r["torch_loss"] for r in rows], label="PyTorch (HF Trainer)", lw=1, ls="--")
    top.set_ylabel("training loss (masked-token CE)")
    top.set_title(f"wwm parity: {'passed' if report['passed'] else 'FAILED'}, "
                  f"max rel diff {_fmt(report['max_rel_loss_diff'])}")  # fmt: skip
    top.legend()
    bottom.semilogy(steps, [max(r["rel_diff"], 1e-12) for r in rows], color="C3")
    bottom.axhline(report["tolerances"]["loss_rtol"], color="k", ls=":", lw=1)
    bottom.set_ylabel("rel diff")
    bottom.set_xlabel("optimizer step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------
# The whole check
# --------------------------------------------------------------------------------------------------


def parity_config(config: RunConfig, steps: int | None) -> RunConfig:
    """The settings parity needs on top of a run config: float32, no dropout, no resume, HF export."""
    values: dict[str, Any] = {
        "train.dtype": "float32",
        "train.attn_implementation": "eager",
        "model.hidden_dropout_prob": 0.0,
        "model.attention_probs_dropout_prob": 0.0,
        "checkpoint.resume": False,
        "checkpoint.export_hf_at_end": True,
        "logging.tensorboard": False,
        "logging.progress_bar": False,
    }
    if steps is not None:
        values["train.max_steps"] = int(steps)
    return with_values(config, values)


def setup(config: RunConfig, out_dir: str, steps: int | None = None) -> tuple[RunConfig, PreparedData]:
    """(the config both trainers run: parity settings, pinned tokenizer, shared initial weights; the data)."""
    config = parity_config(config, steps)
    config, prepared = prepare(config, out_dir)
    if not config.model.pretrained:
        init = write_initial_weights(config, prepared.tokenizer, os.path.join(out_dir, "init"))
        config = with_values(config, {"model.pretrained": init})
    return config, prepared


def run_parity(
    config: RunConfig,
    *,
    steps: int | None = None,
    out_dir: str | None = None,
    loss_rtol: float = LOSS_RTOL,
    param_atol: float | None = PARAM_ATOL,
    quiet: bool = False,
    jax_values: dict[str, Any] | None = None,
    torch_values: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Run both trainers on `config` and compare them. Returns (report, paths of the report files).

    `jax_values` / `torch_values`: dotted settings for one side only (e.g. {"train.grad_accum_steps": 4}),
    for invariance checks across frameworks; the global batch must stay the same.
    """
    out_dir = os.path.abspath(out_dir or os.path.join(config.output_dir, "parity"))
    os.makedirs(out_dir, exist_ok=True)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    say(f"wwm parity: preparing the data and the initial weights in {out_dir}")
    config, prepared = setup(config, out_dir, steps)
    results = {}
    for framework in ("jax", "torch"):
        side = (jax_values if framework == "jax" else torch_values) or {}
        run_config = with_values(config, {"output_dir": os.path.join(out_dir, framework),
                                          "train.framework": framework, **side})  # fmt: skip
        say(f"wwm parity: {framework} run, {config.train.max_steps} steps (log: {out_dir}/{framework}.log)")
        # local: parity's local report folder
        with open(os.path.join(out_dir, f"{framework}.log"), "w", encoding="utf-8") as log:
            if framework == "jax":
                results[framework] = run_jax(run_config, log=log)
            else:
                results[framework] = run_torch(run_config, prepared, log=log)
        r = results[framework]
        say(f"wwm parity: {framework} " + (f"failed: {r.error}" if r.error else f"done in {r.seconds:.1f} s"))
    report = compare_runs(results["jax"], results["torch"], steps=config.train.max_steps,
                          loss_rtol=loss_rtol, param_atol=param_atol)  # fmt: skip
    paths = write_report(report, out_dir)
    return report, paths


def format_text(report: dict[str, Any], paths: dict[str, str]) -> str:
    p = report["params"]
    lines = [
        f"wwm parity: {'PASSED' if report['passed'] else 'FAILED'} ({report['steps']} steps)",
        f"  masked batches{':' if report['masks_identical'] is None else ' identical:'} {_masks_text(report)}",
        f"  loss: max abs diff {_fmt(report['max_abs_loss_diff'])}, max rel diff "
        f"{_fmt(report['max_rel_loss_diff'])} (tolerance {report['tolerances']['loss_rtol']:g})",
        f"  grad norm: max rel diff {_fmt(report['max_rel_grad_norm_diff'])}",
        f"  final parameters: max abs diff {_fmt(p['max_abs'])} over {p['compared']} tensors ({p['worst']}), "
        f"max rel {_fmt(p['max_rel'])}"
        if p["compared"]
        else f"  final parameters: {_NO_PARAMS}",
    ]
    if any(report["seconds"].values()):  # not known for --compare
        lines.append(
            f"  time: jax {report['seconds']['jax']:.1f} s, torch {report['seconds']['torch']:.1f} s"
        )
    lines += [f"  problem: {x}" for x in report["problems"]]
    lines.append(f"  report: {paths['md']} (+ losses.csv, report.json, losses.png)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Worker processes: several simulated JAX devices / hosts, torchrun ranks
# --------------------------------------------------------------------------------------------------


def save_batches(batches: list[dict[str, np.ndarray]], path: str) -> str:
    """Recorded per-step batches -> one .npz of (steps, rows, L) arrays."""
    keys = [k for k in BATCH_KEYS + PACKED_KEYS if batches and k in batches[0]]
    np.savez(path, **{k: np.stack([b[k] for b in batches]) for k in keys})
    return path


def load_batches(path: str) -> list[dict[str, np.ndarray]]:
    with np.load(path) as f:
        arrays = {k: f[k] for k in BATCH_KEYS + PACKED_KEYS if k in f}
    return [{k: v[i] for k, v in arrays.items()} for i in range(len(arrays["input_ids"]))]


def worker_main(argv: list[str]) -> int:
    """`python -m wwm_cli.parity jax SPEC.json` / `torchrun ... -m wwm_cli.parity torch SPEC.json`.

    SPEC: {"config": a saved run config (wwm.config.save_config), "devices": N (jax: simulated CPU
    devices), "runs": [{"values": {dotted key: value}, "record": true}]}. Each run trains with the saved
    config plus its values (output folders are not emptied: the caller prepares them) and writes
    <output_dir>/batches_<process>.npz with the batches this process fed its model, and
    <output_dir>/status_<process>.json.
    """
    framework, spec_path = argv
    # local: the spec parity wrote in its local folder
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    if framework == "jax":  # before jax is imported anywhere
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={spec.get('devices', 1)}"
    from wwm.config import load_config

    config = load_config(spec["config"])
    failed = 0
    for run in spec["runs"]:
        c = with_values(config, run.get("values", {}))
        if framework == "jax":
            result = run_jax(c, log=sys.stdout, fresh=False)
            import jax

            index = jax.process_index()
        else:
            result = run_torch(c, log=sys.stdout, fresh=False)
            index = int(os.environ.get("RANK", "0"))
        if result.batches:
            save_batches(result.batches, os.path.join(c.output_dir, f"batches_{index}.npz"))
        # local: parity's local run folders
        with open(os.path.join(c.output_dir, f"status_{index}.json"), "w", encoding="utf-8") as f:
            json.dump({"status": result.status, "error": result.error, "seconds": result.seconds}, f)
        if result.error or result.status:
            print(f"{framework} run {c.output_dir} failed: {result.error or result.status}", file=sys.stderr)
            failed = 1
    return failed


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))


__all__ = [
    "LOSS_RTOL",
    "PARAM_ATOL",
    "PathResult",
    "batch_recorder",
    "compare_batches",
    "compare_metrics_files",
    "compare_params",
    "compare_runs",
    "load_batches",
    "read_metrics",
    "run_jax",
    "run_parity",
    "run_torch",
    "save_batches",
    "setup",
    "summary_json",
    "with_values",
    "write_report",
]
