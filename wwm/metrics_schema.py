"""The records of `<output_dir>/metrics.jsonl`, the same for both trainers (one JSON object a line).

`wwm parity --compare` and any user tooling read these keys; both trainers' tests check them.
"""

# One record per optimizer step (every step: the parity tool compares per-step losses).
TRAIN_RECORD_KEYS = frozenset(
    {"step", "loss", "learning_rate", "grad_norm", "masked_tokens", "tokens_per_s", "step_time_s", "mfu"}
)
# One record per evaluation on the validation split (fixed epoch-0 masks).
EVAL_RECORD_KEYS = frozenset({"step", "eval_loss", "eval_accuracy", "eval_perplexity"})


def dumps_record(record: dict) -> str:
    """One metrics.jsonl line. NaN and infinities become null: the file stays valid JSON (RFC 8259 has
    no NaN), so jq, pandas and JavaScript read it."""
    import json
    import math

    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    return json.dumps(clean, allow_nan=False)


def truncate_after(path: str, step: int) -> None:
    """On resume, keep the records of steps <= `step` (the restored checkpoint); later ones are
    computed again. A line cut short by a kill (or a full disk) mid-write is dropped, not an error."""
    import json
    import os

    if not os.path.isfile(path):
        return
    kept = []
    # local: metrics.jsonl of a local run folder or a bucket run's staging folder
    with open(path, encoding="utf-8", errors="replace") as f:  # a torn last character reads too
        for line in f:
            try:
                if int(json.loads(line).get("step", 0)) <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
            except (ValueError, AttributeError, TypeError):
                continue
    from wwm.files import atomic_write_text

    atomic_write_text(path, "".join(kept))  # a full disk leaves the old file, never a torn one


def tracker_keys(values: dict, tracker: str) -> dict:
    """A record's values under the names an experiment tracker gets them with (wwm.trackers): wandb (and
    TensorBoard) get transformers' `rewrite_logs` names, `eval_loss` -> `eval/loss`, `loss` ->
    `train/loss`, so that both trainers' runs line up with any Trainer run; MLflow gets the keys as
    they are (transformers' MLflowCallback logs them unchanged)."""
    if tracker == "mlflow":
        return dict(values)
    return {(f"eval/{k[5:]}" if k.startswith("eval_") else f"train/{k}"): v for k, v in values.items()}
