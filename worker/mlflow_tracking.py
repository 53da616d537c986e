"""MLflow tracking of finished jobs (optional: ``LIVT_MLFLOW_TRACKING_URI``, extra ``livt[mlflow]``).

After a job's end is recorded, the worker logs it to MLflow as one run per attempt, in the
experiment ``livt/<data set>``: the resolved config as params (dotted keys), the per-epoch
metrics (``train_loss``, ``lr``, ``val_*`` at the epoch), the stored step points (``step/loss``,
``step/lr``, ``step/images_per_sec`` at the global step), the result's accuracies as
``final/*``, tags ``livt.job_id`` / ``livt.kind`` / ``livt.status`` / ``livt.attempt``, and for a
succeeded job the weights export (``model/model.safetensors`` and timm's ``model/config.json``)
with ``results.json``.

MLflow is a side channel: a failure to reach it never changes the job. Each attempt of the
logging retries with a backoff (the run it created is reused), and a last failure is one
``WARNING`` line in the job's log.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from livt_core import contract
from livt_core.export import read_config
from livt_core.tensorboard import final_metrics, flat_hparams
from livt_service.state import ClaimedJob, Finish

logger = logging.getLogger(__name__)

#: MLflow's own HTTP settings for the worker's calls: one try each, bounded, since this module
#: retries the whole logging itself.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
#: MLflow's batch limits (params and metrics per ``log_batch``) and longest param value.
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_CHARS = 6000


def experiment_name(config: Mapping[str, Any]) -> str:
    """``livt/<data.dataset>`` (``livt/<data.root folder>`` for an image folder)."""
    data = config.get("data") or {}
    dataset = str(data.get("dataset") or "unknown")
    if dataset in ("imagefolder", "splitfile") and data.get("root"):
        dataset = f"{dataset}:{Path(str(data['root'])).name}"
    return f"livt/{dataset}"


class MlflowTracker:
    """Logs finished jobs to the MLflow tracking server at ``tracking_uri``.

    Args:
        tracking_uri: e.g. ``http://mlflow:5000``.
        attempts: tries of the whole logging before it gives up.
        backoff: seconds before the second try; doubled before each further one.
    """

    def __init__(self, tracking_uri: str, *, attempts: int = 3, backoff: float = 2.0) -> None:
        self.tracking_uri = tracking_uri
        self.attempts = max(1, attempts)
        self.backoff = backoff

    def log_job(
        self,
        job: ClaimedJob,
        outcome: Finish,
        epochs: Mapping[int, Mapping[str, Any]],
        steps: Mapping[int, Mapping[str, Any]],
        job_log: Callable[[str, str], None] | None = None,
    ) -> str | None:
        """Logs one attempt of ``job``; returns the MLflow run id, or None after the last failed
        try (then ``job_log(message, level)`` gets one line; nothing is raised)."""
        try:
            import mlflow  # noqa: F401
        except ImportError:
            if job_log is not None:
                job_log(
                    "LIVT_MLFLOW_TRACKING_URI is set but mlflow is not installed "
                    "(pip install 'livt[mlflow]'); the job was not logged to MLflow",
                    "WARNING",
                )
            return None
        for key, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        run_id: list[str] = []
        delay, error = self.backoff, None
        for attempt in range(1, self.attempts + 1):
            try:
                self._log(job, outcome, epochs, steps, run_id)
                logger.info("job %s: logged to MLflow run %s", job.id, run_id[0])
                if job_log is not None:
                    job_log(f"logged to MLflow ({self.tracking_uri}): run {run_id[0]}", "INFO")
                return run_id[0]
            except Exception as exc:  # MLflow down, refusing, or slow: never the job's failure
                error = exc
                logger.warning(
                    "job %s: MLflow logging failed (try %d of %d): %s",
                    job.id,
                    attempt,
                    self.attempts,
                    exc,
                )
                if attempt < self.attempts:
                    time.sleep(delay)
                    delay *= 2
        message = (
            f"could not log to MLflow at {self.tracking_uri} after {self.attempts} tries "
            f"({type(error).__name__}: {str(error).splitlines()[0][:300] if error else ''}); "
            "the job's result is unaffected"
        )
        if job_log is not None:
            job_log(message, "WARNING")
        return None

    # ------------------------------------------------------------------ one try

    def _log(
        self,
        job: ClaimedJob,
        outcome: Finish,
        epochs: Mapping[int, Mapping[str, Any]],
        steps: Mapping[int, Mapping[str, Any]],
        run_id: list[str],
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        if not run_id:  # a retry continues the run its earlier try created
            name = experiment_name(job.config)
            experiment = client.get_experiment_by_name(name)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else client.create_experiment(name)
            )
            tags = {
                "livt.job_id": job.id,
                "livt.kind": job.kind,
                "livt.attempt": str(job.attempt),
                "mlflow.runName": f"{job.id}-{job.attempt}",
            }
            run = client.create_run(experiment_id, tags=tags)
            run_id.append(run.info.run_id)
        rid = run_id[0]
        params = [
            Param(key, str(value)[:MAX_PARAM_CHARS])
            for key, value in sorted(flat_hparams(job.config).items())
        ]
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now, int(epoch))
            for epoch, values in sorted(epochs.items())
            for key, value in values.items()
            if _finite(value)
        ]
        for point in steps.values():
            for key, value in (point.get("metrics") or {}).items():
                if _finite(value):
                    metrics.append(Metric(f"step/{key}", float(value), now, point["global_step"]))
        metrics += [
            Metric(key, value, now, 0) for key, value in final_metrics(outcome.result or {}).items()
        ]
        # a retry sends the params again: MLflow accepts a param repeated with the same value
        for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
            client.log_batch(rid, params=params[i : i + MAX_PARAMS_PER_BATCH])
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            client.log_batch(rid, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])
        client.log_batch(rid, tags=[RunTag("livt.status", outcome.status)])
        run_dir = Path(job.artifact_dir)
        weights = run_dir / contract.EXPORT_FILE
        if outcome.status == "succeeded" and weights.is_file():
            with tempfile.TemporaryDirectory(prefix="livt-mlflow-") as tmp:
                folder = Path(tmp) / "model"
                folder.mkdir()
                (folder / "config.json").write_text(json.dumps(read_config(weights), indent=2))
                os.symlink(weights, folder / contract.EXPORT_FILE)
                client.log_artifacts(rid, str(folder), "model")
        results = run_dir / contract.RESULTS_FILE
        if results.is_file():
            client.log_artifact(rid, str(results))
        client.set_terminated(rid, RUN_STATUS.get(outcome.status, "FINISHED"))


def _finite(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value == value
        and abs(value) != float("inf")
    )


def tracker_from_settings() -> MlflowTracker | None:
    """The tracker of ``LIVT_MLFLOW_TRACKING_URI`` (None when unset: MLflow is off)."""
    from livt_service.settings import get_settings

    uri = get_settings().mlflow_tracking_uri
    return MlflowTracker(uri) if uri else None
