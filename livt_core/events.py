"""The progress interface between a training run and whoever watches it.

Engines call a :class:`Callback` at fixed points. The job service runs training in a child process
(possibly several under ``torchrun``), so the same events can also be written as JSON lines
(:class:`JsonlEventWriter`) that the worker follows; cancellation travels the other way through a
stop file (:class:`StopFile`). Only rank 0 emits events; ``should_stop`` is consulted on rank 0 and
broadcast by the engine.

Event records are documented in ``docs/architecture.md`` ("Event stream").
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class Callback:
    """Receives progress from an engine. Every hook has a no-op default."""

    def on_start(self, info: Mapping[str, Any]) -> None:
        """``info``: kind, epochs, start_epoch, steps_per_epoch, world_size."""

    def on_step(self, progress: Mapping[str, Any]) -> None:
        """``progress``: epoch, epochs, step, steps, global_step, loss, lr, images_per_sec,
        eta_seconds."""

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """``metrics``: train_loss, lr and, for fine-tuning, val_* long-tail metrics."""

    def on_checkpoint(self, name: str, path: str, epoch: int) -> None:
        """A checkpoint named ``last`` or ``best`` was written (atomically) to ``path``."""

    def on_result(self, result: Mapping[str, Any]) -> None:
        """The run's final result (a ``long_tail_report`` for fine-tune / evaluate runs)."""

    def on_error(self, reason: str, message: str) -> None:
        """The run failed with a typed ``reason`` (see ``livt_core.errors``)."""

    def on_end(self, status: str) -> None:
        """``status``: succeeded, failed or cancelled."""

    def should_stop(self) -> bool:
        """Return True to stop the run at the next step boundary."""
        return False


class CallbackList(Callback):
    """Fans every hook out to several callbacks; stops when any of them asks to."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = [cb for cb in callbacks if cb is not None]

    def on_start(self, info: Mapping[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_start(info)

    def on_step(self, progress: Mapping[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_step(progress)

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, metrics)

    def on_checkpoint(self, name: str, path: str, epoch: int) -> None:
        for cb in self.callbacks:
            cb.on_checkpoint(name, path, epoch)

    def on_result(self, result: Mapping[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_result(result)

    def on_error(self, reason: str, message: str) -> None:
        for cb in self.callbacks:
            cb.on_error(reason, message)

    def on_end(self, status: str) -> None:
        for cb in self.callbacks:
            cb.on_end(status)

    def should_stop(self) -> bool:
        return any(cb.should_stop() for cb in self.callbacks)


def _json_safe(value: Any) -> Any:
    """Non-finite floats become None so that every line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class JsonlEventWriter(Callback):
    """Appends one JSON object per event to ``path`` and flushes it at once.

    Step events are throttled to at most one per ``min_step_interval`` seconds (the first and last
    step of an epoch always pass), so that a fast CPU run does not flood the file.
    """

    def __init__(self, path: str | os.PathLike[str], min_step_interval: float = 0.5) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")
        self.min_step_interval = min_step_interval
        self._last_step_time = 0.0

    def _write(self, record: dict[str, Any]) -> None:
        record = {"type": record.pop("type"), "time": time.time(), **record}
        self._fh.write(json.dumps(_json_safe(record), allow_nan=False) + "\n")
        self._fh.flush()

    def on_start(self, info: Mapping[str, Any]) -> None:
        self._write({"type": "start", **info})

    def on_step(self, progress: Mapping[str, Any]) -> None:
        now = time.monotonic()
        edge = progress.get("step") in (0, (progress.get("steps") or 0) - 1)
        if not edge and now - self._last_step_time < self.min_step_interval:
            return
        self._last_step_time = now
        self._write({"type": "step", **progress})

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        self._write({"type": "epoch", "epoch": epoch, "metrics": dict(metrics)})

    def on_checkpoint(self, name: str, path: str, epoch: int) -> None:
        self._write({"type": "checkpoint", "name": name, "path": str(path), "epoch": epoch})

    def on_result(self, result: Mapping[str, Any]) -> None:
        self._write({"type": "result", "result": dict(result)})

    def on_error(self, reason: str, message: str) -> None:
        self._write({"type": "error", "reason": reason, "message": message})

    def on_end(self, status: str) -> None:
        self._write({"type": "end", "status": status})
        self.close()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


class StopFile(Callback):
    """Asks the run to stop once ``path`` exists (the job service's cancellation signal)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def should_stop(self) -> bool:
        return self.path.exists()


def read_events(path: str | os.PathLike[str], offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Reads complete event lines from byte ``offset``; returns the events and the new offset.

    A trailing line without its newline (still being written) is left for the next call.
    """
    events: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        return events, offset
    with p.open("rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n")
    if end < 0:
        return events, offset
    for raw in data[: end + 1].splitlines():
        if not raw.strip():
            continue
        try:
            events.append(json.loads(raw))
        except json.JSONDecodeError:
            logger.warning("skipping a malformed event line in %s", p)
    return events, offset + end + 1
