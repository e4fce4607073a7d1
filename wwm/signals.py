"""Stopping a run on SIGTERM or Ctrl-C (SIGINT) without losing a step.

Both trainers train inside `with StopRequest() as stop:` and look at `stop.signal` once per optimizer
step: when set, they save a checkpoint of the step just finished and return. The handler itself does
nothing but set the flag (and write one line with `os.write`, which is safe in a signal handler, unlike
`print`), so a signal can never tear a step or a checkpoint write apart.

A second Ctrl-C stops at once (KeyboardInterrupt) without saving: for a user who will not wait for a
checkpoint. The previous checkpoint is intact (both trainers write checkpoints atomically).

Exit status after a signal-stop: 0 for SIGTERM (preemption: the scheduler restarts the same command,
which resumes), 130 for SIGINT (the shell's convention for Ctrl-C).

Before the first training step there is nothing to save: a `StopRequest(immediate=True)` (the trainers'
`run`, around the data preparation, model building and compilation) raises `Stopped` at once instead,
the trainer says so in one line and exits with the same status. Set `immediate = False` when the loop
begins.
"""

from __future__ import annotations

import os
import signal
import threading

NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT (Ctrl-C)"}
EXIT_STATUS = {signal.SIGTERM: 0, signal.SIGINT: 130}


class Stopped(BaseException):
    """A signal arrived before training began (`StopRequest(immediate=True)`): nothing to save. A
    BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(NAMES.get(signum, str(signum)))
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS.get(self.signum, 1)

    def message(self, what: str = "wwm train") -> str:
        return (
            f"{what}: {NAMES.get(self.signum, self.signum)} before the first training step: stopped; nothing was "
            "trained, so there is nothing to save (run the same command to start again)"
        )


class StopRequest:
    """Context manager: installs SIGTERM/SIGINT handlers (main thread only) and restores the old ones.
    `immediate`: raise `Stopped` at once (set-up) instead of setting the flag (the training loop)."""

    def __init__(self, what: str = "wwm", *, immediate: bool = False) -> None:
        self.what = what
        self.immediate = immediate
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in NAMES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.immediate:
            self.signal = signum
            raise Stopped(signum)
        if self.signal is not None and signum == signal.SIGINT:
            # The second Ctrl-C: stop now, without the checkpoint.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        if self.signal is None:
            self.signal = signum
            hint = " (Ctrl-C again: stop at once without saving)" if signum == signal.SIGINT else ""
            os.write(
                2, f"\n{self.what}: {NAMES[signum]}: saving a checkpoint after this step{hint}\n".encode()
            )

    @property
    def name(self) -> str:
        return NAMES.get(self.signal, "") if self.signal is not None else ""

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS.get(self.signal, 0) if self.signal is not None else 0

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


__all__ = ["EXIT_STATUS", "StopRequest", "Stopped"]
