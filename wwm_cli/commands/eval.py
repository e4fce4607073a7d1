"""`wwm eval --model PATH --config FILE [--framework jax|torch|both] [--json] [dotted.key=value ...]`."""

from __future__ import annotations

import argparse
import json
import os
import sys

HELP = "Masked-LM loss and accuracy of a checkpoint on a config's validation data, in JAX, torch or both."

DESCRIPTION = """\
Masked-LM loss (token-weighted cross-entropy), accuracy and perplexity of a model on the validation
split of --config, tokenized with the model's tokenizer and masked with the fixed epoch-0 masks the
trainers' evaluation uses. PATH: a Hugging Face directory, or a run directory of either trainer (its
newest checkpoint, else its hf/ export). --framework both runs JAX and torch on the same masked
batches in float32 with the highest matmul precision and exits 1 when the relative loss difference
|jax - torch| / torch is above 1e-5.

Also reported, the unigram baseline of the same data: a model that knows only token frequencies.
p(t) = (count of t in the training blocks + 1) / (N + V) over the V non-special ids (N: the non-special
training tokens); unigram_loss is the mean of -log p(original id) over the masked tokens,
majority_accuracy the share of masked tokens equal to the most frequent training token."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = DESCRIPTION
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--model", required=True, metavar="PATH", help="HF model directory or run directory")
    p.add_argument(
        "--config", required=True, metavar="FILE", help="the data to evaluate on, e.g. configs/tiny.yaml"
    )
    p.add_argument("--framework", choices=("jax", "torch", "both"), default="both")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the config, e.g. eval.max_batches=4")


def main(args: argparse.Namespace) -> int:
    from wwm.config import load_config
    from wwm_cli.evaluate import evaluate, format_report, frameworks_of

    # The model evaluated is --model: the config gives the data, masking and eval settings only, so a fresh
    # model's position rule (model.max_position_embeddings >= data.max_seq_len) is not applied to its model
    # section; `check_positions` compares data.max_seq_len with the model's own positions instead.
    model = os.path.abspath(args.model) if "://" not in args.model else args.model
    config = load_config(args.config, [*args.overrides, f"model.pretrained={model}"])
    result = evaluate(args.model, config, frameworks_of(args.framework))
    if args.json:
        keys = ("jax", "torch", "rel_loss_diff", "unigram_loss", "majority_accuracy")
        print(json.dumps({k: result[k] for k in keys if k in result}))
    else:
        print(format_report(result))
    if result.get("rel_loss_diff", 0.0) > result.get("tolerance", float("inf")):
        print(f"wwm eval: the frameworks differ: relative loss difference {result['rel_loss_diff']:.2e} > "
              f"{result['tolerance']:.0e}", file=sys.stderr)  # fmt: skip
        return 1
    return 0
