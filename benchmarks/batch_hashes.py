"""The sha256 of many global batches and of a fresh model of each family: run it before and after a refactor
that must change no batch, no mask and no initial weight, and compare the printed hashes.

    python benchmarks/batch_hashes.py --out /tmp/hashes-new.json            # this checkout
    PYTHONPATH=/tmp/old-main python benchmarks/batch_hashes.py --out /tmp/hashes-old.json

Each case prepares its data in its own fresh cache folder (so that an earlier build never stands in for
this code's), masks `--steps` global batches with the run's masker and hashes, per batch, the masked
input ids, labels, word ids, attention mask, example ids (and, packed, segment and position ids plus the
position-embedding rows of BERT and RoBERTa). The cases: configs/tiny.yaml (English, WordPiece trained
on the built-in corpus), configs/chinese-bert-wwm.yaml shrunk to tiny sizes on the built-in Chinese
sample (segmenter word policy, jieba; a WordPiece tokenizer trained on it), and tiny.yaml packed as
packed_documents. The models: `hf_config_dict` and `wwm.initial_weights.initial_state` of a tiny BERT,
RoBERTa and ModernBERT (written in the old `model.modernbert.*` spelling, which must keep working).
Only public names that exist before and after the family-record refactor are used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_MODEL = ["model.hidden_size=32", "model.num_hidden_layers=2", "model.num_attention_heads=2",
              "model.intermediate_size=64", "model.max_position_embeddings=64"]  # fmt: skip
CASES = {
    "en-tiny": ("tiny.yaml", []),
    "en-packed": ("tiny.yaml", ["data.packing=packed_documents", "data.max_seq_len=64"]),
    "zh-tiny": ("chinese-bert-wwm.yaml", [
        "data.source=builtin", "data.builtin_lang=zh", "data.max_seq_len=32", "data.num_proc=1",
        "data.validation_fraction=0.02", "tokenizer.path=null",
        "tokenizer.train={kind: wordpiece, vocab_size: 3000}", "train.global_batch_size=8",
        "train.grad_accum_steps=1", *TINY_MODEL,
    ]),
}  # fmt: skip
FAMILIES = {
    "bert": ["model.type=bert"],
    "roberta": ["model.type=roberta"],
    "modernbert": ["model.type=modernbert", "model.modernbert.local_attention=8",
                   "model.modernbert.global_attn_every_n_layers=2", "model.modernbert.attention_bias=true"],
}  # fmt: skip


def _digest(h: hashlib._Hash, name: str, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    h.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
    h.update(array.tobytes())


def batch_hashes(case: str, steps: int, work: str) -> dict:
    from wwm.config import load_config
    from wwm.data import BatchIterator, masked_batches, prepare_dataset
    from wwm.masking import WholeWordMasker

    name, overrides = CASES[case]
    folder = os.path.join(work, case)
    config = load_config(
        os.path.join(ROOT, "configs", name),
        [*overrides, f"data.cache_dir={folder}/cache", f"output_dir={folder}/run"],
    )
    prepared = prepare_dataset(config, progress=False)
    masker = WholeWordMasker.from_tokenizer(prepared.tokenizer, config.masking)
    batches = BatchIterator(prepared.train, config.train.global_batch_size, config.seed)
    whole = hashlib.sha256()
    per_batch = []
    masked = 0
    for step, batch in enumerate(masked_batches(batches, masker)):
        if step == steps:
            break
        h = hashlib.sha256()
        for key in ("input_ids", "labels", "word_ids", "attention_mask", "example_ids", "original_input_ids",
                    "segment_ids", "position_ids"):  # fmt: skip
            if key in batch:
                _digest(h, key, batch[key])
        if "segment_ids" in batch:
            from wwm.data.packing import model_position_ids

            for family, pad in (("bert", 0), ("roberta", 1)):
                _digest(
                    h, family, model_position_ids(batch["position_ids"], batch["segment_ids"], family, pad)
                )
        _digest(h, "epoch", np.asarray([batch["epoch"], batch["step"]]))
        masked += int((batch["labels"] != -100).sum())
        per_batch.append(h.hexdigest())
        whole.update(h.digest())
    return {"batches": len(per_batch), "sha256": whole.hexdigest(), "first": per_batch[0],
            "last": per_batch[-1], "masked": masked, "tokenizer_size": len(prepared.tokenizer)}  # fmt: skip


def model_hashes(work: str) -> dict:
    from wwm.config import load_config
    from wwm.data.tokenizer import load_tokenizer
    from wwm.initial_weights import initial_state

    tokenizer = load_tokenizer(os.path.join(work, "en-tiny", "run", "tokenizer"))
    out = {}
    for family, overrides in FAMILIES.items():
        config = load_config(os.path.join(ROOT, "configs", "tiny.yaml"), [*TINY_MODEL, *overrides])
        hf = config.model.hf_config_dict(tokenizer, config.data.max_seq_len)
        h = hashlib.sha256(json.dumps(hf, sort_keys=True).encode())
        state = initial_state(hf, seed=7)
        for key in sorted(state):
            _digest(h, key, state[key])
        out[family] = {"sha256": h.hexdigest(), "tensors": len(state), "config": hf}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="global batches per case")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    import wwm

    with tempfile.TemporaryDirectory(prefix="wwm-batch-hashes-") as work:
        report = {"wwm": os.path.dirname(wwm.__file__), "steps": args.steps}
        report["batches"] = {case: batch_hashes(case, args.steps, work) for case in CASES}
        report["models"] = model_hashes(work)
    text = json.dumps(report, indent=1, sort_keys=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text, file=sys.stdout)


if __name__ == "__main__":
    main()
