"""Adaptive sweeps: Optuna's ask-and-tell over continuous run fields (``search.space``).

The study lives in the service's own database through Optuna's ``RDBStorage`` (its tables beside
the service's, named by the sweep id). Creating the sweep asks the first ``parallel`` trials, one
finetune job each; :func:`advance` tells the study the objective of each trial whose job has
finished and asks the next trials, up to ``trials``. The sweep advancer of each API process
(:mod:`api.sweep_advance`) calls it every few seconds for the sweeps that need it, and a read of
the sweep (``GET /sweeps/{id}``) calls it too. A trial's objective is the weighted sum of the
validation metrics (``val_overall``, ``val_few``, ...) of its job's best epoch, the epoch whose
checkpoint the result comes from; a failed or cancelled job (or one deleted before it was told)
is told as a failed trial.

Advances of one sweep may run at once (reads, API replicas). Asking happens before the write
transaction (on SQLite, Optuna's own connection could not write while the sweep's holds the
lock); the sweep row is then locked (``FOR UPDATE``; ``BEGIN IMMEDIATE`` on SQLite) and its cells
compared with those the advance started from. When another advance changed them first, nothing is
written, the trials just asked are told as failed and their jobs, never added to the session, are
neither created nor sent. Within one process, advances of a sweep also take turns on a lock.

Optuna keeps its schema revision in its own ``version_info`` table; the compatibility check,
which would read the service's ``alembic_version`` as if it were Optuna's, is skipped.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import FieldError, InvalidInputError, UnavailableError
from api.services.jobs import Enqueue, _send
from api.sweep_schemas import SweepCreate
from livt_core.contract import TERMINAL_STATUSES
from livt_service.db import begin_write
from livt_service.models import Job, MetricPoint, Sweep, User
from livt_service.settings import Settings

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

#: Advances of one sweep in one process take turns (striped by sweep id).
_LOCKS = tuple(threading.Lock() for _ in range(64))


@lru_cache(maxsize=8)
def _storage(url: str) -> optuna.storages.RDBStorage:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.storages.RDBStorage(url, skip_compatibility_check=True)


def _distributions(space: dict[str, Any]) -> dict[str, Any]:
    from optuna.distributions import FloatDistribution

    return {
        k: FloatDistribution(v["low"], v["high"], log=bool(v.get("log"))) for k, v in space.items()
    }


def _weights(objective: str | dict[str, float]) -> dict[str, float]:
    return {objective: 1.0} if isinstance(objective, str) else dict(objective)


def check_search(body: SweepCreate, fixed_keys: dict[str, str]) -> list[FieldError]:
    """The rules of an adaptive sweep beyond its schema."""
    errors: list[FieldError] = []
    if body.grid:
        errors.append(
            FieldError(
                ("body", "grid"),
                "a sweep has either a grid or a search; move these fields into search.space "
                "or drop search",
                "grid_and_search",
            )
        )
    if len(body.seeds) != 1:
        errors.append(
            FieldError(
                ("body", "seeds"),
                "an adaptive search runs each trial once; give one seed",
                "search_seeds",
            )
        )
    if body.base.get("kind") != "finetune" or "stages" in body.base:
        errors.append(
            FieldError(
                ("body", "base", "kind"),
                "an adaptive search tunes finetune jobs (its objective is their validation "
                'accuracy); use a finetune spec as base, e.g. with init: {"job": <pretrain>}',
                "search_kind",
            )
        )
    for key in body.search.space if body.search else {}:
        if key.split(".")[0] in fixed_keys:
            errors.append(
                FieldError(
                    ("body", "search", "space", key),
                    f"cannot be searched ({fixed_keys[key.split('.')[0]]}); remove it",
                    "grid_fixed_key",
                )
            )
    return errors


def _remap(errors: list[FieldError], space: dict[str, Any]) -> list[FieldError]:
    out = []
    for e in errors:
        rest = e.loc[2:] if e.loc[:2] == ("body", "base") else ()
        key = next(
            (k for k in space if tuple(k.split(".")) == tuple(rest[: k.count(".") + 1])), None
        )
        out.append(FieldError(("body", "search", "space", key), e.msg, e.type) if key else e)
    return out


def _ask(
    session: Session,
    settings: Settings,
    user: User,
    sweep_id: str,
    spec: dict[str, Any],
    how_many: int,
    build: Any,
    cell_offset: int,
) -> tuple[list[Job], list[dict[str, Any]], list[FieldError]]:
    """Asks ``how_many`` trials and builds their jobs; a trial whose job is invalid is told as
    failed and its errors returned."""
    import optuna

    storage = _storage(settings.database_url)
    study = optuna.load_study(study_name=sweep_id, storage=storage)
    seed = spec["seeds"][0]
    study.sampler = optuna.samplers.TPESampler(seed=seed * 100_003 + len(study.trials))
    distributions = _distributions(spec["search"]["space"])
    jobs, cells, errors = [], [], []
    for index in range(how_many):
        trial = study.ask(distributions)
        params = {k: trial.params[k] for k in spec["search"]["space"]}
        job, job_errors = build(params, seed, cell_offset + index)
        if job is None:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            errors += job_errors
            continue
        jobs.append(job)
        cells.append(
            {"params": params, "seed": seed, "job": job.id, "trial": trial.number, "told": False}
        )
    return jobs, cells, errors


def create_search(
    session: Session,
    settings: Settings,
    user: User,
    body: SweepCreate,
    sweep: Sweep,
    build: Any,
    enqueue: Enqueue,
) -> Sweep:
    """Creates the study and the first trials' jobs (``build(params, seed, index)`` → ``(job,
    errors)``); 422 when a trial's job is invalid, leaving no study and no job."""
    import optuna

    assert body.search is not None
    spec = body.model_dump(mode="json")
    storage = _storage(settings.database_url)
    optuna.create_study(storage=storage, study_name=sweep.id, direction="maximize")
    first = min(body.search.parallel, body.search.trials)
    jobs, cells, errors = _ask(session, settings, user, sweep.id, spec, first, build, 0)
    if errors:
        optuna.delete_study(study_name=sweep.id, storage=storage)
        raise InvalidInputError(_remap(errors, spec["search"]["space"]))
    sweep.cells = cells
    sweep.search_open = True
    for job in jobs:
        job.sweep_id = sweep.id
    begin_write(session)
    session.add(sweep)
    session.add_all(jobs)
    session.commit()
    logger.info("adaptive sweep %s created by %s: %d trials", sweep.id, user.name, len(jobs))
    for job in jobs:
        _send(session, job, enqueue)
    return sweep


