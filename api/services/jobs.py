"""Jobs and pipelines: creating them, the user-facing state changes (cancel, retry; written in
:mod:`livt_service.state`) and the reads behind them.

A job spec is turned into a row in three steps: the service fields (``preset``, ``dataset``,
``init``, ``resources``, ...) are checked, the run fields are resolved with
``livt_core.config.resolve_config`` (defaults ← preset ← spec), and the paths in the result are
confined to the data roots. Every problem becomes a 422 entry that names the field and the fix.
Jobs are sent to the queue only after the transaction that created them has committed.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Select, Text, and_, bindparam, cast, or_, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, load_only

from api.errors import (
    ConflictError,
    FieldError,
    InvalidInputError,
    Loc,
    NotFoundError,
    UnavailableError,
    config_error_message,
    field_loc,
)
from api.schemas import ID_PATTERN, InitRef, JobSpec, PipelineCreate
from api.services.idempotency import check_same_request, job_request_hash, stage_request_hash
from api.services.pending import Facts, facts_of, known_queues, live_workers, pending_columns
from livt_core import catalog, checks, contract
from livt_core.config import CONFIG_CLASSES, ConfigErrors, deep_merge, resolve_config
from livt_core.errors import CheckpointError, ConfigError
from livt_core.paths import confine_config_paths
from livt_service import state
from livt_service.db import begin_write
from livt_service.labels import CPU
from livt_service.models import (
    TERMINAL_STATUSES,
    Artifact,
    Dataset,
    Job,
    LogLine,
    MetricPoint,
    Pipeline,
    StepPoint,
    User,
    Worker,
    new_id,
    utcnow,
)
from livt_service.settings import Settings

logger = logging.getLogger(__name__)

#: ``enqueue(job_id, queue)`` sends a job to the workers (``livt_service.queue.enqueue``).
Enqueue = Callable[[str, str], None]

#: Which jobs a run of each kind may start from, and the checkpoint of that job it loads.
INIT_CHECKPOINTS: dict[str, dict[str, str]] = {
    "finetune": {k: contract.INIT_CHECKPOINT[k] for k in ("pretrain", "finetune")},
    "evaluate": {"finetune": contract.INIT_CHECKPOINT["finetune"]},
}
#: Settings an evaluate run copies from the finetune job it evaluates, unless the spec sets them.
EVALUATE_INHERITS = ("model", "model_kwargs", "global_pool", "data")
#: The run-config field the resolved checkpoint path goes into.
CHECKPOINT_FIELD = {"finetune": "init", "evaluate": "checkpoint"}


# --------------------------------------------------------------------------------------------
# reads


def visible_jobs(user: User) -> Select[Any]:
    """``SELECT`` of the jobs ``user`` may see: their own, or all for an admin."""
    query = select(Job)
    return query if user.is_admin else query.where(Job.owner_id == user.id)


#: The columns ``GET /jobs`` shows (``api.schemas.JobSummary``): a page never loads the spec and
#: config documents.
LIST_COLUMNS = (
    Job.id,
    Job.kind,
    Job.name,
    Job.status,
    Job.preset,
    Job.dataset,
    Job.model,
    Job.loss,
    Job.queue,
    Job.gpus,
    Job.nodes,
    Job.devices,
    Job.attempt,
    Job.progress,
    Job.result,
    Job.failure_reason,
    Job.failure_message,
    Job.pipeline_id,
    Job.stage,
    Job.init_job_id,
    Job.depends_on,
    Job.idempotency_key,
    Job.sweep_id,
    Job.tags,
    Job.notes,
    Job.created_at,
    Job.started_at,
    Job.finished_at,
    Job.updated_at,
    Job.overall,
    Job.many,
    Job.medium,
    Job.few,
)

#: What ``GET /jobs?sort=`` orders by (``-`` first: descending); result fields put jobs
#: without that value last in both directions.
SORT_FIELDS = ("created_at", "overall", "many", "medium", "few")
DEFAULT_SORT = "-created_at"
SORT_VALUES = tuple(f"{sign}{name}" for name in SORT_FIELDS for sign in ("-", ""))


#: ``get_job``'s reads, built once: a job with its owner, for an admin and for anyone else.
_ANY_JOB = (
    select(Job).options(joinedload(Job.owner, innerjoin=True)).where(Job.id == bindparam("job_id"))
)
_OWN_JOB = _ANY_JOB.where(Job.owner_id == bindparam("owner_id"))
#: The same with the pending-reason facts of a queued job (``api.services.pending``).
_ANY_JOB_PENDING = _ANY_JOB.add_columns(*pending_columns())
_OWN_JOB_PENDING = _ANY_JOB_PENDING.where(Job.owner_id == bindparam("owner_id"))


def get_job(session: Session, user: User, job_id: str, *, for_update: bool = False) -> Job:
    """The job ``job_id`` if ``user`` may see it; 404 otherwise (also for other users' jobs).

    Read with its owner in the same query; ``for_update`` locks the job row (its owner is then
    loaded on first use, from the session when it is ``user``)."""
    if for_update:
        job = session.scalar(visible_jobs(user).where(Job.id == job_id).with_for_update())
    elif user.is_admin:
        job = session.scalar(_ANY_JOB, {"job_id": job_id})
    else:
        job = session.scalar(_OWN_JOB, {"job_id": job_id, "owner_id": user.id})
    if job is None:
        raise NotFoundError(f"job {job_id} not found")
    return job


def get_job_pending(session: Session, user: User, job_id: str) -> tuple[Job, Facts]:
    """:func:`get_job` with the facts its pending reason needs, in the same query."""
    if user.is_admin:
        row = session.execute(_ANY_JOB_PENDING, {"job_id": job_id}).first()
    else:
        row = session.execute(_OWN_JOB_PENDING, {"job_id": job_id, "owner_id": user.id}).first()
    if row is None:
        raise NotFoundError(f"job {job_id} not found")
    return row[0], facts_of([row])


@dataclass(frozen=True)
class ListFilters:
    """The filters of ``GET /jobs``; None: any."""

    status: str | None = None
    kind: str | None = None
    tag: str | None = None
    dataset: str | None = None
    loss: str | None = None
    model: str | None = None
    q: str | None = None


def parse_sort(sort: str | None) -> tuple[str, bool]:
    """``(field, descending)`` of a ``sort`` value; 422 naming the allowed ones."""
    sort = sort or DEFAULT_SORT
    if sort not in SORT_VALUES:
        raise InvalidInputError.single(
            ("query", "sort"),
            f"is {sort!r}; use one of {', '.join(SORT_VALUES)} ('-' first: highest or newest "
            "first)",
        )
    return sort.lstrip("-"), sort.startswith("-")


def _check_filters(filters: ListFilters) -> None:
    """422 for a ``loss`` or ``model`` this service has never heard of, naming the known ones."""
    known = (
        ("loss", filters.loss, catalog.LOSSES),
        ("model", filters.model, catalog.MODEL_FAMILIES),
    )
    errors = [
        FieldError(
            ("query", name),
            f"is {value!r}, which no job can have; use one of {', '.join(sorted(names))}",
            "enum",
        )
        for name, value, names in known
        if value is not None and value not in names
    ]
    if errors:
        raise InvalidInputError(errors)


def _encode_cursor(job: Job, sort: str = "created_at") -> str:
    """The cursor after ``job``: ``[created_at, id]`` for the newest-first order (the format
    pages had before other orders existed), else ``[sort, value, id]``."""
    if sort == "created_at":
        raw = json.dumps([job.created_at.isoformat(), job.id])
    else:
        raw = json.dumps([sort, getattr(job, sort), job.id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _bad_cursor() -> InvalidInputError:
    return InvalidInputError.single(
        ("query", "cursor"),
        "is not a cursor of this API for this sort; pass the next_cursor of the previous page "
        "unchanged, with the same sort",
    )


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The ``(created_at, id)`` of a cursor; 422 for anything :func:`_encode_cursor` cannot have
    written (a naive or out-of-range time, an id with characters ids never have)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None or not isinstance(job_id, str):
            raise ValueError("not a cursor")
        if not re.fullmatch(ID_PATTERN, job_id):
            raise ValueError("not a job id")
        return when.astimezone(UTC), job_id
    except (binascii.Error, ValueError, TypeError, OverflowError) as exc:
        raise _bad_cursor() from exc


def _decode_result_cursor(cursor: str, sort: str) -> tuple[float | None, str]:
    """The ``(value, id)`` of a cursor of a result-field order ``sort``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, value, job_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise _bad_cursor() from exc
    number = value is None or (isinstance(value, int | float) and not isinstance(value, bool))
    if name != sort or not number or not isinstance(job_id, str):
        raise _bad_cursor()
    if not re.fullmatch(ID_PATTERN, job_id):
        raise _bad_cursor()
    return (None if value is None else float(value)), job_id


def _after(column: Any, descending: bool, value: Any, job_id: str) -> Any:
    """The keyset condition "after ``(value, job_id)``" in the order ``column`` (nullable, nulls
    last), then id, both ``descending`` or not."""
    if value is None:
        return and_(column.is_(None), Job.id < job_id if descending else Job.id > job_id)
    row, key = tuple_(column, Job.id), (value, job_id)
    return or_(row < key if descending else row > key, column.is_(None))


def list_query(
    user: User,
    *,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    filters: ListFilters | None = None,
    sort: str | None = None,
) -> Select[Any]:
    """The ``SELECT`` of one page of :func:`list_jobs` (``limit + 1`` rows: the extra one says
    whether a next page exists).

    The cursor is a row-value keyset ``(created_at, id) < (:c, :i)``: an index range on
    ``ix_jobs_created`` / ``ix_jobs_owner_created`` (their order is the page's), so a deep page
    costs what the first one does. A result order (``sort=-few``) pages the same way on
    ``(few, id)``, the jobs without a value after all the others. Only :data:`LIST_COLUMNS` and
    the owner are loaded.

    ``tag`` matches one element of the ``tags`` array, found as ``"tag"`` in its JSON text: the
    same SQL on SQLite and PostgreSQL, and exact because a tag has no quote or backslash
    (``api.routers.job_notes.TAG_PATTERN``); ``q`` is a case-insensitive substring of the name.
    """
    filters = filters or ListFilters(status=status, kind=kind)
    field_name, descending = parse_sort(sort)
    _check_filters(filters)
    query = visible_jobs(user).options(
        load_only(*LIST_COLUMNS, raiseload=True), joinedload(Job.owner, innerjoin=True)
    )
    for name in ("status", "kind", "dataset", "loss", "model"):
        value = getattr(filters, name)
        if value is not None:
            query = query.where(getattr(Job, name) == value)
    if filters.tag is not None:
        query = query.where(cast(Job.tags, Text).contains(f'"{filters.tag}"', autoescape=True))
    if filters.q:
        query = query.where(Job.name.icontains(filters.q, autoescape=True))
    column = getattr(Job, field_name)
    if field_name == "created_at":
        if cursor is not None:
            created, job_id = _decode_cursor(cursor)
            row = tuple_(Job.created_at, Job.id)
            key = (created, job_id)
            query = query.where(row < key if descending else row > key)
        if descending:
            return query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
        return query.order_by(Job.created_at, Job.id).limit(limit + 1)
    if cursor is not None:
        value, job_id = _decode_result_cursor(cursor, field_name)
        query = query.where(_after(column, descending, value, job_id))
    order = (column.desc(), Job.id.desc()) if descending else (column.asc(), Job.id.asc())
    return query.order_by(column.is_(None), *order).limit(limit + 1)


def list_jobs(
    session: Session,
    user: User,
    *,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    filters: ListFilters | None = None,
    sort: str | None = None,
) -> tuple[list[Job], str | None, Facts]:
    """One page of jobs (newest first unless ``sort`` says otherwise), the cursor of the next
    page (None on the last) and the pending-reason facts of its queued jobs (read in the same
    query)."""
    query = list_query(
        user, status=status, kind=kind, limit=limit, cursor=cursor, filters=filters, sort=sort
    )
    rows = session.execute(query.add_columns(*pending_columns())).all()
    jobs, facts = [row[0] for row in rows], facts_of(rows)
    if len(jobs) > limit:
        return jobs[:limit], _encode_cursor(jobs[limit - 1], parse_sort(sort)[0]), facts
    return jobs, None, facts


def job_metrics(session: Session, user: User, job_id: str) -> list[MetricPoint]:
    job = get_job(session, user, job_id)
    query = select(MetricPoint).where(MetricPoint.job_id == job.id).order_by(MetricPoint.epoch)
    return list(session.scalars(query))


def job_step_metrics(session: Session, user: User, job_id: str) -> list[StepPoint]:
    """The job's step points (at most ``contract.MAX_STEP_POINTS``) in step order."""
    job = get_job(session, user, job_id)
    query = select(StepPoint).where(StepPoint.job_id == job.id).order_by(StepPoint.global_step)
    return list(session.scalars(query))


def read_logs(
    session: Session, job_id: str, offset: int, limit: int, *, status: str | None = None
) -> tuple[list[LogLine], bool]:
    """Lines with ``seq >= offset`` (at most ``limit``) and whether none will follow them.

    The job's status is read before the lines: a job that was already finished then has all its
    lines written, so "finished" is never claimed while lines are still coming. ``status``: the
    job's status as just read (saves reading it again).
    """
    if status is None:
        status = session.scalar(select(Job.status).where(Job.id == job_id))
    terminal = status in TERMINAL_STATUSES
    query = (
        select(LogLine)
        .where(LogLine.job_id == job_id, LogLine.seq >= offset)
        .order_by(LogLine.seq)
        .limit(limit)
    )
    lines = list(session.scalars(query))
    return lines, terminal and len(lines) < limit


def job_artifacts(session: Session, user: User, job_id: str) -> list[Artifact]:
    job = get_job(session, user, job_id)
    query = select(Artifact).where(Artifact.job_id == job.id).order_by(Artifact.name)
    return list(session.scalars(query))


def artifact_file(session: Session, user: User, job_id: str, name: str) -> Path:
    """The file of artifact ``name``; it must lie inside the job's artifact folder."""
    job = get_job(session, user, job_id)
    artifact = session.scalar(
        select(Artifact).where(Artifact.job_id == job.id, Artifact.name == name)
    )
    if artifact is None:
        raise NotFoundError(f"job {job_id} has no artifact {name!r}")
    folder = Path(job.artifact_dir).resolve()
    path = (folder / artifact.path).resolve()
    if not path.is_relative_to(folder):
        logger.warning("artifact %s of %s points outside its folder: %s", name, job_id, path)
        raise NotFoundError(f"job {job_id} has no artifact {name!r}")
    if not path.is_file():
        raise NotFoundError(f"the file of artifact {name!r} of job {job_id} is gone")
    return path


def export_file(session: Session, user: User, job_id: str) -> Path:
    """The job's weights export (``model.safetensors``, written when the run succeeds)."""
    job = get_job(session, user, job_id)
    if job.status != "succeeded":
        raise ConflictError(
            f"job {job_id} is {job.status}: its export is written when it succeeds; "
            "wait for it (livt wait) and export again"
        )
    return artifact_file(session, user, job_id, contract.EXPORT_FILE)


def get_pipeline(session: Session, user: User, pipeline_id: str) -> Pipeline:
    query = select(Pipeline).where(Pipeline.id == pipeline_id)
    if not user.is_admin:
        query = query.where(Pipeline.owner_id == user.id)
    pipeline = session.scalar(query)
    if pipeline is None:
        raise NotFoundError(f"pipeline {pipeline_id} not found")
    return pipeline


def gpu_limit(session: Session, settings: Settings, queue: str) -> int:
    """Most GPUs a job on ``queue`` may ask for: what a live worker of that queue offers, at
    least ``LIVT_MAX_GPUS``."""
    cutoff = utcnow() - timedelta(seconds=settings.worker_lost_seconds)
    workers = session.scalars(select(Worker).where(Worker.heartbeat_at >= cutoff))
    offered = [w.gpus for w in workers if queue in (w.queues or [])]
    return max([settings.max_gpus, *offered])


def _check_queue(session: Session, settings: Settings, queue: str, loc: Loc) -> list[FieldError]:
    """A queue no worker has ever served is a typo more often than a plan: refused unless
    ``LIVT_ALLOW_UNKNOWN_QUEUES`` is set."""
    if settings.allow_unknown_queues:
        return []
    known = known_queues(session, settings)
    if queue in known:
        return []
    return [
        FieldError(
            (*loc, "resources", "queue"),
            f"no worker has ever served queue {queue!r}; use one of: {', '.join(known)} "
            "(or set LIVT_ALLOW_UNKNOWN_QUEUES=true when its workers start later)",
            "unknown_queue",
        )
    ]


def initial_devices(
    session: Session, settings: Settings, queue: str, config: dict[str, Any]
) -> str | None:
    """``cpu`` for a job that will run on the CPU (its config says so, or every live worker of
    its queue has no GPU); None otherwise (the worker that claims it records its GPUs)."""
    if config.get("device") == CPU:
        return CPU
    serving = [w for w in live_workers(session, settings) if queue in w.queues]
    if serving and all(w.gpus == 0 for w in serving):
        return CPU
    return None


# --------------------------------------------------------------------------------------------
# building a job from a spec


@dataclass
class _Init:
    """The resolved ``init`` of a spec."""

    checkpoint: str | None = None
    job: Job | None = None
    inherited: dict[str, Any] = field(default_factory=dict)


#: Outcomes of recent helper-process checks (None: passed, else the error it raised), keyed by
#: the request and, for a file, its size and modification time: the children of a sweep share
#: their checkpoint and loss settings, and each check costs a process that imports torch.
_CHECKED: dict[str, ConfigError | CheckpointError | None] = {}
_CHECKED_MAX = 256


def _run_check(request: dict[str, Any], file: Path | None = None) -> None:
    """``checks.run_checks([request])``, remembering its outcome (not a failure to run it)."""
    key = json.dumps(request, sort_keys=True)
    if file is not None:
        stat = file.stat()
        key += f"|{stat.st_size}|{stat.st_mtime_ns}"
    if key in _CHECKED:
        outcome = _CHECKED[key]
        if outcome is not None:
            raise outcome
        return
    try:
        checks.run_checks([request])
    except (ConfigError, CheckpointError) as exc:
        outcome = exc
    else:
        outcome = None
    if len(_CHECKED) >= _CHECKED_MAX:
        _CHECKED.clear()
    _CHECKED[key] = outcome
    if outcome is not None:
        raise outcome


def _check_checkpoint_file(
    settings: Settings, raw: str, loc: Loc
) -> tuple[str | None, list[FieldError]]:
    dotted = ".".join(str(p) for p in loc[1:])
    try:
        path = settings.resolve_user_path(raw, field=dotted)
    except ConfigError as exc:
        return None, [FieldError(loc, config_error_message(exc), "path_outside_roots")]
    if not path.is_file():
        return None, [
            FieldError(
                loc,
                f"the checkpoint file does not exist; point {dotted} at an existing checkpoint "
                "file inside a data root",
                "checkpoint_missing",
            )
        ]
    try:
        _run_check(checks.checkpoint(str(path)), path)
    except checks.CheckFailed as exc:
        raise UnavailableError(f"the checkpoint {path} could not be checked: {exc}") from exc
    except CheckpointError as exc:
        return None, [
            FieldError(
                loc,
                f"{exc}; point {dotted} at a torch.save file holding a model state dict "
                "(e.g. checkpoint-best.pth of a finetune job)",
                "checkpoint_invalid",
            )
        ]
    return str(path), []


def _init_from_job(
    kind: str, source: Job, *, check_status: bool, loc: Loc
) -> tuple[_Init, list[FieldError]]:
    accepted = INIT_CHECKPOINTS[kind]
    if source.kind not in accepted:
        return _Init(), [
            FieldError(
                loc,
                f"job {source.id} is a {source.kind} job, but {kind} starts from a "
                f"{' or '.join(accepted)} job; use the id of one",
                "init_job_wrong_kind",
            )
        ]
    if check_status and source.status != "succeeded":
        return _Init(), [
            FieldError(
                loc,
                f"job {source.id} is {source.status}, not succeeded; wait until it succeeds, "
                "or submit both jobs as a pipeline (POST /pipelines)",
                "init_job_not_succeeded",
            )
        ]
    checkpoint = str(Path(source.artifact_dir) / accepted[source.kind])
    inherited = {}
    if kind == "evaluate":
        inherited = {k: source.config[k] for k in EVALUATE_INHERITS if k in source.config}
    return _Init(checkpoint=checkpoint, job=source, inherited=inherited), []


def _resolve_init(
    session: Session,
    settings: Settings,
    user: User,
    kind: str,
    init: InitRef | None,
    *,
    predecessor: Job | None,
    loc: Loc,
    predecessor_invalid: bool = False,
) -> tuple[_Init, list[FieldError]]:
    if init is None:
        if predecessor is not None:
            return _init_from_job(kind, predecessor, check_status=False, loc=(*loc, "init"))
        if kind == "evaluate" and not predecessor_invalid:
            return _Init(), [
                FieldError(
                    (*loc, "init"),
                    'evaluate needs the classifier to evaluate; set init to {"job": "<finetune '
                    'job id>"} or {"checkpoint": "<path>"}',
                    "missing",
                )
            ]
        return _Init(), []
    if init.job is not None:
        source = session.scalar(visible_jobs(user).where(Job.id == init.job))
        if source is None:
            return _Init(), [
                FieldError(
                    (*loc, "init", "job"),
                    f"job {init.job} not found; use the id of one of your succeeded "
                    f"{' or '.join(INIT_CHECKPOINTS[kind])} jobs",
                    "init_job_not_found",
                )
            ]
        return _init_from_job(kind, source, check_status=True, loc=(*loc, "init", "job"))
    # InitRef holds exactly one of job and checkpoint
    path, errors = _check_checkpoint_file(
        settings, str(init.checkpoint), (*loc, "init", "checkpoint")
    )
    return _Init(checkpoint=path), errors


def _dataset_data(
    session: Session, name: str, loc: Loc
) -> tuple[dict[str, Any], Dataset | None, list[FieldError]]:
    """The ``data`` settings of registered dataset ``name``, the row, and the errors: unknown,
    still profiling or failed."""
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is None:
        known = session.scalars(select(Dataset.name).order_by(Dataset.name)).all()
        hint = f"use one of: {', '.join(known)}" if known else "register it first (POST /datasets)"
        return (
            {},
            None,
            [FieldError((*loc, "dataset"), f"unknown dataset {name!r}; {hint}", "unknown_dataset")],
        )
    if dataset.status == "profiling":
        done, total = dataset.progress_done, dataset.progress_total
        return (
            {},
            None,
            [
                FieldError(
                    (*loc, "dataset"),
                    f"dataset {name!r} is still being profiled ({done} of {total} images read); "
                    f"submit again when GET /datasets/{name} says ready",
                    "dataset_not_ready",
                )
            ],
        )
    if dataset.status == "failed":
        return (
            {},
            None,
            [
                FieldError(
                    (*loc, "dataset"),
                    f"dataset {name!r} could not be profiled: {dataset.status_reason}; fix the "
                    "folder and register it again (POST /datasets, the same name may be reused)",
                    "dataset_failed",
                )
            ],
        )
    data: dict[str, Any] = {"dataset": dataset.kind, **dataset.params}
    if dataset.root is not None:
        data["root"] = dataset.root
    return data, dataset, []


def _profile_of(dataset: Dataset | None, overrides: dict[str, Any]) -> dict[str, Any] | None:
    """The stored profile of ``dataset`` when the run reads that very folder (the spec may
    point ``data`` elsewhere)."""
    if dataset is None or dataset.profile is None or dataset.kind != "imagefolder":
        return None
    data = overrides.get("data") or {}
    if data.get("dataset", dataset.kind) != dataset.kind or data.get("root") != dataset.root:
        return None
    return dataset.profile


def _inherited_dataset(session: Session, source: Job | None) -> Dataset | None:
    """The registered dataset a job this run inherits ``data`` from was run on."""
    if source is None or source.dataset is None:
        return None
    dataset = session.scalar(select(Dataset).where(Dataset.name == source.dataset))
    return dataset if dataset is not None and dataset.status == "ready" else None


#: Fields that come from the previous stage of a pipeline when the stage has no ``init``.
_FROM_PREDECESSOR = ("init", "checkpoint", *EVALUATE_INHERITS)


def _field_errors(
    errors: list[ConfigError], loc: Loc, *, registered: bool, predecessor_invalid: bool
) -> list[FieldError]:
    """Resolve errors as 422 entries. On a registered dataset a ``data.root`` problem is the
    dataset's (the user never wrote the root); after an invalid stage the fields that stage
    would have given are not judged."""
    out = []
    for e in errors:
        if predecessor_invalid and e.field.split(".")[0] in _FROM_PREDECESSOR:
            continue
        if registered and e.field == "data.root":
            message = config_error_message(e)
            out.append(
                FieldError(
                    (*loc, "dataset"),
                    f"{message}, then register the folder again (POST /datasets with the "
                    "same name and root reads it anew)",
                    "invalid_data",
                )
            )
            continue
        out.append(FieldError(field_loc(e.field, loc), config_error_message(e), "invalid_config"))
    return out


def _confine_paths(
    settings: Settings, kind: str, config: dict[str, Any], init: _Init, loc: Loc
) -> list[FieldError]:
    """Confines every path field of the resolved run config (``livt_core.paths``): data paths
    to the data roots, the checkpoint also to the artifact folder of the job it comes from."""
    checkpoint_roots = (Path(init.job.artifact_dir),) if init.job is not None else ()
    try:
        resolved = confine_config_paths(
            CONFIG_CLASSES[kind], config, settings.path_policy(*checkpoint_roots)
        )
    except ConfigError as exc:
        return [
            FieldError(field_loc(exc.field, loc), config_error_message(exc), "path_outside_roots")
        ]
    root = resolved.get("data.root")
    if root is not None:
        if not root.is_dir():
            return [
                FieldError(
                    (*loc, "data", "root"),
                    "is not a folder; set data.root to the dataset's folder inside a data root",
                    "path_missing",
                )
            ]
        config["data"]["root"] = str(root)
    return []


def _check_loss_options(config: dict[str, Any], loc: Loc) -> list[FieldError]:
    """The values of ``loss_kwargs`` are checked by building the loss, in a helper process."""
    if not config.get("loss_kwargs"):
        return []
    request = checks.loss(
        config["loss"],
        tau=config["tau"],
        smoothing=config["smoothing"],
        options=config["loss_kwargs"],
    )
    try:
        _run_check(request)
    except checks.CheckFailed as exc:
        raise UnavailableError(f"the loss settings could not be checked: {exc}") from exc
    except ConfigError as exc:
        return [FieldError(field_loc(exc.field, loc), config_error_message(exc), "invalid_config")]
    return []


def _site_limits(settings: Settings, config: dict[str, Any], loc: Loc) -> list[FieldError]:
    """This site's limits (``LIVT_MAX_*``), below the library's own bounds."""
    data = config.get("data") or {}
    limits = [
        ("epochs", config.get("epochs"), settings.max_epochs, "LIVT_MAX_EPOCHS"),
        ("batch_size", config.get("batch_size"), settings.max_batch_size, "LIVT_MAX_BATCH_SIZE"),
        (
            "eval_batch_size",
            config.get("eval_batch_size"),
            settings.max_batch_size,
            "LIVT_MAX_BATCH_SIZE",
        ),
        ("data.img_size", data.get("img_size"), settings.max_img_size, "LIVT_MAX_IMG_SIZE"),
        (
            "data.num_workers",
            data.get("num_workers"),
            settings.max_data_workers,
            "LIVT_MAX_DATA_WORKERS",
        ),
    ]
    return [
        FieldError(
            field_loc(name, loc),
            f"is {value}, above this site's limit of {limit} ({env}); set {name} to {limit} or "
            "less",
            "site_limit",
        )
        for name, value, limit, env in limits
        if isinstance(value, int) and value > limit
    ]


def build_job(
    session: Session,
    settings: Settings,
    user: User,
    spec: JobSpec,
    *,
    loc: Loc = ("body",),
    predecessor: Job | None = None,
    predecessor_invalid: bool = False,
) -> Job:
    """Validates ``spec`` and returns the (unsaved) queued job it describes.

    ``predecessor``: the previous stage of a pipeline, which the job starts from when the spec
    has no ``init`` (it need not have succeeded yet); ``predecessor_invalid``: that stage was
    refused, so what it would have given (``init``, the settings an evaluate inherits) is not
    judged here. A spec naming a registered image folder is resolved with the folder's stored
    profile: without a preset the ``auto`` recipe, and with one or without, the checks of the
    config against the data (``livt_core.config.consistency``). Raises
    :class:`InvalidInputError` listing every problem found.
    """
    if predecessor_invalid and getattr(spec, "init", None) is None:
        predecessor = None
    errors: list[FieldError] = []
    kind = spec.kind
    run_fields = spec.run_fields()

    job_id = new_id("j")
    init = _Init()
    if kind in CHECKPOINT_FIELD:
        if kind == "evaluate" and "checkpoint" in run_fields:
            errors.append(
                FieldError(
                    (*loc, "checkpoint"),
                    'is set from init; write init: {"checkpoint": "<path>"} instead',
                    "extra_forbidden",
                )
            )
        init, init_errors = _resolve_init(
            session,
            settings,
            user,
            kind,
            getattr(spec, "init", None),
            predecessor=predecessor,
            loc=loc,
            predecessor_invalid=predecessor_invalid,
        )
        errors += init_errors

    dataset_data: dict[str, Any] = {}
    registered: Dataset | None = None
    if spec.dataset is not None:
        dataset_data, registered, dataset_errors = _dataset_data(session, spec.dataset, loc)
        errors += dataset_errors
    elif init.inherited.get("data"):
        registered = _inherited_dataset(session, init.job)

    queue = spec.resources.queue or settings.default_queue
    errors += _check_queue(session, settings, queue, loc)
    if spec.resources.nodes > 1 and settings.embedded:
        errors.append(
            FieldError(
                (*loc, "resources", "nodes"),
                "multi-node jobs need the production mode (one worker per host, a shared "
                "artifact folder); set resources.nodes to 1 here",
                "nodes_need_production",
            )
        )

    overrides = deep_merge(init.inherited, {"data": dataset_data} if dataset_data else {})
    overrides = deep_merge(overrides, run_fields)
    if init.checkpoint is not None:
        overrides[CHECKPOINT_FIELD[kind]] = init.checkpoint
    config: dict[str, Any] = {}
    profile = _profile_of(registered, overrides)
    try:
        resolved = resolve_config(kind, spec.preset, overrides, profile=profile)
    except ConfigErrors as exc:
        errors += _field_errors(
            exc.errors,
            loc,
            registered=profile is not None and spec.dataset is not None,
            predecessor_invalid=predecessor_invalid,
        )
    else:
        config = resolved.model_dump(mode="json")
        errors += _site_limits(settings, config, loc)
        errors += _confine_paths(settings, kind, config, init, loc)
        errors += _check_loss_options(config, loc)
    # a CPU run's processes take no GPU: only GPU runs are held to what the workers offer
    limit = gpu_limit(session, settings, queue)
    if config.get("device") != CPU and spec.resources.gpus > limit:
        errors.append(
            FieldError(
                (*loc, "resources", "gpus"),
                f"asks for {spec.resources.gpus} GPUs but no worker of queue {queue!r} offers "
                f"more than {limit}; set resources.gpus to {limit} or less, or start a worker "
                "with more GPUs",
                "too_many_gpus",
            )
        )
    if errors or not config:
        # no errors but no config: only what an invalid previous stage would give is wrong
        raise InvalidInputError(errors)

    dataset = spec.dataset or (
        registered.name if profile is not None and registered else config["data"]["dataset"]
    )
    return Job(
        id=job_id,
        owner_id=user.id,
        owner=user,
        kind=kind,
        name=spec.name or f"{kind} {config['model']} on {dataset}",
        status="queued",
        spec=spec.model_dump(mode="json", exclude_unset=True),
        config=config,
        preset=spec.preset,
        dataset=dataset,
        model=config["model"],
        loss=config.get("loss"),
        queue=queue,
        gpus=spec.resources.gpus,
        nodes=spec.resources.nodes,
        devices=initial_devices(session, settings, queue, config),
        idempotency_key=spec.idempotency_key,
        init_job_id=init.job.id if init.job is not None else None,
        depends_on=predecessor.id if predecessor is not None else None,
        attempt=1,
        cancel_requested=False,
        artifact_dir=str(settings.job_artifact_dir(job_id)),
    )


# --------------------------------------------------------------------------------------------
# writes


def _find_idempotent(session: Session, user: User, key: str | None) -> Job | None:
    if key is None:
        return None
    return session.scalar(select(Job).where(Job.owner_id == user.id, Job.idempotency_key == key))


def _send(session: Session, job: Job, enqueue: Enqueue) -> None:
    """Enqueues a committed job; if the broker cannot be reached the job fails visibly."""
    try:
        enqueue(job.id, job.queue)
    except Exception as exc:
        logger.exception("could not enqueue job %s", job.id)
        begin_write(session)
        state.fail_unsent(session, job.id, f"the job could not be sent to the workers: {exc}")
        session.commit()
        raise UnavailableError(
            f"the broker is unreachable ({exc}); job {job.id} was marked failed, retry it with "
            f"POST /jobs/{job.id}/retry once the broker is back"
        ) from exc


def create_job(
    session: Session, settings: Settings, user: User, spec: JobSpec, enqueue: Enqueue
) -> tuple[Job, bool]:
    """Creates and enqueues the job of ``spec``; returns ``(job, created)``.

    With an ``idempotency_key`` the user used before for the same request, the existing job
    comes back with ``created=False`` and nothing is enqueued; used before for a different
    request, it is a 409 :class:`ConflictError` naming the key.
    """
    key = spec.idempotency_key
    digest = job_request_hash(spec.model_dump(mode="json", exclude_unset=True))
    existing = _find_idempotent(session, user, key)
    if existing is not None:
        check_same_request(existing, str(key), digest)
        return existing, False
    # validated before the write transaction: checking a checkpoint file can take a while
    job = build_job(session, settings, user, spec)
    if key is not None:
        job.request_hash = digest
    begin_write(session)
    existing = _find_idempotent(session, user, key)
    if existing is not None:
        check_same_request(existing, str(key), digest)
        return existing, False
    session.add(job)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = _find_idempotent(session, user, key)
        if existing is None:
            raise
        check_same_request(existing, str(key), digest)
        return existing, False
    logger.info("job %s (%s) created by %s", job.id, job.kind, user.name)
    _send(session, job, enqueue)
    return job, True


def _stage_keys(body: PipelineCreate) -> list[tuple[int, str]]:
    """``(stage, idempotency_key)`` of the stages that have a key; 422 for a key used twice."""
    keyed: list[tuple[int, str]] = []
    seen: set[str] = set()
    repeated: list[FieldError] = []
    for index, spec in enumerate(body.stages):
        key = spec.idempotency_key
        if key is None:
            continue
        if key in seen:
            repeated.append(
                FieldError(
                    ("body", "stages", index, "idempotency_key"),
                    "is already used by an earlier stage of this pipeline; give each stage its "
                    "own key or drop it",
                    "duplicate",
                )
            )
        seen.add(key)
        keyed.append((index, key))
    if repeated:
        raise InvalidInputError(repeated)
    return keyed


def _replayed_pipeline(
    session: Session, user: User, keyed: list[tuple[int, str]], hashes: dict[int, str]
) -> Pipeline | None:
    """The pipeline an identical earlier request made, if a stage key names one; 409 when a
    stage key was used by a different request."""
    found: Job | None = None
    for index, key in keyed:
        job = _find_idempotent(session, user, key)
        if job is None:
            continue
        check_same_request(job, key, hashes[index], where=f"stages[{index}].idempotency_key")
        found = found or job
    if found is None:
        return None
    pipeline = session.get(Pipeline, found.pipeline_id) if found.pipeline_id else None
    if pipeline is None:
        raise ConflictError(
            f"the stage keys of this request name job {found.id}, whose pipeline is gone; "
            "use new idempotency_keys"
        )
    return pipeline


def create_pipeline(
    session: Session, settings: Settings, user: User, body: PipelineCreate, enqueue: Enqueue
) -> tuple[Pipeline, bool]:
    """Creates the jobs of every stage; the first is enqueued, the others wait for their
    predecessor (``depends_on``), which the worker releases when it succeeds.

    Returns ``(pipeline, created)``: a request repeated with the same stage ``idempotency_key``
    and the same body gives the pipeline it made back (``created=False``); a stage key used
    before by a different request is a 409 naming it.
    """
    keyed = _stage_keys(body)
    dumped = body.model_dump(mode="json", exclude_unset=True)
    hashes = {index: stage_request_hash(dumped, index) for index, _ in keyed}
    existing = _replayed_pipeline(session, user, keyed, hashes)
    if existing is not None:
        return existing, False
    pipeline = Pipeline(id=new_id("p"), owner_id=user.id, name=body.name)
    previous: Job | None = None
    jobs: list[Job] = []
    errors: list[FieldError] = []
    for index, spec in enumerate(body.stages):
        # every stage is checked before any job is created; a stage after a refused one is
        # judged on what it says itself (see build_job's predecessor_invalid)
        try:
            job = build_job(
                session,
                settings,
                user,
                spec,
                loc=("body", "stages", index),
                predecessor=previous,
                predecessor_invalid=index > 0 and previous is None,
            )
        except InvalidInputError as exc:
            errors += exc.errors
            previous = None
            continue
        job.pipeline_id = pipeline.id
        job.stage = index
        job.request_hash = hashes.get(index)
        jobs.append(job)
        previous = job
    if errors:
        raise InvalidInputError(errors)
    begin_write(session)
    existing = _replayed_pipeline(session, user, keyed, hashes)
    if existing is not None:
        return existing, False
    session.add(pipeline)
    session.add_all(jobs)
    try:
        session.commit()
    except IntegrityError:
        # a concurrent request took one of the stage keys between the check and the commit
        session.rollback()
        existing = _replayed_pipeline(session, user, keyed, hashes)
        if existing is None:
            raise
        return existing, False
    logger.info("pipeline %s with %d stages created by %s", pipeline.id, len(jobs), user.name)
    _send(session, jobs[0], enqueue)
    return pipeline, True


def cancel_job(session: Session, user: User, job_id: str) -> Job:
    """Cancels the job (see :func:`livt_service.state.request_cancel`); 409 for a finished job."""
    begin_write(session)
    job = get_job(session, user, job_id, for_update=True)
    try:
        state.request_cancel(session, job, by=user.name)
    except state.TransitionError as exc:
        raise ConflictError(str(exc)) from None
    session.commit()
    logger.info("job %s: cancel requested by %s, now %s", job.id, user.name, job.status)
    return job


def retry_job(session: Session, user: User, job_id: str, enqueue: Enqueue) -> Job:
    """Queues a failed or cancelled job again (see :func:`livt_service.state.retry`); 409 for
    any other status."""
    begin_write(session)
    job = get_job(session, user, job_id, for_update=True)
    try:
        send = state.retry(session, job, by=user.name)
    except state.TransitionError as exc:
        raise ConflictError(str(exc)) from None
    session.commit()
    logger.info("job %s retried by %s (attempt %d)", job.id, user.name, job.attempt)
    if send:
        _send(session, job, enqueue)
    return job
