"""Run directories: one run per `output_dir`, never overwritten, mixed or reinterpreted by accident.

Both trainers call `claim(config, framework)` (through `wwm.preflight.start_run`) before any heavy set-up
(data preparation, model building, compilation). The lead process first takes the folder's lock
(`run.lock`, wwm.locks: one live run per folder), then reads what the directory holds and decides:

* empty or missing                    -> a new run: `run.json` and `config.yaml` are written.
* a run of the same framework whose recorded config and inputs (the tokenizer's content, the corpus
  files' content) equal this one in every key that changes the training trajectory
                                      -> resume (keys in `RESUMABLE` may differ; the run says so).
* a run of the other framework, a trajectory key or input that differs, `checkpoint.resume: false` over
  a run that trained, a run that trained but has no checkpoint left, or a folder that is not empty and
  holds no wwm run                    -> `WWMError` (exit 2) naming the keys (old -> new) and the fixes.

`overwrite=True` (`wwm train --overwrite`) deletes what the run recorded in run.json's `artifacts`,
nothing else, and starts a new run; a folder without a run record is refused unless it is empty.
`restart=True` (`--restart-from-scratch`) trains again from step 0 in the same folder: what the earlier
attempt wrote goes to `previous/<time>/`, run.json keeps its history and records the restart.
`allow_changes=True` (`--allow-config-change`) resumes with the new values and records the change in
run.json's history. docs/run_directories.md has the rules and the why.

With several processes only the lead takes the lock, decides and writes; `share(value)` hands its
outcome (the decision, or the one-line refusal) to every process.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from wwm.errors import DiskFull, WWMError, os_error
from wwm.files import atomic_write_text, file_digest, normalize_permissions

if TYPE_CHECKING:
    from wwm.config import RunConfig

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = "run.lock"  # held by the live run (wwm.locks); never part of `artifacts`
CORRUPT_DIR = "corrupt-checkpoints"  # unreadable checkpoints are moved here on resume, never deleted
PREVIOUS_DIR = "previous"  # --restart-from-scratch moves an earlier attempt's outputs here
# What a run of the first record format (no `artifacts` list) wrote; an unreadable record is treated alike.
RUN_ARTIFACTS = (
    RUN_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    CHECKPOINT_DIR,
    CORRUPT_DIR,
    "tensorboard",
    "hf",
    "tokenizer",
)
# Outputs of one training attempt (moved to previous/<time>/ by a restart; the rest belongs to the run).
ATTEMPT_OUTPUTS = (METRICS_FILE, CHECKPOINT_DIR, "tensorboard", "hf")
# Temporaries a writer leaves next to an artifact while it writes it (prefix -> the artifact).
_TEMPORARIES = {f"{RUN_FILE}.tmp-": RUN_FILE, f"{CONFIG_FILE}.tmp-": CONFIG_FILE, ".tokenizer-": "tokenizer",
                "hf.tmp-": "hf", f"{METRICS_FILE}.tmp-": METRICS_FILE}  # fmt: skip
FORMAT = 2

# Keys that may change when a run resumes: they change how the rest of the run is executed, logged,
# evaluated or saved, not what was already computed (prefixes end with ".").
RESUMABLE: dict[str, str] = {
    "output_dir": "the folder may move",
    "train.max_steps": "the learning-rate schedule is recomputed for the new length from the resumed step on",
    "train.log_every_steps": "logging only",
    "train.grad_accum_steps": "the same global batch split differently (equal losses up to float rounding)",
    "train.torch_compile": "execution only",
    "train.dataloader_num_workers": "execution only",
    "train.attn_implementation": "the same attention, another kernel (float rounding)",
    "parallel.": "another mesh or host count (float rounding); checkpoints restore onto any mesh",
    "checkpoint.": "saving only",
    "eval.": "evaluation only",
    "logging.": "logging only",
    "data.num_proc": "the same blocks, built in parallel",
    "data.map_batch_size": "the same blocks",
    "data.cache_dir": "the same blocks, stored elsewhere",
    "data.remote_read": "the same blocks, read another way (a bucket cache_dir)",
    "data.remote_prefetch_steps": "the same blocks, read another way",
    "data.remote_cache_mb": "the same blocks, read another way",
}


def resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE)


@dataclass
class RunDir:
    """What `claim` decided. `resume`: whether the trainer may restore a checkpoint from it. `lock`: the
    folder's lock (lead process only; `close()` releases it)."""

    path: str
    framework: str
    status: str  # "new" | "resume" | "overwritten" | "restarted"
    resume: bool
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # key -> (old, new)
    messages: list[str] = field(default_factory=list)
    # The rule that orders this run's epochs (wwm.data.order): a new run gets this wwm's rule, a resumed
    # run keeps the one it was started under (run.json's "order_rule"; none recorded: rule "1").
    order_rule: str = field(default_factory=lambda: _current_order_rule())
    artifacts: list[str] = field(default_factory=list)  # what --overwrite removes (overwritten only)
    record: dict[str, Any] | None = None  # run.json as it was found (then as written)
    allow_changes: bool = False  # --allow-config-change: changed inputs found later are accepted too
    lead: bool = True
    lock: Any = field(default=None, repr=False)
    store: Any = field(default=None, repr=False)  # wwm.runstore.RunStore of a bucket output_dir (lead)

    def to_dict(self) -> dict[str, Any]:
        """What another process needs of the decision (JSON-able; the lock stays with the lead)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("lock", "store")}
        out["changed"] = {k: list(v) for k, v in self.changed.items()}
        return json.loads(json.dumps(out, default=str))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, lead: bool) -> RunDir:
        data = dict(data, lead=lead)
        data["changed"] = {k: tuple(v) for k, v in data.get("changed", {}).items()}
        return cls(**data)

    # ------------------------------------------------------------------ during the run
    @property
    def local(self) -> bool:
        return not _is_remote(self.path)

    def check_lock(self) -> None:
        """WWMError when another process took this run's lock over (it judged this one gone): stop
        writing into a folder that is no longer ours."""
        for lock in (self.lock, getattr(self.store, "lock", None)):
            if lock is not None and lock.lost:
                raise WWMError(
                    f"the lock on output_dir {lock.path} was taken over by {lock.lost_to()}; this process stops "
                    "without writing more (two runs must not write one folder)"
                )
        if self.store is not None:
            self.store.check()  # a bucket output_dir: a checkpoint upload that failed for good stops the run

    def lock_lost(self) -> bool:
        """The lock was taken over, or (a bucket output_dir) the checkpoint mirror failed for good: the
        trainers stop at this step (`check_lock` says why)."""
        if self.store is not None and self.store.failed():
            return True
        return any(lock is not None and lock.lost for lock in (self.lock, getattr(self.store, "lock", None)))

    def prepared(self, tokenizer_fingerprint: str, cache_key: str | None) -> None:
        """After the data are prepared: the tokenizer must be the one the run was trained with (content,
        not path: this also covers Hub and trained tokenizers), then the lead records it and the data's
        cache key in run.json (`inputs`)."""
        recorded = ((self.record or {}).get("inputs") or {}).get("tokenizer")
        if (
            self.status == "resume"
            and recorded
            and recorded != tokenizer_fingerprint
            and not self.allow_changes
        ):
            raise _changed_refusal(
                self.path, {"content of the tokenizer": (_short(recorded), _short(tokenizer_fingerprint))}
            )
        if not (self.lead and self.local):
            return
        _update_record(self.path, lambda r: r.setdefault("inputs", {}).update(
            tokenizer=tokenizer_fingerprint, data_cache_key=cache_key))  # fmt: skip

    def checkpointed(self, step: int) -> None:
        """After a checkpoint of `step` is saved (lead): run.json records the run's progress, so that a
        run whose checkpoints vanish is never taken for an empty one."""
        if self.lead and self.local:
            _update_record(self.path, lambda r: r.update(steps=int(step)))
        if self.store is not None:
            self.store.checkpointed(step, self.framework)  # a bucket output_dir: mirrored, run.json sent

    def tracker_id(self, name: str, make: Callable[[], str]) -> str:
        """The id of this run in experiment tracker `name` (wandb, mlflow): the recorded one (a resumed run
        continues it), else `make()` recorded by the lead. Every process gets the same id only with one
        process; trackers log from the lead only."""
        known = ((self.record or {}).get("trackers") or {}).get(name)
        if known:
            return known
        value = make()
        if self.lead and self.local:
            _update_record(self.path, lambda r: r.setdefault("trackers", {}).update({name: value}))
        self.record = dict(
            self.record or {}, trackers={**((self.record or {}).get("trackers") or {}), name: value}
        )
        return value

    def close(self) -> None:
        """Release the lock (the lead's; a no-op elsewhere). A bucket output_dir: the last copies to the
        bucket first (wwm.runstore), then its lease."""
        try:
            if self.store is not None:
                store, self.store = self.store, None
                store.close()
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _current_order_rule() -> str:
    from wwm.data.order import ORDER_RULE

    return ORDER_RULE


def configured_order_rule(config: RunConfig) -> str:
    """The order rule ``config`` gives a new run (``data.order``; wwm.data.order.configured_rule)."""
    from wwm.data.order import configured_rule

    data = config.data
    return configured_rule(data.order, data.order_group_rows, data.order_window_groups,
                           config.train.global_batch_size)  # fmt: skip


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        if not data and prefix:
            out[prefix[:-1]] = {}
        return out
    if isinstance(data, tuple):
        data = list(data)
    return {prefix[:-1]: data}


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _short(digest: str | None) -> str:
    if digest and ":" in digest:  # a bucket object's version (generation:N, etag:X)
        return digest[:48]
    return f"sha256 {digest[:12]}" if digest else "(none)"


def _is_remote(path: str) -> bool:
    return "://" in path


def _temporary_of(name: str) -> str | None:
    """The artifact a temporary file or folder belongs to (a writer may be writing it right now)."""
    return next((art for prefix, art in _TEMPORARIES.items() if name.startswith(prefix)), None)


def _is_ours(name: str, artifacts: tuple[str, ...] | list[str] = RUN_ARTIFACTS) -> bool:
    """A file or folder a run writes (or its temporary)."""
    if name == LOCK_FILE:
        return True
    return name in artifacts or _temporary_of(name) in artifacts


def _listing(path: str) -> list[str]:
    """What the folder holds, apart from the lock."""
    try:
        # ".wwm-*": the staging folder's own files when output_dir is a bucket (wwm.runstore)
        return (
            [n for n in os.listdir(path) if n != LOCK_FILE and not n.startswith(".wwm-")]
            if os.path.isdir(path)
            else []
        )
    except OSError as err:
        raise os_error(err, "output_dir") from err


def checkpoint_names(path: str) -> list[str]:
    """The complete checkpoints in `<path>/checkpoints`: JAX `<step>/` folders (orbax renames a step's
    temporary folder to its number when every file is written), torch `checkpoint-<step>/` folders with
    the `trainer_state.json` the Trainer writes last."""
    ckpts = os.path.join(path, CHECKPOINT_DIR)
    if not os.path.isdir(ckpts):
        return []
    out = []
    for name in os.listdir(ckpts):
        full = os.path.join(ckpts, name)
        if name.isdigit() and os.path.isdir(full):
            out.append(name)
        elif name.startswith("checkpoint-") and os.path.isfile(os.path.join(full, "trainer_state.json")):
            out.append(name)
    return sorted(out)


def _last_metrics_step(path: str) -> int:
    """The last step recorded in metrics.jsonl (0 when none)."""
    metrics = os.path.join(path, METRICS_FILE)
    last = 0
    if not os.path.isfile(metrics):
        return 0
    # local: the run folder (a bucket run's staging folder: wwm.runstore)
    with open(metrics, encoding="utf-8", errors="replace") as f:
        for line in f:
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                last = max(last, int(json.loads(line).get("step", 0)))
    return last


def _moved_aside(path: str) -> int:
    corrupt = os.path.join(path, CORRUPT_DIR)
    return len(os.listdir(corrupt)) if os.path.isdir(corrupt) else 0


def trained_steps(path: str, record: dict | None = None) -> int:
    """How far the run in `path` got: its newest checkpoint's step recorded in run.json, or the last step
    in metrics.jsonl (0: nothing trained)."""
    recorded = int((record or {}).get("steps") or 0)
    return max(recorded, _last_metrics_step(path))


def trained(path: str, record: dict | None = None) -> bool:
    """Whether the folder holds training results: a checkpoint, a metrics record, a recorded step, or a
    checkpoint moved aside as unreadable."""
    ckpts = os.path.join(path, CHECKPOINT_DIR)
    if os.path.isdir(ckpts) and any(not n.startswith(".") for n in os.listdir(ckpts)):
        return True
    return trained_steps(path, record) > 0 or _moved_aside(path) > 0


def _checkpoint_layout(path: str) -> str | None:
    """'jax' (orbax <step>/ folders), 'torch' (Trainer checkpoint-<step>/ folders) or None."""
    ckpts = os.path.join(path, CHECKPOINT_DIR)
    if not os.path.isdir(ckpts):
        return None
    names = os.listdir(ckpts)
    if any(n.startswith("checkpoint-") for n in names):
        return "torch"
    if any(n.split(".")[0].isdigit() for n in names):
        return "jax"
    return None


def read_record(path: str) -> tuple[dict | None, dict | None]:
    """(run.json, the recorded config as a nested dict) of a run folder; None for what is missing."""
    import yaml

    record = config = None
    run_file = os.path.join(path, RUN_FILE)
    if os.path.isfile(run_file):
        try:
            # local: the run folder (a bucket run's staging folder: wwm.runstore)
            with open(run_file, encoding="utf-8") as f:
                record = json.load(f)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            raise WWMError(
                f"{run_file} is unreadable ({err}); restore it, or pass --overwrite to replace the run"
            ) from err
    config_file = os.path.join(path, CONFIG_FILE)
    if os.path.isfile(config_file):
        try:
            # local: the run folder (a bucket run's staging folder: wwm.runstore)
            with open(config_file, encoding="utf-8") as f:
                config = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as err:
            raise WWMError(
                f"{config_file} is unreadable ({err}); restore it, or pass --overwrite to replace the run"
            ) from err
        if not isinstance(config, dict):
            config = None
    return record, config


def _recorded_framework(path: str, record: dict | None, config: dict | None) -> str | None:
    if record and record.get("framework"):
        return record["framework"]
    if config and isinstance(config.get("train"), dict) and config["train"].get("framework"):
        return config["train"]["framework"]  # a run from before run.json existed
    return _checkpoint_layout(path)


def config_differences(old: dict, new: dict, defaults: dict) -> dict[str, tuple[Any, Any]]:
    """key -> (old, new) for every leaf that differs. A key the old record lacks (a setting added to
    wwm since) counts as unchanged when the new value is the default; one the new config lacks (a
    setting wwm no longer has) is ignored."""
    a, b, d = _flatten(old), _flatten(new), _flatten(defaults)
    out = {}
    for key in sorted(set(a) | set(b)):
        if key not in b:
            continue
        if key not in a:
            if key in d and d[key] == b[key]:
                continue
            out[key] = ("(not recorded)", b[key])
        elif a[key] != b[key]:
            out[key] = (a[key], b[key])
    return out


def _rule_change(record: dict | None, old: dict, config: RunConfig) -> dict[str, tuple[Any, Any]]:
    """``data.packing_rule`` (old -> new) when this wwm packs the run's packing by another rule than the
    one that made its blocks (``wwm.data.packing.PACKING_RULE``; a record without one: rule "1"), so a
    run never resumes onto other blocks under the same config."""
    from wwm.data.packing import PACKING_RULE

    if (old.get("data") or {}).get("packing", config.data.packing) != config.data.packing:
        return {}  # data.packing itself changed, and is named
    before, now = (record or {}).get("packing_rule", "1"), PACKING_RULE[config.data.packing]
    return {"data.packing_rule": (before, now)} if before != now else {}


def _resumed_order_rule(record: dict | None, result: RunDir, config: RunConfig) -> dict[str, tuple[Any, Any]]:
    """A trained run resumes under the order rule it was started by, when this wwm knows it and the config
    asks for that kind of order (``data.order: rows`` keeps any row order, so its batches stay those of
    the uninterrupted run; ``groups`` must give the recorded groups-G-K-r). Anything else (a rule this wwm
    does not know, another data.order, other G, K or r) is a change (``data.order_rule`` old -> new)
    that needs --allow-config-change and then orders the rest of the run by the config's rule."""
    from wwm.data.order import ORDER_RULE, ORDER_RULES, SORT_RULE, check_order_rule

    recorded = str((record or {}).get("order_rule", SORT_RULE))
    wanted = configured_order_rule(config)
    result.order_rule = wanted
    try:
        check_order_rule(recorded)
    except WWMError:
        return {"data.order_rule": (recorded, wanted)}
    if recorded != wanted and not (wanted == ORDER_RULE and recorded in ORDER_RULES):
        return {"data.order_rule": (recorded, wanted)}
    result.order_rule = recorded
    if recorded != wanted:
        result.messages.append(
            f"this run keeps its order rule {recorded!r} (new runs are ordered by {ORDER_RULE!r})"
        )
    return {}


def _unused_order_keys(changed: dict[str, tuple[Any, Any]], old: dict, config: RunConfig) -> None:
    """Drop changes of data.order_group_rows / order_window_groups while data.order is rows before and
    after: they order nothing then."""
    if config.data.order == "rows" and (old.get("data") or {}).get("order", "rows") == "rows":
        for key in ("data.order_group_rows", "data.order_window_groups"):
            changed.pop(key, None)


def _layout_change(record: dict | None, config: Any) -> dict[str, tuple[Any, Any]]:
    """``data.layout`` ("1" -> "segments") for a run started before preparation in segments whose corpus has
    several of them: its blocks are now packed segment by segment (and its held-out documents hashed per
    segment), so the same example ids would name other blocks. A corpus of one segment (one file up to
    data.segment_bytes, the built-in corpus, a Hub dataset) gives the same blocks and resumes."""
    from wwm.data.segments import LAYOUT_RULE, plan

    before = str((record or {}).get("data_layout", "1"))
    if before == LAYOUT_RULE:
        return {}
    try:
        several = len(plan(config.data, "train")) > 1 or (
            bool(config.data.validation_files) and len(plan(config.data, "validation")) > 1
        )
    except WWMError:  # a missing file: the data preparation names it
        return {}
    return {"data.layout": (before, LAYOUT_RULE)} if several else {}


# --------------------------------------------------------------------------------------------------
# Inputs by content: the corpus files and the tokenizer
# --------------------------------------------------------------------------------------------------


def _input_files(config: RunConfig) -> dict[str, list[str]]:
    """The corpus files of each split (none for the built-in corpus or a Hub dataset)."""
    from wwm.data.sources import resolve_files

    data = config.data
    out = {}
    if data.source == "files":
        out["train"] = resolve_files(data.train_files)
    if data.validation_files:
        out["validation"] = resolve_files(data.validation_files, "data.validation_files")
    return out


def _file_entries(files: list[str], known: dict[str, list] | None = None) -> list[list]:
    """[path, size, mtime_ns, sha256] of each file; a file whose size and mtime equal a `known` entry keeps
    its digest (nothing is read again). A bucket object: [url, size, version, version] with its generation
    or ETag as version and digest (wwm.fs.identity; the object is not read: a changed object is a changed
    input)."""
    out = []
    for path in files:
        if "://" in path:
            from wwm import fs

            ident = fs.identity(path)
            out.append([path, ident["size"], ident["version"], ident["version"]])
            continue
        try:
            st = os.stat(path)
            old = (known or {}).get(path)
            digest = old[3] if old and (old[1], old[2]) == (st.st_size, st.st_mtime_ns) else file_digest(path)
        except OSError as err:
            raise os_error(err, "a corpus file") from err
        out.append([path, st.st_size, st.st_mtime_ns, digest])
    return out


def input_changes(
    record: dict | None, config: RunConfig
) -> tuple[dict[str, tuple[Any, Any]], dict[str, Any]]:
    """(changes "content of <file>" -> (old, new), the current file entries) of the corpus files against
    those run.json recorded. Files whose size and mtime are unchanged are not read; the others are hashed,
    so a touched or copied file with the same bytes is no change."""
    recorded = ((record or {}).get("inputs") or {}).get("files")
    current_files = _input_files(config)
    if recorded is None:  # a record from before inputs were recorded: nothing to compare
        return {}, {s: _file_entries(f) for s, f in current_files.items()}
    changes: dict[str, tuple[Any, Any]] = {}
    entries = {}
    for split in sorted(set(recorded) | set(current_files)):
        known = {e[0]: e for e in recorded.get(split, [])}
        entries[split] = _file_entries(current_files.get(split, []), known)
        now = {e[0]: e for e in entries[split]}
        for path in sorted(set(known) | set(now)):
            old, new = known.get(path), now.get(path)
            if old is None:
                changes[f"content of {path}"] = ("(not in the run)", f"added ({_short(new[3])})")
            elif new is None:
                changes[f"content of {path}"] = (_short(old[3]), "(gone from the corpus)")
            elif old[3] != new[3]:
                changes[f"content of {path}"] = (_short(old[3]), _short(new[3]))
    return changes, entries


def local_tokenizer_fingerprint(config: RunConfig, path: str) -> str | None:
    """The content hash (wwm.data.tokenizer.tokenizer_fingerprint) of the run's tokenizer when it is on
    this disk: `tokenizer.path` (a folder or tokenizer.json) or the one trained into `<path>/tokenizer`.
    None for a Hub name or a tokenizer not trained yet (checked after data preparation instead)."""
    from wwm.data.tokenizer import load_tokenizer, tokenizer_fingerprint

    where = config.tokenizer.path
    if where is None:
        where = os.path.join(path, "tokenizer")
        if not os.path.isdir(where):
            return None
    elif not os.path.exists(os.path.expanduser(where)):
        return None
    return tokenizer_fingerprint(load_tokenizer(where))


def _changed_refusal(path: str, changed: dict[str, tuple[Any, Any]]) -> WWMError:
    shown = "; ".join(f"{k}: {_show(o)} -> {_show(n)}" for k, (o, n) in changed.items())
    return WWMError(
        f"output_dir {path} holds a run made with other settings or inputs ({shown}); resuming would mix "
        "two runs. Fixes: another output_dir (a new run); --overwrite (delete this run and start "
        "over); --allow-config-change (continue this run with the new values)"
    )


# --------------------------------------------------------------------------------------------------
# The decision
# --------------------------------------------------------------------------------------------------


def _refusal(path: str, problem: str) -> WWMError:
    return WWMError(
        f"output_dir {path} {problem}. Fixes: another output_dir (a new run); --overwrite (delete this run and "
        "start over)"
    )


def planned_artifacts(config: RunConfig) -> list[str]:
    """The names this run may write into output_dir (recorded in run.json before it writes them, so that a
    kill at any moment leaves them listed)."""
    names = [RUN_FILE, CONFIG_FILE, CHECKPOINT_DIR, CORRUPT_DIR, PREVIOUS_DIR]
    log = config.logging
    if log.jsonl:
        names.append(METRICS_FILE)
    names += [name for name in tracker_folders(log) if name]
    if config.checkpoint.export_hf_at_end:
        names.append("hf")
    if config.tokenizer.path is None:
        names.append("tokenizer")
    return sorted(set(names))


def tracker_folders(logging_config: Any) -> list[str]:
    """The folders the configured experiment trackers write into output_dir."""
    out = []
    for name in getattr(logging_config, "report_to", ()) or ():
        if name == "tensorboard":
            out.append("tensorboard")
        elif name == "wandb":
            out.append("wandb")  # wandb.init(dir=output_dir) keeps its files in <dir>/wandb
        elif name == "mlflow" and not os.environ.get("MLFLOW_TRACKING_URI"):
            out.append("mlruns")  # the local file store (wwm_cli trackers)
    if getattr(logging_config, "tensorboard", False):
        out.append("tensorboard")
    return out


def _foreign(path: str) -> WWMError:
    return WWMError(
        f"output_dir {path} is not empty and holds no wwm run record ({RUN_FILE}); a run writing among these files "
        "could overwrite them, and --overwrite deletes only what a run recorded. Choose a new or empty "
        "output_dir (or empty this one yourself)"
    )


def decide(
    config: RunConfig,
    framework: str,
    *,
    overwrite: bool = False,
    allow_changes: bool = False,
    restart: bool = False,
) -> RunDir:
    """What `config.output_dir` is to this run (reads only). See the module doc."""
    from wwm.config import RunConfig, resolved_dict
    from wwm.config.loader import upgraded_spelling

    if overwrite and restart:
        raise WWMError("--overwrite and --restart-from-scratch exclude each other; choose one")
    path = os.path.abspath(config.output_dir)
    if _is_remote(config.output_dir):
        return RunDir(config.output_dir, framework, "resume", config.checkpoint.resume,
                      messages=["run-directory checks apply to local folders only"],
                      order_rule=configured_order_rule(config))  # fmt: skip
    check_writable_dir(path, "output_dir")
    result = RunDir(path, framework, "new", config.checkpoint.resume, allow_changes=allow_changes,
                    order_rule=configured_order_rule(config))  # fmt: skip
    names = _listing(path)
    if not names:
        return result
    try:
        record, old = read_record(path)
    except WWMError:
        if not overwrite:
            raise
        record, old = {"artifacts": list(RUN_ARTIFACTS)}, None  # an unreadable record: what wwm writes
    result.record = record
    if record is None:
        return _decide_without_record(result, config, names, old, overwrite or restart)
    old_framework = _recorded_framework(path, record, old)
    if overwrite:
        result.status, result.resume = "overwritten", False
        result.artifacts = list(record.get("artifacts") or RUN_ARTIFACTS)
        result.messages.append(f"--overwrite: the previous run's files in {path} are removed")
        return result
    if old_framework and old_framework != framework:
        raise _refusal(
            path, f"holds a {old_framework} run; a run directory holds one run (this is a {framework} run)"
        )
    did_train = trained(path, record)
    if restart:
        result.status, result.resume = "restarted", False
        if old is not None:
            result.changed = config_differences(old, resolved_dict(config), resolved_dict(RunConfig()))
            result.changed.pop("train.framework", None)
        result.messages.append(
            f"--restart-from-scratch: training again from step 0; what the earlier attempt wrote "
            f"({trained_steps(path, record)} steps) is moved to {PREVIOUS_DIR}/"
        )
        return result
    if did_train and not config.checkpoint.resume:
        raise _refusal(path, "holds a run and checkpoint.resume is false (that would discard it)")
    order_change = _resumed_order_rule(record, result, config) if did_train else {}
    if old is not None:
        old = upgraded_spelling(RunConfig, old)  # a record of an earlier wwm: its keys as they are spelt now
        changed = config_differences(old, resolved_dict(config), resolved_dict(RunConfig()))
        changed.pop("train.framework", None)
        changed.update(_rule_change(record, old, config))
        changed.update(order_change)
        _unused_order_keys(changed, old, config)
        if did_train:
            changed.update(_layout_change(record, config))
            changed.update(input_changes(record, config)[0])
            changed.update(_tokenizer_change(record, config, path))
        blocking = {k: v for k, v in changed.items() if not resumable(k)}
        if blocking and did_train and not allow_changes:
            raise _changed_refusal(path, blocking)
        result.changed = changed
        if changed and did_train:
            note = "; ".join(f"{k}: {_show(o)} -> {_show(n)}" for k, (o, n) in changed.items())
            result.messages.append(f"resuming with changed settings: {note}")
        elif changed:
            result.messages.append("nothing was trained in this folder yet: the new settings replace the old")
    elif order_change:  # run.json without its config file: the order rule is still the run's
        if not allow_changes:
            raise _changed_refusal(path, order_change)
        result.changed = order_change
        note = "; ".join(f"{k}: {_show(o)} -> {_show(n)}" for k, (o, n) in order_change.items())
        result.messages.append(f"resuming with changed settings: {note}")
    if did_train and not checkpoint_names(path) and saved_before(path, record, old):
        raise _no_checkpoint(path, record)
    result.status = "resume" if did_train else "new"
    return result


def saved_before(path: str, record: dict | None, old: dict | None) -> bool:
    """Whether the run in `path` ever saved a checkpoint: run.json records the step of the newest one (format
    2 on), an unreadable one was moved aside, or (a record from before `steps` was recorded) its metrics
    reach `checkpoint.every_steps`, where a run saves. A run stopped before its first checkpoint (killed,
    or its first save failed on a full disk) has none to lose: it starts again from step 0, as any resume
    recomputes the steps after its checkpoint."""
    if int((record or {}).get("steps") or 0) > 0 or _moved_aside(path) > 0:
        return True
    if int((record or {}).get("format") or 1) >= 2:
        return False
    every = ((old or {}).get("checkpoint") or {}).get("every_steps")
    return isinstance(every, int) and _last_metrics_step(path) >= every


def _tokenizer_change(record: dict, config: RunConfig, path: str) -> dict[str, tuple[Any, Any]]:
    recorded = (record.get("inputs") or {}).get("tokenizer")
    if not recorded:
        return {}
    now = local_tokenizer_fingerprint(config, path)
    if now is None or now == recorded:
        return {}
    where = config.tokenizer.path or os.path.join(path, "tokenizer")
    return {f"content of the tokenizer {where}": (_short(recorded), _short(now))}


def _no_checkpoint(path: str, record: dict) -> WWMError:
    steps = trained_steps(path, record)
    aside = _moved_aside(path)
    where = f"; {aside} unreadable one(s) are in {CORRUPT_DIR}/" if aside else ""
    return WWMError(
        f"output_dir {path} holds a run that trained {steps} step(s) but has no checkpoint to resume from"
        f"{where}; starting again silently would replace its history. Fixes: restore the checkpoints from a "
        "backup; --restart-from-scratch (train again from step 0 here, keeping the run's history); "
        "--overwrite (delete this run and start over); another output_dir"
    )


def _decide_without_record(
    result: RunDir, config: RunConfig, names: list[str], old: dict | None, flag: bool
) -> RunDir:
    """A non-empty folder without run.json: a run being started by another process (only temporaries), a
    run from before run.json existed, or somebody's files."""
    path = result.path
    if all(_temporary_of(n) for n in names):
        return result  # another process of this run is writing the record right now
    framework = _recorded_framework(path, None, old)
    if framework is None or not trained(path):
        raise _foreign(path)
    if flag:
        raise WWMError(
            f"output_dir {path} holds a run of an older wwm without a run record ({RUN_FILE}), so wwm cannot tell "
            "its files from yours: --overwrite and --restart-from-scratch refuse; delete the files yourself, or "
            "choose another output_dir"
        )
    if framework != result.framework:
        raise _refusal(
            path, f"holds a {framework} run; a run directory holds one run (this is a {result.framework} run)"
        )
    if not config.checkpoint.resume:
        raise _refusal(path, "holds a run and checkpoint.resume is false (that would discard it)")
    changed = _resumed_order_rule(None, result, config)  # a run from before run.json: ordered by rule "1"
    if old is not None:
        from wwm.config import RunConfig, resolved_dict

        changed.update(config_differences(old, resolved_dict(config), resolved_dict(RunConfig())))
        changed.pop("train.framework", None)
        _unused_order_keys(changed, old, config)
    changed.update(_layout_change(None, config))
    blocking = {k: v for k, v in changed.items() if not resumable(k)}
    if blocking and not result.allow_changes:
        raise _changed_refusal(path, blocking)
    result.changed = changed
    if not checkpoint_names(path) and saved_before(path, None, old):
        raise _no_checkpoint(path, {})
    result.status = "resume"
    return result


# --------------------------------------------------------------------------------------------------
# Carrying it out
# --------------------------------------------------------------------------------------------------


def apply(result: RunDir, config: RunConfig) -> None:
    """Carry out `decide`'s decision (the lead process only): remove an overwritten run's files or move a
    restarted run's earlier attempt aside, write `run.json` (with its history, artifacts and inputs) and
    `config.yaml`."""
    import yaml

    from wwm.config import resolved_dict

    if _is_remote(result.path):
        return
    try:
        if result.status == "overwritten" and os.path.isdir(result.path):
            remove_run(result.path, result.artifacts)
        # how far the earlier attempt got, read before its metrics move aside
        steps = trained_steps(result.path, result.record) if result.status == "restarted" else 0
        moved = _move_attempt_aside(result.path) if result.status == "restarted" else None
        os.makedirs(result.path, exist_ok=True)
        _write_record(result, config, moved, steps)
        text = yaml.safe_dump(resolved_dict(config), sort_keys=False)
        atomic_write_text(os.path.join(result.path, CONFIG_FILE), text)
    except OSError as err:
        raise os_error(err, f"output_dir {result.path}") from err


def _move_attempt_aside(path: str) -> str | None:
    """--restart-from-scratch: the earlier attempt's metrics, checkpoints and exports -> previous/<time>/."""
    present = [n for n in ATTEMPT_OUTPUTS if os.path.lexists(os.path.join(path, n))]
    if not present:
        return None
    moved = previous_folder()
    target = os.path.join(path, *moved.split("/"))
    os.makedirs(target)
    for name in present:
        os.replace(os.path.join(path, name), os.path.join(target, name))
    return moved


def previous_folder() -> str:
    """Where --restart-from-scratch moves the earlier attempt, relative to the run folder:
    `previous/<UTC time>-<pid>` (a bucket run's too: wwm.runstore)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{PREVIOUS_DIR}/{stamp}-{os.getpid()}"


def claim(
    config: RunConfig,
    framework: str,
    *,
    overwrite: bool = False,
    allow_changes: bool = False,
    restart: bool = False,
    lead: bool = True,
    share: Callable[[Any], Any] | None = None,
    command: str | None = None,
) -> RunDir:
    """Lock, decide and record (the lead), so that one live run uses the folder.

    `share(value)`: with several processes, returns the lead's `value` on every process (a broadcast);
    only the lead then takes the lock and reads the folder, and every process gets its decision or its
    refusal (the same one line). Without it, each process decides for itself and only `lead` locks and
    writes (they read the same folder). The lock stays held until `RunDir.close()`."""
    if share is None:
        if not lead:
            result = decide(
                config, framework, overwrite=overwrite, allow_changes=allow_changes, restart=restart
            )
            result.lead = False
            return result
        return _claim_lead(config, framework, overwrite, allow_changes, restart, command)
    outcome = None
    result = None
    if lead:
        try:
            result = _claim_lead(config, framework, overwrite, allow_changes, restart, command)
            outcome = {"run": result.to_dict()}
        except WWMError as err:
            outcome = {"error": str(err), "exit_status": err.exit_status}
            share(outcome)
            raise
    outcome = shared_outcome(share, outcome, result)
    return result if lead else RunDir.from_dict(outcome["run"], lead=False)


def shared_outcome(share: Callable[[Any], Any], outcome: Any, held: RunDir | None) -> dict[str, Any]:
    """The lead's `outcome` on every process (`share`: a broadcast). A refusal the lead shared as
    {"error", "exit_status"} is raised on every process as the same one line (DiskFull keeps its exit
    status); `held` (the lead's claimed RunDir) is closed if the broadcast itself fails."""
    try:
        outcome = share(outcome)
    except BaseException:
        if held is not None:
            held.close()
        raise
    if "error" in outcome:
        cls = DiskFull if outcome.get("exit_status") == DiskFull.exit_status else WWMError
        raise cls(outcome["error"])
    return outcome


def _claim_lead(config: RunConfig, framework: str, overwrite: bool, allow_changes: bool, restart: bool,
                command: str | None) -> RunDir:  # fmt: skip
    from wwm.locks import lock_for

    path = os.path.abspath(config.output_dir)
    lock = None
    created = not os.path.exists(path)
    if not _is_remote(config.output_dir):
        check_writable_dir(path, "output_dir")
        lock = lock_for(path, LOCK_FILE, f"output_dir {path}", command=command or _command_line())
        lock.acquire()
    try:
        result = decide(config, framework, overwrite=overwrite, allow_changes=allow_changes, restart=restart)
        if lock is not None and lock.took_over:
            result.messages.append(f"took the lock of a run that is gone over ({lock.took_over})")
        apply(result, config)
    except BaseException:
        if lock is not None:
            lock.release()
            if created:
                with contextlib.suppress(OSError):
                    os.rmdir(path)  # a folder this refused run made for its lock only
        raise
    result.lock = lock
    return result


def _command_line() -> str:
    args = [os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]]
    text = " ".join(args)
    return text if len(text) <= 200 else text[:197] + "..."


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write_record(result: RunDir, config: RunConfig, moved: str | None, previous_steps: int = 0) -> None:
    from wwm import __version__
    from wwm.data.packing import PACKING_RULE

    path = result.path
    keep = result.status in ("resume", "restarted", "new") and result.record is not None
    record = dict(result.record) if keep else None
    if record is None:
        record = {"format": FORMAT, "framework": result.framework, "created": _now(), "history": []}
    event_name = {"resume": "resumed", "restarted": "restarted from scratch"}.get(result.status, "started")
    event: dict[str, Any] = {"time": _now(), "event": event_name, "wwm_version": __version__}
    if result.status == "restarted":
        event["previous_steps"] = previous_steps
        if moved:
            event["moved_to"] = moved
        for key in ("steps", "trackers"):  # a new attempt: no progress yet, new tracker runs
            record.pop(key, None)
    if result.changed and result.status in ("resume", "restarted"):
        event["changed"] = {k: {"old": o, "new": n} for k, (o, n) in result.changed.items()}
    record["format"] = FORMAT
    record["packing_rule"] = PACKING_RULE[config.data.packing]  # the rule that packs this run's blocks
    record["order_rule"] = result.order_rule  # the rule that orders its epochs (wwm.data.order)
    from wwm.data.segments import LAYOUT_RULE

    record["data_layout"] = LAYOUT_RULE  # its blocks are prepared segment by segment (wwm.data.segments)
    previous = record.get("artifacts") or (list(RUN_ARTIFACTS) if keep else [])
    record["artifacts"] = sorted(set(previous) | set(planned_artifacts(config)))
    inputs = dict(record.get("inputs") or {})
    inputs["files"] = input_changes(record if result.status == "resume" else None, config)[1]
    if result.status != "resume":
        inputs.pop("tokenizer", None)  # recorded again once the data are prepared
    record["inputs"] = inputs
    record.setdefault("history", []).append(event)
    atomic_write_text(os.path.join(path, RUN_FILE), json.dumps(record, indent=1, default=str) + "\n")
    result.record = record


def _update_record(path: str, change: Callable[[dict], None]) -> None:
    """Read run.json, apply `change`, write it back atomically (the lead only)."""
    file = os.path.join(path, RUN_FILE)
    try:
        # local: the run folder (a bucket run's staging folder: wwm.runstore)
        with open(file, encoding="utf-8") as f:
            record = json.load(f)
        change(record)
        atomic_write_text(file, json.dumps(record, indent=1, default=str) + "\n")
    except OSError as err:
        raise os_error(err, f"the run record {file}") from err


def remove_run(path: str, artifacts: list[str] | tuple[str, ...] = RUN_ARTIFACTS) -> None:
    """Delete what a run recorded (`artifacts`, and their leftover temporaries) from `path`, nothing else."""
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if name != LOCK_FILE and _is_ours(name, artifacts):
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.remove(full)


def corrupt_destination(checkpoint_dir: str, name: str) -> str:
    """Where an unreadable checkpoint `checkpoint_dir/name` is moved: `<output_dir>/corrupt-checkpoints/`,
    under a name that never collides with an earlier one."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(
        os.path.dirname(os.path.abspath(checkpoint_dir)), CORRUPT_DIR, f"{name}-{stamp}-{os.getpid()}"
    )


def check_writable_dir(path: str, what: str) -> None:
    """`path` is a directory we can write, or can be created as one; else one line naming the fix (the
    storage layer's check, whose local branch this is)."""
    from wwm.fs.core import check_writable_folder

    check_writable_folder(os.path.abspath(path), what)


__all__ = [
    "LOCK_FILE",
    "RESUMABLE",
    "RUN_ARTIFACTS",
    "RunDir",
    "apply",
    "atomic_write_text",
    "check_writable_dir",
    "checkpoint_names",
    "claim",
    "config_differences",
    "corrupt_destination",
    "decide",
    "file_digest",
    "input_changes",
    "normalize_permissions",
    "planned_artifacts",
    "read_record",
    "remove_run",
    "resumable",
    "trained",
    "trained_steps",
]
