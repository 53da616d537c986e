"""Time to first step: submit → first progress of a small job, started warm and started cold.

Two embedded services (``livt serve``: API + worker, SQLite, the SQLite broker) run side by side
on fresh data dirs: one with ``LIVT_WARM_START=1`` (its worker forks each single-process run
from its launcher, which has torch and the engine imported: ``worker.zygote``), one with
``LIVT_WARM_START=0`` (every run is a fresh ``python -m livt_core``). After one warm-up job on
each (not counted), the script submits the same small job alternately to each, one at a time,
times submit → running and submit → first progress (as ``GET /jobs/{id}`` shows them), cancels
the job once it showed progress, and reads from the job's log how its training process started
(``training process N started (warm start, …)``). It prints the medians and the cold / warm
ratio of submit → first progress.

    PYTHONPATH=. python bench/first_step.py [--repeats 3] [--port 18200]

Results: ``bench/results/first_step.{md,json}`` (``--out-dir``), with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.service import TINY_JOB, Server, _cpu, _env, submit_to_first_progress  # noqa: E402

_STARTED = re.compile(r"training process \d+ started.*\((warm|cold) start, ([\d.]+) s\)")


def _token(database_url: str) -> str:
    """A user with a token in a freshly migrated database."""
    from sqlalchemy.orm import Session

    from api.services.users import create_token, get_or_create_user
    from livt_service.db import create_db_engine, upgrade_database

    upgrade_database(database_url)
    engine = create_db_engine(database_url)
    with Session(engine) as session:
        user = get_or_create_user(session, f"bench-{uuid.uuid4().hex[:6]}")
        token = create_token(session, user)
        session.commit()
    engine.dispose()
    return token


def _wait_launcher(log: Path, timeout: float) -> float | None:
    """Seconds until the worker's log says its launcher is ready (None: it did not)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if re.search(r"warm-start launcher \d+ ready", log.read_text(errors="replace")):
            return time.monotonic() - start
        time.sleep(0.2)
    return None


def submit_once(client: httpx.Client, index: int, timeout: float = 180.0) -> dict[str, Any]:
    """One job from submit to first progress (then cancelled); how its process started."""
    timed = submit_to_first_progress(client, f"bench first step {index}", timeout)
    job_id, t_running, t_progress = timed.job_id, timed.running, timed.progress
    lines = client.get(f"/jobs/{job_id}/logs", params={"limit": 1000}).json()
    messages = [line["message"] for line in lines.get("lines", lines.get("items", []))]
    how, spawn = "unknown", None
    for message in messages:
        if found := _STARTED.search(message):
            how, spawn = found.group(1), float(found.group(2))
            break
    return {
        "running_s": t_running,
        "first_progress_s": t_progress,
        "start": how,
        "spawn_s": spawn,
        "cold_reason": next((m for m in messages if "training process cold:" in m), None),
    }


def _summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    progress = [s["first_progress_s"] for s in samples]
    return {
        "samples": samples,
        "first_progress_median_s": statistics.median(progress),
        "running_median_s": statistics.median(s["running_s"] for s in samples),
        "started": sorted({s["start"] for s in samples}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed jobs per setting")
    parser.add_argument("--port", type=int, default=18200, help="first of 2 ports used")
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--smoke", action="store_true", help="one timed job per setting")
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats = 1
    command = "python bench/first_step.py " + " ".join(argv if argv is not None else sys.argv[1:])
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    settings = {"warm": "1", "cold": "0"}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in settings}
    launcher_ready_s = None
    with tempfile.TemporaryDirectory(prefix="livt-bench-first-step-") as tmp:
        servers: dict[str, Server] = {}
        clients: dict[str, httpx.Client] = {}
        try:
            for offset, (name, value) in enumerate(settings.items()):
                data_dir = Path(tmp) / name
                data_dir.mkdir()
                token = _token(f"sqlite:///{data_dir / 'livt.sqlite'}")
                port = args.port + offset
                env = {
                    "LIVT_MODE": "embedded",
                    "LIVT_DATA_DIR": str(data_dir),
                    "LIVT_WARM_START": value,
                }
                serve = [sys.executable, "-m", "livt.cli", "serve", "--port", str(port)]
                servers[name] = Server(name, serve, _env(env), data_dir / "serve.log")
                url = f"http://127.0.0.1:{port}"
                servers[name].wait_http(url + "/healthz")
                clients[name] = httpx.Client(
                    base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
                )
            launcher_ready_s = _wait_launcher(servers["warm"].log, 120.0)
            print(f"warm-start launcher ready: {launcher_ready_s}", flush=True)
            for name, client in clients.items():
                warm_up = submit_once(client, 0)
                print(f"  {name} warm-up: {warm_up}", flush=True)
            for index in range(1, args.repeats + 1):
                for name, client in clients.items():
                    sample = submit_once(client, index)
                    results[name].append(sample)
                    print(
                        f"  {name} {index}: running {sample['running_s']:.3f} s, first progress "
                        f"{sample['first_progress_s']:.2f} s ({sample['start']} start)",
                        flush=True,
                    )
        finally:
            for client in clients.values():
                client.close()
            for server in servers.values():
                server.stop()
    report = {
        "command": command.strip(),
        "cpu": _cpu(),
        "load_before": load_before,
        "load_after": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "launcher_ready_s": launcher_ready_s,
        "job": TINY_JOB,
        "rows": results,
        **{name: _summary(samples) for name, samples in results.items()},
    }
    warm, cold = report["warm"], report["cold"]
    report["cold_over_warm"] = cold["first_progress_median_s"] / warm["first_progress_median_s"]
    summary = (
        f"submit → first progress median: warm {warm['first_progress_median_s']:.2f} s, cold "
        f"{cold['first_progress_median_s']:.2f} s: cold / warm ×{report['cold_over_warm']:.2f} "
        f"({args.repeats} jobs each, interleaved; target warm ≤ 2 s on an idle machine)"
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "first_step.json").write_text(json.dumps(report, indent=2) + "\n")
    cpu = report["cpu"]
    md = [
        "# Time to first step: warm and cold starts of the training process",
        "",
        f"Command: `{report['command']}`  ",
        f"CPU: {cpu['model']}, {cpu['cores']} cores ({', '.join(cpu['isa']) or 'no ISA flags'});"
        f" load average {report['load_before']} before, {report['load_after']} after.",
        "",
        f"- {summary}",
        "",
        "| start | submit → running (s) | submit → first progress (s) | process started in (s) |",
        "|---|---|---|---|",
    ]
    for name in settings:
        samples = report[name]["samples"]
        progress = ", ".join(f"{s['first_progress_s']:.2f}" for s in samples)
        spawn = ", ".join(f"{s['spawn_s']:.3f}" for s in samples if s["spawn_s"] is not None)
        md.append(
            f"| {name} ({', '.join(report[name]['started'])}) | median "
            f"{report[name]['running_median_s']:.3f} | median "
            f"{report[name]['first_progress_median_s']:.2f} "
            f"({progress}) | {spawn} |"
        )
    (args.out_dir / "first_step.md").write_text("\n".join(md) + "\n")
    print("\n" + summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
