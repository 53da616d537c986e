"""``livt demo``: the LiVT pipeline end to end on the bundled Fashion-MNIST-LT subset.

Starts ``livt serve`` in the background (or uses ``--url``), creates a token, submits MGP
pretraining → BFT fine-tuning with Bal-BCE → evaluation as one pipeline, shows each stage's live
progress and prints the many / medium / few / overall accuracy table. Everything after the token
goes through the REST API (:class:`livt.client.LivtClient`), exactly as any other client would.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from livt.client import Job, LivtClient, LivtClientError, LivtConnectionError

logger = logging.getLogger(__name__)

PRESET = "fashion-mnist-lt"
#: Seconds to wait for a freshly started server to answer ``/healthz``.
SERVER_START_TIMEOUT = 120.0
#: Seconds between two progress lines of the same stage (status changes show at once).
PROGRESS_EVERY = 2.0
STAGE_TITLES = {
    "pretrain": "MGP pretraining",
    "finetune": "BFT fine-tuning (Bal-BCE)",
    "evaluate": "evaluation",
}


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class DemoServer:
    """A ``livt serve`` started in the background; its output goes to a log file."""

    def __init__(self, host: str, port: int, log_path: Path) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "livt.cli", "serve", "--host", self.host]
        argv += ["--port", str(self.port)]
        with self.log_path.open("ab") as log:
            # its own session: the server outlives this command unless --exit is given
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with LivtClient(self.url, None, timeout=5.0) as client:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the server exited with status {self.proc.returncode}; see "
                        f"{self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    client.health()
                    return
                except LivtClientError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"the server did not answer within {timeout:g} s; see {self.log_path}"
                        ) from None
                    time.sleep(0.5)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 90.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("the server did not stop within %g s: killing it", timeout)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _answers(url: str) -> bool:
    with LivtClient(url, None, timeout=3.0) as client:
        try:
            client.health()
        except LivtClientError:
            return False
    return True


def _local_token() -> str:
    """A new token of the ``demo`` user in the local database (the server has migrated it)."""
    from api.services.users import create_token, get_or_create_user
    from livt_service.db import session_scope

    with session_scope() as session:
        user = get_or_create_user(session, "demo")
        return create_token(session, user)


def pipeline_stages(presets: dict[str, Any], epochs_scale: float) -> list[dict[str, Any]]:
    """The three stage specs, with the preset's epochs (and warm-up, in proportion) scaled."""
    configs = next(
        (p["configs"] for p in presets.get("items", []) if p.get("name") == PRESET), None
    )
    if configs is None:
        raise RuntimeError(f"the server has no preset {PRESET!r}")

    def scaled(kind: str) -> dict[str, Any]:
        epochs = int(configs[kind]["epochs"])
        new_epochs = max(1, round(epochs * epochs_scale))
        warmup = float(configs[kind]["warmup_epochs"]) * new_epochs / epochs
        return {"epochs": new_epochs, "warmup_epochs": round(warmup, 3)}

    return [
        {
            "kind": "pretrain",
            "preset": PRESET,
            "name": "demo: MGP pretraining",
            **scaled("pretrain"),
        },
        {
            "kind": "finetune",
            "preset": PRESET,
            "name": "demo: BFT fine-tuning with Bal-BCE",
            "loss": "bal_bce",
            **scaled("finetune"),
        },
        {"kind": "evaluate", "preset": PRESET, "name": "demo: evaluation", "split": "test"},
    ]


def _progress_text(job: Job) -> str:
    p = job.progress
    if job.status != "running" or p is None or p.epochs is None:
        return ""
    parts = [f"epoch {(p.epoch or 0) + 1}/{p.epochs}"]
    if p.steps:
        parts.append(f"step {(p.step or 0) + 1}/{p.steps}")
    if p.loss is not None:
        parts.append(f"loss {p.loss:.4f}")
    if p.images_per_sec:
        parts.append(f"{p.images_per_sec:.0f} img/s")
    if p.eta_seconds is not None:
        parts.append(f"eta {p.eta_seconds:.0f} s")
    return "  ".join(parts)


