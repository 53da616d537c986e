"""Service speed: the real API against a minimal FastAPI + SQLAlchemy app on the same database.

For each mode it starts the real server, seeds the database and measures, with wrk (or, where
wrk is missing, the asyncio client below), requests/s, p50, p99 and errors of ``GET /jobs/{id}``,
``GET /jobs`` (the first page and a deep page after 9,000 of 10,000 jobs), ``GET /jobs/{id}/logs``
with an offset and ``GET /healthz`` at 1, 8 and 32 connections, each interleaved with the
baseline (``bench/service_baseline.py``: one ``SELECT`` of the same row, no auth, same uvicorn)
at the same concurrency, and the ratios. Then it submits small jobs and times submit → running
and submit → first progress (the training child's first step, as ``GET /jobs/{id}`` shows it).

- embedded: ``livt serve`` (API + worker, SQLite, the SQLite broker) on a fresh data dir;
- production: ``livt serve --no-worker`` and ``livt worker`` against PostgreSQL (a schema of its
  own at ``--postgres-url``, dropped afterwards) and Redis (``--redis-url``, its database emptied).

    PYTHONPATH=. python bench/service.py [--modes embedded,production] [--duration 5]
    PYTHONPATH=. python bench/service.py --smoke        # embedded, short, few jobs

Results: ``bench/results/service.{md,json}`` (``--out-dir``), with the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONCURRENCY = (1, 8, 32)
TINY_JOB = {
    "kind": "pretrain",
    "preset": "fashion-mnist-lt",
    "epochs": 1,
    "warmup_epochs": 0,
    "batch_size": 16,
    "max_steps_per_epoch": 50,
}


# --------------------------------------------------------------------------------------------
# load generators


@dataclass
class Load:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(url: str, connections: int, seconds: float, headers: dict[str, str]) -> Load:
    argv = ["wrk", "-t", str(min(connections, 2)), "-c", str(connections)]
    argv += ["-d", f"{max(1, round(seconds))}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (total and rps and p50 and p99):
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    errors = 0
    if bad := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(bad.group(1))
    if sock := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    ):
        errors += sum(int(g) for g in sock.groups())
    return Load(
        requests=int(total.group(1)),
        seconds=_ms(total.group(2) + total.group(3)) / 1e3,
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        errors=errors,
        tool="wrk",
    )


async def _client(
    host: str, port: int, request: bytes, until: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            latencies.append(time.perf_counter() - start)
            if not head.startswith((b"HTTP/1.1 2", b"HTTP/1.1 3")):
                errors[0] += 1
    finally:
        writer.close()


def asyncio_load(url: str, connections: int, seconds: float, headers: dict[str, str]) -> Load:
    """A keep-alive HTTP/1.1 client with ``connections`` connections (when wrk is missing).
    It runs in this Python process, so it measures less than wrk can at high rates."""
    parsed = httpx.URL(url)
    lines = [f"GET {parsed.raw_path.decode()} HTTP/1.1", f"Host: {parsed.host}:{parsed.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    latencies: list[float] = []
    errors = [0]

    async def main() -> float:
        start = time.perf_counter()
        until = start + seconds
        await asyncio.gather(
            *(
                _client(parsed.host, parsed.port, request, until, latencies, errors)
                for _ in range(connections)
            )
        )
        return time.perf_counter() - start

    elapsed = asyncio.run(main())
    ordered = sorted(latencies)
    return Load(
        requests=len(ordered),
        seconds=elapsed,
        rps=len(ordered) / elapsed,
        p50_ms=ordered[len(ordered) // 2] * 1e3,
        p99_ms=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        errors=errors[0],
        tool="asyncio",
    )


def load(url: str, connections: int, seconds: float, headers: dict[str, str]) -> Load:
    if shutil.which("wrk"):
        return wrk(url, connections, seconds, headers)
    return asyncio_load(url, connections, seconds, headers)


# --------------------------------------------------------------------------------------------
# servers


class Server:
    """A server process of its own process group; :meth:`stop` ends the group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self.handle = log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_http(self, url: str, timeout: float = 120.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.handle.close()


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVT_")}
    path = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))
    return {**env, "PYTHONPATH": path, **extra}


