"""Sweeps: one request, one job per grid point × seed, and the mean ± std table over seeds.

Every child is validated exactly as ``POST /jobs`` (or ``POST /pipelines``) would validate it,
all of them before any is created: a grid value that some child cannot take is a 422 at
``["body", "grid", <field>, <index>]``, a problem of the base at ``["body", "base", ...]``.
A sweep's status derives from its jobs' statuses (``livt_service.state`` changes those): it is
``running`` while any job is not finished (or, for an adaptive sweep, while trials are still to
be asked or told), then ``succeeded`` when all succeeded, ``failed`` when any failed (unless the
sweep was cancelled), ``cancelled`` otherwise.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import logging
import math
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import (
    ConflictError,
    FieldError,
    InvalidInputError,
    Loc,
    NotFoundError,
    UnavailableError,
    _request_loc,
)
from api.schemas import JobCreate, PipelineCreate
from api.services import sweep_search
from api.services.jobs import Enqueue, _send, build_job
from api.sweep_schemas import MAX_GRID_VALUES, TABLE_METRICS, SweepCreate
from livt_core.contract import TERMINAL_STATUSES
from livt_service import state
from livt_service.db import begin_write
from livt_service.models import Job, Sweep, User, new_id
from livt_service.settings import Settings

logger = logging.getLogger(__name__)

_JOB_SPEC: TypeAdapter[Any] = TypeAdapter(JobCreate)
#: Keys a grid may not vary: the sweep sets them itself, or they would change what a job is.
FIXED_KEYS = {
    "kind": "every child has the base's kind",
    "init": "every child starts from the base's init",
    "resources": "set resources in base",
    "idempotency_key": "sweep children have no idempotency_key",
    "name": "the sweep names its jobs",
    "seed": "list the seeds in seeds",
    "stages": "write the stages in base",
}
#: Grid keys that change what is evaluated: rows then do not compare on one data set.
DATA_KEYS = ("dataset", "preset", "data")
#: The values of ``init`` in the grid of a pipeline base: where its finetune stages start.
#: ``pretrained``: from the stage before (the pipeline's own rule: the MGP encoder of a
#: pretrain → finetune base); ``scratch``: from random weights, without waiting for it.
INIT_CHOICES = ("pretrained", "scratch")


# --------------------------------------------------------------------------------------------
# building the children


@dataclass
class _Point:
    """One grid point: its values and, per value, the index in the grid (for error locs)."""

    params: dict[str, Any]
    index: dict[str, int]


def _points(grid: dict[str, list[Any]]) -> list[_Point]:
    keys = list(grid)
    points = []
    for combo in itertools.product(*(list(enumerate(grid[k])) for k in keys)):
        points.append(
            _Point(
                params={k: v for k, (_, v) in zip(keys, combo, strict=True)},
                index={k: i for k, (i, _) in zip(keys, combo, strict=True)},
            )
        )
    return points


def _set_path(spec: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = spec
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def _raw_stages(base: dict[str, Any]) -> list[dict[str, Any]]:
    """The stage objects of a pipeline base as sent (before validation)."""
    stages = base.get("stages")
    return [s for s in stages if isinstance(s, dict)] if isinstance(stages, list) else []


def _check_init_grid(
    values: list[Any], stages: list[dict[str, Any]], errors: list[FieldError]
) -> None:
    """``init`` in the grid of a pipeline base: each value one of :data:`INIT_CHOICES`, and no
    finetune stage after the first that sets its own ``init``."""
    for index, value in enumerate(values):
        if value not in INIT_CHOICES:
            errors.append(
                FieldError(
                    ("body", "grid", "init", index),
                    f"is {json.dumps(value)}; give 'pretrained' (start from the stage before) "
                    "or 'scratch' (random weights)",
                    "grid_init_value",
                )
            )
    for index, stage in enumerate(stages[1:], start=1):
        if stage.get("kind") == "finetune" and "init" in stage:
            errors.append(
                FieldError(
                    ("body", "base", "stages", index, "init"),
                    "is set while the grid varies init; remove one of them",
                    "grid_init_conflict",
                )
            )


def _check_request(
    body: SweepCreate, settings: Settings, stages: list[dict[str, Any]]
) -> list[FieldError]:
    """The checks of the request itself: grid keys and values, seeds, the size bound."""
    errors: list[FieldError] = []
    for key, values in body.grid.items():
        root = key.split(".")[0]
        if root in FIXED_KEYS and not (key == "init" and stages):
            hint = (
                "; in a pipeline base, init: ['pretrained', 'scratch'] compares the first "
                "stage's checkpoint with random weights"
                if root == "init" and not stages
                else ""
            )
            errors.append(
                FieldError(
                    ("body", "grid", key),
                    f"cannot be varied by a sweep ({FIXED_KEYS[root]}); remove it from grid" + hint,
                    "grid_fixed_key",
                )
            )
        elif not values or len(values) > MAX_GRID_VALUES:
            errors.append(
                FieldError(
                    ("body", "grid", key),
                    f"has {len(values)} values; give 1 to {MAX_GRID_VALUES} values",
                    "grid_values",
                )
            )
        else:
            if key == "init":
                _check_init_grid(values, stages, errors)
            seen: set[str] = set()
            for index, value in enumerate(values):
                text = json.dumps(value, sort_keys=True)
                if text in seen:
                    errors.append(
                        FieldError(
                            ("body", "grid", key, index),
                            "repeats an earlier value of this field; give each value once",
                            "duplicate",
                        )
                    )
                seen.add(text)
    seen_seeds: set[int] = set()
    for index, seed in enumerate(body.seeds):
        if not 0 <= seed <= 2**31 - 1:
            errors.append(
                FieldError(("body", "seeds", index), "must lie in [0, 2^31 - 1]", "seed_range")
            )
        elif seed in seen_seeds:
            errors.append(
                FieldError(("body", "seeds", index), "is listed twice; give each seed once", "dup")
            )
        seen_seeds.add(seed)
    if "seed" in body.base or any("seed" in s for s in _raw_stages(body.base)):
        errors.append(
            FieldError(
                ("body", "base", "seed"),
                "is set by the sweep for each child; remove it and list the seeds in seeds",
                "extra_forbidden",
            )
        )
    points = math.prod(len(v) for v in body.grid.values()) if body.grid else 1
    per_seed = 1 + (len(stages) - 1) * points if stages else points
    total = per_seed * len(body.seeds)
    if total > settings.max_sweep_jobs:
        errors.append(
            FieldError(
                ("body", "grid"),
                f"makes {total} jobs ({points} grid points × {len(body.seeds)} seeds), above this "
                f"site's limit of {settings.max_sweep_jobs} per sweep (LIVT_MAX_SWEEP_JOBS); use "
                "fewer values or seeds, or split the sweep",
                "sweep_too_large",
            )
        )
    return errors


def _schema_errors(exc: ValidationError, prefix: Loc) -> list[FieldError]:
    out = []
    for error in exc.errors():
        type_ = str(error.get("type"))
        loc = _request_loc(["body", *error.get("loc", ())], type_)[1:]
        out.append(FieldError((*prefix, *loc), str(error.get("msg")), type_))
    return out


def _remap(error: FieldError, base_loc: Loc, point: _Point, seed_index: int) -> FieldError:
    """A child's error at a grid field (or its seed) → the grid value (or seed) that caused it."""
    rest = error.loc[len(base_loc) :] if error.loc[: len(base_loc)] == base_loc else None
    if rest is None:
        return error
    if rest[:1] == ("seed",):
        return FieldError(("body", "seeds", seed_index), error.msg, error.type)
    for key, index in point.index.items():
        path = tuple(key.split("."))
        if rest[: len(path)] == path:
            return FieldError(("body", "grid", key, index), error.msg, error.type)
    return error


