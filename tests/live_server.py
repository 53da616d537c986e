"""A real ``livt serve`` (API + embedded worker) in a subprocess, for end-to-end tests.

Used by the browser tests (``tests/ui``), the client tests (``tests/client``) and
``scripts/screenshots.py``::

    with LiveServer.start(tmp_path) as server:
        token = server.create_token("alice")
        ...

The server gets its own data directory (SQLite database, embedded broker, artifacts), a free port
on 127.0.0.1 and one torch thread per process, so that it shares a small machine politely.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

#: Small fine-tuning runs on the bundled Fashion-MNIST-LT subset (seconds on one CPU core).
TINY_FINETUNE: dict = {
    "kind": "finetune",
    "preset": "fashion-mnist-lt",
    "epochs": 2,
    "warmup_epochs": 1,
    "max_steps_per_epoch": 3,
    "model_kwargs": {"depth": 1},
    "data": {"num_workers": 0},
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LIVT_DATA_DIR=str(data_dir),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    for key in ("LIVT_URL", "LIVT_TOKEN", "LIVT_DATABASE_URL", "LIVT_BROKER_URL", "LIVT_MODE"):
        env.pop(key, None)
    return env


@dataclass
class LiveServer:
    """A running ``livt serve``; :meth:`stop` (or leaving the ``with`` block) ends it."""

    url: str
    data_dir: Path
    process: subprocess.Popen
    log_path: Path
    tokens: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        data_dir: Path,
        *,
        timeout: float = 90.0,
        worker: bool = True,
        env: dict[str, str] | None = None,
    ) -> LiveServer:
        """Starts the server and waits until ``/healthz`` answers.

        ``worker=False`` serves the API alone (``--no-worker``); ``env`` adds settings
        (``LIVT_*`` variables) to the server's environment.

        Raises:
            RuntimeError: the server exited or did not answer within ``timeout`` seconds; the
                message carries the end of its log.
        """
        data_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log_path = data_dir / "server.log"
        cmd = [sys.executable, "-m", "livt.cli", "serve", "--host", "127.0.0.1"]
        if not worker:
            cmd.append("--no-worker")
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*cmd, "--port", str(port)],
                env={**server_env(data_dir), **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() also ends the workers
            )
        server = cls(f"http://127.0.0.1:{port}", data_dir, process, log_path)
        try:
            server._wait_healthy(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"livt serve exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"livt serve did not answer within {timeout:g} s:\n{self.log_tail()}")

    def create_token(self, name: str, *, admin: bool = False) -> str:
        """Runs ``livt token create`` against this server's database; returns the token."""
        if name in self.tokens:
            return self.tokens[name]
        cmd = [sys.executable, "-m", "livt.cli", "token", "create", "--name", name]
        for attempt in range(3):
            done = subprocess.run(
                [*cmd, *(["--admin"] if admin else [])],
                env=server_env(self.data_dir),
                capture_output=True,
                text=True,
                timeout=120,
            )
            # SQLite answers "database is locked" while the worker starts up; try again
            if done.returncode == 0 or "database is locked" not in done.stderr or attempt == 2:
                break
        if done.returncode != 0:
            raise RuntimeError(f"livt token create failed:\n{done.stdout}\n{done.stderr}")
        token = done.stdout.strip().splitlines()[-1].strip()
        self.tokens[name] = token
        return token

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """Asks the server to shut down (SIGTERM), then kills what is left of its group."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait(timeout=10)

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: Debian's Chromium; the browser tests skip without it (never `playwright install`).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch_chromium(playwright, user_data_dir: Path, **context_options):
    """A headless Chromium with a fresh profile in ``user_data_dir``; returns its context."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        **context_options,
    )
