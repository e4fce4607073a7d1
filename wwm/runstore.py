"""Where a run's files live when `output_dir` is a bucket: the local folder the trainers write, and the
bucket folder it is copied to (docs/scale.md).

For a local `output_dir` nothing changes: ``RunStore.local`` is `output_dir` and ``remote`` is None.
For a bucket (gs://, s3://, memory://), the trainers write into a **staging folder** on this host's disk
(``wwm.fs.staging_dir``: ``$WWM_LOCAL_DIR`` or ``~/.cache/wwm``, then ``runs/<hash of the URL>``), as
they would into a local `output_dir`, and the store carries each file to the bucket the way it grows:

| file | written | in the bucket |
|---|---|---|
| run.lock | the lease object, in the bucket only (`wwm.locks.BucketLock`) | while the run lives |
| run.json, config.yaml | by `wwm.rundir` locally (claimed in the staging folder) | uploaded after the claim; run.json again with the logs (after each checkpoint, on the cadence and at exit) |
| checkpoints/ | saved locally | mirrored in the background (`wwm.fs.mirror`), each with its commit marker (torch; JAX to s3://, or gs:// with `checkpoint.gcs_direct: false`) |
| checkpoints/ (JAX, gs://) | not in the staging folder | written by orbax itself, committed by the lead with the mirror's marker (``RunStore.direct``, `wwm_jax.checkpoint`) |
| metrics.jsonl, tensorboard/ | appended locally | copied on a cadence and at exit (`wwm.fs.sync`) |
| hf/, tokenizer/ | written locally when complete | uploaded then, config.json / the tokenizer's record last |

The staging folder belongs to one run: ``STAGING_FILE`` records the run id of the bucket's run.json
(``run_id``: its creation time and the time of its latest --restart-from-scratch). A staging folder of
another run (the bucket folder was overwritten or restarted, here or from elsewhere) is emptied before
use, so that a checkpoint of another run or attempt is never resumed. --restart-from-scratch moves the
bucket's outputs of the earlier attempt to ``previous/<time>/`` in the bucket (``_restart_in_bucket``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from typing import Any

from wwm import fs
from wwm.errors import WWMError
from wwm.fs.mirror import MARKER_PREFIX, Mirror
from wwm.fs.sync import SyncedFolder

STAGING_FILE = ".wwm-staging.json"
LOG_NAMES = ("metrics.jsonl", "tensorboard")


class RunStore:
    """The local and remote sides of one run folder (module doc)."""

    def __init__(self, output_dir: str, *, lead: bool = True) -> None:
        self.output_dir = output_dir
        self.remote = fs.normalize(output_dir) if fs.is_remote(output_dir) else None
        self.local = fs.staging_dir(self.remote) if self.remote else os.path.abspath(output_dir)
        self.lead = lead
        self.logs: SyncedFolder | None = None
        self.mirror: Mirror | None = None
        self.lock: Any = None  # the bucket folder's lease (wwm.locks.lock_for), held by the lead
        # JAX, gs://, checkpoint.gcs_direct: orbax writes <remote>/checkpoints itself (no staging copy, no
        # mirror; wwm_jax.checkpoint commits each step with the mirror's marker). Decided by the lead.
        self.direct = False
        self._reported = False  # the mirror's failure was raised by check() (the run stopped on it)
        # Several processes: called by every process on close, after its own uploads and before the lead
        # publishes and releases the lease (the trainer sets it: a barrier over the processes).
        self.barrier: Callable[[], None] | None = None

    @property
    def is_remote(self) -> bool:
        return self.remote is not None

    def path(self, *names: str) -> str:
        """A path in the local folder (what the trainers write)."""
        return os.path.join(self.local, *names)

    def url(self, *names: str) -> str:
        """Where a file of the run lives for good: in the bucket, or the local path."""
        return fs.join(self.remote, *names) if self.remote else self.path(*names)

    # ---- the staging folder -----------------------------------------------------------------------

    def claim_staging(self, run_id: str | None, *, fresh: bool) -> None:
        """Make the staging folder this run's: emptied when ``fresh`` (a new, overwritten or restarted
        run) or when it belongs to another run id. A local `output_dir` is left alone."""
        if not self.remote:
            return
        record_path = self.path(STAGING_FILE)
        recorded = None
        try:
            with fs.open_file(record_path, "r") as f:
                recorded = json.load(f).get("run_id")
        except (ValueError, OSError, WWMError):
            recorded = None
        if fresh or recorded != run_id:
            shutil.rmtree(self.local, ignore_errors=True)
        fs.makedirs(self.local)
        self.mark_staging(run_id)

    def mark_staging(self, run_id: str | None) -> None:
        """Record whose run the staging folder holds (after a new or overwritten run got its id)."""
        fs.write_text(self.path(STAGING_FILE), json.dumps({"run_id": run_id, "url": self.remote}))

    # ---- logs -------------------------------------------------------------------------------------

    def start_logs(self, every_s: float, names: tuple[str, ...] = LOG_NAMES) -> SyncedFolder | None:
        """Pull the bucket's logs (a resume elsewhere), then copy them on a cadence (lead process)."""
        if not (self.remote and self.lead):
            return None
        self.logs = SyncedFolder(self.local, self.remote, names, every_s=every_s)
        self.logs.pull()
        return self.logs.start()

    # ---- checkpoints --------------------------------------------------------------------------------

    def checkpoint_mirror(self, step_of: Callable[[str], int | None], *, keep: int | None, writer: int = 0,
                          writers: int = 1, subfolder: str = "checkpoints") -> Mirror | None:  # fmt: skip
        """The mirror of ``<local>/checkpoints`` to ``<remote>/checkpoints`` (None for a local run)."""
        if not self.remote:
            return None
        self.mirror = Mirror(self.path(subfolder), self.url(subfolder), step_of, keep=keep, writer=writer,
                             writers=writers)  # fmt: skip
        return self.mirror

    # ---- whole folders ----------------------------------------------------------------------------

    def publish(self, name: str, *, last: tuple[str, ...] = ()) -> str:
        """Upload the finished local folder ``name`` (hf/, tokenizer/) to the bucket; returns where it is."""
        if not self.remote:
            return self.path(name)
        target = self.url(name)
        fs.remove(target, recursive=True)
        fs.upload_tree(self.path(name), target, last=last)
        return target

    def fetch_folder(self, name: str) -> bool:
        """Bring the bucket's folder ``name`` down when the local folder lacks it. True if it came down."""
        if not self.remote or os.path.exists(self.path(name)) or not fs.isdir(self.url(name)):
            return False
        copy = fs.fetch(self.url(name))
        shutil.copytree(copy, self.path(name))
        return True

    def close(self) -> None:
        """The final copies: queued checkpoint uploads, then the logs, then the finished exports (hf/,
        tokenizer/ with config.json / the tokenizer's record last), then the lease is released."""
        import sys

        failing = sys.exc_info()[1] is not None  # a failed run: no barrier (another process may be gone)
        try:
            try:
                upload_error = None
                if self.mirror is not None:
                    try:
                        self.mirror.close()
                    except WWMError as err:
                        upload_error = err
                if self.barrier is not None and not failing:
                    self.barrier()  # every process's part of the last checkpoint is up (or failed)
                    if self.mirror is not None and upload_error is None and self.lead:
                        self.mirror.prune()  # the last checkpoint is complete only now: keep applies
                if upload_error is not None and not self._reported:
                    raise upload_error  # a failure of the final uploads: said here
            finally:
                if self.logs is not None:
                    self.logs.close()
            if self.remote and self.lead:
                self._carry_corrupt()
                for name, last in (("tokenizer", ("tokenizer_config.json",)), ("hf", ("config.json",))):
                    if os.path.isdir(self.path(name)) and fs.tree(self.path(name)) != fs.tree(self.url(name)):
                        self.publish(name, last=last)
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    def _carry_corrupt(self) -> None:
        """Checkpoints the trainer found unreadable and moved to `corrupt-checkpoints/<name>-<time>-<pid>`
        (wwm.rundir.corrupt_destination) go to the bucket's corrupt-checkpoints/ too, and the bucket's
        copy under checkpoints/ is removed (its commit markers first) unless this run uploaded a new
        checkpoint of that name meanwhile: never deleted, never resumed again."""
        aside = self.path(CORRUPT_DIR)
        if not os.path.isdir(aside):
            return
        remote_aside = self.url(CORRUPT_DIR)
        present = set(fs.listdir(remote_aside))
        uploaded = set(self.mirror.uploaded) if self.mirror is not None else set()
        for entry in sorted(os.listdir(aside)):
            if entry in present:
                continue
            fs.upload_tree(os.path.join(aside, entry), fs.join(remote_aside, entry))
            name = next((n for n in fs.listdir(self.url("checkpoints")) if entry.startswith(f"{n}-")), None)
            if name is not None and name not in uploaded:
                remote = fs.join(self.url("checkpoints"), name)
                for relative in fs.tree(remote):
                    if relative.rpartition("/")[2].startswith(MARKER_PREFIX):
                        fs.remove(fs.join(remote, relative))
                fs.remove(remote, recursive=True)

    # ---- a run whose output_dir is a bucket ---------------------------------------------------------

    def failed(self) -> bool:
        """Whether a checkpoint upload failed for good (after the storage layer's retries)."""
        return self.mirror is not None and self.mirror.error is not None

    def check(self) -> None:
        """Raise the mirror's one-line error, saying that the local checkpoints are intact."""
        if self.failed():
            self._reported = True
            raise WWMError(f"{self.mirror.error}; this run stops. Its checkpoints are intact in {self.local}: run the "
                           "same command on this host to resume (it uploads them then)")  # fmt: skip

    def checkpointed(self, step: int, framework: str) -> None:
        """After the trainer saved checkpoint ``step`` locally: queue its upload (the step loop waits for the
        snapshot only; run.json with the new progress follows with the logs, on their cadence)."""
        if self.mirror is not None:
            self.mirror.submit(checkpoint_name(step, framework))
        if self.logs is not None and (self.mirror is not None or self.direct):
            self.logs.soon()


