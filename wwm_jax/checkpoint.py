"""Checkpoints with orbax: `<output_dir>/checkpoints/<step>/{state, meta}`.

`state` is the TrainState pytree (parameters, optimizer state, step, the base PRNG key), each array
written by the processes that hold its shards; `meta` is JSON: the data position of the next batch
(DataPosition.to_dict()), the step and the seed the dropout keys derive from.

Atomicity: orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it to `<step>` only
after every file (and `commit_success.txt` where renames are not atomic) is written, so a kill during
a save leaves the previous step intact; the temp folder is ignored and removed on the next start
(`cleanup_tmp_directories`). Saves are synchronous: the step loop waits for the write (simple and safe
under preemption; the cost is small next to `every_steps` training steps).

A full disk during a save: orbax's writer threads fail (and log tracebacks through absl, held back
here); `save` removes the partial `<step>.orbax-checkpoint-tmp*` folder and raises `DiskFull` (one line,
exit 75) naming the newest intact checkpoint, which a rerun resumes from once there is space.

Trust: `save` refuses a state with a NaN or infinite parameter or optimizer moment (it would be called
"the last good checkpoint" later). `restore_latest` takes the newest step that restores; a step that
does not (truncated or corrupt files: a full disk, a copy cut short) is skipped with a one-line warning.
A checkpoint of another model (other parameter shapes) is refused with one line, never half-restored.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import sys
import traceback
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from wwm.config import CheckpointConfig
from wwm.errors import RESUME_HINT, DiskFull, WWMError, is_disk_full
from wwm.rundir import CORRUPT_DIR, corrupt_destination


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.array(True)


def all_finite(tree: Any) -> bool:
    """Whether every floating-point leaf of `tree` (parameters, optimizer moments) is finite."""
    return bool(jax.device_get(_all_finite(tree)))


class NonFiniteStateError(WWMError):
    """A state with NaN/inf values was about to be saved."""


class _HoldErrors(logging.Filter):
    """Holds back the ERROR records of a logger (orbax's writer threads log each failure with its
    traceback through absl) so that a failed save is reported once, by `save`."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.held.append(record)
            return False
        return True


def _is_closed_loop_fallout(exc_type: type, exc: BaseException, tb: Any) -> bool:
    """`RuntimeError: Event loop is closed` raised in asyncio by a write callback of an aborted orbax save
    (tensorstore calls it from its own threads after the save's event loop is gone, and prints it)."""
    if not (exc_type is RuntimeError and str(exc) == "Event loop is closed"):
        return False
    frames = traceback.extract_tb(tb)
    return bool(frames) and frames[-1].filename.endswith(os.path.join("asyncio", "base_events.py"))


def _silence_closed_loop_fallout() -> None:
    """When a save is aborted (a full disk), tensorstore's threads keep calling back into the closed loop,
    each failure printed as an unraisable exception (sys.unraisablehook) or through sys.excepthook:
    those, and only those, are dropped."""
    if getattr(sys.unraisablehook, "_wwm_closed_loop", False):
        return
    previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook

    def unraisable(info):
        if not _is_closed_loop_fallout(info.exc_type, info.exc_value, info.exc_traceback):
            previous_unraisable(info)

    def excepthook(exc_type, exc, tb):
        if not _is_closed_loop_fallout(exc_type, exc, tb):
            previous_except(exc_type, exc, tb)

    unraisable._wwm_closed_loop = True  # type: ignore[attr-defined]
    sys.unraisablehook, sys.excepthook = unraisable, excepthook


@contextlib.contextmanager
def _held_errors(name: str = "absl"):
    logger = logging.getLogger(name)
    hold = _HoldErrors()
    logger.addFilter(hold)
    try:
        yield hold
    finally:
        logger.removeFilter(hold)


