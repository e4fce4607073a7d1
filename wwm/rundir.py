"""Run directories: one run per `output_dir`, never overwritten, mixed or reinterpreted by accident.

Both trainers call `claim(config, framework)` before any heavy set-up (data preparation, model
building, compilation). It reads what the directory holds and decides:

* empty or missing                    -> a new run: `run.json` and `config.yaml` are written.
* a run of the same framework whose recorded config equals this one in every key that changes the
  training trajectory                 -> resume (keys in `RESUMABLE` may differ; the run says so).
* a run of the other framework, a trajectory key that differs, `checkpoint.resume: false` over a
  run that trained, or a folder that is not empty and holds no wwm run
                                      -> `WWMError` (exit 2) naming the keys (old -> new) and the fixes.

`overwrite=True` (`wwm train --overwrite`) deletes the files a run writes (`RUN_ARTIFACTS`, nothing
else) and starts a new run; `allow_changes=True` (`--allow-config-change`) resumes with the new values
and records the change in `run.json`'s history. docs/run_directories.md has the rules and the why.

Only the lead process writes; every process reads, so all of them reach the same decision.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wwm.errors import WWMError

if TYPE_CHECKING:
    from wwm.config import RunConfig

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
# Everything a run writes into its output_dir; `overwrite` deletes these and only these.
CORRUPT_DIR = "corrupt-checkpoints"  # unreadable checkpoints are moved here on resume, never deleted
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
FORMAT = 1

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
}


def resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE)


@dataclass
class RunDir:
    """What `claim` decided. `resume`: whether the trainer may restore a checkpoint from it."""

    path: str
    framework: str
    status: str  # "new" | "resume" | "overwritten"
    resume: bool
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # key -> (old, new)
    messages: list[str] = field(default_factory=list)
    # The rule that orders this run's epochs (wwm.data.order): a new run gets this wwm's rule, a resumed
    # run keeps the one it was started under (run.json's "order_rule"; none recorded: rule "1").
    order_rule: str = field(default_factory=lambda: _current_order_rule())


def _current_order_rule() -> str:
    from wwm.data.order import ORDER_RULE

    return ORDER_RULE


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


def _is_remote(path: str) -> bool:
    return "://" in path


def _is_ours(name: str) -> bool:
    """A file or folder a run writes (or its temporary: another process may be writing it right now)."""
    return name in RUN_ARTIFACTS or name.startswith(
        (".tokenizer-", f"{RUN_FILE}.tmp-", f"{CONFIG_FILE}.tmp-")
    )


def trained(path: str) -> bool:
    """Whether the folder holds training results: a checkpoint or a metrics record."""
    ckpts = os.path.join(path, CHECKPOINT_DIR)
    if os.path.isdir(ckpts) and any(not n.startswith(".") for n in os.listdir(ckpts)):
        return True
    metrics = os.path.join(path, METRICS_FILE)
    return os.path.isfile(metrics) and os.path.getsize(metrics) > 0


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
            with open(run_file, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError) as err:
            raise WWMError(
                f"{run_file} is unreadable ({err}); restore it, or pass --overwrite to replace the run"
            ) from err
    config_file = os.path.join(path, CONFIG_FILE)
    if os.path.isfile(config_file):
        try:
            with open(config_file, encoding="utf-8") as f:
                config = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as err:
            raise WWMError(
                f"{config_file} is unreadable ({err}); restore it, or pass --overwrite to replace the run"
            ) from err
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


def _resumed_order_rule(record: dict | None, result: RunDir) -> dict[str, tuple[Any, Any]]:
    """A trained run resumes under the order rule it was started by, when this wwm knows it (its batches
    stay those of the uninterrupted run); a rule this wwm does not know is a change (``data.order_rule``
    old -> new) that needs --allow-config-change and then orders the rest of the run by this wwm's rule."""
    from wwm.data.order import ORDER_RULE, ORDER_RULES, SORT_RULE

    recorded = str((record or {}).get("order_rule", SORT_RULE))
    if recorded not in ORDER_RULES:
        return {"data.order_rule": (recorded, ORDER_RULE)}
    result.order_rule = recorded
    if recorded != ORDER_RULE:
        result.messages.append(
            f"this run keeps its order rule {recorded!r} (new runs are ordered by {ORDER_RULE!r})"
        )
    return {}


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


def _refusal(path: str, problem: str) -> WWMError:
    return WWMError(
        f"output_dir {path} {problem}. Fixes: another output_dir (a new run); --overwrite (delete this run and "
        "start over)"
    )


