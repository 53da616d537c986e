"""Runs one claimed job as a child process and mirrors what it does into the database.

The training itself is ``python -m livt_core train <kind> ...`` (or the same under
``torch.distributed.run`` when the job asks for several processes), started in its own process
group with ``PR_SET_PDEATHSIG`` so that it dies with the worker. The runner follows the run's
``events.jsonl`` and its output lines, and about once a second writes one batch (progress, metric
points, log lines, artifacts, heartbeat) and reads back the cancellation flag.

Cancellation and worker shutdown both create the run's stop file (the engine stops at the next
step and keeps its last checkpoint); a run that has not exited after a grace period is terminated.
Because the child always runs with ``--resume auto`` in the job's own folder, the next attempt of a
job continues from ``checkpoint-last.pth`` instead of starting afresh.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy.exc import SQLAlchemyError

from livt_core import contract
from livt_core.events import read_events
from livt_core.paths import PathPolicy
from livt_service import state
from livt_service.settings import get_settings
from livt_service.state import ClaimedJob, Finish, FlushBatch, LogRecord

logger = logging.getLogger(__name__)

#: Seconds between two database batches of a running job.
FLUSH_INTERVAL = 1.0
#: Seconds a run gets to stop by itself after its stop file appears, before it is terminated.
STOP_GRACE_SECONDS = 5.0
#: Seconds between SIGTERM and SIGKILL of the run's process group.
KILL_GRACE_SECONDS = 5.0
#: Seconds the final writes of a job keep retrying while the database is unreachable.
FINAL_WRITE_PATIENCE = 300.0
#: Longest log line kept (a run printing megabytes on one line must not bloat the table).
MAX_LINE_CHARS = 4000

#: Exit status of ``python -m livt_core train`` → job failure reason (``docs/architecture.md``).
EXIT_REASONS = contract.EXIT_FAILURE_REASONS
EXIT_CANCELLED = contract.EXIT_CANCELLED
FAILURE_REASONS = frozenset(contract.FAILURE_REASONS)

_LEVEL = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")
_OOM = re.compile(r"out of memory|OutOfMemoryError", re.IGNORECASE)

#: Sets PR_SET_PDEATHSIG, checks that the parent is still there, then becomes the real command.
#: Done in a fresh interpreter rather than a ``preexec_fn``, which is unsafe in a threaded worker.
_LAUNCHER = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(sys.argv[1]), 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[2]):\n"
    "    sys.exit(1)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


def default_path_policy() -> PathPolicy:
    """This worker's roots, which the run confines its paths to right before opening them
    (``--data-root``): data inside ``LIVT_DATA_ROOTS``; checkpoints also inside the artifact
    folder (a run may start from another job's checkpoint)."""
    settings = get_settings()
    return settings.path_policy(settings.artifact_dir)


def spawn_tied_to_parent(
    argv: Sequence[str], *, death_signal: int = signal.SIGKILL, **popen_kwargs: Any
) -> subprocess.Popen:
    """Starts ``argv`` (``argv[0]`` an absolute executable path) so that the kernel sends it
    ``death_signal`` when the thread that started it, or its whole process, dies."""
    if sys.platform != "linux":
        return subprocess.Popen(list(argv), **popen_kwargs)
    launcher = [sys.executable, "-c", _LAUNCHER, str(int(death_signal)), str(os.getpid())]
    return subprocess.Popen(launcher + list(argv), **popen_kwargs)


def training_command(
    job: ClaimedJob, run_dir: Path, nproc: int, paths: PathPolicy | None = None
) -> list[str]:
    """The child's command line: one process, or ``nproc`` under ``torch.distributed.run``;
    with ``paths``, the run confines its paths and dataset files to those roots."""
    train = [
        "-m",
        "livt_core",
        "train",
        job.kind,
        "--config",
        str(run_dir / contract.CONFIG_FILE),
        "--output-dir",
        str(run_dir),
        "--events",
        str(run_dir / contract.EVENTS_FILE),
        "--stop-file",
        str(run_dir / contract.STOP_FILE),
        "--resume",
        "auto",
        "--no-progress",
    ]
    if paths is not None:
        for root in paths.data_roots:
            train += ["--data-root", str(root)]
        for root in paths.checkpoint_roots:
            train += ["--checkpoint-root", str(root)]
    if nproc <= 1:
        return [sys.executable, *train]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *train,
    ]


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