def _objective(session: Session, job: Job, weights: dict[str, float]) -> float | None:
    """The weighted validation metrics of the job's best epoch (its last without one)."""
    points = {
        p.epoch: p.metrics
        for p in session.scalars(select(MetricPoint).where(MetricPoint.job_id == job.id))
    }
    if not points:
        return None
    best = (job.result or {}).get("best_epoch")
    metrics = points.get(best) if best in points else points[max(points)]
    values = [metrics.get(k) for k in weights]
    if any(not isinstance(v, int | float) for v in values):
        return None
    value = float(sum(w * float(v) for w, v in zip(weights.values(), values, strict=True)))
    return value if math.isfinite(value) else None


def _open(search: Mapping[str, Any] | None, cells: list[dict[str, Any]], cancelled: bool) -> bool:
    if not search or cancelled:
        return False
    return len(cells) < search["trials"] or any(not c.get("told") for c in cells)


def search_open(sweep: Sweep) -> bool:
    """An adaptive sweep, not cancelled, with trials still to ask or finished trials not told."""
    return _open((sweep.spec or {}).get("search"), sweep.cells, sweep.cancel_requested)


def needs_advance(
    search: Mapping[str, Any], cells: list[dict[str, Any]], statuses: Mapping[str, str]
) -> bool:
    """Whether :func:`advance` has something to do for an open search whose jobs have
    ``statuses`` (job id → status): a trial whose job finished (or is gone) is not told yet, or
    fewer trials are active than ``parallel`` while trials remain to ask."""
    untold = [c for c in cells if not c.get("told")]
    for cell in untold:
        status = statuses.get(cell["job"])
        if status is None or status in TERMINAL_STATUSES:
            return True
    return len(untold) < search["parallel"] and len(cells) < search["trials"]