def decide(
    config: RunConfig, framework: str, *, overwrite: bool = False, allow_changes: bool = False
) -> RunDir:
    """What `config.output_dir` is to this run (reads only; every process may call it). See the module doc."""
    from wwm.config import RunConfig, resolved_dict
    from wwm.config.loader import upgraded_spelling

    path = os.path.abspath(config.output_dir)
    if _is_remote(config.output_dir):
        return RunDir(config.output_dir, framework, "resume", config.checkpoint.resume,
                      messages=["run-directory checks apply to local folders only"])  # fmt: skip
    check_writable_dir(path, "output_dir")
    result = RunDir(path, framework, "new", config.checkpoint.resume)
    if not (os.path.isdir(path) and os.listdir(path)):
        return result
    if overwrite:
        result.status, result.resume = "overwritten", False
        result.messages.append(f"--overwrite: the previous run's files in {path} are removed")
        return result
    record, old = read_record(path)
    did_train = trained(path)
    if record is None and old is None and not did_train:
        if not any(_is_ours(n) for n in os.listdir(path)):
            # Somebody's other files: a run writing among them could overwrite them.
            raise WWMError(
                f"output_dir {path} is not empty and holds no wwm run (a run writing among these files could "
                "overwrite them); choose a new or empty output_dir"
            )
    old_framework = _recorded_framework(path, record, old)
    if old_framework and old_framework != framework:
        raise _refusal(
            path, f"holds a {old_framework} run; a run directory holds one run (this is a {framework} run)"
        )
    if did_train and not config.checkpoint.resume:
        raise _refusal(path, "holds a run and checkpoint.resume is false (that would discard it)")
    order_change = _resumed_order_rule(record, result) if did_train else {}
    if old is not None:
        old = upgraded_spelling(RunConfig, old)  # a record of an earlier wwm: its keys as they are spelt now
        changed = config_differences(old, resolved_dict(config), resolved_dict(RunConfig()))
        changed.pop("train.framework", None)
        changed.update(_rule_change(record, old, config))
        changed.update(order_change)
        if did_train:
            changed.update(_layout_change(record, config))
        blocking = {k: v for k, v in changed.items() if not resumable(k)}
        if blocking and did_train and not allow_changes:
            shown = "; ".join(f"{k}: {_show(o)} -> {_show(n)}" for k, (o, n) in blocking.items())
            raise WWMError(
                f"output_dir {path} holds a run made with other settings ({shown}); resuming would mix "
                "two runs. Fixes: another output_dir (a new run); --overwrite (delete this run and start "
                "over); --allow-config-change (continue this run with the new values)"
            )
        result.changed = changed
        if changed and did_train:
            note = "; ".join(f"{k}: {_show(o)} -> {_show(n)}" for k, (o, n) in changed.items())
            result.messages.append(f"resuming with changed settings: {note}")
        elif changed:
            result.messages.append("nothing was trained in this folder yet: the new settings replace the old")
    result.status = "resume" if did_train else "new"
    return result


def apply(result: RunDir, config: RunConfig) -> None:
    """Carry out `decide`'s decision (the lead process only): remove an overwritten run's files, write
    `run.json` (with its history) and `config.yaml`."""
    import yaml

    from wwm.config import resolved_dict

    if _is_remote(result.path):
        return
    if result.status == "overwritten" and os.path.isdir(result.path):
        remove_run(result.path)
    os.makedirs(result.path, exist_ok=True)
    _write_record(result.path, result.framework, result, config.data.packing)
    text = yaml.safe_dump(resolved_dict(config), sort_keys=False)
    atomic_write_text(os.path.join(result.path, CONFIG_FILE), text)


def claim(
    config: RunConfig,
    framework: str,
    *,
    overwrite: bool = False,
    allow_changes: bool = False,
    lead: bool = True,
    barrier: Any = None,
) -> RunDir:
    """`decide` (every process), then `apply` (the lead process). `barrier(name)`: with several processes,
    all of them decide before the lead writes, and none goes on before it has written."""
    result = decide(config, framework, overwrite=overwrite, allow_changes=allow_changes)
    if barrier is not None:
        barrier("wwm: run directory read")
    if lead:
        apply(result, config)
    if barrier is not None:
        barrier("wwm: run directory recorded")
    return result


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write_record(path: str, framework: str, result: RunDir, packing: str) -> None:
    from wwm import __version__

    record_path = os.path.join(path, RUN_FILE)
    record = None
    if result.status == "resume" and os.path.isfile(record_path):
        with open(record_path, encoding="utf-8") as f:
            record = json.load(f)
    if record is None:
        record = {"format": FORMAT, "framework": framework, "created": _now(), "history": []}
    event: dict[str, Any] = {"time": _now(), "event": "resumed" if result.status == "resume" else "started",
                             "wwm_version": __version__}  # fmt: skip
    from wwm.data.packing import PACKING_RULE

    record["packing_rule"] = PACKING_RULE[packing]  # the rule that packs this run's blocks
    record["order_rule"] = result.order_rule  # the rule that orders its epochs (wwm.data.order)
    from wwm.data.segments import LAYOUT_RULE

    record["data_layout"] = LAYOUT_RULE  # its blocks are prepared segment by segment (wwm.data.segments)
    if result.changed and result.status == "resume":
        event["changed"] = {k: {"old": o, "new": n} for k, (o, n) in result.changed.items()}
    record.setdefault("history", []).append(event)
    atomic_write_text(record_path, json.dumps(record, indent=1, default=str) + "\n")


def atomic_write_text(path: str, text: str) -> None:
    """Write `path` through a temporary file and a rename: a kill leaves the old or the new file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_run(path: str) -> None:
    """Delete what a run wrote into `path` (RUN_ARTIFACTS and leftover temporary folders), nothing else."""
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if _is_ours(name):
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
    """`path` is a directory we can write, or can be created as one; else one line naming the fix."""
    path = os.path.abspath(path)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise WWMError(f"{what} {path} is a file, not a directory; choose a directory path")
        if not os.access(path, os.W_OK | os.X_OK):
            raise WWMError(f"{what} {path} is not writable; fix its permissions or choose another path")
        return
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise WWMError(f"{what} {path} cannot be created: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WWMError(f"{what} {path} cannot be created: {parent} is not writable; choose another path")


def normalize_permissions(path: str) -> None:
    """Give an exported folder the modes a normal `open`/`mkdir` would (files 0666, folders 0777, less
    the umask): temporary folders and some writers create 0600/0700 files others cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    for root, dirs, files in os.walk(path):
        os.chmod(root, 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)


__all__ = [
    "RESUMABLE",
    "RUN_ARTIFACTS",
    "RunDir",
    "apply",
    "atomic_write_text",
    "check_writable_dir",
    "claim",
    "config_differences",
    "corrupt_destination",
    "decide",
    "normalize_permissions",
    "read_record",
    "remove_run",
    "resumable",
    "trained",
]
