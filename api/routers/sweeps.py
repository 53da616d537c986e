"""``/sweeps``: a grid × seeds of jobs from one request, and its mean ± std table."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import PlainTextResponse

from api.deps import CurrentUser, EnqueueDep, SessionDep, SettingsDep
from api.request_limits import BODY_TOO_LARGE
from api.schemas import ID_PATTERN, JobSummary
from api.services import sweep_search
from api.services import sweeps as service
from api.sweep_schemas import SweepCreate, SweepList, SweepPublic, SweepSummary
from livt_service.models import Sweep

router = APIRouter(prefix="/sweeps", tags=["sweeps"])

SweepId = Annotated[str, Path(description="a sweep id, s_...", pattern=ID_PATTERN)]
_NOT_FOUND = {404: {"description": "no such sweep, or not yours"}}
#: Media types of the table exports.
MEDIA_TYPES = {"md": "text/markdown", "csv": "text/csv", "latex": "application/x-latex"}


def _public(sweep: Sweep) -> SweepPublic:
    return SweepPublic(
        id=sweep.id,
        name=sweep.name,
        status=service.sweep_status(sweep),  # type: ignore[arg-type]
        created_at=sweep.created_at,
        grid=sweep.spec.get("grid") or {},
        seeds=sweep.spec.get("seeds") or [],
        jobs=[JobSummary.from_job(j) for j in sweep.jobs],
        table=service.sweep_table(sweep),  # type: ignore[arg-type]
        search=sweep.spec.get("search"),
        best=sweep_search.best_trial(sweep) if sweep.spec.get("search") else None,
    )


@router.post(
    "",
    response_model=SweepPublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        422: {
            "description": "the request or a child is invalid (checked for every child before "
            "any is created); loc is ['body', 'grid', field, i], ['body', 'seeds', i] or "
            "['body', 'base', ...]"
        },
        503: {"description": "the broker is unreachable; the unsent jobs were marked failed"},
        **BODY_TOO_LARGE,
    },
)
def create_sweep(
    *,
    body: SweepCreate,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    enqueue: EnqueueDep,
) -> SweepPublic:
    """One job per grid point × seed, each ``base`` with the grid's fields and the seed set.

    A ``base`` finetune with ``init: {"job": ...}`` fans every child out from that one job; a
    pipeline ``base`` (``stages``) runs its first stage once per seed and the grid's finetune
    stages (and the stages after them) from it."""
    return _public(service.create_sweep(session, settings, user, body, enqueue))


@router.get("", response_model=SweepList)
def list_sweeps(
    *,
    session: SessionDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> SweepList:
    """Your sweeps (all for an admin), newest first."""
    return SweepList(
        items=[
            SweepSummary(
                id=s.id,
                name=s.name,
                status=service.sweep_status(s),  # type: ignore[arg-type]
                created_at=s.created_at,
                grid=s.spec.get("grid") or {},
                seeds=s.spec.get("seeds") or [],
                num_jobs=len(s.jobs),
            )
            for s in service.list_sweeps(session, user, limit)
        ]
    )


@router.get("/{sweep_id}", response_model=SweepPublic, responses=_NOT_FOUND)
def get_sweep(
    *,
    request: Request,
    sweep_id: SweepId,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    enqueue: EnqueueDep,
) -> SweepPublic:
    """The sweep's status, its jobs and the table: one row per grid point with ``n`` (seeds
    finished with a result) and mean / std of overall, many, medium, few, top5 and ece. Reading
    an adaptive sweep tells its search the finished trials and asks the next ones (the API also
    does so every few seconds without a read)."""
    sweep = service.get_sweep(session, user, sweep_id)
    if not sweep_search.search_open(sweep):
        return _public(sweep)
    # advancing writes: in a transaction of its own, not on this read's autocommit session
    with request.app.state.sessionmaker() as write:
        sweep = service.get_sweep(write, user, sweep_id)
        return _public(service.refresh(write, settings, sweep, enqueue))


@router.get(
    "/{sweep_id}/table",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {t: {} for t in MEDIA_TYPES.values()}},
        **_NOT_FOUND,
    },
)
def sweep_table(
    *,
    sweep_id: SweepId,
    session: SessionDep,
    user: CurrentUser,
    format_: Annotated[Literal["md", "csv", "latex"], Query(alias="format")] = "md",
) -> PlainTextResponse:
    """The table for a paper: Markdown, CSV (mean and std columns) or a LaTeX tabular."""
    sweep = service.get_sweep(session, user, sweep_id)
    text = service.export_table(sweep, service.sweep_table(sweep), format_)
    return PlainTextResponse(text, media_type=MEDIA_TYPES[format_])


@router.post(
    "/{sweep_id}/cancel",
    response_model=SweepPublic,
    responses={**_NOT_FOUND, 409: {"description": "every job of the sweep is finished"}},
)
def cancel_sweep(*, sweep_id: SweepId, session: SessionDep, user: CurrentUser) -> SweepPublic:
    """Cancels every unfinished job: queued ones at once, running ones once they stop."""
    return _public(service.cancel_sweep(session, user, sweep_id))
