"""Warm start of training processes: a launcher with torch and the engine imported forks each run.

A fresh ``python -m livt_core train ...`` spends seconds importing torch, torchvision, timm and
the engine before its first step. The worker therefore keeps one **launcher** process
(``python -m worker.zygote``) that imports all of that once, and forks a single-process run from
it instead of starting a new interpreter: the run's first step comes that much sooner, and the
pages of the imported modules are shared between the launcher and its runs.

The launcher
    is started by the worker (``worker.janitor`` at ``worker_init``, stopped at
    ``worker_shutdown``; the janitor's round starts it again when it died) with
    ``PR_SET_PDEATHSIG`` so that it dies with the worker. It imports :data:`PRELOAD` and the
    whole ``livt_core`` package, checks that this left it single-threaded and CUDA
    uninitialised (both make a fork unsafe; it refuses to serve otherwise), freezes its objects
    out of the garbage collector (``gc.freeze``: fewer copied pages) and listens on a Unix socket
    in a folder only the worker's user can enter. It never starts a torch thread pool.

A request
    carries the run's argv (``-m livt_core ...``, the same as a cold start), its environment, its
    working directory, its cores and, passed with ``SCM_RIGHTS``, its stdin, stdout and stderr.
    The launcher forks; the child ties itself to the launcher (``PR_SET_PDEATHSIG`` SIGKILL: it
    dies when the launcher does, and the launcher dies with the worker), becomes the leader of a
    session of its own (the worker signals its process group, as for a cold start), pins itself
    to its cores, takes the three descriptors as 0, 1 and 2, changes directory, replaces its
    environment with the request's, sets torch's threads as a fresh interpreter would have them
    (``OMP_NUM_THREADS`` when it is a positive integer, else the cores it is pinned to) and runs
    the module with :func:`runpy.run_module`, exiting as that interpreter would. The launcher
    answers with the child's pid once it is set up, reaps it and sends its wait status on the same
    connection. A connection closed while its child runs (its supervisor is gone) kills the child.

The worker's side
    is :class:`Launcher` (start, readiness, stop, :meth:`Launcher.spawn`) and
    :class:`WarmProcess`, the run's handle, shaped like :class:`subprocess.Popen` (``pid``,
    ``poll``, ``wait``, ``returncode``, ``stdout`` / ``stderr``, ``send_signal`` / ``terminate``
    / ``kill``) so that ``worker.runner.JobRunner`` supervises both alike. A launcher that dies
    during a run takes the run with it (:attr:`WarmProcess.launcher_lost`): the runner requeues
    the job as a lost worker's.

Cold starts remain for what a fork cannot reproduce (:meth:`Launcher.unavailable`, each logged
as a WARNING in the job's log): ``LIVT_WARM_START=0``, multi-process (``torchrun``) runs, a
launcher not (yet) ready, busy past :data:`ACK_TIMEOUT` or dead, and a run whose environment
differs from the launcher's in a variable only read at interpreter or library start-up
(:func:`startup_env_differences`). ``CUDA_VISIBLE_DEVICES`` may differ (CUDA is initialised in
the child only), and so may the thread counts the child applies itself (``OMP_NUM_THREADS``,
``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``) and ``PYTHONUNBUFFERED`` (the child builds its
standard streams for it).

This module imports only the standard library at module level: the worker imports it, and the
launcher's own imports are what it preloads.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

#: The only module a warm child runs (``python -m livt_core ...``).
WARM_MODULE = "livt_core"
#: What the launcher imports before it serves (and then every module of ``livt_core``).
PRELOAD = (
    "numpy",
    "PIL.Image",
    "torch",
    "torchvision",
    "timm",
    "torch.utils.data",
    "torch.utils.tensorboard",
    "torch.utils.tensorboard.summary",
    "multiprocessing.connection",
    "livt_core.cli",
)
#: Variables read only when an interpreter or a native library starts: a run whose value differs
#: from the launcher's starts cold. (Prefixes end with ``_``.)
STARTUP_ENV = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONHASHSEED",
    "PYTHONSAFEPATH",
    "PYTHONNOUSERSITE",
    "PYTHONUSERBASE",
    "PYTHONPLATLIBDIR",
    "PYTHONOPTIMIZE",
    "PYTHONDEVMODE",
    "PYTHONWARNINGS",
    "PYTHONMALLOC",
    "PYTHONUTF8",
    "PYTHONIOENCODING",
    "PYTHONFAULTHANDLER",
    "PYTHONTRACEMALLOC",
    "PYTHONPROFILEIMPORTTIME",
    "PYTHONINTMAXSTRDIGITS",
    "PYTHONNODEBUGRANGES",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONPYCACHEPREFIX",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "GLIBC_TUNABLES",
    "LANG",
    "LANGUAGE",
    "LC_",
    "MALLOC_",
    "OMP_",
    "GOMP_",
    "KMP_",
    "MKL_",
    "OPENBLAS_",
    "TORCH_",
    "PYTORCH_",
    "TORCHINDUCTOR_",
)
#: Start-up variables the child applies itself, which may therefore differ.
CHILD_APPLIED_ENV = frozenset({"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"})
#: What the launcher's environment adds to the worker's: numpy's OpenBLAS would otherwise start
#: its thread pool at import, and a fork must happen in a single-threaded process.
LAUNCHER_ENV = {"OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

#: Seconds a request may wait to be taken by the launcher.
CONNECT_TIMEOUT = 2.0
#: Seconds the launcher has to fork and set up the child before it is deemed hung (and killed,
#: so that no run it may have forked survives unsupervised).
ACK_TIMEOUT = 10.0
#: Least seconds between two starts of the launcher (each costs seconds of CPU), doubling with
#: every start up to :data:`RESTART_INTERVAL_MAX`.
RESTART_INTERVAL = 30.0
RESTART_INTERVAL_MAX = 600.0
#: Seconds a stopping launcher gets after SIGTERM before SIGKILL.
STOP_TIMEOUT = 5.0
#: Largest request (argv and environment) in bytes.
MAX_REQUEST = 1 << 20

_READY = "livt-launcher-ready "
_REFUSED = "livt-launcher-refused "
_PR_SET_PDEATHSIG = 1


class WarmStartUnavailable(Exception):
    """This run cannot start warm; the message says why (it starts cold)."""


def startup_env_differences(env: Mapping[str, str], launcher_env: Mapping[str, str]) -> list[str]:
    """The :data:`STARTUP_ENV` variables whose value in ``env`` differs from ``launcher_env``
    (those in :data:`CHILD_APPLIED_ENV` excepted), sorted."""
    names = set(env) | set(launcher_env)
    differing = []
    for name in names:
        if name in CHILD_APPLIED_ENV or env.get(name) == launcher_env.get(name):
            continue
        if any(name == s or (s.endswith("_") and name.startswith(s)) for s in STARTUP_ENV):
            differing.append(name)
    return sorted(differing)


# ============================================================================ the worker's side


def _proc_stat(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name (state, ppid, pgrp, session, ...)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


def _gone(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is None or stat[0] in ("Z", "X")


class WarmProcess:
    """A run forked by the launcher, with the :class:`subprocess.Popen` interface the runner
    uses. The exit status arrives on ``conn``; ``stdout`` / ``stderr`` read the run's output."""

    def __init__(
        self, pid: int, conn: socket.socket, stdout: IO[bytes], stderr: IO[bytes], args: list[str]
    ) -> None:
        self.pid = pid
        self.args = args
        self.stdin = None
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        #: the launcher died while the run was running (the run was killed with it)
        self.launcher_lost = False
        self._conn = conn
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        return self._check(0.0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._check(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return code

    def _check(self, timeout: float | None) -> int | None:
        with self._lock:
            if self.returncode is not None:
                return self.returncode
            readable, _, _ = select.select([self._conn], [], [], timeout)
            if not readable:
                return None
            try:
                message = self._conn.recv(65536)
            except OSError:
                message = b""
            if message:
                self.returncode = os.waitstatus_to_exitcode(int(json.loads(message)["status"]))
            else:
                self._lost()
            self._conn.close()
            return self.returncode

    def _lost(self) -> None:
        """The launcher closed the connection without a status: it died, and the run with it
        (its death signal). Makes sure the run's process group is gone, then records SIGKILL."""
        self.launcher_lost = True
        stat = _proc_stat(self.pid)
        if stat is not None and stat[0] not in ("Z", "X") and int(stat[2]) == self.pid:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10.0
        while not _gone(self.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.returncode = -signal.SIGKILL

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def close(self) -> None:
        """Drops the connection (a run still running is then killed by the launcher)."""
        self._conn.close()


class Launcher:
    """The worker's handle on its launcher process (see the module doc).

    Args:
        python: the interpreter of the launcher and of the runs it forks (cold runs use the
            same).
        env: the launcher's environment (default: this process's, plus :data:`LAUNCHER_ENV`).
    """

    def __init__(self, python: str = sys.executable, env: Mapping[str, str] | None = None) -> None:
        self.python = python
        base = dict(os.environ) if env is None else dict(env)
        self.env = {**base, **{k: v for k, v in LAUNCHER_ENV.items() if k not in base}}
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None
        self.ready_after: float | None = None
        self.refused: str | None = None
        self._ready = threading.Event()
        self._stopping = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._folder: str | None = None
        self._starts = 0
        #: seconds before the first restart (see :meth:`ensure_running`)
        self.restart_interval = RESTART_INTERVAL
        #: seconds the launcher has to answer a fork request (see :data:`ACK_TIMEOUT`)
        self.ack_timeout = ACK_TIMEOUT
        self.socket_path: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Starts the launcher in the background (returns at once; :attr:`ready` says when it
        serves). The thread that starts it lives as long as it does, since the launcher's death
        signal is tied to that thread."""
        with self._lock:
            if self.alive:
                return
            self._stopping = False
            self._ready.clear()
            self.refused = None
            self.ready_after = None
            if self._folder is not None:
                shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = tempfile.mkdtemp(prefix="livt-launcher-")
            self.socket_path = os.path.join(self._folder, "socket")
            self.started_at = time.monotonic()
            self._starts += 1
            started = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(started,), name="livt-launcher", daemon=True
            )
            self._thread.start()
        started.wait(30.0)

    def _run(self, started: threading.Event) -> None:
        from worker.runner import spawn_tied_to_parent

        assert self.socket_path is not None
        try:
            proc = spawn_tied_to_parent(
                [self.python, "-m", "worker.zygote", "--socket", self.socket_path],
                death_signal=signal.SIGKILL,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            self.refused = f"could not start: {exc}"
            logger.warning("warm-start launcher %s", self.refused)
            started.set()
            return
        self.proc = proc
        started.set()
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line.startswith(_READY):
                self.ready_after = time.monotonic() - (self.started_at or time.monotonic())
                self._ready.set()
                logger.info(
                    "warm-start launcher %d ready after %.1f s: %s",
                    proc.pid,
                    self.ready_after,
                    line[len(_READY) :],
                )
            elif line.startswith(_REFUSED):
                self.refused = line[len(_REFUSED) :]
                logger.warning(
                    "warm-start launcher %d refuses to serve: %s", proc.pid, self.refused
                )
            elif line:
                logger.info("warm-start launcher %d: %s", proc.pid, line)
        proc.stdout.close()
        code = proc.wait()
        self._ready.clear()
        if not self._stopping:
            logger.warning("warm-start launcher %d exited with status %s", proc.pid, code)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def ready(self) -> bool:
        """The launcher serves requests now."""
        return self._ready.is_set() and self.alive

    def wait_ready(self, timeout: float) -> bool:
        """Waits up to ``timeout`` s for the launcher to serve (for tools and tests; a job
        never waits: it starts cold)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready:
                return True
            if self.refused is not None or (self.proc is not None and not self.alive):
                return False
            self._ready.wait(0.05)
        return self.ready

    def ensure_running(self) -> bool:
        """Starts the launcher again when it died, unless it refused to serve (it would
        again); the first restart waits :attr:`restart_interval` s after the last start, each
        later one twice as long (at most :data:`RESTART_INTERVAL_MAX`). True when a start was
        made."""
        if self._stopping or self.alive or self.refused is not None:
            return False
        interval = min(self.restart_interval * 2 ** max(self._starts - 1, 0), RESTART_INTERVAL_MAX)
        if self.started_at is not None and time.monotonic() - self.started_at < interval:
            return False
        logger.info("starting the warm-start launcher again (start %d)", self._starts + 1)
        self.start()
        return True

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stops the launcher (SIGTERM, then SIGKILL); its runs die with it."""
        self._stopping = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def _abandon(self, why: str) -> None:
        """Kills a launcher that does not answer (whatever it forked dies with it)."""
        logger.warning("warm-start launcher: %s; killing it", why)
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    # ------------------------------------------------------------------ runs

    def unavailable(self, argv: Sequence[str], env: Mapping[str, str]) -> str | None:
        """Why ``argv`` with ``env`` cannot start warm now (None: it can)."""
        if len(argv) < 3 or argv[1] != "-m" or argv[2] != WARM_MODULE:
            return f"only `python -m {WARM_MODULE}` starts warm (not {' '.join(argv[1:3])})"
        if argv[0] != self.python:
            return f"the run's interpreter {argv[0]} is not the launcher's {self.python}"
        if self.refused is not None:
            return f"the warm-start launcher refused to serve: {self.refused}"
        if self.proc is None:
            return "the warm-start launcher has not been started"
        if not self.alive:
            return f"the warm-start launcher exited with status {self.proc.returncode}"
        if not self._ready.is_set():
            since = time.monotonic() - (self.started_at or time.monotonic())
            return f"the warm-start launcher is still importing (started {since:.1f} s ago)"
        differing = startup_env_differences(env, self.env)
        if differing:
            return (
                "the run's environment differs from the warm-start launcher's in "
                f"{', '.join(differing)}, read only when an interpreter starts"
            )
        return None

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | os.PathLike[str],
        cpus: Sequence[int] | None = None,
    ) -> WarmProcess:
        """Forks ``argv`` (``python -m livt_core ...``) from the launcher with ``env`` in
        ``cwd``, pinned to ``cpus``; its stdin is ``/dev/null``, its stdout and stderr are read
        through the handle's pipes. Raises :class:`WarmStartUnavailable` (nothing was started)
        when it cannot."""
        argv = [str(a) for a in argv]
        reason = self.unavailable(argv, env)
        if reason is None and self.socket_path is None:
            reason = "the warm-start launcher has no socket"
        if reason is not None:
            if self.proc is not None and not self.alive:
                threading.Thread(target=self.ensure_running, daemon=True).start()
            raise WarmStartUnavailable(reason)
        request = json.dumps(
            {
                "argv": argv,
                "env": dict(env),
                "cwd": os.fspath(cwd),
                "cpus": sorted(cpus) if cpus else None,
            }
        ).encode()
        if len(request) > MAX_REQUEST:
            raise WarmStartUnavailable(f"the request is larger than {MAX_REQUEST} bytes")
        stdin = os.open(os.devnull, os.O_RDONLY)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if len(request) > 100_000:  # one datagram: it must fit the send buffer
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, len(request) + 4096)
        try:
            try:
                conn.settimeout(CONNECT_TIMEOUT)
                conn.connect(self.socket_path)  # type: ignore[arg-type]
                socket.send_fds(conn, [request], [stdin, out_w, err_w])
            finally:
                for fd in (stdin, out_w, err_w):
                    os.close(fd)
            try:
                conn.settimeout(self.ack_timeout)
                reply = conn.recv(65536)
            except TimeoutError:
                self._abandon(f"no answer to a fork request within {self.ack_timeout:g} s")
                raise WarmStartUnavailable(
                    f"the warm-start launcher did not answer within {self.ack_timeout:g} s"
                ) from None
            if not reply:
                raise WarmStartUnavailable("the warm-start launcher exited during the request")
            answer = json.loads(reply)
            if "error" in answer:
                raise WarmStartUnavailable(f"the warm-start launcher: {answer['error']}")
        except (OSError, ValueError, WarmStartUnavailable) as exc:
            conn.close()
            os.close(out_r)
            os.close(err_r)
            if isinstance(exc, WarmStartUnavailable):
                raise
            raise WarmStartUnavailable(f"the warm-start launcher is unreachable: {exc}") from exc
        conn.settimeout(None)
        return WarmProcess(
            int(answer["pid"]), conn, open(out_r, "rb"), open(err_r, "rb"), list(argv)
        )


_launcher_lock = threading.Lock()
_launcher: Launcher | None = None


def start_launcher(python: str = sys.executable) -> Launcher:
    """Starts this worker's launcher (once; returns at once, it gets ready in the background)."""
    global _launcher
    with _launcher_lock:
        if _launcher is None:
            _launcher = Launcher(python)
        launcher = _launcher
    launcher.start()
    return launcher


def current_launcher() -> Launcher | None:
    """This worker's launcher, or None when none was started."""
    return _launcher


def keep_alive() -> None:
    """Starts this worker's launcher again when it died (the janitor's round calls it)."""
    launcher = _launcher
    if launcher is not None:
        launcher.ensure_running()


def stop_launcher() -> None:
    """Stops this worker's launcher, if it has one."""
    global _launcher
    with _launcher_lock:
        launcher, _launcher = _launcher, None
    if launcher is not None:
        launcher.stop()


# ============================================================================ the launcher


@dataclass
class _Preloaded:
    """What the launcher keeps of its start-up for its children."""

    torch_rng: Any = None
    seconds: float = 0.0
    modules: int = 0


@dataclass
class _Child:
    """A fork's instructions, carried out in the child after it left the serving loop."""

    request: dict[str, Any]
    fds: list[int]
    ready_fd: int
    launcher_pid: int
    preloaded: _Preloaded
    close: list[int] = field(default_factory=list)


def _preload() -> _Preloaded:
    import importlib
    import pkgutil

    started = time.monotonic()
    import torch

    preloaded = _Preloaded(torch_rng=torch.random.get_rng_state())
    for name in PRELOAD:
        importlib.import_module(name)
    import livt_core

    for info in pkgutil.walk_packages(livt_core.__path__, "livt_core."):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            try:
                importlib.import_module(info.name)
            except ImportError as exc:  # an optional dependency: the run imports it itself
                print(f"not preloaded: {info.name} ({exc})", flush=True)
    preloaded.seconds = time.monotonic() - started
    preloaded.modules = len(sys.modules)
    return preloaded


def _fork_safety() -> str | None:
    """Why forking this process would be unsafe (None: it is safe)."""
    import torch

    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        return f"{threads} threads after the imports (a fork copies only the calling one)"
    if torch.cuda.is_initialized():
        return "CUDA was initialised by the imports"
    return None


class _Server:
    """The launcher's loop: accepts fork requests, reaps children, reports their status."""

    def __init__(self, listener: socket.socket, preloaded: _Preloaded) -> None:
        self.listener = listener
        self.preloaded = preloaded
        self.conns: dict[int, socket.socket] = {}  # fd → connection
        self.children: dict[int, socket.socket] = {}  # pid → its connection
        self.child_of: dict[int, int] = {}  # connection fd → pid
        self.stop = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)

    def serve(self) -> _Child | None:
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        while not self.stop:
            watched = [self.listener, self.wake_r, *self.conns.values()]
            try:
                readable, _, _ = select.select(watched, [], [], 1.0)
            except InterruptedError:
                readable = []
            for item in readable:
                if item is self.listener:
                    self._accept()
                elif item == self.wake_r:
                    self._drain()
                else:
                    child = self._request(item)
                    if child is not None:
                        return child
            self._reap()
        return None

    def _on_term(self, *_: Any) -> None:
        self.stop = True

    def _drain(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.conns[conn.fileno()] = conn

    def _drop(self, conn: socket.socket) -> None:
        self.conns.pop(conn.fileno(), None)
        conn.close()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            self.child_of.pop(conn.fileno(), None)
            try:
                conn.send(json.dumps({"pid": pid, "status": status}).encode())
            except OSError:
                pass
            self._drop(conn)

    def _request(self, conn: socket.socket) -> _Child | None:
        try:
            message, fds, _flags, _addr = socket.recv_fds(conn, MAX_REQUEST, 3)
        except OSError:
            message, fds = b"", []
        if not message:  # the supervisor is gone: its run must not outlive it
            pid = self.child_of.pop(conn.fileno(), None)
            if pid is not None:
                self.children.pop(pid, None)
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for fd in fds:
                os.close(fd)
            self._drop(conn)
            return None
        if conn.fileno() in self.child_of or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            self._answer(conn, {"error": "one request with 3 descriptors per connection"})
            return None
        try:
            request = json.loads(message)
            argv = [str(a) for a in request["argv"]]
            if len(argv) < 3 or argv[1] != "-m" or argv[2] != WARM_MODULE:
                raise ValueError(f"only -m {WARM_MODULE} runs here")
            request["argv"] = argv
        except (ValueError, KeyError, TypeError) as exc:
            for fd in fds:
                os.close(fd)
            self._answer(conn, {"error": f"bad request: {exc}"})
            return None
        ready_r, ready_w = os.pipe()
        launcher_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            # detached, not merely closed: a socket object collected later would close
            # whatever the run has opened under the same number by then
            sockets = [self.listener, *self.conns.values()]
            others = [s.detach() for s in sockets] + [self.wake_r, self.wake_w]
            self.conns.clear()
            return _Child(request, fds, ready_w, launcher_pid, self.preloaded, others)
        os.close(ready_w)
        for fd in fds:
            os.close(fd)
        self.children[pid] = conn
        self.child_of[conn.fileno()] = pid
        error = self._await_setup(ready_r, pid)
        os.close(ready_r)
        if error is not None:
            self.children.pop(pid, None)
            self.child_of.pop(conn.fileno(), None)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._answer(conn, {"error": error})
            return None
        try:
            conn.send(json.dumps({"pid": pid}).encode())
        except OSError:
            pass
        return None

    def _await_setup(self, ready_r: int, pid: int) -> str | None:
        """Waits for the child's set-up report: None when it is ready, else the error."""
        data = b""
        deadline = time.monotonic() + ACK_TIMEOUT / 2
        while time.monotonic() < deadline:
            readable, _, _ = select.select([ready_r], [], [], 0.5)
            if not readable:
                continue
            chunk = os.read(ready_r, 4096)
            if not chunk:
                break
            data += chunk
        if data == b"ok":
            return None
        if data.startswith(b"error "):
            return data[6:].decode("utf-8", errors="replace")
        return f"the child {pid} ended during its set-up"

    def _answer(self, conn: socket.socket, message: dict[str, Any]) -> None:
        try:
            conn.send(json.dumps(message).encode())
        except OSError:
            pass
        self._drop(conn)


# ---------------------------------------------------------------------------- the forked child


def _stdio(fd: int, write: bool, unbuffered: bool, like: IO[str]) -> IO[str]:
    """A standard stream on ``fd`` built as a fresh interpreter would (``-u`` when
    ``unbuffered``), with ``like``'s encoding and error handler."""
    import io

    raw = io.FileIO(fd, "w" if write else "r", closefd=False)
    if write:
        buffer: Any = raw if unbuffered else io.BufferedWriter(raw)
    else:
        buffer = io.BufferedReader(raw)
    return io.TextIOWrapper(
        buffer,
        encoding=getattr(like, "encoding", None) or "utf-8",
        errors=getattr(like, "errors", None) or "strict",
        line_buffering=write and not unbuffered and raw.isatty(),
        write_through=write and unbuffered,
    )


def _positive_int(value: str | None) -> int | None:
    head = (value or "").split(",")[0].strip()
    return int(head) if head.isdigit() and int(head) > 0 else None


def _set_up_child(child: _Child) -> None:
    """Everything before the run, up to its readiness report (see the module doc)."""
    import ctypes

    request = child.request
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != child.launcher_pid:  # the launcher died before the tie was made
        os._exit(1)
    os.setsid()
    for fd in child.close:
        try:
            os.close(fd)
        except OSError:
            pass
    if request.get("cpus"):
        os.sched_setaffinity(0, set(request["cpus"]))
    for target, fd in enumerate(child.fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])


def _run_child(child: _Child) -> int:
    """The child's life after the fork: set-up, then the module as ``__main__``."""
    try:
        _set_up_child(child)
    except OSError as exc:
        os.write(child.ready_fd, f"error {exc}".encode())
        os._exit(1)
    os.write(child.ready_fd, b"ok")
    os.close(child.ready_fd)

    import random
    import runpy

    import numpy
    import torch

    request = child.request
    env = {str(k): str(v) for k, v in request["env"].items()}
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None  # chosen again from this environment
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    sys.stdin = sys.__stdin__ = _stdio(0, False, unbuffered, sys.stdin)
    sys.stdout = sys.__stdout__ = _stdio(1, True, unbuffered, sys.stdout)
    sys.stderr = sys.__stderr__ = _stdio(2, True, True, sys.stderr)
    if not sys.flags.safe_path:
        sys.path[0] = os.getcwd()  # what `python -m` puts first
    # a fresh interpreter's random state: OS entropy for random and numpy, torch's default seed
    random.seed()
    numpy.random.seed()
    torch.random.set_rng_state(child.preloaded.torch_rng)
    # threads as a fresh interpreter would start them (OpenMP reads the variable at load)
    cores = len(os.sched_getaffinity(0))
    threads = _positive_int(env.get("OMP_NUM_THREADS")) or cores
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    blas = (
        _positive_int(env.get("OPENBLAS_NUM_THREADS"))
        or _positive_int(env.get("GOTO_NUM_THREADS"))
        or _positive_int(env.get("OMP_NUM_THREADS"))
        or cores
    )
    if blas > 1:
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=blas, user_api="blas")
        except ImportError:  # numpy's own BLAS stays on one thread (the training is torch's)
            pass
    argv = request["argv"]
    sys.argv = [argv[0], *argv[3:]]
    runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m worker.zygote --socket PATH``: preload, then serve until SIGTERM."""
    import argparse
    import gc

    parser = argparse.ArgumentParser(prog="python -m worker.zygote")
    parser.add_argument("--socket", required=True, help="the Unix socket to listen on")
    args = parser.parse_args(argv)
    try:
        preloaded = _preload()
    except Exception as exc:  # noqa: BLE001 - the worker starts its runs cold
        print(f"{_REFUSED}the imports failed: {type(exc).__name__}: {exc}", flush=True)
        return 3
    unsafe = _fork_safety()
    if unsafe is not None:
        print(f"{_REFUSED}{unsafe}", flush=True)
        return 3
    gc.collect()
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(args.socket)
    os.chmod(args.socket, 0o600)
    listener.listen(16)
    info = {
        "pid": os.getpid(),
        "import_seconds": round(preloaded.seconds, 2),
        "modules": preloaded.modules,
    }
    print(_READY + json.dumps(info), flush=True)
    child = _Server(listener, preloaded).serve()
    if child is None:
        listener.close()
        try:
            os.unlink(args.socket)
        except FileNotFoundError:
            pass
        return 0
    return _run_child(child)


if __name__ == "__main__":
    sys.exit(main())
