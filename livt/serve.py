"""``livt serve`` and ``livt demo``: the commands that run the whole service on one machine.

- ``livt serve``: the embedded mode in one command: migrations, the API (uvicorn) and a Celery
  worker process next to it (``livt worker``); Ctrl-C stops both (a running job is handed back to
  the queue and resumes from its last checkpoint next time).
- ``livt demo``: the MGP → BFT (Bal-BCE) → evaluate pipeline on the bundled Fashion-MNIST-LT
  subset, with live progress and the many / medium / few / overall table at the end.

Imports stay inside the handlers so that ``livt --help`` does not load the service stack.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

logger = logging.getLogger(__name__)

#: Seconds ``livt serve`` waits for its worker to hand back a running job before killing it.
WORKER_STOP_TIMEOUT = 60.0
#: A worker of ``livt serve`` that dies is restarted after this many seconds, doubling on each
#: death in a row up to ``LIVT_WORKER_RESTART_DELAY_MAX_SECONDS``.
RESTART_DELAY = 1.0
#: A worker that ran this long before it died counts as healthy: the delay starts over.
HEALTHY_RUN_SECONDS = 60.0


def next_restart_delay(previous: float, ran_seconds: float, cap: float) -> float:
    """The wait before the next restart of a worker that died after ``ran_seconds``, when the
    wait before its last restart was ``previous``: doubling while it keeps dying, never above
    ``cap``, back to :data:`RESTART_DELAY` after a healthy run."""
    if ran_seconds >= HEALTHY_RUN_SECONDS:
        return min(RESTART_DELAY, cap)
    return min(previous * 2, cap)


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be ≥ 1")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return number


# --------------------------------------------------------------------------- livt serve


class EmbeddedWorker:
    """The ``livt worker`` process that ``livt serve`` runs next to the API.

    It dies with ``livt serve`` (PR_SET_PDEATHSIG), is restarted when it dies on its own (its
    running job is then requeued at once, because the new process has the same worker id), and
    is stopped with SIGTERM, which hands a running job back to the queue.
    """

    def __init__(self, argv: Sequence[str], *, restart_delay_max: float = 5.0) -> None:
        self.argv = list(argv)
        self.restart_delay_max = restart_delay_max
        self.proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name="worker-watch", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._watcher.start()

    def _spawn(self) -> None:
        from worker.runner import spawn_tied_to_parent

        with self._lock:
            if self._stopping.is_set():
                return
            self.proc = spawn_tied_to_parent(
                self.argv, death_signal=signal.SIGTERM, start_new_session=True
            )
            logger.info("worker process %d started", self.proc.pid)

    def _watch(self) -> None:
        delay = RESTART_DELAY / 2  # the first death waits RESTART_DELAY
        while not self._stopping.is_set():
            with self._lock:
                proc = self.proc
            if proc is None:
                return
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            delay = next_restart_delay(delay, time.monotonic() - started, self.restart_delay_max)
            logger.error(
                "the worker process exited with status %s; restarting in %g s", code, delay
            )
            if self._stopping.wait(delay):
                return
            self._spawn()

    def stop(self, timeout: float = WORKER_STOP_TIMEOUT) -> None:
        self._stopping.set()
        with self._lock:
            proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        logger.info("stopping the worker process %d", proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("the worker did not stop within %g s: killing it", timeout)
            proc.kill()
            proc.wait()


def serve_command(args: argparse.Namespace) -> int:
    """API and worker in one process tree (the embedded mode; ``--no-worker`` serves the API
    alone, as in production)."""
    from livt_service.db import upgrade_database
    from livt_service.queue import declare_queues, is_embedded_broker
    from livt_service.settings import get_settings

    settings = get_settings()
    if settings.embedded:
        # production migrates in its own step (`livt db upgrade`), never from each API replica
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade_database(settings.database_url)
    if is_embedded_broker(settings.broker_url):
        declare_queues([settings.default_queue])
    embedded = None
    if not args.no_worker:
        argv = [sys.executable, "-m", "livt.cli"]
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            argv.append("-v")
        argv += ["worker", "--name", "embedded", "--concurrency", str(args.concurrency)]
        argv += ["--queues", settings.default_queue]
        embedded = EmbeddedWorker(argv, restart_delay_max=settings.worker_restart_delay_max_seconds)
        embedded.start()
    logger.info(
        "LiVT service on http://%s:%d (%s mode, data in %s)",
        args.host,
        args.port,
        settings.mode,
        settings.data_dir,
    )
    try:
        code = _run_api(args.host, args.port)
    finally:
        if embedded is not None:
            embedded.stop()
    return code


def _run_api(host: str, port: int) -> int:
    """Serves the API until SIGINT / SIGTERM (a second one forces the exit); returns the exit
    status. uvicorn runs in a thread so that the signals stay with this command, which stops
    the worker after the API."""
    import uvicorn

    config = uvicorn.Config(
        "api.main:create_app", factory=True, host=host, port=port, log_level="info"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    requested = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        if requested.is_set():
            server.force_exit = True
        requested.set()
        server.should_exit = True

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        thread.start()
        while thread.is_alive():
            thread.join(0.5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if requested.is_set():
        logger.info("stopped")
        return 0
    logger.error("the API server stopped on its own (see the messages above)")
    return 1


# --------------------------------------------------------------------------- livt demo


def demo_command(args: argparse.Namespace) -> int:
    from livt.demo import run_demo

    return run_demo(
        url=args.url,
        token=args.token,
        host=args.host,
        port=args.port,
        epochs_scale=args.epochs_scale,
        exit_after=args.exit,
        timeout=args.timeout,
    )


# --------------------------------------------------------------------------- parsers


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``serve`` and ``demo`` to the ``livt`` command."""
    serve = subparsers.add_parser(
        "serve",
        help="run the API and a worker on this machine (embedded mode)",
        description="Apply the migrations, then serve the API with a Celery worker next to it. "
        "Ctrl-C stops both; a running job resumes from its last checkpoint on the next start.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument(
        "--no-worker", action="store_true", help="the API alone (workers run elsewhere)"
    )
    serve.add_argument(
        "--concurrency",
        type=_positive_int,
        default=1,
        help="jobs the worker runs at once, each pinned to its share of the cores (default 1)",
    )
    serve.set_defaults(func=serve_command)

    demo = subparsers.add_parser(
        "demo",
        help="run the MGP → BFT → evaluate pipeline on the bundled Fashion-MNIST-LT subset",
        description="Start the service (or use --url), submit the LiVT pipeline on the bundled "
        "Fashion-MNIST-LT subset, follow it live and print the many / medium / few / overall "
        "accuracy. The server keeps running afterwards unless --exit is given.",
    )
    demo.add_argument("--url", help="use this running service instead of starting one")
    demo.add_argument("--token", help="API token for --url (default: create one locally)")
    demo.add_argument("--host", default="127.0.0.1", help="address of the server it starts")
    demo.add_argument("--port", type=int, default=8000, help="port of the server it starts")
    demo.add_argument(
        "--epochs-scale",
        type=_positive_float,
        default=1.0,
        metavar="F",
        help="multiply the preset's epochs by F (e.g. 0.1 for a quick look)",
    )
    demo.add_argument(
        "--timeout", type=_positive_float, default=3600.0, metavar="S", help="give up after S s"
    )
    demo.add_argument(
        "--exit", action="store_true", help="stop the server it started once the demo is done"
    )
    demo.set_defaults(func=demo_command)