def _level_of(line: str, default: str) -> str:
    match = _LEVEL.search(line[:80])
    return match.group(1) if match else default


def _pump(stream: IO[bytes], sink: queue.Queue, default_level: str) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace").rstrip()
        if line:
            sink.put(LogRecord(line[:MAX_LINE_CHARS], _level_of(line, default_level)))
    stream.close()


@dataclass
class _Stop:
    why: str  # "cancel", "shutdown" or "lost"
    since: float
    terminated_at: float | None = None


class JobRunner:
    """Runs one claimed job to its end; :meth:`run` returns the job's final status.

    Args:
        job: the claim (``livt_service.state.claim_job``).
        shutdown: set when the worker shuts down; the run is stopped and the job requeued.
        devices: GPU ids for ``CUDA_VISIBLE_DEVICES`` (None: leave the environment alone).
        enqueue: sends a job to the workers (default ``livt_service.queue.enqueue``).
    """

    def __init__(
        self,
        job: ClaimedJob,
        *,
        shutdown: threading.Event | None = None,
        devices: Sequence[str] | None = None,
        heartbeat_seconds: float = 5.0,
        enqueue: Callable[[str, str], None] | None = None,
        paths: PathPolicy | None = None,
    ) -> None:
        self.job = job
        self.paths = paths if paths is not None else default_path_policy()
        self.run_dir = Path(job.artifact_dir)
        self.shutdown = shutdown or threading.Event()
        self.devices = list(devices) if devices is not None else None
        self.heartbeat_seconds = heartbeat_seconds
        self.enqueue = enqueue
        self.batch = FlushBatch(artifact_dir=str(self.run_dir))
        self.lines: queue.Queue[LogRecord] = queue.Queue()
        self.tail: deque[str] = deque(maxlen=20)
        self.result_event: dict[str, Any] | None = None
        self.error_event: dict[str, Any] | None = None
        self.progress: dict[str, Any] | None = None
        self.events_offset = 0
        self.stop: _Stop | None = None
        self.proc: subprocess.Popen | None = None
        self.readers: list[threading.Thread] = []

    # ------------------------------------------------------------------ public

    def run(self) -> str:
        """Runs the job; returns its status afterwards (``queued`` when handed back)."""
        try:
            self._prepare()
            proc = self._launch()
            self._follow(proc)
        except BaseException as exc:
            self._kill()
            if isinstance(exc, Exception):
                logger.exception("job %s: the runner failed", self.job.id)
                self._finish(Finish("failed", reason="internal", message=f"worker error: {exc}"))
                return "failed"
            raise
        return self._conclude(proc)

    # ------------------------------------------------------------------ steps

    def log(self, message: str, level: str = "INFO") -> None:
        """A line of the runner's own in the job's log (and the worker's)."""
        logger.log(logging.getLevelName(level), "job %s: %s", self.job.id, message)
        self.batch.logs.append(LogRecord(message, level))

    def _prepare(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / contract.STOP_FILE).unlink(missing_ok=True)
        config = self.run_dir / contract.CONFIG_FILE
        tmp = config.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.job.config, indent=2), encoding="utf-8")
        os.replace(tmp, config)
        events = self.run_dir / contract.EVENTS_FILE
        self.events_offset = events.stat().st_size if events.exists() else 0
        if (self.run_dir / contract.LAST_CHECKPOINT).is_file():
            self.log(f"found {contract.LAST_CHECKPOINT} of an earlier attempt in {self.run_dir}")
            history = self.run_dir / contract.HISTORY_FILE
            if history.is_file():
                try:
                    entries = json.loads(history.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError):
                    entries = []
                for entry in entries if isinstance(entries, list) else []:
                    if isinstance(entry, dict) and "epoch" in entry:
                        metrics = {k: v for k, v in entry.items() if k != "epoch"}
                        self.batch.metrics[int(entry["epoch"])] = metrics

    def _nproc(self) -> int:
        return max(1, int(self.job.gpus))

    def _launch(self) -> subprocess.Popen:
        nproc = self._nproc()
        argv = training_command(self.job, self.run_dir, nproc, self.paths)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.devices)
        # torchrun stops its own workers on SIGTERM; a single process is simply killed
        death = signal.SIGTERM if nproc > 1 else signal.SIGKILL
        self.proc = spawn_tied_to_parent(
            argv,
            death_signal=death,
            cwd=self.run_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        for stream, level in ((self.proc.stdout, "INFO"), (self.proc.stderr, "WARNING")):
            reader = threading.Thread(
                target=_pump, args=(stream, self.lines, level), daemon=True, name="job-output"
            )
            reader.start()
            self.readers.append(reader)
        self.log(f"training process {self.proc.pid} started: {' '.join(argv[1:])}")
        return self.proc

    def _follow(self, proc: subprocess.Popen) -> None:
        last_write = 0.0
        while True:
            try:
                proc.wait(timeout=FLUSH_INTERVAL)
                exited = True
            except subprocess.TimeoutExpired:
                exited = False
            self._collect()
            if exited:
                return
            if self.shutdown.is_set() and self.stop is None:
                self._request_stop("shutdown", "the worker is shutting down: stopping the run")
            now = time.monotonic()
            if not self.batch.empty() or now - last_write >= self.heartbeat_seconds:
                owned, cancel = self._flush()
                if owned is not None:
                    last_write = now
            else:
                owned, cancel = self._poll()
            if owned is False:
                self._request_stop("lost", "this worker no longer owns the job: stopping")
            elif cancel and self.stop is None:
                self._request_stop("cancel", "cancel requested: stopping at the next step")
            self._enforce_stop()

    def _collect(self) -> None:
        """Moves new events and output lines into the pending batch."""
        while True:
            try:
                record = self.lines.get_nowait()
            except queue.Empty:
                break
            self.tail.append(record.message)
            self.batch.logs.append(record)
        events, self.events_offset = read_events(
            self.run_dir / contract.EVENTS_FILE, self.events_offset
        )
        for event in events:
            self._on_event(event)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == contract.START:
            start, epochs = int(event.get("start_epoch") or 0), event.get("epochs")
            if start > 0:
                self.log(
                    f"resumed from {contract.LAST_CHECKPOINT}: continuing at epoch {start} of {epochs}"
                )
            else:
                self.log(f"run started: {epochs} epochs of {event.get('steps_per_epoch')} steps")
        elif kind == contract.STEP:
            self.progress = {k: event.get(k) for k in contract.PROGRESS_FIELDS}
            self.batch.progress = dict(self.progress)
        elif kind == contract.EPOCH:
            self.batch.metrics[int(event["epoch"])] = dict(event.get("metrics") or {})
        elif kind == contract.CHECKPOINT:
            name = Path(str(event.get("path", ""))).name
            if name in contract.ARTIFACT_KINDS:
                self.batch.artifact_names.add(name)
        elif kind == contract.RESULT:
            self.result_event = dict(event.get("result") or {})
        elif kind == contract.ERROR:
            self.error_event = event
            self.log(f"run failed ({event.get('reason')}): {event.get('message')}", "ERROR")

    def _flush(self) -> tuple[bool | None, bool]:
        """Writes the pending batch. Returns (owned, cancel_requested); owned is None when the
        database could not be reached (the batch is kept for the next try)."""
        batch, self.batch = self.batch, FlushBatch(artifact_dir=str(self.run_dir))
        try:
            outcome = state.flush(self.job, batch)
        except SQLAlchemyError as exc:
            logger.warning("job %s: database write failed, will retry: %s", self.job.id, exc)
            batch.merge_back(self.batch)
            self.batch = batch
            return None, False
        return outcome.owned, outcome.cancel_requested

    def _poll(self) -> tuple[bool | None, bool]:
        """Reads ownership and the cancellation flag without writing."""
        try:
            outcome = state.poll(self.job)
        except SQLAlchemyError as exc:
            logger.warning("job %s: database read failed, will retry: %s", self.job.id, exc)
            return None, False
        return outcome.owned, outcome.cancel_requested

    def _request_stop(self, why: str, message: str) -> None:
        if self.stop is not None and (self.stop.why == "lost" or why != "lost"):
            return
        self.stop = _Stop(why, time.monotonic())
        self.log(message, "WARNING")
        (self.run_dir / contract.STOP_FILE).touch()

    def _enforce_stop(self) -> None:
        if self.stop is None or self.proc is None or self.proc.poll() is not None:
            return
        waited = time.monotonic() - self.stop.since
        if self.stop.terminated_at is None and (
            waited >= STOP_GRACE_SECONDS or self.stop.why == "lost"
        ):
            self.log(
                f"the run did not stop within {STOP_GRACE_SECONDS:g} s: terminating it", "WARNING"
            )
            self._signal_group(signal.SIGTERM)
            self.stop.terminated_at = time.monotonic()
        elif (
            self.stop.terminated_at is not None
            and time.monotonic() - self.stop.terminated_at >= KILL_GRACE_SECONDS
        ):
            self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def _kill(self) -> None:
        """Ends the run's whole process group at once (the runner itself failed)."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal_group(signal.SIGKILL)
            self.proc.wait()

    # ------------------------------------------------------------------ the end

    def _conclude(self, proc: subprocess.Popen) -> str:
        rc = proc.returncode
        # stray processes of the run (data loader workers, torchrun ranks) go with it; then the
        # output pipes close and the readers deliver the last lines
        self._signal_group(signal.SIGKILL)
        for reader in self.readers:
            reader.join(timeout=5.0)
        self._collect()
        self.log(f"training process exited with status {rc}", "INFO" if rc == 0 else "WARNING")
        why = self.stop.why if self.stop is not None else None
        if why == "lost":
            logger.warning("job %s: ownership lost; leaving it to its new attempt", self.job.id)
            return state.job_status(self.job.id) or "unknown"
        if rc == 0:
            return self._finish(Finish("succeeded", result=self._result(), progress=self.progress))
        if why == "shutdown":
            self._write_pending()
            state.requeue_interrupted(self.job, enqueue=self.enqueue)
            return "queued"
        if why == "cancel":
            return self._finish(Finish("cancelled", progress=self.progress))
        if rc == EXIT_CANCELLED:
            reason, message = "internal", "the run stopped without a cancel request"
        else:
            reason, message = failure_from_exit(rc, self.error_event, list(self.tail))
        return self._finish(
            Finish("failed", reason=reason, message=message, progress=self.progress)
        )

    def _result(self) -> dict[str, Any] | None:
        path = self.run_dir / contract.RESULTS_FILE
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                self.log(
                    f"{contract.RESULTS_FILE} is unreadable ({exc}); using the result event",
                    "WARNING",
                )
        return self.result_event

    def _write_pending(self) -> None:
        deadline = time.monotonic() + FINAL_WRITE_PATIENCE
        while not self.batch.empty():
            owned, _ = self._flush()
            if owned is not None or time.monotonic() > deadline:
                return
            time.sleep(2.0)

    def _finish(self, outcome: Finish) -> str:
        """Writes the pending batch and the outcome, retrying while the database is away."""
        self._write_pending()
        deadline = time.monotonic() + FINAL_WRITE_PATIENCE
        delay = 1.0
        while True:
            try:
                logs, self.batch.logs = self.batch.logs, []
                done = state.finish_job(self.job, outcome, logs=logs, enqueue=self.enqueue)
                break
            except SQLAlchemyError as exc:
                self.batch.logs = logs + self.batch.logs
                if time.monotonic() > deadline:
                    logger.error("job %s: could not record its end: %s", self.job.id, exc)
                    raise
                logger.warning("job %s: recording its end failed, retrying: %s", self.job.id, exc)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        if not done:
            logger.warning("job %s: ownership lost before its end was recorded", self.job.id)
            return state.job_status(self.job.id) or "unknown"
        logger.info("job %s %s", self.job.id, outcome.status)
        return outcome.status
