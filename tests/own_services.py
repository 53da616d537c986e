"""A PostgreSQL server and a Redis server of the test's own, for tests that stop and restart them.

Fault tests must never touch the machine's services, so each one starts its own instance on a
free port with its data under a fresh temporary folder, and stops it by its data directory
(``pg_ctl -D``) or its process id. PostgreSQL runs as the ``postgres`` OS user (``initdb`` refuses
root). Both skip, saying why, when the programs are missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.live_server import free_port


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).is_file():
            return str(folder / name)
    return None


class OwnPostgres:
    """``initdb`` + ``pg_ctl`` on a free port (or ``port``) of ``host`` (default loopback);
    trust authentication, user ``postgres``."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.initdb, self.pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
        if self.initdb is None or self.pg_ctl is None:
            pytest.skip("initdb / pg_ctl not found; install PostgreSQL's server programs")
        try:
            self.user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("no 'postgres' OS user to run a PostgreSQL server of the test's own")
        self.folder = Path(tempfile.mkdtemp(prefix="livt-own-pg-"))
        os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        self.data = self.folder / "data"
        self.port = port or free_port()
        self._as_postgres(
            [self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"],
            timeout=120,
        )
        if host != "127.0.0.1":  # initdb trusts loopback only: let the host's own subnet in
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {host}/24 trust\n")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/postgres"

    def _as_postgres(self, argv: list[str], timeout: float) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.folder,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        listen = ",".join(dict.fromkeys(["127.0.0.1", self.host]))
        options = f"-p {self.port} -k {self.folder} -c listen_addresses={listen} -c fsync=off"
        self._as_postgres(
            [self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
             "-w", "-t", "60", "start"],
            timeout=90,
        )  # fmt: skip

    def stop(self) -> None:
        self._as_postgres([self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"], 60)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        if self.running():
            try:
                self.stop()
            except (RuntimeError, subprocess.TimeoutExpired):
                pid = int((self.data / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)


class OwnRedis:
    """``redis-server`` on a free port (or ``port``) of ``host`` without persistence (a restart
    loses everything)."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.program = shutil.which("redis-server")
        if self.program is None:
            pytest.skip("redis-server not found; install Redis")
        self.folder = Path(tempfile.mkdtemp(prefix="livt-own-redis-"))
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(
            [self.program, "--port", str(self.port), "--bind", self.host, "--protected-mode", "no", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=(self.folder / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=1).ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.1)

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_connect_timeout=2)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
