"""What a training run says, turned into what the database should record: no process, no I/O.

:class:`RunObserver` receives the run's events (``events.jsonl`` records) and output lines, and
keeps the pending :class:`~livt_service.state.FlushBatch` (progress, metric points, log lines,
artifacts) that the supervisor (:class:`worker.runner.JobRunner`) writes about once a second.
When the process has ended, :meth:`RunObserver.conclude` decides the job's outcome from the exit
status, why the supervisor stopped it (if it did) and what the run reported. The observer learns
each piece of data from one channel only (``livt_core.contract``): metrics from ``epoch`` events
(a resumed run repeats those of its earlier epochs), the result from the ``result`` event; it
reads no file of the run folder. A run that reported
its final ``end: succeeded`` has finished its work: it succeeds even when a cancel, a shutdown or
a slow exit made the supervisor kill the process afterwards.
"""

from __future__ import annotations

import re
import signal
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from livt_core import contract
from livt_service.state import Finish, FlushBatch, LogRecord

#: Exit status of ``python -m livt_core train`` → job failure reason (``livt_core.contract``).
EXIT_REASONS = contract.EXIT_FAILURE_REASONS
EXIT_CANCELLED = contract.EXIT_CANCELLED
FAILURE_REASONS = frozenset(contract.FAILURE_REASONS)
#: Longest log line kept (a run printing megabytes on one line must not bloat the table).
MAX_LINE_CHARS = 4000
#: Fields of a ``step`` event kept as the job's progress.
PROGRESS_FIELDS = contract.PROGRESS_FIELDS
#: Fields of a ``step`` event kept as a step point.
STEP_METRICS = ("loss", "lr", "images_per_sec")

StopReason = Literal["cancel", "shutdown", "lost"]

_LEVEL = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")
_OOM = re.compile(r"out of memory|OutOfMemoryError", re.IGNORECASE)


def level_of(line: str, default: str) -> str:
    """The log level a line names near its start (``... ERROR ...``), else ``default``."""
    match = _LEVEL.search(line[:80])
    return match.group(1) if match else default


def output_record(line: str, default_level: str) -> LogRecord | None:
    """One output line of the run as a log record (None for a blank line)."""
    line = line.rstrip()
    if not line:
        return None
    return LogRecord(line[:MAX_LINE_CHARS], level_of(line, default_level))


def failure_from_exit(
    returncode: int, error_event: dict[str, Any] | None, output_tail: Sequence[str]
) -> tuple[str, str]:
    """Maps how the child ended to a typed failure ``(reason, message)``."""
    tail = "\n".join(output_tail)
    if error_event is not None:
        reason = str(error_event.get("reason") or "internal")
        message = str(error_event.get("message") or f"the run exited with status {returncode}")
        if reason == "invalid_config":
            reason = "invalid_data"
        return (reason if reason in FAILURE_REASONS else "internal"), message
    if returncode in EXIT_REASONS:
        reason = EXIT_REASONS[returncode]
    elif _OOM.search(tail):
        reason = "out_of_memory"
    elif returncode == -signal.SIGKILL:
        reason = "out_of_memory"
        tail = (
            "the run was killed by SIGKILL (most likely the kernel's out-of-memory killer)\n" + tail
        )
    else:
        reason = "internal"
    what = (
        f"the run was killed by signal {-returncode}"
        if returncode < 0
        else f"the run exited with status {returncode}"
    )
    return reason, f"{what}; last output:\n{tail}" if tail else what


@dataclass(frozen=True)
class Conclusion:
    """What to do with the job once its run has ended.

    ``finish``: record ``outcome``; ``requeue``: hand the job back (worker shutdown); ``leave``:
    this worker lost the job, write nothing.
    """

    action: Literal["finish", "requeue", "leave"]
    outcome: Finish | None = None


