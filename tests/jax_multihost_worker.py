"""Runs small JAX trainings in a fresh process, for tests/test_jax_train.py.

XLA's simulated CPU device count and jax.distributed must be set up before jax is imported, so the tests
run this script in a subprocess:

    python tests/jax_multihost_worker.py SPEC.json

SPEC: {"devices": 8, "runs": [RUN, ...], "distributed": {"process_id": 0, "num_processes": 2,
       "port": 12345}}  (distributed optional)
RUN:  {"output_dir": ..., "mode": "single", "mesh": [data, fsdp, tensor], "accum": 1, "steps": 3,
       "dropout": 0.0, "every_steps": 1000, "eval_every": 1000, "export": false, "slow_s": 0.0,
       "dtype": "float32", "lr": 1e-3, "warmup": 0, "eval": true}
Each run writes <output_dir>/metrics.jsonl (train() does) and <output_dir>/params.npz (final parameters,
process 0; "result_dir" puts params.npz and summary.json elsewhere, for a bucket output_dir). `slow_s` makes every batch read sleep, so a test can kill the run part way.
A RUN with "data" ({DataConfig fields}) and "tokenizer" (a path) runs `wwm train` itself (wwm_jax.train.run:
the data prepared inside the run, each process its share) instead of train() on synthetic blocks.
"""

from __future__ import annotations

import json
import os
import sys
import time


def synthetic_dataset(n: int = 96, seq_len: int = 32, vocab: int = 128, seed: int = 0, slow_s: float = 0.0):
    """A BatchIterator-compatible block dataset: [CLS]=2 words... [SEP]=3 then PAD=0, words of 1-3
    tokens, some rows padded. Token ids 5.. are ordinary; 0-4 are special ([MASK]=4)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = np.zeros((n, seq_len), np.int32)
    words = np.full((n, seq_len), -1, np.int32)
    mask = np.zeros((n, seq_len), np.int32)
    for r in range(n):
        length = seq_len if r % 3 else int(rng.integers(seq_len // 2, seq_len))
        ids[r, 0] = 2
        pos, w = 1, 0
        base = int(rng.integers(5, vocab))
        while pos < length - 1:
            for _ in range(min(int(rng.integers(1, 4)), length - 1 - pos)):
                ids[r, pos] = 5 + (base + pos) % (vocab - 5)  # a learnable pattern
                words[r, pos] = w
                pos += 1
            w += 1
        ids[r, length - 1] = 3
        mask[r, :length] = 1

    class Blocks:
        max_seq_len = seq_len
        pad_token_id = 0

        def __len__(self):
            return n

        def batch(self, rows):
            if slow_s:
                time.sleep(slow_s)
            rows = np.asarray(rows)
            return {
                "input_ids": ids[rows].copy(),
                "word_ids": words[rows].copy(),
                "attention_mask": mask[rows].copy(),
                "example_ids": rows.astype(np.int64),
            }

    return Blocks()


def make_config(run: dict):
    """A RunConfig (or, before RunConfig has the trainer sections, a dataclass with the same fields)."""
    import dataclasses

    from wwm import config as tc
    from wwm.config import RunConfig

    sections = {
        "data": tc.DataConfig(max_seq_len=32),  # synthetic_dataset's blocks
        "model": tc.ModelConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64, hidden_dropout_prob=run.get("dropout", 0.0),
            attention_probs_dropout_prob=run.get("dropout", 0.0),
        ),
        "optim": tc.OptimConfig(learning_rate=run.get("lr", 1e-3), warmup_steps=run.get("warmup", 0),
                                schedule=run.get("schedule", "linear")),
        "train": tc.TrainConfig(global_batch_size=run.get("batch", 16), grad_accum_steps=run.get("accum", 1),
                                max_steps=run.get("steps", 3), dtype=run.get("dtype", "float32"),
                                log_every_steps=1),
        "checkpoint": tc.CheckpointConfig(every_steps=run.get("every_steps", 1000), keep=run.get("keep", 2),
                                          export_hf_at_end=run.get("export", False)),
        "eval": tc.EvalConfig(every_steps=run.get("eval_every", 1000), batch_size=16),
        "logging": tc.LoggingConfig(tensorboard=run.get("tensorboard", False), progress_bar=False),
        "parallel": tc.ParallelConfig(mode=run.get("mode", "single"),
                                      mesh=tc.MeshConfig(*run.get("mesh", [-1, 1, 1]))),
    }  # fmt: skip
    common = {"seed": run.get("seed", 0), "output_dir": run["output_dir"]}
    if "data" in run:
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in run["data"].items()}
        sections.update(data=tc.DataConfig(**data), tokenizer=tc.TokenizerConfig(path=run["tokenizer"]))
    if "model" in {f.name for f in dataclasses.fields(RunConfig)}:
        return dataclasses.replace(RunConfig(), **sections, **common)
    Config = dataclasses.make_dataclass("Config", [(k, object) for k in {**sections, **common}], frozen=True)
    return Config(**sections, **common)


def hf_config(vocab: int = 128) -> dict:
    return {"model_type": "bert", "vocab_size": vocab, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
            "pad_token_id": 0}  # fmt: skip


def main(spec_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={spec.get('devices', 1)}"
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import jax

    dist = spec.get("distributed")
    if dist:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{dist['port']}",
            num_processes=dist["num_processes"],
            process_id=dist["process_id"],
        )
    import numpy as np

    from wwm.masking import MaskingConfig, WholeWordMasker
    from wwm_jax.train import host_params, train

    for run in spec["runs"]:
        config = make_config(run)
        if "data" in run:
            from wwm_jax.train import run as train_run

            status = train_run(config)
            if status:
                return status
            continue
        masker = WholeWordMasker(MaskingConfig(seed=run.get("seed", 0)), mask_token_id=4, vocab_size=128,
                                 special_token_ids=[0, 1, 2, 3, 4])  # fmt: skip
        cfg = hf_config()
        cfg["hidden_dropout_prob"] = cfg["attention_probs_dropout_prob"] = run.get("dropout", 0.0)
        summary = train(
            config,
            train_dataset=synthetic_dataset(slow_s=run.get("slow_s", 0.0)),
            val_dataset=synthetic_dataset(n=40, seed=1) if run.get("eval", True) else None,
            masker=masker,
            hf_config=cfg,
        )
        params = host_params(summary["state"])
        if jax.process_index() == 0:
            flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
                    for path, v in jax.tree_util.tree_leaves_with_path(params)}  # fmt: skip
            results = run.get("result_dir", run["output_dir"])  # (a bucket output_dir: a local folder here)
            os.makedirs(results, exist_ok=True)
            np.savez(os.path.join(results, "params.npz"), **flat)
            info = {k: summary[k] for k in ("status", "steps", "loss", "eval", "tokens_per_s", "hf_dir")}
            with open(os.path.join(results, "summary.json"), "w") as f:
                json.dump(info, f)
        if summary["status"] == "stopped":  # SIGTERM: 0, Ctrl-C: 130, as `wwm train` exits
            return summary["exit_status"]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