class _Collector:
    """Errors of every child, each reported once."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self._seen: set[tuple[Any, ...]] = set()

    def add(self, errors: list[FieldError]) -> None:
        for e in errors:
            key = (e.loc, e.msg)
            if key not in self._seen:
                self._seen.add(key)
                self.errors.append(e)


def _build(
    session: Session,
    settings: Settings,
    user: User,
    raw: dict[str, Any],
    loc: Loc,
    point: _Point,
    seed_index: int,
    found: _Collector,
    predecessor: Job | None = None,
) -> Job | None:
    try:
        spec = _JOB_SPEC.validate_python(raw)
    except ValidationError as exc:
        found.add([_remap(e, loc, point, seed_index) for e in _schema_errors(exc, loc)])
        return None
    try:
        return build_job(session, settings, user, spec, loc=loc, predecessor=predecessor)
    except InvalidInputError as exc:
        found.add([_remap(e, loc, point, seed_index) for e in exc.errors])
        return None


def _job_name(body: SweepCreate, params: dict[str, Any], seed: int, kind: str) -> str:
    label = ", ".join(f"{k}={json.dumps(v)}" for k, v in params.items())
    text = f"{body.name or 'sweep'} [{label}] seed={seed}" if label else f"{body.name or 'sweep'}"
    if not label:
        text += f" seed={seed}"
    return f"{text} ({kind})"[:200]


def _children(
    session: Session, settings: Settings, user: User, body: SweepCreate
) -> tuple[list[Job], list[dict[str, Any]]]:
    """Every job of the sweep (unsaved) and its cells; 422 listing every problem found."""
    base = body.base
    found = _Collector()
    pipeline = "stages" in base
    if pipeline:
        try:
            parsed = PipelineCreate.model_validate(base)
        except ValidationError as exc:
            raise InvalidInputError(_schema_errors(exc, ("body", "base"))) from None
        stages = [s.model_dump(mode="json", exclude_unset=True) for s in parsed.stages]
        if len(stages) < 2:
            found.add(
                [
                    FieldError(
                        ("body", "base", "stages"),
                        "has one stage; a pipeline base needs a first stage that runs once per "
                        "seed and finetune stages after it (or use a plain job spec as base)",
                        "too_short",
                    )
                ]
            )
        elif body.grid and not any(s["kind"] == "finetune" for s in stages[1:]):
            found.add(
                [
                    FieldError(
                        ("body", "base", "stages"),
                        "has no finetune stage after the first one, which the grid applies "
                        "to; add one",
                        "no_finetune_stage",
                    )
                ]
            )
    else:
        try:
            _JOB_SPEC.validate_python(base)
        except ValidationError as exc:
            raise InvalidInputError(_schema_errors(exc, ("body", "base"))) from None
        stages = []
    found.add(_check_request(body, settings, stages))
    if found.errors:
        raise InvalidInputError(found.errors)

    points = _points(body.grid)
    jobs: list[Job] = []
    cells: list[dict[str, Any]] = []
    for seed_index, seed in enumerate(body.seeds):
        if not pipeline:
            for point in points:
                raw = copy.deepcopy(base)
                for key, value in point.params.items():
                    _set_path(raw, key, value)
                raw["seed"] = seed
                raw["name"] = _job_name(body, point.params, seed, raw.get("kind", "job"))
                job = _build(
                    session, settings, user, raw, ("body", "base"), point, seed_index, found
                )
                if job is not None:
                    jobs.append(job)
                    cells.append({"params": point.params, "seed": seed, "job": job.id})
            continue
        first_raw = {**copy.deepcopy(stages[0]), "seed": seed}
        first_raw["name"] = _job_name(body, {}, seed, first_raw["kind"])
        no_point = _Point(params={}, index={})
        first = _build(
            session,
            settings,
            user,
            first_raw,
            ("body", "base", "stages", 0),
            no_point,
            seed_index,
            found,
        )
        if first is None:
            continue
        first.stage = 0
        jobs.append(first)
        for point in points:
            previous: Job | None = first
            scratch = point.params.get("init") == "scratch"
            finetunes = 0
            for index, stage in enumerate(stages[1:], start=1):
                raw = {**copy.deepcopy(stage), "seed": seed}
                if stage["kind"] == "finetune":
                    finetunes += 1
                    for key, value in point.params.items():
                        if key != "init":
                            _set_path(raw, key, value)
                    if scratch and finetunes == 1:
                        previous = None  # random weights: starts at once, needs no MGP
                raw["name"] = _job_name(body, point.params, seed, stage["kind"])
                job = _build(
                    session,
                    settings,
                    user,
                    raw,
                    ("body", "base", "stages", index),
                    point,
                    seed_index,
                    found,
                    predecessor=previous,
                )
                if job is None:
                    break
                job.stage = index
                jobs.append(job)
                previous = job
            else:
                cells.append({"params": point.params, "seed": seed, "job": previous.id})
    if found.errors:
        raise InvalidInputError(found.errors)
    return jobs, cells


def create_sweep(
    session: Session, settings: Settings, user: User, body: SweepCreate, enqueue: Enqueue
) -> Sweep:
    """Validates every child, then creates the sweep and all its jobs in one transaction and
    enqueues those that start now (the others wait for the job they start from)."""
    if "idempotency_key" in body.base or any(
        "idempotency_key" in s for s in _raw_stages(body.base)
    ):
        raise InvalidInputError.single(
            ("body", "base", "idempotency_key"),
            "sweep children have no idempotency_key (each would need its own); remove it",
            "extra_forbidden",
        )
    if body.search is not None:
        return _create_search(session, settings, user, body, enqueue)
    jobs, cells = _children(session, settings, user, body)
    sweep = Sweep(
        id=new_id("s"),
        owner_id=user.id,
        name=body.name,
        spec=body.model_dump(mode="json"),
        cells=cells,
        cancel_requested=False,
    )
    for job in jobs:
        job.sweep_id = sweep.id
    begin_write(session)
    session.add(sweep)
    session.add_all(jobs)
    session.commit()
    logger.info("sweep %s with %d jobs created by %s", sweep.id, len(jobs), user.name)
    unavailable: UnavailableError | None = None
    for job in jobs:
        if job.depends_on is None:
            try:
                _send(session, job, enqueue)
            except UnavailableError as exc:
                unavailable = unavailable or exc
    if unavailable is not None:
        raise unavailable
    return sweep


def _create_search(
    session: Session, settings: Settings, user: User, body: SweepCreate, enqueue: Enqueue
) -> Sweep:
    """An adaptive sweep (``body.search``): see :mod:`api.services.sweep_search`."""
    assert body.search is not None
    try:
        _JOB_SPEC.validate_python(body.base)
    except ValidationError as exc:
        raise InvalidInputError(_schema_errors(exc, ("body", "base"))) from None
    errors = sweep_search.check_search(body, FIXED_KEYS)
    if "seed" in body.base:
        errors.append(
            FieldError(
                ("body", "base", "seed"),
                "is set by the sweep; remove it and give the seed in seeds",
                "extra_forbidden",
            )
        )
    if body.search.trials > settings.max_sweep_jobs:
        errors.append(
            FieldError(
                ("body", "search", "trials"),
                f"is {body.search.trials}, above this site's limit of {settings.max_sweep_jobs} "
                "jobs per sweep (LIVT_MAX_SWEEP_JOBS); ask for fewer trials",
                "sweep_too_large",
            )
        )
    if errors:
        raise InvalidInputError(errors)
    sweep = Sweep(
        id=new_id("s"),
        owner_id=user.id,
        name=body.name,
        spec=body.model_dump(mode="json"),
        cells=[],
        cancel_requested=False,
    )
    build = _trial_builder(session, settings, user, body.base, body.name)
    return sweep_search.create_search(session, settings, user, body, sweep, build, enqueue)


def _trial_builder(
    session: Session, settings: Settings, user: User, base: dict[str, Any], name: str | None
) -> Any:
    """``build(params, seed, index)`` → ``(job or None, errors)`` for an adaptive trial."""

    def build(params: dict[str, Any], seed: int, index: int) -> tuple[Job | None, list[Any]]:
        raw = copy.deepcopy(base)
        for key, value in params.items():
            _set_path(raw, key, value)
        raw["seed"] = seed
        label = ", ".join(f"{k}={v:.4g}" for k, v in params.items())
        raw["name"] = f"{name or 'search'} trial {index} [{label}] ({raw.get('kind', 'job')})"[:200]
        found = _Collector()
        point = _Point(params=params, index={})
        job = _build(session, settings, user, raw, ("body", "base"), point, 0, found)
        return job, found.errors

    return build


def refresh(session: Session, settings: Settings, sweep: Sweep, enqueue: Enqueue) -> Sweep:
    """An open adaptive sweep tells its finished trials and asks the next ones, whose jobs
    belong to the sweep's owner; others as they are. ``session`` must write in transactions
    (not the autocommit read session): the sweep row's lock must hold until the commit."""
    if not sweep_search.search_open(sweep):
        return sweep
    owner = sweep.owner
    build = _trial_builder(session, settings, owner, sweep.spec["base"], sweep.name)
    return sweep_search.advance(session, settings, owner, sweep, build, enqueue)


