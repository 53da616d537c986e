"""How much database and broker traffic one running job and one worker make, and how many flush
transactions the database takes per second: the figures behind ``docs/scaling.md``.

Three measurements in one run, against the database of ``--database-url`` (default: a SQLite file
in a temporary folder; pass PostgreSQL for the figure that matters):

1. **A real job**: a tiny pretrain run (``JobRunner``, the worker's own supervisor, the run in a
   child process) while every statement the worker process sends is counted by kind, and the
   rows its transactions insert or update. Reported per second of the run.
2. **The janitor**: statements of one janitor round (heartbeat, lost-job scan, stranded-job scan),
   which every worker runs every ``LIVT_HEARTBEAT_SECONDS``.
3. **The ceiling**: ``--threads`` threads calling ``state.flush`` (a progress update, 2 log lines,
   heartbeat: what a running job writes each second) on as many running jobs as fast as they can
   for ``--seconds``; flush transactions per second.

The ratio ceiling / (flushes per running job per second) is how many running jobs that database
carries at this write pattern on this machine. Nothing is assumed: every figure is counted here.

    python bench/db_load.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _statement_kind(statement: str) -> str:
    return statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"


class Counting:
    """Counts the statements (by kind) and rows written on an engine."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.engine = engine
        self.kinds: Counter[str] = Counter()
        self.rows = 0
        self.commits = 0
        self._lock = threading.Lock()
        event.listen(engine, "after_cursor_execute", self._after)
        event.listen(engine, "commit", self._commit)

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        kind = _statement_kind(statement)
        with self._lock:
            self.kinds[kind] += 1
            if kind in ("INSERT", "UPDATE", "DELETE") and cursor.rowcount and cursor.rowcount > 0:
                self.rows += cursor.rowcount

    def _commit(self, conn) -> None:
        with self._lock:
            self.commits += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"statements": dict(self.kinds), "rows": self.rows, "commits": self.commits}

    def reset(self) -> None:
        with self._lock:
            self.kinds.clear()
            self.rows = 0
            self.commits = 0


def _make_job(session, user_id: int, settings, epochs: int, steps: int, status: str = "queued"):
    from livt_core.config import resolve_config
    from livt_service.models import Job, new_id

    config = resolve_config(
        "pretrain",
        "fashion-mnist-lt",
        {
            "epochs": epochs,
            "warmup_epochs": 0,
            "max_steps_per_epoch": steps,
            "batch_size": 16,
            "device": "cpu",
            "data": {"num_workers": 0},
        },
    ).model_dump(mode="json")
    job_id = new_id("j")
    job = Job(
        id=job_id,
        owner_id=user_id,
        kind="pretrain",
        name="bench",
        status=status,
        spec={},
        config=config,
        dataset="fashion-mnist-lt",
        model=config["model"],
        queue="default",
        gpus=1,
        nodes=1,
        attempt=1,
        cancel_requested=False,
        artifact_dir=str(settings.job_artifact_dir(job_id)),
    )
    session.add(job)
    return job_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="default: SQLite in a temporary folder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="livt-dbload-"))
    url = args.database_url or f"sqlite:///{work / 'livt.sqlite'}"
    schema = None
    if url.startswith("postgresql"):
        from sqlalchemy import create_engine, make_url, text

        schema = f"livt_bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = (
            make_url(url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    os.environ.update(
        LIVT_MODE="embedded",
        LIVT_DATA_DIR=str(work / "data"),
        LIVT_DATABASE_URL=url,
        OMP_NUM_THREADS="1",
    )
    try:
        figures = _measure(url, args)
    finally:
        from livt_service.db import dispose_engines

        dispose_engines()
        if schema is not None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin.dispose()
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def _measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from api.services.users import get_or_create_user
    from livt_service import state
    from livt_service.db import get_engine, session_scope, upgrade_database
    from livt_service.settings import get_settings
    from livt_service.state import FlushBatch, LogRecord
    from worker.context import WorkerContext
    from worker.janitor import Janitor
    from worker.runner import JobRunner

    upgrade_database(url)
    settings = get_settings()
    with session_scope() as session:
        user = get_or_create_user(session, "bench")
        user_id = user.id
        job_id = _make_job(session, user_id, settings, args.epochs, args.steps)
    counter = Counting(get_engine(url))

    # 1. one real job, supervised as a worker does
    claim = state.claim_job(job_id, "bench@host", "cpu")
    assert claim is not None
    counter.reset()
    started = time.monotonic()
    status = JobRunner(claim, devices=[], heartbeat_seconds=settings.heartbeat_seconds).run()
    seconds = time.monotonic() - started
    job = counter.snapshot()
    per_second = {
        "statements": sum(job["statements"].values()) / seconds,
        "commits": job["commits"] / seconds,
        "rows_written": job["rows"] / seconds,
    }

    # 2. one janitor round
    context = WorkerContext(worker_id="bench@host", queues=["default"], devices=[])
    state.register_worker(context.worker_id, context.queues, 0)
    janitor = Janitor(context, interval=settings.heartbeat_seconds, lost_after=60)
    janitor.tick()  # warm
    counter.reset()
    rounds = 5
    for _ in range(rounds):
        janitor.tick()
    tick = counter.snapshot()

    # 3. the flush ceiling: N running jobs flushing as fast as they can
    claims = []
    with session_scope() as session:
        ids = [_make_job(session, user_id, settings, 1, 1) for _ in range(args.threads)]
    for i, jid in enumerate(ids):
        claims.append(state.claim_job(jid, f"bench-{i}@host", "cpu"))
    counter.reset()
    stop = time.monotonic() + args.seconds
    done = [0] * len(claims)

    def flusher(index: int) -> None:
        claim = claims[index]
        step = 0
        while time.monotonic() < stop:
            step += 1
            batch = FlushBatch(
                progress={"epoch": 0, "step": step, "loss": 0.5},
                logs=[LogRecord(f"step {step}"), LogRecord(f"step {step} done")],
            )
            state.flush(claim, batch)
            done[index] += 1

    threads = [threading.Thread(target=flusher, args=(i,)) for i in range(len(claims))]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ceiling_seconds = time.monotonic() - began
    flushes_per_second = sum(done) / ceiling_seconds
    job_flushes = per_second["commits"]
    return {
        "database": url.split(":", 1)[0],
        "job": {
            "status": status,
            "seconds": round(seconds, 2),
            "epochs": args.epochs,
            "steps_per_epoch": args.steps,
            "statements": job["statements"],
            "commits": job["commits"],
            "rows_written": job["rows"],
            "per_second": {k: round(v, 2) for k, v in per_second.items()},
        },
        "janitor_round": {
            "statements": {k: v / rounds for k, v in tick["statements"].items()},
            "commits": tick["commits"] / rounds,
        },
        "flush_ceiling": {
            "threads": len(claims),
            "seconds": round(ceiling_seconds, 2),
            "flushes_per_second": round(flushes_per_second, 1),
        },
        "running_jobs_per_database": round(flushes_per_second / max(job_flushes, 1e-9)),
    }


if __name__ == "__main__":
    raise SystemExit(main())