RUN_FILE, CONFIG_FILE, CORRUPT_DIR = "run.json", "config.yaml", "corrupt-checkpoints"


def run_id(record: dict | None) -> str | None:
    """Whose run a staging folder holds: the bucket run's creation time, and the time of its latest
    `--restart-from-scratch` (an attempt restarted from elsewhere is another run to a staging folder: its
    old checkpoints must never be resumed)."""
    if not record:
        return None
    restarts = [e.get("time") for e in record.get("history") or () if isinstance(e, dict)
                and e.get("event") == "restarted from scratch"]  # fmt: skip
    created = str(record.get("created"))
    return f"{created} restarted {restarts[-1]}" if restarts else created


def checkpoint_name(step: int, framework: str) -> str:
    return f"checkpoint-{step}" if framework == "torch" else str(step)


def step_of(name: str) -> int | None:
    """The step of a checkpoint folder of either trainer (orbax "<step>", the Trainer's "checkpoint-<step>")."""
    tail = name.removeprefix("checkpoint-")
    return int(tail) if tail.isdigit() else None


def _config_naming(path: str, url: str, local: str) -> None:
    """The staging copy of the bucket's config.yaml with output_dir as this host's staging folder, the
    output_dir `wwm.rundir.claim` is given (so that the folder is not reported as a changed setting)."""
    import yaml

    from wwm.files import atomic_write_text

    with fs.open_file(path, "r") as f:
        data = yaml.safe_load(f)
    if isinstance(data, dict) and data.get("output_dir") == url:
        data["output_dir"] = local
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def start_bucket_run(config: Any, framework: str, *, overwrite: bool = False, allow_changes: bool = False,
                     restart: bool = False, lead: bool = True, share: Callable[[Any], Any] | None = None,
                     process: tuple[int, int] = (0, 1), writer: bool = True) -> Any:  # fmt: skip
    """`wwm.rundir.claim` for a bucket `output_dir` (docs/scale.md): take the folder's lease, bring the run's
    record, logs, trained tokenizer and newest complete checkpoint down into the staging folder, let
    `claim` decide there as for a local folder, carry its outcome back (an `--overwrite` deletes the
    bucket's recorded artifacts; run.json and config.yaml are uploaded), then start the log sync and the
    checkpoint mirror. Returns the `RunDir` (its `path` the staging folder; `close()` finishes the copies
    and releases the lease).

    Several JAX processes (`share`: a broadcast from process 0; `process`: (this process, the count)): the
    lead (process 0) does all of the above; every other process gets its decision through `share`, makes
    its own staging folder (on its own disk) this run's, pulls its own part of every checkpoint the lead
    kept, and mirrors its own part of each new one (``<step>/process-<k>/`` and its commit marker: a
    checkpoint is complete in the bucket once every process's marker is there). Only checkpoints complete
    in the bucket are resumed (a part saved on one host only would let the hosts restore different
    steps).

    torchrun: the writers are the **nodes** (ranks of one node share its disk and staging folder):
    `process` is (this node, the node count) and `writer` is true on each node's local rank 0, the only
    rank of the node that pulls and mirrors; the other ranks get the run's `RunDir` naming the node's
    staging folder (the caller waits on a barrier before any rank reads it). A torch node pulls the world
    main process's part (weights, optimizer, trainer state) merged with its own (its ranks' RNG states).
    With one node the checkpoints are laid out as with one process."""
    url = fs.normalize(config.output_dir)
    several = share is not None
    direct = framework == "jax" and fs.scheme(url) == "gs" and config.checkpoint.gcs_direct
    if not lead and not several:
        raise WWMError(f"output_dir {url}: a process other than the lead needs the lead's decision (share)")
    if several and process[1] < 2 and framework == "jax":
        raise ValueError("start_bucket_run: several processes (share) need process=(index, count)")
    if not several:
        return _start_lead(config, framework, url, overwrite, allow_changes, (0, 1), restart, direct)
    from wwm import rundir

    run_dir, outcome = None, None
    if lead:
        try:
            run_dir = _start_lead(config, framework, url, overwrite, allow_changes, process, restart, direct)
            kept = rundir.checkpoint_names(run_dir.path) if run_dir.resume else []
            outcome = {"run": run_dir.to_dict(), "run_id": run_id(run_dir.record), "direct": run_dir.store.direct,
                       "fresh": run_dir.status in ("new", "overwritten", "restarted"), "checkpoints": kept}  # fmt: skip
        except WWMError as err:
            share({"error": str(err), "exit_status": err.exit_status})
            raise
    outcome = rundir.shared_outcome(share, outcome, run_dir)
    if lead:
        return run_dir
    if not writer or process[0] == 0:  # a torch rank beside its node's writer: the node's staging folder
        run_dir = rundir.RunDir.from_dict(outcome["run"], lead=False)
        run_dir.path = RunStore(url, lead=False).local
        run_dir.messages = []
        return run_dir
    return _start_follower(config, framework, url, outcome, process)