# --------------------------------------------------------------------------------------------
# reads and cancel


def get_sweep(session: Session, user: User, sweep_id: str, *, for_update: bool = False) -> Sweep:
    query = select(Sweep).where(Sweep.id == sweep_id)
    if for_update:
        query = query.with_for_update()
    if not user.is_admin:
        query = query.where(Sweep.owner_id == user.id)
    sweep = session.scalar(query)
    if sweep is None:
        raise NotFoundError(f"sweep {sweep_id} not found")
    return sweep


def list_sweeps(session: Session, user: User, limit: int = 50) -> list[Sweep]:
    query = select(Sweep).order_by(Sweep.created_at.desc(), Sweep.id.desc()).limit(limit)
    if not user.is_admin:
        query = query.where(Sweep.owner_id == user.id)
    return list(session.scalars(query))


def sweep_status(sweep: Sweep) -> str:
    """``running`` until every job is finished and an adaptive sweep has asked and told all its
    trials (or was cancelled); then succeeded / failed / cancelled."""
    statuses = [j.status for j in sweep.jobs]
    if any(s not in TERMINAL_STATUSES for s in statuses) or sweep_search.search_open(sweep):
        return "running"
    if statuses and all(s == "succeeded" for s in statuses):
        return "succeeded"
    if "failed" in statuses and not sweep.cancel_requested:
        return "failed"
    return "cancelled"


