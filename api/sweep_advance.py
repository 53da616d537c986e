"""The sweep advancer: a thread of each API process that moves adaptive sweeps on unread.

Every ``LIVT_SWEEP_ADVANCE_SECONDS`` it reads the open adaptive sweeps (``sweeps.search_open``,
not cancelled) and the statuses of their jobs, and for each sweep that has a finished trial not
yet told, or fewer active trials than ``parallel`` while trials remain
(:func:`api.services.sweep_search.needs_advance`), calls :func:`api.services.sweeps.refresh`
with the app's enqueuer, as a read of the sweep does. The new trials' jobs belong to the sweep's
owner and are validated as ``POST /jobs`` validates a job.

API replicas and reads may advance one sweep at the same time: the advance that commits first
stands and the others write nothing (see :mod:`api.services.sweep_search`). A sweep whose
advance fails (the broker is unreachable, the database is away) waits before the next try, and
so does one whose advance changed nothing (every trial it asked was refused, e.g. while no
worker offers the GPUs its base asks for) until one of its jobs changes; the wait doubles from
the poll interval up to :data:`MAX_WAIT_SECONDS`. Errors are logged and never stop the loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from api.errors import UnavailableError
from api.poller import Poller
from api.services import sweep_search
from api.services.jobs import Enqueue
from api.services.sweeps import refresh
from livt_service.models import Job, Sweep
from livt_service.settings import Settings

logger = logging.getLogger(__name__)

#: The longest wait before a sweep whose advance failed or changed nothing is tried again.
MAX_WAIT_SECONDS = 300.0


@dataclass(frozen=True)
class _Wait:
    state: Any  # what the sweep looked like when it was last tried
    tries: int
    until: float
    error: bool  # an error waits even when the sweep changed since


class SweepAdvancer(Poller):
    """Advances the adaptive sweeps that need it every ``poll_seconds`` in a daemon thread
    (none when ``poll_seconds`` is 0: only reads advance sweeps)."""

    name = "livt-sweeps"

    def __init__(
        self,
        session_factory: Callable[[], Session],
        settings: Settings,
        enqueue: Enqueue,
        *,
        poll_seconds: float,
    ) -> None:
        super().__init__(poll_seconds=poll_seconds)
        self.session_factory = session_factory
        self.settings = settings
        self.enqueue = enqueue
        self._waits: dict[str, _Wait] = {}

    def run_once(self) -> int:
        """One round; returns the number of sweeps that told or asked a trial."""
        due = self._due()
        self._waits = {k: w for k, w in self._waits.items() if k in due}
        now = time.monotonic()
        advanced = 0
        for sweep_id, state in due.items():
            if self.stopping:
                break
            wait = self._waits.get(sweep_id)
            if wait is not None and now < wait.until and (wait.error or wait.state == state):
                continue
            error = False
            try:
                moved = self._advance(sweep_id)
            except UnavailableError as exc:
                logger.warning("sweep %s: %s", sweep_id, exc)
                moved, error = False, True
            except SQLAlchemyError as exc:
                logger.warning("sweep %s could not be advanced: %s", sweep_id, exc)
                moved, error = False, True
            except Exception:
                logger.exception("sweep %s could not be advanced", sweep_id)
                moved, error = False, True
            if moved and not error:
                self._waits.pop(sweep_id, None)
                advanced += 1
                continue
            tries = wait.tries + 1 if wait is not None and (error or wait.state == state) else 1
            pause = min(max(self.poll_seconds, 0.01) * 2**tries, MAX_WAIT_SECONDS)
            self._waits[sweep_id] = _Wait(state, tries, time.monotonic() + pause, error)
        return advanced

    def _due(self) -> dict[str, Any]:
        """The open sweeps that need an advance, each with what it looks like now."""
        with self.session_factory() as session:
            sweeps = session.execute(
                select(Sweep.id, Sweep.spec, Sweep.cells)
                .where(Sweep.search_open.is_(True), Sweep.cancel_requested.is_(False))
                .order_by(Sweep.created_at, Sweep.id)
            ).all()
            if not sweeps:
                return {}
            statuses: dict[str, dict[str, str]] = {s.id: {} for s in sweeps}
            jobs = session.execute(
                select(Job.sweep_id, Job.id, Job.status)
                .join(Sweep, Sweep.id == Job.sweep_id)
                .where(Sweep.search_open.is_(True), Sweep.cancel_requested.is_(False))
            )
            for sweep_id, job_id, status in jobs:
                statuses.setdefault(sweep_id, {})[job_id] = status
        due: dict[str, Any] = {}
        for sweep_id, spec, cells in sweeps:
            search = (spec or {}).get("search")
            jobs_of = statuses.get(sweep_id, {})
            if search and sweep_search.needs_advance(search, cells, jobs_of):
                told = tuple(bool(c.get("told")) for c in cells)
                due[sweep_id] = (told, tuple(sorted(jobs_of.items())))
        return due

    def _advance(self, sweep_id: str) -> bool:
        """Advances one sweep; whether it told or asked a trial."""
        with self.session_factory() as session:
            sweep = session.get(Sweep, sweep_id)
            if sweep is None:
                return False
            before = [(c["job"], bool(c.get("told"))) for c in sweep.cells]
            after = refresh(session, self.settings, sweep, self.enqueue)
            return [(c["job"], bool(c.get("told"))) for c in after.cells] != before
