"""Warm start against the real launcher (``worker.zygote``): runs forked from it reach their
result (the same as a cold start's), get the environment, directory, cores and descriptors they
asked for, die with the launcher, and answer signals to their process group; a launcher killed
mid-run requeues the job, which then starts cold while the launcher starts again; and every
reason to start cold is one WARNING in the job's log."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from livt_service import state
from livt_service.models import Job, JobAttempt, LogLine
from livt_service.settings import Settings, get_settings
from tests.worker.test_support import process_gone, wait_until
from worker.runner import TORCHRUN, JobRunner, training_command
from worker.zygote import (
    Launcher,
    WarmProcess,
    WarmStartUnavailable,
    startup_env_differences,
)

#: A run long enough to be caught mid-way; the stop file or a signal ends it.
LONG_PRETRAIN = {
    "epochs": 50,
    "max_steps_per_epoch": 20,
    "batch_size": 8,
    "model_kwargs": {"depth": 1, "decoder_depth": 1},
    "data": {"num_workers": 0, "img_size": 16},
}
TINY_PRETRAIN = {**LONG_PRETRAIN, "epochs": 1, "max_steps_per_epoch": 3}
#: The launcher's environment names a core count the runs' environments do not: a run that
#: reports its share from its affinity shows that its environment replaced the launcher's.
LAUNCHER_ONLY = {"LIVT_JOB_CPUS": "7"}


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url


def _new_launcher() -> Launcher:
    launcher = Launcher(env={**os.environ, **LAUNCHER_ONLY})
    launcher.start()
    assert launcher.wait_ready(180), f"the launcher did not get ready: {launcher.refused}"
    return launcher


@pytest.fixture(scope="module")
def shared_launcher() -> Iterator[Launcher]:
    launcher = Launcher(env={**os.environ, **LAUNCHER_ONLY})
    launcher.start()
    yield launcher
    launcher.stop()


@pytest.fixture
def launcher(shared_launcher: Launcher) -> Launcher:
    """The module's launcher, ready (started again if a test left it dead)."""
    if not shared_launcher.alive:
        shared_launcher.start()
    assert shared_launcher.wait_ready(180), shared_launcher.refused
    return shared_launcher


@pytest.fixture
def own_launcher() -> Iterator[Launcher]:
    """A launcher of this test's own (for tests that kill or stop it)."""
    launcher = _new_launcher()
    yield launcher
    launcher.stop()


def _claim(make_job, config: dict, **columns) -> state.ClaimedJob:
    job = make_job(kind="pretrain", config=config, **columns)
    claim = state.claim_job(job.id, "w@host")
    assert claim is not None
    return claim


def _messages(db, job_id: str) -> list[tuple[str, str]]:
    with db() as session:
        rows = session.execute(
            select(LogLine.level, LogLine.message)
            .where(LogLine.job_id == job_id)
            .order_by(LogLine.attempt, LogLine.seq)
        ).all()
    return [(level, message) for level, message in rows]


def _run_argv(run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "livt_core",
        "train",
        "pretrain",
        "--preset",
        "fashion-mnist-lt",
        *(f"--set={k}={v}" for k, v in _flat(LONG_PRETRAIN).items()),
        "--output-dir",
        str(run_dir),
        "--no-progress",
        "--no-tensorboard",
        *extra,
    ]