def cancel_sweep(session: Session, user: User, sweep_id: str) -> Sweep:
    """Cancels every job of the sweep that is not finished (queued ones at once, running ones
    once they stop) and stops an adaptive sweep asking trials; 409 when every job is already
    finished and no trial is left to ask."""
    begin_write(session)
    # the sweep row first: an advance holding it commits its new trials' jobs before these
    # are read, and one coming after sees cancel_requested
    sweep = get_sweep(session, user, sweep_id, for_update=True)
    jobs = list(
        session.scalars(
            select(Job).where(Job.sweep_id == sweep.id).order_by(Job.id).with_for_update()
        )
    )
    # a job's cancel also cancels the queued jobs that start from it: roots first
    jobs.sort(key=lambda j: j.depends_on is not None)
    cancelled = 0
    for job in jobs:
        if job.status in TERMINAL_STATUSES:
            continue
        try:
            state.request_cancel(session, job, by=user.name)
        except state.TransitionError:
            continue
        cancelled += 1
    searching = sweep_search.search_open(sweep)
    if not cancelled and not searching and not any(j.status == "cancelling" for j in jobs):
        session.rollback()
        raise ConflictError(
            f"sweep {sweep_id} is {sweep_status(sweep)}: every job is finished; there is "
            "nothing to cancel"
        )
    sweep.cancel_requested = True
    sweep.search_open = False
    session.commit()
    session.refresh(sweep)
    logger.info("sweep %s: %d jobs cancelled by %s", sweep.id, cancelled, user.name)
    return sweep