class RunObserver:
    """Turns a run's events and output lines into database batches and, at the end, an outcome.

    Args:
        artifact_dir: the run folder (artifacts are registered relative to it).
        tail_lines: how many last output lines a failure message quotes.
    """

    def __init__(self, artifact_dir: str, tail_lines: int = 20) -> None:
        self.artifact_dir = artifact_dir
        self.batch = FlushBatch(artifact_dir=artifact_dir)
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.progress: dict[str, Any] | None = None
        self.result_event: dict[str, Any] | None = None
        self.error_event: dict[str, Any] | None = None
        #: the status of the run's ``end`` event (None until it arrives)
        self.end_status: str | None = None
        self._last_bucket: int | None = None
        #: every epoch's metrics and step point seen (what the run's tracking logs at the end)
        self.epochs: dict[int, dict[str, Any]] = {}
        self.steps: dict[int, dict[str, Any]] = {}

    # ------------------------------------------------------------------ input

    def log(self, message: str, level: str = "INFO") -> LogRecord:
        """A line of the worker's own for the job's log."""
        record = LogRecord(message, level)
        self.batch.logs.append(record)
        return record

    def on_line(self, record: LogRecord) -> None:
        """One output line of the run."""
        self.tail.append(record.message)
        self.batch.logs.append(record)

    def on_lines(self, records: Iterable[LogRecord]) -> None:
        for record in records:
            self.on_line(record)

    def on_event(self, event: dict[str, Any]) -> None:
        """One record of the run's event stream."""
        kind = event.get("type")
        if kind == contract.START:
            start, epochs = int(event.get("start_epoch") or 0), event.get("epochs")
            if start > 0:
                self.log(
                    f"resumed from {contract.LAST_CHECKPOINT}: continuing at epoch {start} of "
                    f"{epochs}"
                )
            else:
                self.log(f"run started: {epochs} epochs of {event.get('steps_per_epoch')} steps")
        elif kind == contract.STEP:
            self.progress = {k: event.get(k) for k in PROGRESS_FIELDS}
            self.batch.progress = dict(self.progress)
            self._step_point(event)
        elif kind == contract.EPOCH and isinstance(event.get("epoch"), int):
            self.batch.metrics[event["epoch"]] = dict(event.get("metrics") or {})
            self.epochs[event["epoch"]] = self.batch.metrics[event["epoch"]]
        elif kind == contract.CHECKPOINT:
            name = Path(str(event.get("path", ""))).name
            if name in contract.ARTIFACT_KINDS:
                self.batch.artifact_names.add(name)
        elif kind == contract.RESULT:
            self.result_event = dict(event.get("result") or {})
        elif kind == contract.ERROR:
            self.error_event = event
            self.log(f"run failed ({event.get('reason')}): {event.get('message')}", "ERROR")
        elif kind == contract.END:
            self.end_status = str(event.get("status"))

    def _step_point(self, event: dict[str, Any]) -> None:
        """Keeps the first step of each span of the run's steps (``contract.step_bucket``)."""
        step, epoch = event.get("global_step"), event.get("epoch")
        if not isinstance(step, int) or not isinstance(epoch, int):
            return
        total = int(event.get("epochs") or 1) * int(event.get("steps") or 1)
        bucket = contract.step_bucket(step, total)
        if bucket == self._last_bucket:
            return
        self._last_bucket = bucket
        metrics = {k: event.get(k) for k in STEP_METRICS}
        self.batch.steps[bucket] = {"global_step": step, "epoch": epoch, "metrics": metrics}
        self.steps[bucket] = self.batch.steps[bucket]

    def on_events(self, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            self.on_event(event)

    # ------------------------------------------------------------------ batches

    def take_batch(self) -> FlushBatch:
        """The pending batch, to write; a new empty one collects what follows."""
        batch, self.batch = self.batch, FlushBatch(artifact_dir=self.artifact_dir)
        return batch

    def put_back(self, batch: FlushBatch) -> None:
        """A batch that could not be written goes back in front of what arrived since."""
        batch.merge_back(self.batch)
        self.batch = batch

    def take_logs(self) -> list[LogRecord]:
        logs, self.batch.logs = self.batch.logs, []
        return logs

    def put_back_logs(self, logs: list[LogRecord]) -> None:
        self.batch.logs = logs + self.batch.logs

    # ------------------------------------------------------------------ the end

    @property
    def finished(self) -> bool:
        """The run reported its final ``end: succeeded``: its work and result are complete."""
        return self.end_status == "succeeded"

    def conclude(self, returncode: int, stopped: StopReason | None) -> Conclusion:
        """The outcome of the run that exited with ``returncode``; ``stopped``: why the
        supervisor stopped the run, if it did. A success's result is the run's ``result``
        event (the one channel of the result; ``results.json`` is an artifact)."""
        if stopped == "lost":
            return Conclusion("leave")
        if returncode == 0 or self.finished:
            return Conclusion(
                "finish", Finish("succeeded", result=self.result_event, progress=self.progress)
            )
        if stopped == "shutdown":
            return Conclusion("requeue")
        if stopped == "cancel":
            return Conclusion("finish", Finish("cancelled", progress=self.progress))
        if returncode == EXIT_CANCELLED:
            reason, message = "internal", "the run stopped without a cancel request"
        else:
            reason, message = failure_from_exit(returncode, self.error_event, list(self.tail))
        return Conclusion(
            "finish", Finish("failed", reason=reason, message=message, progress=self.progress)
        )
