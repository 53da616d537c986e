"""Runs of the engine in this process or a pool of fresh processes, for the benchmarks that
train without the service (``bench/owndata_quality.py``): dependencies between runs, resuming
(a run whose ``results.json`` exists is skipped, an interrupted one continues from its
``checkpoint-last.pth``) and the wall / CPU time of each run."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import resource
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from livt_core.config import resolve_config
from livt_core.engine import run

logger = logging.getLogger("bench.runs")


def same_config(config: BaseModel, on_disk: dict[str, Any]) -> bool:
    """Whether a run directory's ``config.json`` describes ``config``. Both are compared with
    every default filled in, so a setting added to the library later (with a default) does not
    orphan finished runs; ``recipe_notes`` only explain the settings and are not compared."""
    try:
        stored = type(config).model_validate(on_disk)
    except ValueError:  # pydantic's ValidationError included
        return False
    ignore = {"recipe_notes"}
    return stored.model_dump(mode="json", exclude=ignore) == config.model_dump(
        mode="json", exclude=ignore
    )


def _cpu_seconds() -> float:
    """CPU time of this process and its ended children (the run's loader workers)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_once(
    kind: str, overrides: dict[str, Any], out: Path, profile: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Runs one stage into ``out`` unless its ``results.json`` exists; returns the result and
    the wall time (``bench_wall.json``, written by this script next to the engine's files; for a
    resumed run only the time of the invocation that finished it). With a dataset ``profile``
    and no preset, the config is the ``auto`` recipe's with ``overrides`` on top."""
    results_file = out / "results.json"
    wall_file = out / "bench_wall.json"
    config = resolve_config(kind, None, overrides, profile=profile)
    config_file = out / "config.json"
    if config_file.is_file():
        if not same_config(config, json.loads(config_file.read_text(encoding="utf-8"))):
            raise SystemExit(
                f"{out} holds a run with another configuration (budget or recipe changed); "
                "pass a new --work-dir or delete that directory"
            )
    if results_file.is_file():
        logger.info("skip %s: %s exists", out.name, results_file)
    else:
        resumed = (out / "checkpoint-last.pth").is_file()
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        outcome = run(config, out, resume="auto")
        if outcome.status != "succeeded":
            raise SystemExit(f"run {out} ended with status {outcome.status}")
        wall = {
            "seconds": time.perf_counter() - started,
            "cpu_seconds": _cpu_seconds() - cpu_started,
            "resumed": resumed,
            "load_average": list(os.getloadavg()),
        }
        wall_file.write_text(json.dumps(wall) + "\n")
    result = json.loads(results_file.read_text(encoding="utf-8"))
    wall = json.loads(wall_file.read_text()) if wall_file.is_file() else {"seconds": None}
    return {
        "result": result,
        "wall_s": wall["seconds"],
        "cpu_s": wall.get("cpu_seconds"),
        "resumed": wall.get("resumed", False),
        "load_average": wall.get("load_average"),
    }


def _run_in_child(
    kind: str,
    overrides: dict[str, Any],
    out: Path,
    threads: int,
    profile: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``run_once`` in a pool process, with the benchmark's thread and logging settings."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("livt_core.engine.loop").setLevel(logging.WARNING)
    return run_once(kind, overrides, out, profile)


@dataclass(frozen=True)
class Job:
    """One training run of the benchmark; ``after`` names the run it starts from (MGP);
    ``profile``: the dataset profile the ``auto`` recipe derives the config from (None: the
    schema's defaults under ``overrides``)."""

    kind: str
    overrides: dict[str, Any]
    out: Path
    after: str | None = None
    profile: dict[str, Any] | None = None


def run_all(jobs: dict[str, Job], parallel: int, threads: int) -> dict[str, dict[str, Any]]:
    """Runs every job, each after the job it depends on: one after another in this process
    when ``parallel`` is 1, else in a pool of that many fresh (spawned) processes, starting a
    job as soon as its MGP run has finished so that no process waits for a stage to end.
    Stops at the first failure; finished runs keep their ``results.json`` for the next
    invocation."""
    for name, job in jobs.items():
        if job.after is not None and job.after not in jobs:
            raise ValueError(f"{name} depends on {job.after}, which is not a job")
    results: dict[str, dict[str, Any]] = {}
    pending = dict(jobs)

    def ready() -> list[str]:
        return [n for n, j in pending.items() if j.after is None or j.after in results]

    if parallel <= 1:
        while pending:
            name = ready()[0]
            job = pending.pop(name)
            results[name] = run_once(job.kind, job.overrides, job.out, job.profile)
        return results
    pool = ProcessPoolExecutor(
        max_workers=parallel, mp_context=multiprocessing.get_context("spawn")
    )
    running: dict[Future[dict[str, Any]], str] = {}
    try:
        while pending or running:
            for name in ready():
                job = pending.pop(name)
                future = pool.submit(
                    _run_in_child, job.kind, job.overrides, job.out, threads, job.profile
                )
                running[future] = name
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                results[running.pop(future)] = future.result()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results