# --------------------------------------------------------------------------------------------
# the table


def _mean_std(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def sweep_table(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per grid point, in grid order: the seeds' jobs and the mean ± std of each of
    :data:`TABLE_METRICS` over the seeds whose job succeeded with that value."""
    by_id = {j.id: j for j in sweep.jobs}
    rows: dict[str, dict[str, Any]] = {}
    for cell in sweep.cells:
        key = json.dumps(cell["params"], sort_keys=True)
        row = rows.setdefault(key, {"params": cell["params"], "cells": []})
        row["cells"].append(cell)
    out = []
    for row in rows.values():
        cells, values = [], {m: [] for m in TABLE_METRICS}
        status: Counter[str] = Counter()
        n = 0
        for cell in row["cells"]:
            job = by_id.get(cell["job"])
            job_status = job.status if job is not None else "deleted"
            status[job_status] += 1
            cells.append(
                {
                    "seed": cell["seed"],
                    "job": cell["job"],
                    "status": job_status,
                    "failure_message": job.failure_message if job is not None else None,
                }
            )
            result = job.result if job is not None and job.status == "succeeded" else None
            if not result:
                continue
            n += 1
            for metric in TABLE_METRICS:
                value = result.get(metric)
                if isinstance(value, int | float) and math.isfinite(value):
                    values[metric].append(float(value))
        told = [c["value"] for c in row["cells"] if c.get("value") is not None]
        out.append(
            {
                "params": row["params"],
                "objective": max(told) if told else None,
                "n": n,
                "status": dict(status),
                "cells": cells,
                **{m: _mean_std(values[m]) for m in TABLE_METRICS},
            }
        )
    return out


#: Column titles of the exports.
_TITLES = {
    "overall": "Overall",
    "many": "Many",
    "medium": "Medium",
    "few": "Few",
    "top5": "Top-5",
    "ece": "ECE",
}


def _fmt(stat: dict[str, Any], pm: str) -> str:
    if stat["mean"] is None:
        return "–"
    if stat["std"] is None:
        return f"{stat['mean']:.2f}"
    return f"{stat['mean']:.2f}{pm}{stat['std']:.2f}"


def _best(rows: list[dict[str, Any]], grid: dict[str, Any]) -> dict[str, int | None]:
    """Row index of the best mean per metric (lowest ECE, highest accuracy); none when the grid
    varies the data: rows on different data sets do not compare."""
    if any(k.split(".")[0] in DATA_KEYS for k in grid):
        return {}
    best: dict[str, int | None] = {}
    for metric in TABLE_METRICS:
        scored = [
            (i, r[metric]["mean"]) for i, r in enumerate(rows) if r[metric]["mean"] is not None
        ]
        if len(scored) < 2:
            continue
        pick = min if metric == "ece" else max
        best[metric] = pick(scored, key=lambda t: t[1])[0]
    return best


def _param_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def export_table(sweep: Sweep, rows: list[dict[str, Any]], fmt: str) -> str:
    """The table as Markdown (``md``), CSV (``csv``: mean and std in columns of their own) or a
    LaTeX ``tabular`` (``latex``); the best mean of each column is bold in md and latex."""
    search = sweep.spec.get("search") or {}
    grid_keys = list(sweep.spec.get("grid") or search.get("space") or {})
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        header = [*grid_keys, "n"]
        for metric in TABLE_METRICS:
            header += [f"{metric}_mean", f"{metric}_std"]
        writer.writerow(header)
        for row in rows:
            line: list[Any] = [_param_text(row["params"].get(k)) for k in grid_keys] + [row["n"]]
            for metric in TABLE_METRICS:
                stat = row[metric]
                line += ["" if stat["mean"] is None else f"{stat['mean']:.4f}"]
                line += ["" if stat["std"] is None else f"{stat['std']:.4f}"]
            writer.writerow(line)
        return buffer.getvalue()
    best = _best(rows, sweep.spec.get("grid") or {})
    titles = [*grid_keys, "n", *(_TITLES[m] for m in TABLE_METRICS)]
    body_rows = []
    for index, row in enumerate(rows):
        cells = [_param_text(row["params"].get(k)) for k in grid_keys] + [str(row["n"])]
        for metric in TABLE_METRICS:
            text = _fmt(row[metric], " ± " if fmt == "md" else " \\pm ")
            if fmt == "latex":
                text = text if text == "–" else f"${text}$"
                if best.get(metric) == index:
                    text = f"\\textbf{{{text}}}"
            elif best.get(metric) == index:
                text = f"**{text}**"
            cells.append(text)
        body_rows.append(cells)
    if fmt == "md":
        lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body_rows]
        return "\n".join(lines) + "\n"

    def tex(text: str) -> str:
        if text.startswith(("$", "\\textbf")):
            return text
        return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("&", "\\&")

    lines = [
        "\\begin{tabular}{" + "l" * (len(grid_keys) + 1) + "r" * len(TABLE_METRICS) + "}",
        "\\hline",
        " & ".join(tex(t) for t in titles) + " \\\\",
        "\\hline",
    ]
    lines += [" & ".join(tex(c) for c in r) + " \\\\" for r in body_rows]
    lines += ["\\hline", "\\end{tabular}"]
    return "\n".join(lines) + "\n"