def _start_follower(config: Any, framework: str, url: str, outcome: dict, process: tuple[int, int]) -> Any:
    """A process (torch: a node) other than the lead's: its staging folder (this host's disk) made this
    run's, its part of every checkpoint the lead kept pulled (torch: merged with the lead's part), any
    other local checkpoint dropped, its part mirrored."""
    from wwm import rundir
    from wwm.fs import mirror as mirrors

    store = RunStore(url, lead=False)
    store.claim_staging(outcome["run_id"], fresh=outcome["fresh"])
    if outcome.get("direct"):  # orbax reads and writes the bucket's checkpoints itself: nothing to pull
        store.direct = True
        run_dir = rundir.RunDir.from_dict(outcome["run"], lead=False)
        run_dir.path, run_dir.messages, run_dir.store = store.local, [], store
        return run_dir
    kept = list(outcome["checkpoints"])
    local_dir = store.path(rundir.CHECKPOINT_DIR)
    own = mirrors.part_name(*process)
    part = (mirrors.part_name(0, process[1]), own) if framework == "torch" else own
    present = os.listdir(local_dir) if os.path.isdir(local_dir) else []
    for name in present:  # (torch: a node's own part, without the lead's files, is no complete checkpoint)
        if step_of(name) is not None and name not in kept:  # never complete in the bucket: not resumed
            shutil.rmtree(os.path.join(local_dir, name), ignore_errors=True)
    have = set(rundir.checkpoint_names(store.local))
    for name in kept:
        if name not in have:
            mirrors.pull(store.url(rundir.CHECKPOINT_DIR), name, local_dir, part=part)
    run_dir = rundir.RunDir.from_dict(outcome["run"], lead=False)
    run_dir.path = store.local
    run_dir.messages = []  # the lead says them
    store.checkpoint_mirror(step_of, keep=config.checkpoint.keep, writer=process[0], writers=process[1])
    run_dir.store = store
    return run_dir