def follow_pipeline(client: LivtClient, pipeline_id: str, timeout: float) -> list[Job]:
    """Prints each stage's status changes and (throttled) progress until every stage is
    finished; returns the final jobs in stage order."""
    deadline = time.monotonic() + timeout
    seen: dict[str, tuple[str, int]] = {}
    last_line: dict[str, float] = {}
    while True:
        jobs = client.pipeline(pipeline_id).jobs
        for index, job in enumerate(jobs):
            title = f"[{index + 1}/{len(jobs)} {STAGE_TITLES.get(job.kind, job.kind)}]"
            key = (job.status, job.attempt)
            now = time.monotonic()
            if seen.get(job.id) != key:
                seen[job.id] = key
                last_line[job.id] = now
                extra = f" (attempt {job.attempt})" if job.attempt > 1 else ""
                _say(f"{title} {job.id} {job.status}{extra}")
                if job.failure is not None:
                    _say(f"{title} {job.failure.reason}: {job.failure.message}")
            elif job.status == "running" and now - last_line.get(job.id, 0.0) >= PROGRESS_EVERY:
                text = _progress_text(job)
                if text:
                    last_line[job.id] = now
                    _say(f"{title} {text}")
        if all(job.finished for job in jobs):
            return jobs
        if time.monotonic() > deadline:
            raise TimeoutError(f"pipeline {pipeline_id} did not finish within {timeout:g} s")
        time.sleep(1.0)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def result_table(job: Job) -> str:
    """The many / medium / few / overall table of a finished evaluate (or finetune) job."""
    result = job.result
    if result is None:
        return "(no result)"
    sizes = result.group_sizes or {}
    rows = [("group", "classes", "top-1 accuracy (%)")]
    for group in ("many", "medium", "few"):
        rows.append((group, str(sizes.get(group, "-")), _cell(getattr(result, group))))
    rows.append(("overall", str(len(result.class_counts) or "-"), _cell(result.overall)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{row[0].ljust(widths[0])}  {row[1].rjust(widths[1])}  {row[2].rjust(widths[2])}"
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    footer = [f"top-5 {_cell(result.top5)} %", f"ECE {_cell(result.ece)} %"]
    split = f"split: {result.split}" if result.split else ""
    return "\n".join([*lines, "", "  ".join(x for x in [split, *footer] if x)])


def run_demo(
    *,
    url: str | None,
    token: str | None,
    host: str,
    port: int,
    epochs_scale: float,
    exit_after: bool,
    timeout: float,
) -> int:
    """The ``livt demo`` command; returns the exit status (0 when every stage succeeded)."""
    from livt_service.settings import get_settings

    server: DemoServer | None = None
    base_url = url.rstrip("/") if url else f"http://{host}:{port}"
    if url is None and token is None and _answers(base_url):
        _say(f"using the LiVT service already running at {base_url}")
    elif url is None:
        settings = get_settings()
        server = DemoServer(host, port, settings.data_dir / "demo-server.log")
        _say(f"starting the LiVT service at {base_url} (log: {server.log_path}) ...")
        server.start()
    elif token is None:
        _say("--url needs --token: create one on the server's machine with `livt token create`")
        return 2
    status = 1
    try:
        if server is not None:
            server.wait_ready()
        token = token or _local_token()
        with LivtClient(base_url, token) as client:
            stages = pipeline_stages(client.presets(), epochs_scale)
            summary = ", ".join(f"{s['kind']} {s.get('epochs', '')}".strip() for s in stages)
            _say(f"submitting the pipeline on {PRESET}: {summary}")
            pipeline = client.submit_pipeline(stages, name="LiVT demo")
            _say(f"pipeline {pipeline.id}: {', '.join(job.id for job in pipeline.jobs)}")
            jobs = follow_pipeline(client, pipeline.id, timeout)
        _say()
        if all(job.status == "succeeded" for job in jobs):
            _say(f"LiVT on {PRESET} (MGP → BFT with Bal-BCE), {jobs[-1].name}:")
            _say(result_table(jobs[-1]))
            status = 0
        else:
            for job in jobs:
                if job.status != "succeeded":
                    why = f": {job.failure.reason}: {job.failure.message}" if job.failure else ""
                    _say(f"stage {job.kind} {job.id} {job.status}{why}")
        _say()
        _say(f"dashboard: {base_url}/?token={token}")
    except LivtConnectionError as exc:
        _say(f"cannot reach the service: {exc}")
    except (LivtClientError, RuntimeError, TimeoutError) as exc:
        _say(f"demo failed: {exc}")
    except KeyboardInterrupt:
        _say("interrupted")
        status = 130
    finally:
        if server is not None and exit_after:
            _say("stopping the service ...")
            server.stop()
        elif server is not None and server.proc is not None:
            _say(
                f"the service keeps running (pid {server.proc.pid}, log {server.log_path}); "
                f"stop it with: kill -INT {server.proc.pid}"
            )
    return status
