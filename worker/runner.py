"""The supervisor of one claimed job: its training process, signals, deadlines and stop files.

The training itself is ``python -m livt_core train <kind> ...`` (or the same under
``torch.distributed.run`` when the job asks for several processes), started in its own process
group with ``PR_SET_PDEATHSIG`` so that it dies with the worker. A single-process run starts
warm where it can: forked from the worker's launcher, which has torch and the engine imported
(``worker.zygote``), seconds sooner at its first step; otherwise (``LIVT_WARM_START=0``,
``torchrun``, no launcher ready, an environment the launcher cannot reproduce) it starts cold,
in a fresh interpreter, with a WARNING in the job's log saying why. The job's log says which
(``training process N started (warm start, ...)``). A launcher that dies during a run takes the
run with it; the job is then requeued as a lost worker's (``state.requeue_host_lost``).

:class:`JobRunner` follows the run's event stream and output lines, hands them to a
:class:`~worker.observer.RunObserver` (which turns them into database batches and, at the end,
the job's outcome), and about once a second writes the pending batch (progress, metric points,
log lines, artifacts, heartbeat) and reads back the cancellation flag.

Files are fenced per attempt like the database rows (``livt_core.fence``): before it starts its
child, the runner takes the run folder over for its attempt, and the child (``--attempt N``)
writes checkpoints, history and results only while no later attempt owns the folder. Each
attempt has its own event stream and stop file (``attempts/<n>/``). Cancellation and worker
shutdown create this attempt's stop file (the engine stops at the next step and keeps its last
checkpoint); a run that has not exited after a grace period is terminated. A runner that finds
it lost the job (the database fence or the folder's owner says so) kills its own child at once
and touches nothing else. Because the child always runs with ``--resume auto`` in the job's own
folder, the next attempt of a job continues from ``checkpoint-last.pth``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy.exc import SQLAlchemyError

from livt_core import contract
from livt_core.events import read_events
from livt_core.fence import attempt_files, current_attempt, take_over
from livt_core.paths import PathPolicy
from livt_service import state
from livt_service.settings import get_settings
from livt_service.state import ClaimedJob, Finish, LogRecord
from worker.devices import device_env
from worker.mlflow_tracking import MlflowTracker, tracker_from_settings
from worker.observer import (
    EXIT_CANCELLED,
    EXIT_REASONS,
    FAILURE_REASONS,
    MAX_LINE_CHARS,
    Conclusion,
    RunObserver,
    StopReason,
    failure_from_exit,
    output_record,
)
from worker.zygote import Launcher, WarmProcess, WarmStartUnavailable, current_launcher

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_REASONS",
    "FAILURE_REASONS",
    "MAX_LINE_CHARS",
    "JobRunner",
    "default_path_policy",
    "failure_from_exit",
    "spawn_tied_to_parent",
    "training_command",
]

logger = logging.getLogger(__name__)

#: Seconds between two database batches of a running job.
FLUSH_INTERVAL = 1.0
#: The same until the run's first step is in the database: the first progress shows at once.
FIRST_PROGRESS_INTERVAL = 0.1
#: Seconds a run gets to stop by itself after its stop file appears, before it is terminated.
STOP_GRACE_SECONDS = 5.0
#: Seconds between SIGTERM and SIGKILL of the run's process group.
KILL_GRACE_SECONDS = 5.0
#: Seconds a run that reported its end gets to exit by itself before it is terminated.
END_EXIT_GRACE_SECONDS = 30.0
#: Seconds the final writes of a job keep retrying while the database is unreachable.
FINAL_WRITE_PATIENCE = 300.0

#: The module that launches several training processes (``python -m torch.distributed.run``).
TORCHRUN = "torch.distributed.run"

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
    """The child's command line: one process, or ``nproc`` under ``torch.distributed.run``.

    The event stream and the stop file are this attempt's own, and ``--attempt`` fences the
    child's writes into ``run_dir`` (``livt_core.fence``); with ``paths``, the run confines its
    paths and dataset files to those roots."""
    files = attempt_files(run_dir, job.attempt)
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
        str(files.events),
        "--stop-file",
        str(files.stop),
        "--attempt",
        str(job.attempt),
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
        TORCHRUN,
        "--standalone",
        f"--nproc_per_node={nproc}",
        *train,
    ]


def job_cpu_env(env: dict[str, str], cpus: Sequence[int] | None) -> dict[str, str]:
    """``env`` for a training process given the cores ``cpus`` (None: unchanged):
    ``LIVT_JOB_CPUS`` (which ``livt_core.perf`` sizes torch's threads by, its loader workers
    included) and, unless the worker's environment sets it, ``OMP_NUM_THREADS`` to their number.
    """
    if not cpus:
        return env
    env = dict(env, **{contract.JOB_CPUS_ENV: str(len(cpus))})
    env.setdefault("OMP_NUM_THREADS", str(len(cpus)))
    return env


def site_env() -> dict[str, str]:
    """What a training process learns of this site's limits from its environment: the most
    loader processes its auto ``data.num_workers`` may start (``LIVT_MAX_DATA_WORKERS``, the
    limit explicit values are checked against at submit)."""
    return {contract.MAX_WORKERS_ENV: str(get_settings().max_data_workers)}


def pin_to_cpus(pid: int, cpus: Sequence[int] | None) -> None:
    """Pins the just-started process ``pid`` to ``cpus`` (None: leaves it alone). Done before
    it starts any thread (it is still the launcher), so every thread and child it makes
    inherits the mask; a failure only loses the pinning (logged)."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return
    try:
        os.sched_setaffinity(pid, set(cpus))
    except OSError as exc:
        logger.warning("could not pin process %d to cores %s: %s", pid, list(cpus), exc)


