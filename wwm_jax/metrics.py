"""Metrics: `<output_dir>/metrics.jsonl`, TensorBoard, a progress bar, throughput and MFU.

metrics.jsonl gets one object per training step (every step, so that the torch/JAX parity tool can
compare per-step losses) with the keys
  step, loss, learning_rate, grad_norm, masked_tokens, tokens_per_s, step_time_s, mfu
and one object per evaluation with step, eval_loss, eval_accuracy, eval_perplexity. The torch trainer
writes the same keys. TensorBoard, the experiment trackers of `logging.report_to` (wwm.trackers: wandb,
MLflow) and the console get every `log_every_steps`-th step and every eval. Only process 0 writes.

MFU: the FLOPs count and the table of chip peaks are in wwm.flops (shared with the torch trainer).
"""

from __future__ import annotations

import math
import os
import sys
from typing import TYPE_CHECKING, Any

import jax

from wwm.flops import peak_flops
from wwm.metrics_schema import dumps_record

if TYPE_CHECKING:
    from wwm.config import LoggingConfig


def peak_flops_per_device(configured: float | None = None, device_kind: str | None = None) -> float | None:
    """The configured value, else the wwm.flops table's entry for this chip, else None (CPUs: no MFU)."""
    return peak_flops(device_kind if device_kind is not None else jax.devices()[0].device_kind, configured)


class MetricsWriter:
    def __init__(
        self,
        output_dir: str,
        logging_config: LoggingConfig,
        *,
        total_steps: int,
        start_step: int,
        enabled: bool,
        trackers=None,
    ):
        self.enabled = enabled
        self.config = logging_config
        self.trackers = trackers if enabled else None
        self.jsonl = None
        self.tb = None
        self.bar = None
        if not enabled:
            return
        os.makedirs(output_dir, exist_ok=True)
        if logging_config.jsonl:
            # local: the run folder or a bucket run's staging folder (wwm.fs.sync copies it)
            self.jsonl = open(os.path.join(output_dir, "metrics.jsonl"), "a", encoding="utf-8")
        if "tensorboard" in logging_config.report_to:
            from tensorboardX import SummaryWriter

            # On resume, purge_step hides the points of the steps after the checkpoint that an earlier
            # process logged: they are computed again, and TensorBoard would show both.
            self.tb = SummaryWriter(
                os.path.join(output_dir, "tensorboard"), purge_step=start_step + 1 if start_step else None
            )
        if logging_config.progress_bar:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stderr
            )

    def _write(self, record: dict[str, Any]) -> None:
        if self.jsonl is not None:
            self.jsonl.write(dumps_record(record) + "\n")
            self.jsonl.flush()

    def train(self, record: dict[str, Any], *, log: bool) -> None:
        """One step's record; `log`: also to TensorBoard and the console (every log_every_steps)."""
        if not self.enabled:
            return
        self._write(record)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                loss=f"{record['loss']:.4f}", lr=f"{record['learning_rate']:.2e}", refresh=False
            )
        if log:
            self._scalars("train", record)
            if self.trackers is not None:
                self.trackers.train(record)
            if self.bar is None:
                print(_line(record), flush=True)

    def eval(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._write(record)
        self._scalars("eval", {k.removeprefix("eval_"): v for k, v in record.items()})
        if self.trackers is not None:
            self.trackers.eval(record)
        self.message(_line(record))

    def _scalars(self, prefix: str, record: dict[str, Any]) -> None:
        if self.tb is None:
            return
        for key, value in record.items():
            if key != "step" and value is not None and math.isfinite(value):
                self.tb.add_scalar(f"{prefix}/{key}", value, record["step"])
        self.tb.flush()

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, flush=True)

    def close(self) -> None:
        """Close the writers; after a failure (an exception on its way out: a full disk) a second failure
        here is not raised over the first."""
        failing = sys.exc_info()[1] is not None
        for thing in (self.bar, self.tb, self.jsonl):
            if thing is not None:
                try:
                    thing.close()
                except OSError:
                    if not failing:
                        raise
        self.bar = self.tb = self.jsonl = None


def _line(record: dict[str, Any]) -> str:
    parts = []
    for key, value in record.items():
        if isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        elif value is not None:
            parts.append(f"{key}={value}")
    return " ".join(parts)