def _start_lead(config: Any, framework: str, url: str, overwrite: bool, allow_changes: bool,
                process: tuple[int, int], restart: bool = False, direct: bool = False) -> Any:  # fmt: skip
    """The lead's side of `start_bucket_run` (the only side with one process)."""
    import dataclasses

    from wwm import rundir
    from wwm.fs import mirror as mirrors
    from wwm.locks import lock_for

    writers = process[1]
    part = mirrors.part_name(*process)
    store = RunStore(url, lead=True)
    store.lock = lock_for(url, rundir.LOCK_FILE, f"output_dir {url}", command=rundir._command_line())
    store.lock.acquire()
    try:
        record, found_record = None, fs.exists(store.url(RUN_FILE))
        if found_record:
            try:  # an unreadable record is copied as it is: claim refuses it in one line
                record = json.loads(fs.read_text(store.url(RUN_FILE)))
            except ValueError:
                record = {"created": "unreadable"}
            record = record if isinstance(record, dict) else {"created": "unreadable"}
        elif [n for n in fs.listdir(url) if n != rundir.LOCK_FILE]:
            raise rundir._foreign(url)  # the user's files, no run record: as a local folder, refused
        store.claim_staging(run_id(record), fresh=False)
        for name in (RUN_FILE, CONFIG_FILE):
            if found_record and fs.exists(store.url(name)):
                fs.copy(store.url(name), store.path(name))
            elif os.path.exists(store.path(name)):
                os.remove(store.path(name))
        if os.path.isfile(store.path(CONFIG_FILE)):
            _config_naming(store.path(CONFIG_FILE), url, store.local)  # claim compares like with like
        SyncedFolder(store.local, url, (*LOG_NAMES,)).pull()
        store.fetch_folder("tokenizer")
        local_names = [n for n in rundir.checkpoint_names(store.local) if step_of(n) is not None]
        remote_root = store.url(rundir.CHECKPOINT_DIR)
        found = mirrors.candidates(local_names, remote_root, step_of)
        notes = []
        if direct:
            direct, note = _direct_applies(found, remote_root)
            notes += [note] if note else []
        store.direct = direct
        found = _same_writers(found, remote_root, 1 if direct else writers, url)
        if direct:  # orbax restores from the bucket: nothing pulled; claim sees the committed steps
            placeholders = [store.path(rundir.CHECKPOINT_DIR, c.name) for c in found if c.remote]
        elif writers > 1:  # only copies complete in the bucket (every process's part) are resumed
            for candidate in [c for c in found if not c.remote]:
                shutil.rmtree(store.path(rundir.CHECKPOINT_DIR, candidate.name), ignore_errors=True)
                notes.append(f"checkpoint {candidate.name} of this host never reached {url} complete (every "
                             "process's part): not resumed")  # fmt: skip
            found = [c for c in found if c.remote]
            newest_local = -1
        else:
            newest_local = max((c.step for c in found if c.local), default=-1)
        # Every complete copy newer than this disk's (the bucket keeps checkpoint.keep): the trainer's
        # fallback past a corrupt one needs the older ones.
        for candidate in [] if restart or direct else found:  # a restart resumes none: nothing to pull
            if candidate.step > newest_local and not (writers > 1 and candidate.local):
                mirrors.pull(remote_root, candidate.name, store.path(rundir.CHECKPOINT_DIR), part=part)
        local = dataclasses.replace(config, output_dir=store.local)
        # Direct: claim decides in the staging folder, where the bucket's committed steps appear as empty
        # folders for the time of the decision only (a run that saved checkpoints is never taken for one
        # that lost them); removed right after.
        shown = [] if restart or not direct else placeholders
        for folder in shown:
            os.makedirs(folder, exist_ok=True)
        try:
            run_dir = rundir.claim(local, framework, overwrite=overwrite, allow_changes=allow_changes,
                                   restart=restart)  # fmt: skip
        except WWMError as err:  # the refusal names the bucket folder the user gave, not the staging
            raise type(err)(str(err).replace(store.local, url)) from None
        finally:
            for folder in shown:
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
            with contextlib.suppress(OSError):
                if shown:
                    os.rmdir(store.path(rundir.CHECKPOINT_DIR))
        run_dir.messages = [m.replace(store.local, url) for m in run_dir.messages]
        if run_dir.resume:
            run_dir.messages += notes
        try:
            if run_dir.status == "overwritten":
                for name in run_dir.artifacts:
                    if name != rundir.LOCK_FILE:
                        fs.remove(store.url(name), recursive=True)
            if run_dir.status == "restarted":
                _restart_in_bucket(store, run_dir)
            elif direct and run_dir.status in ("new", "resume"):
                committed = {c.name for c in found if c.remote}
                for name in fs.listdir(remote_root):
                    if step_of(name) is not None and name not in committed:  # a save cut short
                        fs.remove(fs.join(remote_root, name), recursive=True)
                        run_dir.messages.append(f"checkpoint {name} in {remote_root} was never committed (its save "
                                                "was cut short): removed")  # fmt: skip
            store.mark_staging(run_id(run_dir.record))
            if run_dir.lead:  # the record names the bucket, not this host's staging folder
                import yaml

                from wwm.config import resolved_dict
                from wwm.files import atomic_write_text

                atomic_write_text(
                    store.path(CONFIG_FILE), yaml.safe_dump(resolved_dict(config), sort_keys=False)
                )
            for name in (RUN_FILE, CONFIG_FILE):
                fs.copy(store.path(name), store.url(name))
            store.start_logs(float(os.environ.get("WWM_LOG_SYNC_S", "60")), (*LOG_NAMES, RUN_FILE))
            if not direct:  # (direct: orbax writes the bucket, wwm_jax.checkpoint commits)
                keep = config.checkpoint.keep
                store.checkpoint_mirror(step_of, keep=keep, writer=process[0], writers=writers)
                newest = found[0] if found else None
                if writers == 1 and newest and newest.local and not newest.remote and run_dir.resume:
                    store.mirror.submit(newest.name)  # saved here before a crash, never uploaded
        except BaseException:
            run_dir.close()
            raise
    except BaseException:
        store.close()
        raise
    run_dir.store = store
    return run_dir