def _pump(stream: IO[bytes], sink: queue.Queue, default_level: str) -> None:
    for raw in iter(stream.readline, b""):
        record = output_record(raw.decode("utf-8", errors="replace"), default_level)
        if record is not None:
            sink.put(record)
    stream.close()


@dataclass
class _Stop:
    why: StopReason
    since: float
    terminated_at: float | None = None


class JobRunner:
    """Runs one claimed job to its end; :meth:`run` returns the job's final status.

    Args:
        job: the claim (``livt_service.state.claim_job``).
        shutdown: set when the worker shuts down; the run is stopped and the job requeued.
        devices: GPU ids for ``CUDA_VISIBLE_DEVICES`` (None: leave the environment alone).
        enqueue: sends a job to the workers (default ``livt_service.queue.enqueue``).
        paths: the roots the run confines its paths to (default :func:`default_path_policy`).
        cpus: the cores the run may use (its share of the worker's, see
            ``worker.context.cpu_slots``); None leaves affinity and thread counts alone.
        tracker: logs the finished attempt to MLflow (default: ``LIVT_MLFLOW_TRACKING_URI``).
        launcher: the warm-start launcher single-process runs are forked from (default: this
            worker's, ``worker.zygote.current_launcher``).
        warm_start: whether to start warm at all (default: ``LIVT_WARM_START``).
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
        cpus: Sequence[int] | None = None,
        tracker: MlflowTracker | None = None,
        launcher: Launcher | None = None,
        warm_start: bool | None = None,
    ) -> None:
        self.job = job
        self.warm_start = get_settings().warm_start if warm_start is None else warm_start
        self.launcher = launcher if launcher is not None else current_launcher()
        self.cpus = list(cpus) if cpus else None
        #: MLflow tracking of the finished attempt (default: ``LIVT_MLFLOW_TRACKING_URI``)
        self.tracker = tracker if tracker is not None else tracker_from_settings()
        self.paths = paths if paths is not None else default_path_policy()
        self.run_dir = Path(job.artifact_dir)
        self.files = attempt_files(self.run_dir, job.attempt)
        self.shutdown = shutdown or threading.Event()
        self.devices = list(devices) if devices is not None else None
        self.heartbeat_seconds = heartbeat_seconds
        self.enqueue = enqueue
        self.observer = RunObserver(str(self.run_dir))
        self.lines: queue.Queue[LogRecord] = queue.Queue()
        self.events_offset = 0
        self.stop: _Stop | None = None
        self.ended_at: float | None = None
        self._end_terminated = False
        self.proc: subprocess.Popen | WarmProcess | None = None
        self.readers: list[threading.Thread] = []

    # ------------------------------------------------------------------ public

    def run(self) -> str:
        """Runs the job; returns its status afterwards (``queued`` when handed back)."""
        try:
            if not self._prepare():
                return self._leave()
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
        self.observer.log(message, level)

    def _superseded(self) -> bool:
        """A later attempt owns the run folder (works without the database)."""
        owner = current_attempt(self.run_dir)
        return owner is not None and owner > self.job.attempt

    def _prepare(self) -> bool:
        """Takes the run folder over for this attempt and writes the config; False when a later
        attempt already owns the folder."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not take_over(self.run_dir, self.job.attempt):
            return False
        self.files.folder.mkdir(parents=True, exist_ok=True)
        self.files.stop.unlink(missing_ok=True)
        config = self.run_dir / contract.CONFIG_FILE
        tmp = config.with_suffix(f".json.{self.job.attempt}.tmp")
        tmp.write_text(json.dumps(self.job.config, indent=2), encoding="utf-8")
        os.replace(tmp, config)
        events = self.files.events
        self.events_offset = events.stat().st_size if events.exists() else 0
        if (self.run_dir / contract.LAST_CHECKPOINT).is_file():
            # the resumed run repeats the epoch events of the epochs it continues after
            self.log(f"found {contract.LAST_CHECKPOINT} of an earlier attempt in {self.run_dir}")
        return True

    def _nproc(self) -> int:
        return max(1, int(self.job.gpus))

    def _command(self, nproc: int) -> list[str]:
        """The child's command line (multi-node runs change it: ``worker.gang``)."""
        return training_command(self.job, self.run_dir, nproc, self.paths)

    def _launch(self) -> subprocess.Popen | WarmProcess:
        nproc = self._nproc()
        argv = self._command(nproc)
        env = job_cpu_env(
            dict(os.environ, PYTHONUNBUFFERED="1", **device_env(self.devices), **site_env()),
            self.cpus,
        )
        asked = time.monotonic()
        self.proc = self._start_warm(argv, env)
        how = "warm"
        if self.proc is None:
            how = "cold"
            # torchrun stops its own workers on SIGTERM; a single process is simply killed
            death = signal.SIGTERM if TORCHRUN in argv else signal.SIGKILL
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
            pin_to_cpus(self.proc.pid, self.cpus)
        took = time.monotonic() - asked
        for stream, level in ((self.proc.stdout, "INFO"), (self.proc.stderr, "WARNING")):
            reader = threading.Thread(
                target=_pump, args=(stream, self.lines, level), daemon=True, name="job-output"
            )
            reader.start()
            self.readers.append(reader)
        shown = "" if self.devices is None else f" (CUDA_VISIBLE_DEVICES={','.join(self.devices)})"
        self.log(
            f"training process {self.proc.pid} started{shown} ({how} start, {took:.3f} s): "
            f"{' '.join(argv[1:])}"
        )
        return self.proc

    def _start_warm(self, argv: list[str], env: dict[str, str]) -> WarmProcess | None:
        """The run forked from the warm-start launcher, or None (logged: why it starts cold)."""
        if not self.warm_start:
            reason = "warm start is off (LIVT_WARM_START=0)"
        elif TORCHRUN in argv:
            reason = "a run of several processes (torch.distributed.run) starts cold"
        elif self.launcher is None:
            reason = "this worker runs no warm-start launcher"
        else:
            try:
                return self.launcher.spawn(argv, env=env, cwd=self.run_dir, cpus=self.cpus)
            except WarmStartUnavailable as exc:
                reason = str(exc)
        self.log(f"starting the training process cold: {reason}", "WARNING")
        return None

    def _follow(self, proc: subprocess.Popen | WarmProcess) -> None:
        last_write = 0.0
        while True:
            try:
                proc.wait(timeout=self._wait_interval())
                exited = True
            except subprocess.TimeoutExpired:
                exited = False
            self._collect()
            if exited:
                return
            if self._superseded():
                self._request_stop("lost", "a later attempt took over the run folder: stopping")
            if self.shutdown.is_set() and self.stop is None:
                self._request_stop("shutdown", "the worker is shutting down: stopping the run")
            now = time.monotonic()
            if self.stop is not None and self.stop.why == "lost":
                owned, cancel = False, False
            elif not self.observer.batch.empty() or now - last_write >= self.heartbeat_seconds:
                owned, cancel = self._flush()
                if owned is not None:
                    last_write = now
            else:
                owned, cancel = self._poll()
            if owned is False:
                self._request_stop("lost", "this worker no longer owns the job: stopping")
            elif cancel and self.stop is None and self.observer.end_status is None:
                # (a cancel after the run reported its end changes nothing: a result wins)
                self._request_stop("cancel", "cancel requested: stopping at the next step")
            self._enforce_stop()
            self._enforce_exit_after_end()

    def _wait_interval(self) -> float:
        """:data:`FIRST_PROGRESS_INTERVAL` until a step was seen (then written at once, the
        batch being non-empty), :data:`FLUSH_INTERVAL` afterwards."""
        return FLUSH_INTERVAL if self.observer.progress is not None else FIRST_PROGRESS_INTERVAL

    def _collect(self) -> None:
        """Hands new output lines and events to the observer."""
        while True:
            try:
                self.observer.on_line(self.lines.get_nowait())
            except queue.Empty:
                break
        events, self.events_offset = read_events(self.files.events, self.events_offset)
        self.observer.on_events(events)
        if self.observer.end_status is not None and self.ended_at is None:
            self.ended_at = time.monotonic()

    def _flush(self) -> tuple[bool | None, bool]:
        """Writes the pending batch. Returns (owned, cancel_requested); owned is None when the
        database could not be reached (the batch is kept for the next try)."""
        batch = self.observer.take_batch()
        try:
            outcome = state.flush(self.job, batch)
        except SQLAlchemyError as exc:
            logger.warning("job %s: database write failed, will retry: %s", self.job.id, exc)
            self.observer.put_back(batch)
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

    def _request_stop(self, why: StopReason, message: str) -> None:
        if self.stop is not None and (self.stop.why == "lost" or why != "lost"):
            return
        self.stop = _Stop(why, time.monotonic())
        logger.warning("job %s: %s", self.job.id, message)
        if why == "lost":
            # the job is someone else's now: end this attempt's processes, touch nothing else
            self._signal_group(signal.SIGKILL)
            self.stop.terminated_at = time.monotonic()
            return
        self.observer.log(message, "WARNING")
        self.files.stop.touch()

    def _enforce_stop(self) -> None:
        if self.stop is None or self.proc is None or self.proc.poll() is not None:
            return
        now = time.monotonic()
        if self.stop.terminated_at is None and now - self.stop.since >= STOP_GRACE_SECONDS:
            self.log(
                f"the run did not stop within {STOP_GRACE_SECONDS:g} s: terminating it", "WARNING"
            )
            self._signal_group(signal.SIGTERM)
            self.stop.terminated_at = now
        elif (
            self.stop.terminated_at is not None
            and now - self.stop.terminated_at >= KILL_GRACE_SECONDS
        ):
            self._signal_group(signal.SIGKILL)

    def _enforce_exit_after_end(self) -> None:
        """A run that reported its end but does not exit is terminated after a grace period
        (what it reported stands: see ``RunObserver.conclude``)."""
        if self.ended_at is None or self.proc is None or self.proc.poll() is not None:
            return
        waited = time.monotonic() - self.ended_at
        if waited >= END_EXIT_GRACE_SECONDS + KILL_GRACE_SECONDS:
            self._signal_group(signal.SIGKILL)
        elif waited >= END_EXIT_GRACE_SECONDS and not self._end_terminated:
            self.log(
                f"the run reported its end but has not exited within "
                f"{END_EXIT_GRACE_SECONDS:g} s: terminating it",
                "WARNING",
            )
            self._signal_group(signal.SIGTERM)
            self._end_terminated = True

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

    def _conclude(self, proc: subprocess.Popen | WarmProcess) -> str:
        rc = proc.returncode
        assert rc is not None
        launcher_lost = isinstance(proc, WarmProcess) and proc.launcher_lost
        # stray processes of the run (data loader workers, torchrun ranks) go with it; then the
        # output pipes close and the readers deliver the last lines
        self._signal_group(signal.SIGKILL)
        for reader in self.readers:
            reader.join(timeout=5.0)
        self._collect()
        if self._superseded():
            self._request_stop("lost", "a later attempt took over the run folder")
        why = self.stop.why if self.stop is not None else None
        if why != "lost" and launcher_lost:
            self.log(
                "the warm-start launcher died during the run and the training process with it",
                "WARNING",
            )
        elif why != "lost":
            level = "INFO" if rc == 0 else "WARNING"
            self.log(f"training process exited with status {rc}", level)
        conclusion = self.observer.conclude(rc, why)
        if (
            launcher_lost
            and conclusion.outcome is not None
            and conclusion.outcome.status == "failed"
        ):
            # not the run's failure: the job goes back to the queue as a lost worker's would
            self._write_pending()
            state.requeue_host_lost(
                self.job,
                f"the warm-start launcher of worker {self.job.worker_id} died during the run",
                enqueue=self.enqueue,
            )
            return state.job_status(self.job.id) or "unknown"
        return self._apply(conclusion)

    def _apply(self, conclusion: Conclusion) -> str:
        if conclusion.action == "leave":
            return self._leave()
        if conclusion.action == "requeue":
            self._write_pending()
            state.requeue_interrupted(self.job, enqueue=self.enqueue)
            return "queued"
        assert conclusion.outcome is not None
        return self._finish(conclusion.outcome)

    def _leave(self) -> str:
        logger.warning("job %s: ownership lost; leaving it to its new attempt", self.job.id)
        try:
            return state.job_status(self.job.id) or "unknown"
        except SQLAlchemyError:
            return "unknown"

    def _write_pending(self) -> None:
        deadline = time.monotonic() + FINAL_WRITE_PATIENCE
        while not self.observer.batch.empty():
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
            logs = self.observer.take_logs()
            try:
                done = state.finish_job(self.job, outcome, logs=logs, enqueue=self.enqueue)
                break
            except SQLAlchemyError as exc:
                self.observer.put_back_logs(logs)
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
        self._track(outcome)
        return outcome.status

    def _track(self, outcome: Finish) -> None:
        """Logs the finished attempt to MLflow when it is configured (never raises)."""
        if self.tracker is None:
            return
        try:
            self.tracker.log_job(
                self.job, outcome, self.observer.epochs, self.observer.steps, self._job_log
            )
        except Exception:  # the job's end is recorded; tracking must not turn it into a failure
            logger.exception("job %s: MLflow tracking failed", self.job.id)

    def _job_log(self, message: str, level: str) -> None:
        try:
            state.add_log_line(self.job.id, self.job.attempt, message, level)
        except SQLAlchemyError as exc:
            logger.warning("job %s: could not log %r: %s", self.job.id, message, exc)
