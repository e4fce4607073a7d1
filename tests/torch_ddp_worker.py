"""A tiny torch training run from a JSON spec, for the subprocess tests of tests/test_torch_train.py.

    python tests/torch_ddp_worker.py SPEC.json            # one process
    torchrun --standalone --nproc_per_node=2 tests/torch_ddp_worker.py SPEC.json

The spec: output_dir, tokenizer_dir, sections (model/optim/train/checkpoint/eval/logging as dicts),
blocks ({"n", "length", "validation"}), seed, and optionally sleep_after_step (seconds, to be killed
part way). The data are synthetic blocks (`synthetic_blocks`), the same in every process.
"""

from __future__ import annotations

import json
import sys
import time
from types import SimpleNamespace

import numpy as np


def synthetic_blocks(tokenizer, n: int, length: int, seed: int):
    """`n` random blocks: [CLS] words [SEP] PAD..., 2-3 token words, lengths L/2..L (a BlockDataset)."""
    from wwm.data.storage import BlockDataset

    rng = np.random.default_rng(seed)
    lengths = rng.integers(length // 2, length + 1, n).astype(np.int32)
    special = set(tokenizer.all_special_ids)
    ordinary = np.array([i for i in range(len(tokenizer)) if i not in special], dtype=np.int32)
    ids = ordinary[rng.integers(0, ordinary.size, (n, length))]
    words = np.cumsum(rng.random((n, length)) < 0.45, axis=1).astype(np.int32)
    pos = np.arange(length)[None, :]
    last = lengths[:, None] - 1
    ids[:, 0] = tokenizer.cls_token_id
    ids = np.where(pos == last, tokenizer.sep_token_id, ids)
    ids = np.where(pos > last, tokenizer.pad_token_id, ids).astype(np.int32)
    words = np.where((pos == 0) | (pos >= last), -1, words).astype(np.int32)
    return BlockDataset(ids, words, lengths, pad_token_id=tokenizer.pad_token_id)


def make_config(spec: dict):
    """A RunConfig: the defaults plus the spec's trainer sections and masking."""
    from wwm.config import RunConfig, from_dict

    data = {
        name: spec.get("sections", {}).get(name, {})
        for name in ("model", "optim", "train", "checkpoint", "eval", "logging")
    }
    data.update(output_dir=spec["output_dir"], seed=spec.get("seed", 0), masking=spec.get("masking", {}))
    return from_dict(RunConfig, data)


def make_prepared(spec: dict):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer_dir"])
    b = spec["blocks"]
    train = synthetic_blocks(tokenizer, b["n"], b["length"], seed=1)
    validation = (
        synthetic_blocks(tokenizer, b["validation"], b["length"], seed=2) if b.get("validation") else None
    )
    return SimpleNamespace(train=train, validation=validation, tokenizer=tokenizer)


def main(path: str) -> int:
    from transformers import TrainerCallback

    from wwm_torch.train import run

    spec = json.loads(open(path, encoding="utf-8").read())
    callbacks = []
    if spec.get("sleep_after_step"):

        class Sleep(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                time.sleep(spec["sleep_after_step"])

        callbacks.append(Sleep())
    return run(make_config(spec), prepared=make_prepared(spec), callbacks=tuple(callbacks))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
