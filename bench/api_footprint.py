"""API process footprint: start-up time and idle memory of the FastAPI app.

Starts ``uvicorn api.main:create_app`` (embedded mode, a fresh data dir) in a child process of a
given source tree, measures the seconds until ``GET /healthz`` answers, answers one
authenticated request (``GET /presets``: config resolution, so the validation stack is loaded),
waits until the process is idle and reads its resident memory (``VmRSS``) and whether torch,
timm or torchvision are loaded. Each repeat is a fresh process; the table gives the median.

    python bench/api_footprint.py [--repo DIR] [--repeats 3] [--label NAME] [--out-dir bench/results]

``--repo`` is the source tree to measure (default: this one), so that an older commit checked
out elsewhere (``git worktree add /tmp/before 41d2a26``) is measured by the same script.
Linux only (reads ``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]

#: Run in the measured process once it is idle: which heavy modules it has loaded.
_PROBE = (
    "import sys\nprint(','.join(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))\n"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _token(repo: Path, env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "livt.cli", "token", "create", "--name", "bench"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1].split()[-1]


def measure_once(repo: Path) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory(prefix="livt-bench-api-") as data_dir:
        env = dict(
            os.environ,
            PYTHONPATH=str(repo),
            LIVT_DATA_DIR=data_dir,
            OMP_NUM_THREADS="1",
        )
        env.pop("LIVT_DATABASE_URL", None)
        subprocess.run(
            [sys.executable, "-m", "livt.cli", "db", "upgrade"],
            cwd=repo,
            env=env,
            capture_output=True,
            timeout=120,
            check=True,
        )
        token = _token(repo, env)
        port = _free_port()
        # the probe runs inside the server process, after it served the requests
        code = (
            "import threading, uvicorn, sys, time, pathlib\n"
            f"probe = pathlib.Path({data_dir!r}) / 'probe'\n"
            "def watch():\n"
            "    while not probe.exists(): time.sleep(0.05)\n"
            f"    exec({_PROBE!r})\n"
            "    sys.stdout.flush()\n"
            "threading.Thread(target=watch, daemon=True).start()\n"
            f"uvicorn.run('api.main:create_app', factory=True, host='127.0.0.1', port={port},"
            " log_level='warning')\n"
        )
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = started + 300
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the API process did not start (exited or 300 s passed)")
                try:
                    if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
            startup = time.monotonic() - started
            headers = {"Authorization": f"Bearer {token}"}
            httpx.get(f"{url}/presets", headers=headers, timeout=120).raise_for_status()
            httpx.get(f"{url}/jobs", headers=headers, timeout=60).raise_for_status()
            time.sleep(2.0)
            rss = _rss_mib(proc.pid)
            (Path(data_dir) / "probe").touch()
            assert proc.stdout is not None
            loaded = proc.stdout.readline().strip()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return {"startup_s": startup, "idle_rss_mib": rss, "heavy_modules": loaded or "none"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="source tree to measure")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default=None, help="name of the measured tree in the table")
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    repo = args.repo.resolve()
    label = (
        args.label
        or subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    runs = [measure_once(repo) for _ in range(args.repeats)]
    summary = {
        "label": label,
        "repeats": args.repeats,
        "startup_s": statistics.median(r["startup_s"] for r in runs),
        "idle_rss_mib": statistics.median(r["idle_rss_mib"] for r in runs),
        "heavy_modules": runs[-1]["heavy_modules"],
        "runs": runs,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"api_footprint-{label}"
    (args.out_dir / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = (
        "| tree | start-up to /healthz (s) | idle RSS (MiB) | torch/timm/torchvision loaded |\n"
        "|---|---|---|---|\n"
        f"| {label} | {summary['startup_s']:.2f} | {summary['idle_rss_mib']:.0f} | "
        f"{summary['heavy_modules']} |\n"
    )
    (args.out_dir / f"{stem}.md").write_text(table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
