"""Checkpoints with orbax: `<output_dir>/checkpoints/<step>/{state, meta}`.

`state` is the TrainState pytree (parameters, optimizer state, step, the base PRNG key), each array
written by the processes that hold its shards; `meta` is JSON: the data position of the next batch
(DataPosition.to_dict()), the step and the seed the dropout keys derive from.

Atomicity: orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it to `<step>` only
after every file (and `commit_success.txt` where renames are not atomic) is written, so a kill during
a save leaves the previous step intact; the temp folder is ignored and removed on the next start
(`cleanup_tmp_directories`). Saves are synchronous: the step loop waits for the write (simple and safe
under preemption; the cost is small next to `every_steps` training steps).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from wwm.train_config import CheckpointConfig


class Checkpointer:
    def __init__(self, output_dir: str, config: CheckpointConfig):
        self.directory = os.path.abspath(os.path.join(output_dir, "checkpoints"))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=config.keep,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        if step in self.manager.all_steps():
            return  # already saved (e.g. the final step fell on a checkpoint step)
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,  # our loop decides when to save, not save_interval_steps
        )
        self.manager.wait_until_finished()

    def restore(self, step: int, target: Any) -> tuple[Any, dict]:
        """Restore into `target`'s structure, shapes, dtypes and shardings (a pytree of jax.Arrays or
        ShapeDtypeStructs)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()),
        )
        return out.state, out.meta

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