# --------------------------------------------------------------------------------------------
# data


@dataclass
class Seed:
    token: str
    job_id: str
    log_job_id: str
    deep_cursor: str
    jobs: int


def seed(database_url: str, jobs: int, log_lines: int) -> Seed:
    """A user with a token, ``jobs`` finished jobs (one a second apart, a real resolved config)
    and ``log_lines`` log lines of one of them."""
    from sqlalchemy import insert, text
    from sqlalchemy.orm import Session

    from api.services.jobs import _encode_cursor
    from api.services.users import create_token, get_or_create_user
    from livt_core.config import resolve_config
    from livt_service.db import create_db_engine, upgrade_database
    from livt_service.models import Job, LogLine, new_id

    upgrade_database(database_url)
    engine = create_db_engine(database_url)
    config = resolve_config("pretrain", "fashion-mnist-lt", {"epochs": 1}).model_dump(mode="json")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with Session(engine) as session:
        user = get_or_create_user(session, f"bench-{uuid.uuid4().hex[:6]}")
        token = create_token(session, user)
        session.commit()
        rows = [
            {
                "id": new_id("j"),
                "owner_id": user.id,
                "kind": "pretrain",
                "name": f"pretrain {config['model']} #{i}",
                "status": "succeeded",
                "spec": dict(TINY_JOB),
                "config": config,
                "preset": "fashion-mnist-lt",
                "dataset": config["data"]["dataset"],
                "model": config["model"],
                "queue": "default",
                "gpus": 1,
                "attempt": 1,
                "cancel_requested": False,
                "progress": {"epoch": 0, "step": 50, "steps_per_epoch": 50, "loss": 0.5},
                "result": {"kind": "pretrain", "final_loss": 0.5},
                "artifact_dir": f"/nonexistent/{i}",
                "created_at": start + timedelta(seconds=i),
                "started_at": start + timedelta(seconds=i),
                "finished_at": start + timedelta(seconds=i + 1),
                "updated_at": start + timedelta(seconds=i + 1),
            }
            for i in range(jobs)
        ]
        for offset in range(0, len(rows), 2000):
            session.execute(insert(Job), rows[offset : offset + 2000])
        newest = rows[-1]
        session.execute(
            insert(LogLine),
            [
                {
                    "job_id": newest["id"],
                    "seq": i,
                    "ts": start,
                    "level": "INFO",
                    "message": f"epoch 0 step {i}: loss 0.5 lr 1e-3",
                }
                for i in range(log_lines)
            ],
        )
        session.commit()
        if engine.dialect.name == "postgresql":
            session.execute(text("ANALYZE"))
            session.commit()
    engine.dispose()
    ordered = sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    deep = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9) - 1)]
    cursor = _encode_cursor(Job(id=deep["id"], created_at=deep["created_at"]))
    return Seed(token, rows[len(rows) // 2]["id"], newest["id"], cursor, jobs)


# --------------------------------------------------------------------------------------------
# measurements


def measure_endpoints(
    api: str, baseline: str, data: Seed, seconds: float, concurrency: tuple[int, ...]
) -> list[dict[str, Any]]:
    auth = {"Authorization": f"Bearer {data.token}"}
    endpoints = [
        ("GET /jobs/{id}", f"/jobs/{data.job_id}", auth, f"/jobs/{data.job_id}"),
        ("GET /jobs (first page)", "/jobs?limit=50", auth, None),
        ("GET /jobs (deep page)", f"/jobs?limit=50&cursor={data.deep_cursor}", auth, None),
        ("GET /jobs/{id}/logs", f"/jobs/{data.log_job_id}/logs?offset=900&limit=100", auth, None),
        ("GET /healthz", "/healthz", {}, "/healthz"),
    ]
    for name, path, headers, _ in endpoints:  # every request answers 200 before the load
        response = httpx.get(api + path, headers=headers, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")
    rows = []
    for connections in concurrency:
        for name, path, headers, base_path in endpoints:
            # A and B alternate at the same concurrency, so that load from elsewhere hits both
            real = load(api + path, connections, seconds, headers)
            row: dict[str, Any] = {"endpoint": name, "connections": connections, **asdict(real)}
            if base_path is not None:
                base = load(baseline + base_path, connections, seconds, {})
                row["baseline"] = asdict(base)
                row["rps_ratio"] = real.rps / base.rps if base.rps else None
                row["p99_ratio"] = real.p99_ms / base.p99_ms if base.p99_ms else None
            rows.append(row)
            print(_row_text(row), flush=True)
    return rows


@dataclass(frozen=True)
class Submitted:
    """Seconds from ``POST /jobs`` to its answer, to ``running`` and to the first progress."""

    job_id: str
    posted: float
    running: float
    progress: float


def submit_to_first_progress(client: httpx.Client, name: str, timeout: float) -> Submitted:
    """Submits a small job named ``name``, polls it every 10 ms until it shows progress, then
    cancels it and waits until it ended."""
    start = time.perf_counter()
    response = client.post("/jobs", json={**TINY_JOB, "name": name})
    response.raise_for_status()
    t_posted = time.perf_counter() - start
    job_id = response.json()["id"]
    t_running = t_progress = None
    job: dict[str, Any] = {}
    while time.perf_counter() - start < timeout:
        job = client.get(f"/jobs/{job_id}").json()
        now = time.perf_counter() - start
        if t_running is None and job["status"] != "queued":
            t_running = now
        if job["progress"] is not None:
            t_progress = now
            break
        if job["status"] in ("failed", "cancelled", "succeeded"):
            break
        time.sleep(0.01)
    if t_running is None or t_progress is None:
        raise RuntimeError(f"job {job_id} showed no progress: {job}")
    client.post(f"/jobs/{job_id}/cancel")
    while client.get(f"/jobs/{job_id}").json()["status"] not in ("cancelled", "succeeded"):
        time.sleep(0.1)
    return Submitted(job_id, t_posted, t_running, t_progress)


def measure_submits(
    api: str, token: str, repeats: int, *, warm_up: bool = True, timeout: float = 180.0
) -> dict[str, Any]:
    """Submit → running and submit → first progress of ``repeats`` small jobs, one at a time
    (each is cancelled once it showed progress). With ``warm_up`` a first job warms the worker
    up and is not counted."""
    headers = {"Authorization": f"Bearer {token}"}
    running: list[float] = []
    progress: list[float] = []
    posted: list[float] = []
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
        first = 0 if warm_up else 1
        for index in range(first, repeats + 1):
            timed = submit_to_first_progress(client, f"bench submit {index}", timeout)
            t_posted, t_running, t_progress = timed.posted, timed.running, timed.progress
            if index > 0:
                running.append(t_running)
                progress.append(t_progress)
                posted.append(t_posted)
            print(
                f"  submit {index}: answered {t_posted:.3f} s, running {t_running:.3f} s, "
                "first progress "
                f"{t_progress:.2f} s{' (warm-up)' if index == 0 else ''}",
                flush=True,
            )
    return {
        "repeats": repeats,
        "answered_s": posted,
        "answered_median_s": statistics.median(posted),
        "running_s": running,
        "first_progress_s": progress,
        "running_median_s": statistics.median(running),
        "first_progress_median_s": statistics.median(progress),
    }


def _row_text(row: dict[str, Any]) -> str:
    text = (
        f"  {row['endpoint']:<24} c={row['connections']:<3} {row['rps']:8.1f} req/s  "
        f"p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  errors {row['errors']}"
    )
    if "baseline" in row:
        base = row["baseline"]
        text += (
            f" | baseline {base['rps']:8.1f} req/s p99 {base['p99_ms']:7.2f} ms"
            f" → ×{row['rps_ratio']:.2f} req/s, p99 ×{row['p99_ratio']:.2f}"
        )
    return text


# --------------------------------------------------------------------------------------------
# modes


@contextmanager
def _postgres_schema(url: str) -> Iterator[str]:
    from sqlalchemy import create_engine, make_url, text

    schema = f"livt_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def run_mode(mode: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    print(f"== {mode}", flush=True)
    api_port, base_port = (
        (args.port, args.port + 1) if mode == "embedded" else (args.port + 2, args.port + 3)
    )
    data_dir = work / mode
    data_dir.mkdir()
    servers: list[Server] = []
    with contextmanager(_mode_database)(mode, args, data_dir) as (database_url, env):
        try:
            started = time.monotonic()
            data = seed(database_url, args.jobs, args.log_lines)
            print(f"  seeded {args.jobs} jobs in {time.monotonic() - started:.1f} s", flush=True)
            serve = [sys.executable, "-m", "livt.cli", "serve", "--port", str(api_port)]
            if mode == "production":
                serve.append("--no-worker")
            api = Server("api", serve, _env(env), data_dir / "api.log")
            servers.append(api)
            if mode == "production":
                worker = [sys.executable, "-m", "livt.cli", "worker", "--name", "bench"]
                servers.append(Server("worker", worker, _env(env), data_dir / "worker.log"))
            baseline = Server(
                "baseline",
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bench.service_baseline:app",
                    "--port",
                    str(base_port),
                ],
                _env({"BASELINE_DATABASE_URL": database_url}),
                data_dir / "baseline.log",
            )
            servers.append(baseline)
            api_url, base_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{base_port}"
            api.wait_http(api_url + "/healthz")
            baseline.wait_http(base_url + "/healthz")
            rows = measure_endpoints(api_url, base_url, data, args.duration, args.concurrency)
            submits = measure_submits(api_url, data.token, args.submits, warm_up=not args.smoke)
        finally:
            for server in reversed(servers):
                server.stop()
    return {
        "mode": mode,
        "jobs": data.jobs,
        "log_lines": args.log_lines,
        "rows": rows,
        "submits": submits,
        "warm_start": warm_start_on(_env(env)),
    }


def warm_start_on(env: dict[str, str]) -> bool:
    """Whether the service started with ``env`` forks its runs from the warm-start launcher
    (``LIVT_WARM_START``, on by default; ``bench/first_step.py`` compares both)."""
    from livt_service.settings import Settings

    value = env.get("LIVT_WARM_START")
    if value is None:
        return bool(Settings.model_fields["warm_start"].default)
    return Settings(warm_start=value).warm_start  # parsed as the service parses it


def _mode_database(
    mode: str, args: argparse.Namespace, data_dir: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    if mode == "embedded":
        url = f"sqlite:///{data_dir / 'livt.sqlite'}"
        yield url, {"LIVT_MODE": "embedded", "LIVT_DATA_DIR": str(data_dir)}
        return
    _flush_redis(args.redis_url)
    try:
        with _postgres_schema(args.postgres_url) as url:
            yield (
                url,
                {
                    "LIVT_MODE": "production",
                    "LIVT_DATA_DIR": str(data_dir),
                    "LIVT_DATABASE_URL": url,
                    "LIVT_BROKER_URL": args.redis_url,
                    "LIVT_ARTIFACT_DIR": str(data_dir / "artifacts"),
                },
            )
    finally:
        _flush_redis(args.redis_url)


# --------------------------------------------------------------------------------------------
# report


def _cpu() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    flags: list[str] = []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        text = cpuinfo.read_text()
        if found := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
            model = found.group(1).strip()
        if found := re.search(r"^flags\s*:\s*(.+)$", text, re.M):
            wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")
            flags = [f for f in wanted if f in found.group(1).split()]
    return {"model": model, "cores": os.cpu_count(), "isa": flags}


def summarise(report: dict[str, Any]) -> list[str]:
    lines = []
    for mode in report["modes"]:
        rows = mode["rows"]
        ratios = [r for r in rows if r["endpoint"] == "GET /jobs/{id}"]
        worst = min(r["rps_ratio"] for r in ratios)
        worst_p99 = max(r["p99_ratio"] for r in ratios)
        first = {r["connections"]: r for r in rows if r["endpoint"] == "GET /jobs (first page)"}
        deep = {r["connections"]: r for r in rows if r["endpoint"] == "GET /jobs (deep page)"}
        deep_ratio = {c: deep[c]["p50_ms"] / first[c]["p50_ms"] for c in first if c in deep}
        mode["summary"] = {
            "get_job_min_rps_ratio": worst,
            "get_job_max_p99_ratio": worst_p99,
            "deep_over_first_p50": deep_ratio,
        }
        submits = mode["submits"]
        lines.append(
            f"- **{mode['mode']}**: `GET /jobs/{{id}}` ≥ ×{worst:.2f} the baseline's req/s at "
            f"every concurrency (target ≥ 0.7), p99 ≤ ×{worst_p99:.2f} (target ≤ 2); deep page "
            "p50 / first page p50: "
            + ", ".join(f"×{v:.2f} at {c}" for c, v in deep_ratio.items())
            + f" (target ≤ 1.5); submit → running median {submits['running_median_s']:.3f} s"
            f", submit → first progress median {submits['first_progress_median_s']:.2f} s "
            f"({submits['repeats']} jobs, warm start "
            f"{'on' if mode.get('warm_start', True) else 'off'})"
        )
    return lines


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(report)
    (out_dir / "service.json").write_text(json.dumps(report, indent=2) + "\n")
    cpu = report["cpu"]
    md = [
        "# Service speed: the API against a minimal FastAPI + SQLAlchemy app",
        "",
        f"Command: `{report['command']}`  ",
        f"CPU: {cpu['model']}, {cpu['cores']} cores ({', '.join(cpu['isa']) or 'no ISA flags'});"
        f" load average {report['load_before']} before, {report['load_after']} after; "
        f"load generator: {report['tool']}, {report['duration_s']} s per measurement.",
        "",
        *summary,
        "",
        "| mode | endpoint | conn. | req/s | p50 ms | p99 ms | errors | baseline req/s | "
        "baseline p99 ms | × req/s | × p99 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in report["modes"]:
        for row in mode["rows"]:
            base = row.get("baseline")
            tail = (
                f"{base['rps']:.0f} | {base['p99_ms']:.2f} | {row['rps_ratio']:.2f} | "
                f"{row['p99_ratio']:.2f}"
                if base
                else "– | – | – | –"
            )
            md.append(
                f"| {mode['mode']} | `{row['endpoint']}` | {row['connections']} | "
                f"{row['rps']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                f"{row['errors']} | {tail} |"
            )
    md += [
        "",
        "| mode | POST /jobs answered (s) | submit → running (s) | submit → first progress (s) |",
        "|---|---|---|---|",
    ]
    for mode in report["modes"]:
        s = mode["submits"]
        md.append(
            f"| {mode['mode']} | median {s['answered_median_s']:.3f} "
            f"| median {s['running_median_s']:.3f} "
            f"({', '.join(f'{v:.3f}' for v in s['running_s'])}) | median "
            f"{s['first_progress_median_s']:.2f} ({', '.join(f'{v:.2f}' for v in s['first_progress_s'])}) |"
        )
    (out_dir / "service.md").write_text("\n".join(md) + "\n")
    print("\n".join(["", *summary]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="embedded,production")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs seeded")
    parser.add_argument("--log-lines", type=int, default=1000)
    parser.add_argument("--submits", type=int, default=5, help="jobs timed from submit")
    parser.add_argument("--port", type=int, default=18100, help="first of 4 ports used")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "LIVT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("LIVT_TEST_REDIS_URL", "redis://127.0.0.1:6379/4")
    )
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--smoke", action="store_true", help="embedded, 1 s per measurement, 1 submit, 300 jobs"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.modes, args.duration, args.concurrency = "embedded", 1.0, "1,8"
        args.jobs, args.log_lines, args.submits = 300, 1000, 1
    args.concurrency = tuple(int(c) for c in str(args.concurrency).split(","))
    command = "python bench/service.py " + " ".join(argv if argv is not None else sys.argv[1:])
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="livt-bench-service-") as tmp:
        modes = [run_mode(m.strip(), args, Path(tmp)) for m in args.modes.split(",")]
    report = {
        "command": command.strip(),
        "cpu": _cpu(),
        "tool": "wrk" if shutil.which("wrk") else "asyncio",
        "duration_s": args.duration,
        "load_before": load_before,
        "load_after": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "modes": modes,
    }
    write_report(report, args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
