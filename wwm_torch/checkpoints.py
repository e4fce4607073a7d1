"""The torch trainer's checkpoints: which are complete, which read back whole, and the fallback to the newest
intact one (a corrupt checkpoint is moved aside, never silently resumed from; docs/torch_trainer.md)."""

from __future__ import annotations

import json
import logging
import os
import sys

import torch

from wwm.errors import WWMError

__all__ = [
    "checkpoint_problem",
    "complete_checkpoints",
    "newest_intact_checkpoint",
    "remove_incomplete_checkpoints",
]

logger = logging.getLogger(__name__)


def _checkpoints(folder: str) -> list[str]:
    """The checkpoint-<step> folders in `folder`, oldest first."""
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        if name.startswith("checkpoint-") and name[len("checkpoint-") :].isdigit():
            found.append((int(name[len("checkpoint-") :]), os.path.join(folder, name)))
    return [path for _, path in sorted(found)]


def complete_checkpoints(folder: str) -> list[str]:
    """The checkpoints that were completely written (the Trainer writes trainer_state.json last)."""
    return [path for path in _checkpoints(folder) if os.path.isfile(os.path.join(path, "trainer_state.json"))]


def _safetensors_problem(path: str, expected: dict[str, tuple[int, ...]]) -> str | None:
    """Why a .safetensors file is unreadable (header, length), or None. Shapes that differ from
    `expected` (name -> shape) raise WWMError: the file belongs to another model."""
    import struct

    size = os.path.getsize(path)
    # local: a checkpoint on this machine (a bucket's is pulled first: wwm.fs.mirror)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return "truncated header"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return "truncated header"
        try:
            header = json.loads(f.read(n))
        except ValueError:
            return "corrupt header"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        return f"{size} bytes where the header describes {8 + n + end} (truncated)"
    for name, info in header.items():
        if name in expected and tuple(info["shape"]) != expected[name]:
            raise WWMError(
                f"checkpoint {os.path.dirname(path)} holds another model ({name}: shape {tuple(info['shape'])} "
                f"there, {expected[name]} in this config); resume it with the config it was trained with, or "
                "use another output_dir"
            )
    return None


def checkpoint_problem(path: str, model: torch.nn.Module) -> str | None:
    """Why a complete Trainer checkpoint cannot be resumed from (a truncated or corrupt file), or None.

    Every torch.save file (optimizer, scheduler, RNG states) is a zip archive whose members carry CRCs:
    `testzip` reads them all, so a file cut short by a full disk or flipped bits are found before the
    Trainer half-loads the checkpoint."""
    import zipfile

    try:
        # local: a checkpoint on this machine (a bucket's is pulled first: wwm.fs.mirror)
        with open(os.path.join(path, "trainer_state.json"), encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError) as err:
        return f"trainer_state.json: {err}"
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    weights = [n for n in os.listdir(path) if n.endswith(".safetensors")]
    if not weights:
        return "no model.safetensors"
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if name.endswith(".safetensors"):
            problem = _safetensors_problem(full, expected)
        elif name.endswith((".pt", ".pth", ".bin")):
            try:
                with zipfile.ZipFile(full) as z:
                    bad = z.testzip()
                problem = f"member {bad} is corrupt" if bad else None
            except (OSError, zipfile.BadZipFile) as err:
                problem = str(err)
        else:
            continue
        if problem:
            return f"{name}: {problem}"
    return None


def newest_intact_checkpoint(folder: str, model: torch.nn.Module, *, lead: bool = True) -> str | None:
    """The newest complete checkpoint that reads back whole, or None when there is none. A corrupt one is
    skipped with a one-line warning and moved (lead process) to <output_dir>/corrupt-checkpoints/;
    when every one is corrupt: WWMError (never a silent restart from scratch)."""
    from wwm.rundir import corrupt_destination

    complete = complete_checkpoints(folder)
    for path in reversed(complete):
        problem = checkpoint_problem(path, model)
        if problem is None:
            return path
        aside = corrupt_destination(folder, os.path.basename(path))
        print(f"wwm: warning: checkpoint {path} is unreadable ({problem}); moved to {aside}, trying the one "
              "before", file=sys.stderr, flush=True)  # fmt: skip
        if lead:
            os.makedirs(os.path.dirname(aside), exist_ok=True)
            os.replace(path, aside)
    if complete:
        raise WWMError(
            f"no checkpoint in {folder} can be read ({len(complete)} tried); restore them from a backup, or pass "
            "--overwrite to start this run over"
        )
    return None


def remove_incomplete_checkpoints(folder: str) -> None:
    """What a kill during a save left: a `.saving-checkpoint-<step>` folder (WWMTrainer writes a checkpoint
    there and renames it when complete), or, from an older wwm, a checkpoint without trainer_state.json.
    Never resumed from."""
    import shutil

    partial = sorted(set(_checkpoints(folder)) - set(complete_checkpoints(folder)))
    if os.path.isdir(folder):
        partial += sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.startswith(".saving-"))
    for path in partial:
        logger.warning("removing the incomplete checkpoint %s", path)
        shutil.rmtree(path, ignore_errors=True)