def _direct_applies(found: list, remote_root: str) -> tuple[bool, str | None]:
    """Whether orbax may write the bucket's checkpoints itself in this run (checkpoint.gcs_direct): not
    when this host's staging folder holds checkpoints (saved through the local copy) or the bucket's
    newest committed one was saved in per-process parts (the mirror path with several processes), or
    lacks orbax's `commit_success.txt` (orbax lists a gs:// step only with it; orbax 0.12.8 writes it in
    local saves too, so a single-process mirrored checkpoint is resumed directly): such a run keeps the
    mirror path, which restores what it saved, and says so."""
    from wwm.fs import mirror as mirrors

    local = [c.name for c in found if c.local]
    if local:
        return False, (f"checkpoint {local[0]} is in this host's staging folder (saved through the local copy): "
                       "this run keeps saving locally and mirroring (checkpoint.gcs_direct applies to runs whose "
                       "checkpoints orbax wrote to the bucket)")  # fmt: skip
    remote = [c for c in found if c.remote]
    if remote:
        where = fs.join(remote_root, remote[0].name)
        if (mirrors.writers_of(where) or 1) > 1 or not fs.exists(fs.join(where, "commit_success.txt")):
            return False, (f"checkpoint {where} was mirrored from a local save: this run keeps saving locally and "
                           "mirroring (checkpoint.gcs_direct applies to runs whose checkpoints orbax wrote to the "
                           "bucket)")  # fmt: skip
    return True, None