def _fingerprint(cells: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    return [(c["job"], bool(c.get("told"))) for c in cells]


def _tell(study: optuna.Study, trial: int, value: float | None) -> None:
    import optuna

    try:
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        else:
            study.tell(trial, value, skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # a concurrent advance told it between the check and the write


def advance(
    session: Session, settings: Settings, user: User, sweep: Sweep, build: Any, enqueue: Enqueue
) -> Sweep:
    """Tells the study about every finished trial and asks the next ones (see the module).

    Returns the sweep as it is afterwards (as another advance left it, when that one came
    first). The new trials' jobs are enqueued after the commit; when the broker is unreachable
    they are marked failed and :class:`UnavailableError` is raised once all were tried."""
    if not search_open(sweep):
        return sweep
    with _LOCKS[hash(sweep.id) % len(_LOCKS)]:
        # read the sweep as the advance before this one left it
        if session.in_transaction():
            session.commit()
        session.expire(sweep)
        if not search_open(sweep):
            return sweep
        return _advance(session, settings, user, sweep, build, enqueue)


def _advance(
    session: Session, settings: Settings, user: User, sweep: Sweep, build: Any, enqueue: Enqueue
) -> Sweep:
    search = sweep.spec["search"]
    by_id = {j.id: j for j in sweep.jobs}
    cells = copy.deepcopy(sweep.cells)
    started_from = _fingerprint(cells)
    study = _load_study(settings, sweep.id)
    weights = _weights(search["objective"])
    changed = False
    for cell in cells:
        if cell.get("told"):
            continue
        job = by_id.get(cell["job"]) or session.get(Job, cell["job"])
        if job is not None and job.status not in TERMINAL_STATUSES:
            continue
        value = _objective(session, job, weights) if job and job.status == "succeeded" else None
        _tell(study, cell["trial"], value)
        cell["told"], cell["value"], changed = True, value, True
    active = sum(1 for c in cells if not c.get("told"))
    need = min(search["parallel"] - active, search["trials"] - len(cells))
    jobs: list[Job] = []
    if need > 0:
        jobs, new_cells, errors = _ask(
            session, settings, user, sweep.id, sweep.spec, need, build, len(cells)
        )
        for error in errors:
            logger.warning("sweep %s: a trial's job is invalid: %s", sweep.id, error.msg)
        cells += new_cells
        changed = changed or bool(new_cells)
    if not changed:
        return sweep
    begin_write(session)
    locked = session.scalar(
        select(Sweep)
        .where(Sweep.id == sweep.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if locked is None or locked.cancel_requested or _fingerprint(locked.cells) != started_from:
        session.rollback()  # another advance (or the cancel) came first: its state stands
        for job in jobs:
            _tell(study, _trial_of(cells, job.id), None)
        return sweep
    locked.cells = cells
    locked.search_open = _open(search, cells, False)
    for job in jobs:
        job.sweep_id = sweep.id
    session.add_all(jobs)
    session.commit()
    if jobs:
        logger.info("sweep %s: asked %d trials", sweep.id, len(jobs))
    unavailable: UnavailableError | None = None
    for job in jobs:
        try:
            _send(session, job, enqueue)
        except UnavailableError as exc:
            unavailable = unavailable or exc
    session.refresh(locked)
    if unavailable is not None:
        raise unavailable
    return locked


def _load_study(settings: Settings, sweep_id: str) -> optuna.Study:
    import optuna

    return optuna.load_study(study_name=sweep_id, storage=_storage(settings.database_url))


def _trial_of(cells: list[dict[str, Any]], job_id: str) -> int:
    return next(c["trial"] for c in cells if c["job"] == job_id)


def best_trial(sweep: Sweep) -> dict[str, Any] | None:
    """The told trial with the highest objective: ``{"params", "objective", "job"}``."""
    told = [c for c in sweep.cells if c.get("value") is not None]
    if not told:
        return None
    best = max(told, key=lambda c: c["value"])
    return {"params": best["params"], "objective": best["value"], "job": best["job"]}
