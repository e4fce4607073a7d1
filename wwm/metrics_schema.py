"""The records of `<output_dir>/metrics.jsonl`, the same for both trainers (one JSON object a line).

`wwm parity --compare` and any user tooling read these keys; both trainers' tests check them.
"""

# One record per optimizer step (every step: the parity tool compares per-step losses).
TRAIN_RECORD_KEYS = frozenset(
    {"step", "loss", "learning_rate", "grad_norm", "masked_tokens", "tokens_per_s", "step_time_s", "mfu"}
)
# One record per evaluation on the validation split (fixed epoch-0 masks).
EVAL_RECORD_KEYS = frozenset({"step", "eval_loss", "eval_accuracy", "eval_perplexity"})