def _restart_in_bucket(store: RunStore, run_dir: Any) -> None:
    """`--restart-from-scratch` carried to the bucket (`wwm.rundir.claim` did it in the staging folder):
    the bucket's outputs of the earlier attempt (`rundir.ATTEMPT_OUTPUTS`: metrics.jsonl, checkpoints/,
    tensorboard/, hf/) move to the same `previous/<time>/` that run.json's history names, then what the
    staging folder held of that attempt and the bucket lacks (a checkpoint saved here but never uploaded,
    a longer metrics.jsonl) is uploaded there too, and the staging folder's copy is deleted: the bucket
    alone keeps the earlier attempt. corrupt-checkpoints/, tokenizer/, run.json and config.yaml stay.
    Moving is copy-then-delete (object stores have no rename), commit markers last in and first out
    (`wwm.fs.mirror.move_tree`)."""
    from wwm import rundir
    from wwm.fs import mirror as mirrors

    event = (run_dir.record or {}).get("history", [{}])[-1]
    moved = event.get("moved_to")
    in_bucket = [n for n in rundir.ATTEMPT_OUTPUTS if fs.exists(store.url(n))]
    if moved is None:
        if not in_bucket:
            return
        # The staging folder held none of the attempt's outputs (its checkpoints are not pulled for a
        # restart): the bucket's go to a previous/ folder of their own, recorded as claim records it.
        moved = rundir.previous_folder()
        event["moved_to"] = moved
        rundir._update_record(store.local, lambda r: r["history"][-1].update(moved_to=moved))
    target = store.url(*moved.split("/"))
    for name in in_bucket:
        source = store.url(name)
        if fs.isdir(source):
            mirrors.move_tree(source, fs.join(target, name))
        else:
            fs.copy(source, fs.join(target, name))
            fs.remove(source)
    local = store.path(*moved.split("/"))
    if not os.path.isdir(local):
        return
    there = fs.tree(target)
    local_root = os.path.join(local, rundir.CHECKPOINT_DIR)
    remote_root = fs.join(target, rundir.CHECKPOINT_DIR)
    for name in sorted(os.listdir(local_root)) if os.path.isdir(local_root) else []:
        held = any(r.startswith(f"{rundir.CHECKPOINT_DIR}/{name}/") for r in there)
        if step_of(name) is not None and not held:  # saved here, never uploaded: up with its marker
            mirrors.upload_folder(os.path.join(local_root, name), fs.join(remote_root, name))
    for relative, size in fs.tree(local).items():
        if relative.startswith(f"{rundir.CHECKPOINT_DIR}/"):
            continue
        if there.get(relative, -1) < size:
            fs.copy(os.path.join(local, *relative.split("/")), fs.join(target, relative))
    shutil.rmtree(store.path(rundir.PREVIOUS_DIR), ignore_errors=True)


def _same_writers(found: list, remote_root: str, writers: int, url: str) -> list:
    """The bucket's complete checkpoints of a multi-process run must have been saved by as many processes
    as this run has (each process restores its own part): the newest one decides, one line otherwise."""
    from wwm.fs import mirror as mirrors

    remote = [c for c in found if c.remote]
    if not remote:
        return found
    saved_by = mirrors.writers_of(fs.join(remote_root, remote[0].name))
    if saved_by != writers:
        raise WWMError(
            f"output_dir {url}: its newest checkpoint {remote[0].name} was saved by {saved_by} process(es) and "
            f"this run has {writers}; resume it with {saved_by} process(es) (each process restores its own part), "
            "or pass --overwrite to start the run over"
        )
    return [c for c in found if not c.remote or mirrors.writers_of(fs.join(remote_root, c.name)) == writers]


__all__ = [
    "LOG_NAMES",
    "STAGING_FILE",
    "RunStore",
    "checkpoint_name",
    "run_id",
    "start_bucket_run",
    "step_of",
]