def _key_name(entry: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _param_shapes(tree: Any, prefix: tuple[str, ...] = ()) -> dict[str, tuple[int, ...]]:
    """'/'-joined parameter path -> shape, for the leaves under `prefix` (checkpoint metadata and a live
    TrainState's params name their nodes differently; the joined key names agree)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = tuple(_key_name(k) for k in path)
        if names[: len(prefix)] == prefix:
            out["/".join(names[len(prefix) :])] = tuple(getattr(leaf, "shape", ()))
    return out


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _quiet_per_process_notice() -> None:
    """orbax warns on every per-process save that it skips a size log ("Global object size logging
    disabled for `primary_host=None`"): expected here, said once per save otherwise."""
    logger = logging.getLogger("absl")
    if not any(isinstance(f, _DropMessage) for f in logger.filters):
        logger.addFilter(_DropMessage("Global object size logging disabled"))


class Checkpointer:
    """`per_process`: every process saves (and restores) its own part of each checkpoint in its own
    folder, on its own disk: the addressable shards of every array (a replicated array in full), with
    its own metadata, as orbax's multi-tier "local" checkpoints do (MultiprocessingOptions
    (primary_host=None), per-process directory creation, ArrayHandler(replica_id=None)). A bucket
    output_dir with several processes uses it (wwm.runstore mirrors each part); it restores only onto
    the same processes and mesh. Otherwise (a shared or single-host folder) orbax's usual layout: the
    primary process writes metadata, each process its shards.

    `remote`: a gs:// checkpoints folder that orbax writes itself (a bucket output_dir, JAX,
    `checkpoint.gcs_direct`; docs/scale.md): orbax's usual layout in the bucket (every process its own
    shards into the same `<step>`, process 0 finalizes with `commit_success.txt`), then the lead commits
    the step with wwm's marker (`wwm.fs.mirror.commit`) and applies `checkpoint.keep` by wwm's rule
    (`wwm.fs.mirror.prune`: complete means the marker is there, as for mirrored checkpoints); only
    committed steps are restored, and an unreadable one goes to the bucket's `corrupt-checkpoints/`."""

    def __init__(self, output_dir: str, config: CheckpointConfig, *, per_process: bool = False,
                 remote: str | None = None):  # fmt: skip
        self.remote = remote
        self.directory = remote or os.path.abspath(os.path.join(output_dir, "checkpoints"))
        self.keep = config.keep
        self.per_process = per_process
        multi = {}
        if per_process:
            mp = ocp.options.MultiprocessingOptions(primary_host=None)
            registry = ocp.type_handlers.create_type_handler_registry(
                (jax.Array, ocp.type_handlers.ArrayHandler(primary_host=None, replica_id=None,
                                                           use_replica_parallel=False)))  # fmt: skip
            state_handler = ocp.PyTreeCheckpointHandler(
                use_ocdbt=True, use_zarr3=True, multiprocessing_options=mp, type_handler_registry=registry
            )
            handlers = {"state": state_handler, "meta": ocp.JsonCheckpointHandler(multiprocessing_options=mp)}
            _quiet_per_process_notice()
            multi = {"multiprocessing_options": mp, "enable_per_process_directory_creation": True,
                     "save_root_metadata": False}  # fmt: skip
        else:
            handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if remote else config.keep,  # in a bucket: wwm's rule, after the marker
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
            create=True,
            **multi,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def _save_args(self, state: Any) -> Any:
        return ocp.args.PyTreeSave(state) if self.per_process else ocp.args.StandardSave(state)

    def _restore_args(self, abstract: Any) -> Any:
        if self.per_process:
            return ocp.args.PyTreeRestore(
                abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract)
            )
        return ocp.args.StandardRestore(abstract)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        if step in self.manager.all_steps():
            return  # already saved (e.g. the final step fell on a checkpoint step)
        if not all_finite((state.params, state.opt_state)):
            raise NonFiniteStateError(
                f"the parameters or optimizer state hold NaN/inf at step {step}: not saving them; the newest "
                f"checkpoint in {self.directory} stays the last good one. Lower optim.learning_rate or check the data"
            )
        newest = self.latest_step()
        _silence_closed_loop_fallout()  # a save aborted by the disk leaves these printing from other threads
        with _held_errors() as hold:
            try:
                self.manager.save(
                    step,
                    args=ocp.args.Composite(state=self._save_args(state), meta=ocp.args.JsonSave(meta)),
                    force=True,  # our loop decides when to save, not save_interval_steps
                )
                self.manager.wait_until_finished()
            except Exception as err:
                if self.remote and not isinstance(err, WWMError):
                    raise self._remote_failure(step, newest, err, hold.held) from None
                if not (is_disk_full(err) or any(is_disk_full(_record_error(r)) for r in hold.held)):
                    for record in hold.held:  # not ours to explain: show what orbax said
                        logging.getLogger(record.name).handle(record)
                    raise
                self._remove_partial(step)
                where = (
                    f"{self.directory}/{newest}" if newest is not None else "none yet (the run starts over)"
                )
                raise DiskFull(
                    f"no space left on the disk of {self.directory} while saving the checkpoint of step {step}; its "
                    f"partial files were removed and the newest intact checkpoint is {where}. Free space (or move "
                    f"output_dir), {RESUME_HINT}"
                ) from None

        if self.remote:
            self._commit(step)

    def _commit(self, step: int) -> None:
        """The step is finished on every process (orbax's save returned: its barrier, then process 0's
        `commit_success.txt`): the lead writes wwm's commit marker last, then applies checkpoint.keep."""
        if jax.process_index() != 0:
            return
        from wwm import fs
        from wwm.fs import mirror

        with fs.errors(self.remote, "write the commit marker of checkpoint"):
            mirror.commit(fs.join(self.remote, str(step)), extra={"step": step, "writer": "orbax"})
            mirror.prune(self.remote, _step_of, self.keep)

    def _remote_failure(self, step: int, newest: int | None, err: BaseException, held: list) -> WWMError:
        """A save into the bucket that failed (after the clients' retries): one line; the step's partial
        folder has no marker and is never resumed (the next start removes it)."""
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        where = f"{self.directory}/{newest}" if newest is not None else "none yet"
        return WWMError(
            f"saving the checkpoint of step {step} to {self.directory} failed ({reason}); the newest complete "
            f"checkpoint is {where}. Check the connection and the bucket's permissions (or set "
            f"checkpoint.gcs_direct=false to save locally and mirror), {RESUME_HINT}"
        )

    def committed_steps(self) -> list[int]:
        """The steps to resume from, newest first: orbax's finalized steps; in a bucket only those with
        wwm's commit marker."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        if not self.remote:
            return steps
        from wwm import fs
        from wwm.fs import mirror

        return [s for s in steps if mirror.remote_complete(fs.join(self.remote, str(s)))]

    def _remove_partial(self, step: int) -> None:
        """A failed save's temporary folder (orbax renames it to `<step>` only when it is complete)."""
        for path in glob.glob(os.path.join(glob.escape(self.directory), f"{step}.orbax-checkpoint-tmp*")):
            shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(Exception):
            self.manager.reload()

    def restore(self, step: int, target: Any) -> tuple[Any, dict]:
        """Restore into `target`'s structure, shapes, dtypes and shardings (a pytree of jax.Arrays or
        ShapeDtypeStructs)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(state=self._restore_args(abstract), meta=ocp.args.JsonRestore()),
        )
        return out.state, out.meta

    def check_shapes(self, step: int, target: Any) -> None:
        """One line if checkpoint `step` holds a model of other parameter shapes than `target` (a TrainState)."""
        try:
            saved = _param_shapes(self.manager.item_metadata(step)["state"], ("params",))
        except Exception:
            return  # unreadable metadata: restore decides (and falls back)
        want = _param_shapes(target.params)
        if not saved:
            return
        for key in sorted(set(want) | set(saved)):
            if saved.get(key) != want.get(key):
                raise WWMError(
                    f"checkpoint {self.directory}/{step} holds another model (parameter {key}: "
                    f"{saved.get(key, 'absent')} there, {want.get(key, 'absent')} in this config); resume it with "
                    "the config it was trained with, or use another output_dir"
                )

    def restore_latest(self, target: Any, *, lead: bool = True) -> tuple[int, Any, dict] | None:
        """(step, state, meta) of the newest checkpoint that restores, or None when there is none.

        A corrupt step is skipped with a one-line warning and moved (lead process) to
        `<output_dir>/corrupt-checkpoints/` (kept for inspection, out of the way of the step that will be
        saved again under its number). All of them corrupt is an error, never a silent restart."""
        steps = self.committed_steps()
        for step in steps:
            self.check_shapes(step, target)
            try:
                state, meta = self.restore(step, target)
            except WWMError:
                raise
            except Exception as err:
                reason = " ".join(str(err).split())[:160]
                if self.remote:  # the bucket's corrupt-checkpoints/<step>-<time>-<pid>
                    from wwm import fs

                    aside = fs.join(self.remote.rsplit("/", 1)[0], CORRUPT_DIR, "")
                else:
                    aside = corrupt_destination(self.directory, str(step))
                print(
                    f"wwm: warning: checkpoint {self.directory}/{step} is unreadable ({type(err).__name__}: "
                    f"{reason}); moved to {aside}, trying the one before",
                    file=sys.stderr,
                    flush=True,
                )
                if lead and self.remote:  # never deleted: copied aside, then removed (markers first)
                    from wwm.fs import mirror

                    mirror.set_aside(self.remote, str(step), aside.rstrip("/"))
                elif lead:
                    os.makedirs(os.path.dirname(aside), exist_ok=True)
                    shutil.move(os.path.join(self.directory, str(step)), aside)
                continue
            if step != steps[0]:
                self.manager.reload()  # forget the steps moved aside
            self._same_step_everywhere(step)
            return step, state, meta
        self._same_step_everywhere(None)
        if steps:
            raise WWMError(
                f"no checkpoint in {self.directory} can be read ({len(steps)} tried); restore them from a backup, "
                "or pass --overwrite to start this run over"
            )
        return None

    def _same_step_everywhere(self, step: int | None) -> None:
        """Per-process parts: every process must have restored the same step (one host's part of a step
        unreadable while another's reads would otherwise train on mixed states). One line otherwise."""
        if not (self.per_process and jax.process_count() > 1):
            return
        import numpy as np
        from jax.experimental import multihost_utils

        steps = np.asarray(
            multihost_utils.process_allgather(np.array(-1 if step is None else step, np.int64))
        )
        if len(set(steps.tolist())) > 1:
            raise WWMError(
                f"the processes restored different checkpoints ({', '.join(str(s) for s in steps.tolist())} by "
                f"process; -1: none readable) from their parts in {self.directory}; restore the unreadable part "
                "from the bucket (delete this host's staging folder and rerun), or pass --overwrite"
            )

    def close(self) -> None:
        """Wait for writes in flight and close; after a failed save (an exception on its way out) a second
        failure here is not raised over the first."""
        failing = sys.exc_info()[1] is not None
        try:
            with _held_errors():
                self.manager.wait_until_finished()
                self.manager.close()
        except Exception:
            if not failing:
                raise


def _step_of(name: str) -> int | None:
    return int(name) if name.isdigit() else None


def _record_error(record: logging.LogRecord) -> BaseException:
    """The exception a log record carries (or its message as one)."""
    if record.exc_info and record.exc_info[1] is not None:
        return record.exc_info[1]
    return RuntimeError(record.getMessage())
