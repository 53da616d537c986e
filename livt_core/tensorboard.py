"""TensorBoard event files of a run, written into its output folder.

:class:`TensorBoardWriter` is a :class:`~livt_core.events.Callback`: ``tensorboard --logdir
<runs or artifact folder>`` shows every run. Tags:

* ``train/loss``, ``train/lr``, ``train/images_per_sec`` at the global step: the first step of
  each of at most :data:`~livt_core.contract.MAX_STEP_POINTS` equal spans of the run's steps
  (``contract.step_bucket``), so a long run stays small;
* ``epoch/train_loss``, ``epoch/lr`` and, for fine-tuning, ``val/overall``, ``val/many``,
  ``val/medium``, ``val/few`` (and the other ``val_*`` metrics) at the epoch (0-based);
* the hparams plugin: the run's scalar settings with the final metrics (``final/*``: the
  result's ``overall`` / ``many`` / ``medium`` / ``few`` / ``top5`` / ``ece``, or a pretrain's
  numeric summary).

Each attempt of a job writes its own file (``events.out.tfevents.<time>.<host>.<pid>.<n>
.attempt<N>``); a resumed run does not write again the epochs it continues after.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from livt_core.contract import step_bucket
from livt_core.events import Callback

logger = logging.getLogger(__name__)

#: Result keys recorded as final metrics (hparams plugin) when the result has them.
FINAL_METRICS = ("overall", "many", "medium", "few", "top5", "ece")


def flat_hparams(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar settings (str, bool, int, finite float) of a nested config, with dotted keys;
    None becomes ``"none"``, lists their text."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_hparams(value, f"{name}."))
        elif value is None:
            out[name] = "none"
        elif isinstance(value, bool | int | str):
            out[name] = value
        elif isinstance(value, float):
            out[name] = value if math.isfinite(value) else str(value)
        elif isinstance(value, list | tuple):
            out[name] = str(list(value))
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def final_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """``final/<name>`` → value of a result: the long-tail accuracies, or a pretrain's numbers."""
    keys = [k for k in FINAL_METRICS if k in result] or list(result)
    out = {}
    for key in keys:
        number = _number(result.get(key))
        if number is not None:
            out[f"final/{key}"] = number
    return out


class TensorBoardWriter(Callback):
    """Writes the run's steps, epochs and final hparams as TensorBoard events (rank 0).

    Args:
        log_dir: the run's output folder.
        hparams: the run's settings (nested; flattened with :func:`flat_hparams`).
        attempt: the job attempt (names the file so that attempts never share one).
    """

    def __init__(
        self, log_dir: str | Path, hparams: Mapping[str, Any], attempt: int | None = None
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        suffix = f".attempt{attempt}" if attempt is not None else ""
        self.writer = SummaryWriter(log_dir=str(log_dir), filename_suffix=suffix, flush_secs=10)
        self.hparams = flat_hparams(hparams)
        self.start_epoch = 0
        self._last_bucket: int | None = None
        self._closed = False

    def on_start(self, info: Mapping[str, Any]) -> None:
        self.start_epoch = int(info.get("start_epoch") or 0)

    def on_step(self, progress: Mapping[str, Any]) -> None:
        step = progress.get("global_step")
        if not isinstance(step, int):
            return
        total = int(progress.get("epochs") or 1) * int(progress.get("steps") or 1)
        bucket = step_bucket(step, total)
        if bucket == self._last_bucket:
            return
        self._last_bucket = bucket
        for key in ("loss", "lr", "images_per_sec"):
            value = _number(progress.get(key))
            if value is not None:
                self.writer.add_scalar(f"train/{key}", value, step)

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        if epoch < self.start_epoch:  # repeated from the history: the earlier file has it
            return
        for key, raw in metrics.items():
            value = _number(raw)
            if value is None:
                continue
            if key.startswith("val_"):
                tag = f"val/{key.removeprefix('val_')}"
            else:
                tag = f"epoch/{key}"
            self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()

    def on_result(self, result: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        metrics = final_metrics(result)
        exp, ssi, sei = hparams(self.hparams, metrics)
        file_writer = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, 0)
        self.writer.flush()

    def on_end(self, status: str) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.writer.close()


def tensorboard_writer(
    log_dir: str | Path, hparams: Mapping[str, Any], attempt: int | None = None
) -> TensorBoardWriter | None:
    """A :class:`TensorBoardWriter`, or None (logged) when the ``tensorboard`` package is
    missing."""
    try:
        return TensorBoardWriter(log_dir, hparams, attempt)
    except ImportError as exc:
        logger.warning("no TensorBoard event files: %s (pip install tensorboard)", exc)
        return None