def _flat(config: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def _spawn_long(launcher: Launcher, tmp_path: Path, **kwargs) -> tuple[WarmProcess, Path]:
    stop = tmp_path / "STOP"
    argv = _run_argv(tmp_path / "run", "--stop-file", str(stop), *kwargs.pop("extra", ()))
    env = kwargs.pop("env", {**os.environ, "PYTHONUNBUFFERED": "1"})
    return launcher.spawn(argv, env=env, cwd=kwargs.pop("cwd", tmp_path), **kwargs), stop


def _session(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except FileNotFoundError:
                continue
            found += [int(c) for c in children]
            todo += [int(c) for c in children]
    return found


# --------------------------------------------------------------------------- what starts cold


def test_startup_variables_that_differ_are_named() -> None:
    launcher_env = {"PYTHONPATH": "/a", "OMP_NUM_THREADS": "2", "OMP_PROC_BIND": "true"}
    env = {
        "PYTHONPATH": "/b",  # read when the interpreter starts
        "OMP_NUM_THREADS": "1",  # applied by the child itself
        "CUDA_VISIBLE_DEVICES": "3",  # CUDA starts in the child only
        "LIVT_JOB_CPUS": "1",
        "PYTHONHASHSEED": "0",
    }
    assert startup_env_differences(env, launcher_env) == [
        "OMP_PROC_BIND",
        "PYTHONHASHSEED",
        "PYTHONPATH",
    ]
    assert startup_env_differences(launcher_env, launcher_env) == []


def _runner(make_job, **kwargs) -> JobRunner:
    return JobRunner(_claim(make_job, TINY_PRETRAIN), heartbeat_seconds=1, **kwargs)


def _cold_reason(runner: JobRunner, argv: list[str] | None = None, **env: str) -> str:
    argv = argv or training_command(runner.job, runner.run_dir, 1)
    assert runner._start_warm(argv, {**os.environ, "PYTHONUNBUFFERED": "1", **env}) is None
    [warning] = [r for r in runner.observer.batch.logs if r.level == "WARNING"]
    assert warning.message.startswith("starting the training process cold: ")
    return warning.message


def test_warm_start_off_starts_cold_with_a_warning(
    settings: Settings, make_job, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVT_WARM_START", "0")
    get_settings.cache_clear()
    assert get_settings().warm_start is False
    assert "LIVT_WARM_START=0" in _cold_reason(_runner(make_job))


def test_without_a_launcher_a_run_starts_cold_with_a_warning(settings: Settings, make_job) -> None:
    reason = _cold_reason(_runner(make_job, warm_start=True))
    assert "no warm-start launcher" in reason


@pytest.mark.slow
def test_torchrun_and_startup_variables_start_cold(
    settings: Settings, make_job, launcher: Launcher
) -> None:
    runner = _runner(make_job, launcher=launcher, warm_start=True)
    several = training_command(runner.job, runner.run_dir, 2)
    assert TORCHRUN in several
    assert "several processes" in _cold_reason(runner, several)

    runner = _runner(make_job, launcher=launcher, warm_start=True)
    assert "PYTHONHASHSEED" in _cold_reason(runner, PYTHONHASHSEED="123")


@pytest.mark.slow
def test_a_launcher_still_importing_is_not_waited_for(settings: Settings, make_job) -> None:
    launcher = Launcher()
    launcher.start()
    try:
        assert not launcher.ready
        runner = _runner(make_job, launcher=launcher, warm_start=True)
        assert "still importing" in _cold_reason(runner)
    finally:
        launcher.stop()


@pytest.mark.slow
def test_a_hung_launcher_is_killed_and_nothing_it_forked_survives(
    own_launcher: Launcher, tmp_path: Path
) -> None:
    own_launcher.ack_timeout = 1.0
    assert own_launcher.proc is not None
    own_launcher.proc.send_signal(signal.SIGSTOP)
    with pytest.raises(WarmStartUnavailable, match="did not answer"):
        _spawn_long(own_launcher, tmp_path)
    wait_until(lambda: not own_launcher.alive, timeout=10, what="the hung launcher to be killed")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- warm runs


@pytest.mark.slow
def test_a_warm_job_succeeds_with_the_result_of_a_cold_one(
    settings: Settings, db, make_job, launcher: Launcher
) -> None:
    results = {}
    for how in ("warm", "cold"):
        claim = _claim(make_job, TINY_PRETRAIN)
        runner = JobRunner(claim, heartbeat_seconds=1, launcher=launcher, warm_start=how == "warm")
        assert runner.run() == "succeeded"
        with db() as session:
            results[how] = session.get(Job, claim.id).result
        messages = [m for _, m in _messages(db, claim.id)]
        assert any(f"({how} start," in m for m in messages), messages
        assert any("training process exited with status 0" in m for m in messages)
    assert results["warm"]["final_loss"] == results["cold"]["final_loss"]


@pytest.mark.slow
def test_the_run_gets_its_environment_directory_cores_and_descriptors(
    launcher: Launcher, tmp_path: Path
) -> None:
    core = sorted(os.sched_getaffinity(0))[-1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LIVT_MAX_DATA_WORKERS": "0"}
    proc, stop = _spawn_long(
        launcher, tmp_path, env=env, cpus=[core], extra=("--events", "events.jsonl")
    )
    try:
        # set up before the launcher answered: its own session, its cores, the three descriptors
        assert _session(proc.pid) == proc.pid
        assert os.sched_getaffinity(proc.pid) == {core}
        assert os.readlink(f"/proc/{proc.pid}/fd/0") == os.devnull
        for fd, stream in ((1, proc.stdout), (2, proc.stderr)):
            ours = os.fstat(stream.fileno())
            theirs = os.stat(f"/proc/{proc.pid}/fd/{fd}")
            assert (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)
        assert os.readlink(f"/proc/{proc.pid}/cwd") == str(tmp_path)
        wait_until(lambda: (tmp_path / "events.jsonl").is_file(), timeout=120, what="events")
    finally:
        stop.touch()
    assert proc.wait(120) == 3  # stopped by its stop file: "cancelled"
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    # the relative --events went to the requested directory; the share came from the cores it
    # was pinned to, not from the launcher's LIVT_JOB_CPUS: its environment replaced the
    # launcher's
    assert (tmp_path / "events.jsonl").stat().st_size > 0
    assert "on a share of 1 core(s)" in err, err
    assert "cancelled; the last checkpoint" in err
    assert "INFO [rank 0]" in err and out == ""


@pytest.mark.slow
def test_signals_reach_the_runs_process_group(launcher: Launcher, tmp_path: Path) -> None:
    proc, _stop = _spawn_long(launcher, tmp_path, extra=("--set", "data.num_workers=1"))
    loader = wait_until(lambda: _descendants(proc.pid), timeout=120, what="a loader process")
    assert all(os.getpgid(pid) == proc.pid for pid in loader)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    assert not proc.launcher_lost
    wait_until(lambda: all(process_gone(p) for p in loader), timeout=10, what="the loader")


def _run_until_progress(db, make_job, launcher: Launcher):
    """A long pretrain job run warm by a JobRunner in a thread, once it showed progress:
    ``(claim, runner, thread, outcome)``; ``outcome`` gets the runner's final status."""
    claim = _claim(make_job, LONG_PRETRAIN)
    runner = JobRunner(claim, heartbeat_seconds=1, launcher=launcher, warm_start=True)
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(runner.run()))
    thread.start()

    def progressed() -> bool:
        with db() as session:
            return session.get(Job, claim.id).progress is not None

    wait_until(progressed, timeout=120, what="the job's first progress")
    return claim, runner, thread, outcome


@pytest.mark.slow
def test_a_warm_job_is_cancelled_at_its_next_step(
    settings: Settings, db, make_job, launcher: Launcher
) -> None:
    claim, runner, thread, outcome = _run_until_progress(db, make_job, launcher)
    assert isinstance(runner.proc, WarmProcess)
    with db() as session:
        state.request_cancel(session, session.get(Job, claim.id), by="test")
    thread.join(60)
    assert outcome == ["cancelled"]
    assert process_gone(runner.proc.pid)


@pytest.mark.slow
def test_the_run_dies_with_its_launcher(own_launcher: Launcher, tmp_path: Path) -> None:
    proc, _stop = _spawn_long(own_launcher, tmp_path)
    assert own_launcher.proc is not None
    own_launcher.proc.kill()
    assert proc.wait(30) == -signal.SIGKILL
    assert proc.launcher_lost
    assert process_gone(proc.pid)


@pytest.mark.slow
def test_a_launcher_killed_mid_run_requeues_the_job_and_the_next_starts_cold(
    settings: Settings, db, make_job, own_launcher: Launcher
) -> None:
    claim, runner, thread, outcome = _run_until_progress(db, make_job, own_launcher)
    assert own_launcher.proc is not None
    own_launcher.proc.kill()
    thread.join(60)
    assert outcome == ["queued"]
    with db() as session:
        row = session.get(Job, claim.id)
        assert (row.status, row.attempt) == ("queued", 2)
        [attempt] = session.scalars(select(JobAttempt).where(JobAttempt.job_id == claim.id))
        assert attempt.outcome == "worker_lost"
    messages = [m for _, m in _messages(db, claim.id)]
    assert any("warm-start launcher died during the run" in m for m in messages), messages

    # the next job starts cold (the launcher is dead) and the launcher is started again
    own_launcher.restart_interval = 0.0
    claim = _claim(make_job, TINY_PRETRAIN)
    runner = JobRunner(claim, heartbeat_seconds=1, launcher=own_launcher, warm_start=True)
    assert runner.run() == "succeeded"
    warnings = [m for level, m in _messages(db, claim.id) if level == "WARNING"]
    assert any("cold: the warm-start launcher exited with status -9" in m for m in warnings)
    assert own_launcher.wait_ready(180)
