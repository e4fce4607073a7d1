"""Experiment trackers (`logging.report_to`): wandb and MLflow runs that follow the wwm run.

Both trainers open the trackers' runs here, on the lead process, before training:

* **wandb**: `wandb.init(project=logging.project, dir=output_dir, id=<recorded>, resume="allow")`, so
  its files go to `<output_dir>/wandb` and a resumed wwm run continues the same wandb run. Offline:
  `WANDB_MODE=offline` (sync later with `wandb sync <output_dir>/wandb/offline-run-*`).
* **MLflow**: the tracking URI of `MLFLOW_TRACKING_URI`, else a local file store in
  `<output_dir>/mlruns` (no server, no network); experiment `logging.project`; the run id is recorded
  in run.json and a resumed wwm run continues that MLflow run.

The ids live in run.json (`trackers`; `RunDir.tracker_id`); --restart-from-scratch starts new ones.

Who logs: the JAX trainer calls `train()`/`eval()` here with its metrics.jsonl records; the torch
trainer leaves logging to the Trainer's own integrations (`report_to`: WandbCallback, MLflowCallback),
which find the runs opened here active and log into them. The keys are the same on both sides
(`wwm.metrics_schema.tracker_keys`): wandb gets transformers' `rewrite_logs` names (`train/loss`,
`eval/loss`, x-axis `train/global_step`), MLflow the records' own keys (`loss`, `eval_loss`) at the
record's step. TensorBoard is written by the trainers themselves (`<output_dir>/tensorboard`).
"""

from __future__ import annotations

import math
import os
import uuid
from typing import Any

from wwm.errors import WWMError
from wwm.metrics_schema import tracker_keys

__all__ = ["EXTERNAL", "Trackers"]

EXTERNAL = ("wandb", "mlflow")  # the trackers opened here (TensorBoard: the trainers' own writers)
MLFLOW_LOCAL_STORE = "mlruns"


def _finite(record: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in record.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


class Trackers:
    """The external trackers of `config.logging.report_to` for one wwm run (lead process only).

    `start()` opens (or resumes) their runs; the JAX trainer logs with `train(record)` and
    `eval(record)`; `close(status)` ends them ("done" | "stopped" | "failed")."""

    def __init__(self, config: Any, run_dir: Any) -> None:
        self.config = config
        self.run_dir = run_dir
        self.names = [n for n in config.logging.report_to if n in EXTERNAL]
        self.wandb: Any = None
        self.mlflow: Any = None
        self._local_store = False  # we pointed MLflow at <output_dir>/mlruns (undone by close)

    def start(self) -> Trackers:
        for name in self.names:
            try:
                getattr(self, f"_start_{name}")()
            except WWMError:
                raise
            except Exception as err:
                self.close("failed")
                raise WWMError(
                    f"logging.report_to {name}: could not open its run ({type(err).__name__}: "
                    f"{' '.join(str(err).split())[:200]}); {_FIX[name]}"
                ) from err
        return self

    # ------------------------------------------------------------------ wandb
    def _start_wandb(self) -> None:
        try:
            import wandb
        except ImportError:
            raise WWMError(_MISSING.format(name="wandb")) from None
        from wwm.config import resolved_dict

        out = os.path.abspath(self.config.output_dir)
        os.makedirs(out, exist_ok=True)
        run_id = self.run_dir.tracker_id("wandb", lambda: uuid.uuid4().hex[:12])
        self.wandb = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or self.config.logging.project,
            dir=out,
            id=run_id,
            resume="allow",
            name=os.path.basename(out),
            config=resolved_dict(self.config),
            reinit="finish_previous",
        )
        # transformers' WandbCallback does the same: every key against train/global_step.
        self.wandb.define_metric("train/global_step")
        self.wandb.define_metric("*", step_metric="train/global_step", step_sync=True)

    # ------------------------------------------------------------------ mlflow
    def _start_mlflow(self) -> None:
        try:
            import mlflow
        except ImportError:
            raise WWMError(_MISSING.format(name="mlflow")) from None
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            store = os.path.join(os.path.abspath(self.config.output_dir), MLFLOW_LOCAL_STORE)
            # MLflow 3 keeps its file store in "maintenance mode" behind this switch; it needs no server.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            os.makedirs(store, exist_ok=True)
            mlflow.set_tracking_uri("file://" + store)  # (MLflow also exports it as MLFLOW_TRACKING_URI)
            self._local_store = True
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or self.config.logging.project
        mlflow.set_experiment(experiment)
        known = ((self.run_dir.record or {}).get("trackers") or {}).get("mlflow")
        run = None
        if known:
            try:
                run = mlflow.start_run(run_id=known)
            except Exception:  # the store moved or was emptied: a new MLflow run, recorded below
                run = None
        if run is None:
            run = mlflow.start_run(run_name=os.path.basename(os.path.abspath(self.config.output_dir)))
            if known:
                self.run_dir.record = dict(self.run_dir.record or {}, trackers={})
            self.run_dir.tracker_id("mlflow", lambda: run.info.run_id)
        self.mlflow = mlflow

    # ------------------------------------------------------------------ logging (JAX)
    def train(self, record: dict[str, Any]) -> None:
        self._log(record)

    def eval(self, record: dict[str, Any]) -> None:
        self._log(record)

    def _log(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        values = _finite({k: v for k, v in record.items() if k != "step"})
        if self.wandb is not None:
            self.wandb.log({**tracker_keys(values, "wandb"), "train/global_step": step})
        if self.mlflow is not None:
            self.mlflow.log_metrics(tracker_keys(values, "mlflow"), step=step)

    def close(self, status: str = "done") -> None:
        if self.wandb is not None:
            self.wandb.finish(exit_code=0 if status in ("done", "stopped") else 1)
            self.wandb = None
        if self.mlflow is not None:
            state = {"done": "FINISHED", "stopped": "KILLED"}.get(status, "FAILED")
            if self.mlflow.active_run() is not None:
                self.mlflow.end_run(status=state)
            if self._local_store:  # the next run in this process picks its own store, not this one
                self.mlflow.set_tracking_uri(None)
            self.mlflow = None


_MISSING = (
    "logging.report_to lists {name} but the {name} package is not installed; pip install 'wwm[trackers]'"
)
_FIX = {
    "wandb": "log in (`wandb login`) or work offline with WANDB_MODE=offline (sync later with `wandb sync`)",
    "mlflow": "check MLFLOW_TRACKING_URI (unset: a local store in <output_dir>/mlruns)",
}
