"""Races between a run's end and the worker's signals, reproduced with real runs: a cancel that
arrives after the run reported its final ``end: succeeded``, while the process is slow to exit,
does not turn finished work into a cancelled job."""

from __future__ import annotations

import json
import os
import textwrap
import threading
from pathlib import Path

import pytest

from api.services.jobs import cancel_job
from livt_core.fence import attempt_files
from livt_service import state
from livt_service.models import Job, User
from livt_service.settings import Settings
from tests.worker.test_support import wait_until
from worker import runner as runner_module
from worker.runner import JobRunner

pytestmark = pytest.mark.slow

TINY_PRETRAIN = {
    "epochs": 1,
    "max_steps_per_epoch": 2,
    "batch_size": 8,
    "model_kwargs": {"depth": 1, "decoder_depth": 1},
    "data": {"num_workers": 0, "img_size": 16},
}


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url


@pytest.fixture
def slow_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Python process started from here lingers 60 s at exit after its work is done (as a
    run tearing down data loader workers or a process group can): a ``sitecustomize`` on the
    children's ``PYTHONPATH``."""
    hook = tmp_path / "slow-exit"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import atexit, time
            atexit.register(time.sleep, 60)
            """
        )
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))


def _end_status(path: Path) -> str | None:
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event["type"] == "end":
            return event["status"]
    return None


def test_a_cancel_after_the_run_ended_keeps_its_result(
    settings: Settings, db, make_job, user, slow_exit, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the run is killed 3 s after its end (instead of 30), well after the cancel arrived
    monkeypatch.setattr(runner_module, "END_EXIT_GRACE_SECONDS", 3.0)
    job = make_job(kind="pretrain", config=TINY_PRETRAIN)
    claim = state.claim_job(job.id, "w@host")
    assert claim is not None
    outcome: list[str] = []
    thread = threading.Thread(
        target=lambda: outcome.append(JobRunner(claim, heartbeat_seconds=1).run())
    )
    thread.start()
    events = attempt_files(claim.artifact_dir, claim.attempt).events
    wait_until(lambda: _end_status(events), timeout=240, interval=0.05, what="the run's end")
    assert _end_status(events) == "succeeded"

    with db() as session:  # the user's cancel, through the API's own service function
        cancel_job(session, session.get(User, user.id), job.id)
    thread.join(120)
    assert not thread.is_alive()

    assert outcome == ["succeeded"]
    with db() as session:
        row = session.get(Job, job.id)
        assert row.status == "succeeded" and row.failure_reason is None
        assert row.result["final_loss"] > 0
