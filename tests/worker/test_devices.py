"""GPU hand-out with a fake device list (this machine has no GPU): each job gets exactly its GPUs
in ``CUDA_VISIBLE_DEVICES``, jobs run side by side while GPUs are free, none is handed out twice.

The end-to-end test runs a real ``livt worker --gpus 3`` (ids ``0,1,2`` that no driver backs; the
runs see ``CUDA_VISIBLE_DEVICES`` but no CUDA, so they train on the CPU). On a GPU host the
same test exercises real devices; it does not need one.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
from sqlalchemy import create_engine, select

from livt_service.models import Worker
from tests.live_server import TINY_FINETUNE, LiveServer, server_env
from tests.worker.test_support import log_messages, wait_status, wait_until
from worker.devices import DevicePool, device_env, devices_record, gpus_to_take

# --------------------------------------------------------------------------------------------
# the pool


def test_each_job_gets_exactly_its_gpus_and_waits_for_busy_ones() -> None:
    pool = DevicePool(["0", "1", "2"], owner="w@host")
    first = pool.acquire(2)
    assert first == ["0", "1"] and pool.free == ["2"]
    with pytest.raises(TimeoutError):
        pool.acquire(2, timeout=0.05)  # only one is free: it waits, and hands out nothing
    assert pool.free == ["2"]
    got: list[list[str]] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(2)))
    waiter.start()
    time.sleep(0.1)
    assert not got  # still waiting
    pool.release(first)
    waiter.join(timeout=5)
    assert got == [["0", "1"]] and pool.free == ["2"]


def test_more_gpus_than_the_worker_has_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="asks for 4 GPUs but worker w@host has 3"):
        DevicePool(["0", "1", "2"], owner="w@host").acquire(4)


def test_cpu_jobs_and_cpu_workers_take_no_gpu() -> None:
    pool = DevicePool(["0", "1"])
    assert pool.acquire(gpus_to_take(2, cpu_only=True)) == []
    assert pool.free == ["0", "1"]
    assert DevicePool([]).acquire(gpus_to_take(4, cpu_only=False)) == []
    assert devices_record([]) == "cpu" and devices_record(["1", "3"]) == "1,3"
    assert device_env([]) == {"CUDA_VISIBLE_DEVICES": ""}
    assert device_env(["1", "3"]) == {"CUDA_VISIBLE_DEVICES": "1,3"}
    assert device_env(None) == {}


def test_a_gpu_is_never_handed_to_two_jobs_at_once() -> None:
    pool = DevicePool([str(i) for i in range(4)])
    held: set[str] = set()
    lock = threading.Lock()
    problems: list[str] = []
    peak = [0]

    def job(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(30):
            taken = pool.acquire(rng.randint(1, 4))
            with lock:
                if held & set(taken):
                    problems.append(f"{taken} handed out while held: {sorted(held)}")
                held.update(taken)
                peak[0] = max(peak[0], len(held))
            time.sleep(rng.random() / 1000)
            with lock:
                held.difference_update(taken)
            pool.release(taken)

    threads = [threading.Thread(target=job, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not problems
    assert peak[0] <= 4
    assert sorted(pool.free) == ["0", "1", "2", "3"]


# --------------------------------------------------------------------------------------------
# a real worker with three fake GPUs

_STARTED = re.compile(r"started on worker \S+ \((?:GPUs (?P<gpus>[\d,]+)|CPU)\)")
_VISIBLE = re.compile(r"training process \d+ started \(CUDA_VISIBLE_DEVICES=(?P<ids>[\d,]*)\)")


@pytest.fixture
def gpu_worker(tmp_path) -> Iterator[tuple[LiveServer, httpx.Client]]:
    """``livt serve --no-worker`` and a ``livt worker --gpus 3`` (one thread per GPU)."""
    server = LiveServer.start(tmp_path / "data", worker=False)
    env = server_env(server.data_dir)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "livt.cli", "worker", "--name", "gpuw", "--gpus", "3"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    token = server.create_token("gina")
    http = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    try:
        yield server, http
    finally:
        http.close()
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
        log.close()
        server.stop()


@pytest.mark.slow
def test_a_worker_runs_jobs_side_by_side_on_their_own_gpus(gpu_worker) -> None:
    server, http = gpu_worker
    engine = create_engine(f"sqlite:///{server.data_dir / 'livt.sqlite'}")
    try:

        def registered() -> bool:
            with engine.connect() as connection:
                return bool(connection.execute(select(Worker.gpus)).scalars().all() == [3])

        wait_until(registered, timeout=90, what="the worker with 3 GPUs to register")
    finally:
        engine.dispose()
    longer = {**TINY_FINETUNE, "epochs": 3, "max_steps_per_epoch": 3}
    short = {**TINY_FINETUNE, "epochs": 1, "warmup_epochs": 0, "max_steps_per_epoch": 2}
    specs = {
        "two": {**longer, "resources": {"gpus": 2}},
        "one": {**short, "resources": {"gpus": 1}},
        "two-more": {**short, "resources": {"gpus": 2}},
        "cpu": {**short, "device": "cpu"},
    }
    ids = {}
    for name, spec in specs.items():
        response = http.post("/jobs", json={**spec, "name": name})
        assert response.status_code == 201, response.text
        ids[name] = response.json()["id"]
    jobs = {n: wait_status(http, i, {"succeeded", "failed"}, timeout=240) for n, i in ids.items()}
    assert {n: j["status"] for n, j in jobs.items()} == dict.fromkeys(specs, "succeeded"), [
        (n, j["failure"]) for n, j in jobs.items()
    ]
    held: dict[str, set[str]] = {}
    for name, job_id in ids.items():
        messages = log_messages(http, job_id)
        (started,) = [m for line in messages if (m := _STARTED.search(line))]
        (visible,) = [m for line in messages if (m := _VISIBLE.search(line))]
        gpus = set(filter(None, (started["gpus"] or "").split(",")))
        # the child saw exactly the GPUs the row records, no more
        assert set(filter(None, visible["ids"].split(","))) == gpus
        held[name] = gpus
    assert {n: len(g) for n, g in held.items()} == {"two": 2, "one": 1, "two-more": 2, "cpu": 0}
    assert jobs["cpu"]["devices"] == "CPU" and jobs["two"]["devices"] == "2 GPUs"

    def interval(name: str) -> tuple[datetime, datetime]:
        job = jobs[name]
        return datetime.fromisoformat(job["started_at"]), datetime.fromisoformat(job["finished_at"])

    # the 2-GPU and the 1-GPU job ran side by side (3 GPUs hold both) ...
    (a0, a1), (b0, b1) = interval("two"), interval("one")
    assert a0 < b1 and b0 < a1
    # ... and any two jobs that overlapped held different GPUs
    names = list(ids)
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            (x0, x1), (y0, y1) = interval(x), interval(y)
            if x0 < y1 and y0 < x1:
                assert not held[x] & held[y], (x, y, held)
