"""``/jobs``: submit, list, inspect, cancel and retry jobs; their metrics, logs and artifacts."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
import zipfile
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Body, Header, Path, Query, Request, Response, status
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask

from api.deps import Credentials, CurrentUser, EnqueueDep, SessionDep, SettingsDep, run_as_user
from api.errors import InvalidInputError, NotFoundError
from api.request_limits import BODY_TOO_LARGE
from api.routers.job_notes import TAG_PATTERN
from api.schemas import (
    ARTIFACT_NAME_PATTERN,
    ID_PATTERN,
    ArtifactList,
    ArtifactPublic,
    JobCreate,
    JobKind,
    JobList,
    JobPublic,
    JobStatus,
    JobSummary,
    LogLinePublic,
    LogPage,
    MetricHistory,
    MetricPointPublic,
)
from api.services import jobs as service
from api.services.pending import pending_reason, pending_reasons
from livt_core.export import TIMM_CONFIG_FILE, WEIGHTS_FILE, read_config
from livt_core.paths import SafeStr
from livt_service.models import User

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[str, Path(description="a job id, j_...", pattern=ID_PATTERN)]
#: Log line numbers are 32-bit in the database.
MAX_SEQ = 2**31 - 1
_VALIDATION = {422: {"description": "invalid input: each entry names the field and the fix"}}
_NOT_FOUND = {404: {"description": "no such job, or not yours"}}

#: Log lines sent per database read of the stream.
STREAM_BATCH = 500
#: Seconds without lines after which the stream sends a comment to keep proxies from closing it.
STREAM_KEEPALIVE_SECONDS = 15.0


@router.post(
    "",
    response_model=JobPublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": JobPublic, "description": "the existing job of a repeated idempotency_key"},
        409: {"description": "the idempotency_key was used for a different request"},
        503: {"description": "the broker is unreachable; the job was marked failed"},
        **_VALIDATION,
        **BODY_TOO_LARGE,
    },
)
def create_job(
    *,
    spec: Annotated[JobCreate, Body()],
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    enqueue: EnqueueDep,
) -> JobPublic:
    """Submit a pretrain, finetune or evaluate job (a discriminated union on ``kind``)."""
    job, created = service.create_job(session, settings, user, spec, enqueue)
    if not created:
        response.status_code = status.HTTP_200_OK
    return JobPublic.from_job(job, pending_reason(session, settings, job))


def json_response(model: BaseModel) -> Response:
    """``model`` as a JSON response, serialised once by pydantic: a route that returns a model
    of its ``response_model`` would otherwise have FastAPI dump, re-validate and re-serialise
    it (a third of the time of a ``GET /jobs/{id}``)."""
    return Response(model.__pydantic_serializer__.to_json(model), media_type="application/json")


@router.get("", response_model=JobList, responses=_VALIDATION)
async def list_jobs(
    *,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Credentials,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    kind: JobKind | None = None,
    tag: Annotated[
        str | None, Query(pattern=TAG_PATTERN, description="jobs carrying this tag")
    ] = None,
    dataset: Annotated[SafeStr | None, Query(max_length=100, description="dataset name")] = None,
    loss: Annotated[
        SafeStr | None, Query(max_length=64, description="loss name, e.g. bal_bce")
    ] = None,
    model: Annotated[SafeStr | None, Query(max_length=100, description="model name")] = None,
    q: Annotated[
        SafeStr | None,
        Query(max_length=200, description="case-insensitive substring of the name"),
    ] = None,
    sort: Annotated[
        str,
        Query(
            description="created_at, overall, many, medium or few; '-' first for newest or "
            "highest first (jobs without the value come last)"
        ),
    ] = service.DEFAULT_SORT,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Response:
    """Your jobs (all jobs for an admin), newest first unless ``sort`` says otherwise, one page
    at a time; the filters combine with AND."""
    filters = service.ListFilters(
        status=status_, kind=kind, tag=tag, dataset=dataset, loss=loss, model=model, q=q
    )

    def page(user: User) -> Response:
        jobs, next_cursor, facts = service.list_jobs(
            session, user, limit=limit, cursor=cursor, filters=filters, sort=sort
        )
        reasons = pending_reasons(session, settings, jobs, facts)
        return json_response(
            JobList(
                items=[JobSummary.from_job(j, reasons.get(j.id)) for j in jobs],
                next_cursor=next_cursor,
            )
        )

    return await run_as_user(session, credentials, page)


@router.get("/{job_id}", response_model=JobPublic, responses=_NOT_FOUND)
async def get_job(
    *, job_id: JobId, session: SessionDep, settings: SettingsDep, credentials: Credentials
) -> Response:
    def read(user: User) -> Response:
        job, facts = service.get_job_pending(session, user, job_id)
        return json_response(JobPublic.from_job(job, pending_reason(session, settings, job, facts)))

    return await run_as_user(session, credentials, read)


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    responses={**_NOT_FOUND, 409: {"description": "the job is already finished"}},
)
def cancel_job(*, job_id: JobId, session: SessionDep, user: CurrentUser) -> JobPublic:
    """A queued job is cancelled at once; a running one becomes ``cancelling`` until it stops."""
    return JobPublic.from_job(service.cancel_job(session, user, job_id))


@router.post(
    "/{job_id}/retry",
    response_model=JobPublic,
    responses={**_NOT_FOUND, 409: {"description": "the job is neither failed nor cancelled"}},
)
def retry_job(
    *, job_id: JobId, session: SessionDep, user: CurrentUser, enqueue: EnqueueDep
) -> JobPublic:
    """Queue a failed or cancelled job again (``attempt + 1``), resuming from its checkpoint."""
    return JobPublic.from_job(service.retry_job(session, user, job_id, enqueue))


@router.get(
    "/{job_id}/metrics", response_model=MetricHistory, responses={**_NOT_FOUND, **_VALIDATION}
)
def job_metrics(
    *,
    job_id: JobId,
    session: SessionDep,
    user: CurrentUser,
    level: Annotated[
        Literal["epoch", "step"],
        Query(description="epoch: one point per epoch; step: training steps, downsampled"),
    ] = "epoch",
) -> MetricHistory:
    """Per-epoch history (train loss, lr, validation accuracy overall / many / medium / few),
    or with ``level=step`` the training steps' loss, lr and images/s: at most 2,000 points a
    job, the first step of each of 2,000 equal spans of its steps."""
    if level == "step":
        steps = service.job_step_metrics(session, user, job_id)
        items = [
            MetricPointPublic(epoch=p.epoch, metrics=p.metrics, global_step=p.global_step)
            for p in steps
        ]
    else:
        points = service.job_metrics(session, user, job_id)
        items = [MetricPointPublic(epoch=p.epoch, metrics=p.metrics) for p in points]
    return MetricHistory(job_id=job_id, level=level, items=items)


@router.get("/{job_id}/logs", response_model=LogPage, responses=_NOT_FOUND)
async def job_logs(
    *,
    job_id: JobId,
    session: SessionDep,
    credentials: Credentials,
    offset: Annotated[int, Query(ge=0, le=MAX_SEQ, description="first seq to return")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> Response:
    """Log lines from ``offset``; go on from ``next_offset`` until ``finished``."""

    def read(user: User) -> Response:
        job = service.get_job(session, user, job_id)
        lines, finished = service.read_logs(session, job.id, offset, limit, status=job.status)
        page = LogPage(
            job_id=job.id,
            lines=[LogLinePublic.model_validate(line, from_attributes=True) for line in lines],
            next_offset=lines[-1].seq + 1 if lines else offset,
            finished=finished,
        )
        return json_response(page)

    return await run_as_user(session, credentials, read)


def _resume_offset(last_event_id: str | None) -> int | None:
    """The offset after ``Last-Event-ID`` (None when absent); 422 unless it is a seq."""
    if last_event_id is None or not last_event_id.strip():
        return None
    text = last_event_id.strip()
    if not (text.isascii() and text.isdigit()) or int(text) >= MAX_SEQ:
        raise InvalidInputError.single(
            ("header", "last-event-id"),
            f"must be the id of a log line received before, an integer in [0, {MAX_SEQ - 1}]; "
            "send the id: of the last event, or no Last-Event-ID to start at offset",
        )
    return int(text) + 1


def _sse(line: dict[str, Any]) -> str:
    return f"id: {line['seq']}\ndata: {json.dumps(line, ensure_ascii=False)}\n\n"


@router.get(
    "/{job_id}/logs/stream",
    response_class=StreamingResponse,
    response_model=None,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "one event per log line"},
        204: {"description": "the job is finished and has no lines after the offset"},
        **_NOT_FOUND,
    },
)
async def stream_logs(
    *,
    job_id: JobId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    offset: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    last_event_id: Annotated[
        str | None,
        Header(max_length=20, description="seq of the last line received (sent on reconnect)"),
    ] = None,
) -> Response:
    """Server-Sent Events: one ``data:`` JSON line per log line (``id:`` is its seq), ending
    when the job is finished. A reconnect (``Last-Event-ID``) resumes after the last line."""
    resume_from = _resume_offset(last_event_id)
    await anyio.to_thread.run_sync(service.get_job, session, user, job_id)
    # The request's session must not stay open for the length of the stream (on SQLite an open
    # transaction would hold the write lock): each poll below uses a short session of its own.
    await anyio.to_thread.run_sync(session.close)
    if resume_from is not None:
        offset = max(offset, resume_from)
    factory = request.app.state.sessionmaker

    def fetch(start: int) -> tuple[list[dict[str, Any]], bool]:
        with factory() as poll_session:
            lines, finished = service.read_logs(poll_session, job_id, start, STREAM_BATCH)
            return [
                LogLinePublic.model_validate(line, from_attributes=True).model_dump(mode="json")
                for line in lines
            ], finished

    first, finished = await anyio.to_thread.run_sync(fetch, offset)
    if finished and not first:
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    async def events() -> AsyncIterator[str]:
        lines, done, seq, quiet = first, finished, offset, 0.0
        while True:
            for line in lines:
                yield _sse(line)
                seq = line["seq"] + 1
            if done:
                return
            if lines:
                quiet = 0.0
            else:
                await anyio.sleep(settings.log_stream_poll_seconds)
                quiet += settings.log_stream_poll_seconds
                if quiet >= STREAM_KEEPALIVE_SECONDS:
                    yield ": keep-alive\n\n"
                    quiet = 0.0
            lines, done = await anyio.to_thread.run_sync(fetch, seq)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/{job_id}/artifacts", response_model=ArtifactList, responses=_NOT_FOUND)
def job_artifacts(
    *, job_id: JobId, request: Request, session: SessionDep, user: CurrentUser
) -> ArtifactList:
    """Checkpoints (last, best), the resolved config, history and results of a job."""
    artifacts = service.job_artifacts(session, user, job_id)
    return ArtifactList(
        items=[
            ArtifactPublic(
                name=a.name,
                kind=a.kind,
                size_bytes=a.size_bytes,
                created_at=a.created_at,
                url=request.app.url_path_for("download_artifact", job_id=job_id, name=a.name),
            )
            for a in artifacts
        ]
    )


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=FileResponse,
    response_model=None,
    responses={200: {"content": {"application/octet-stream": {}}}, **_NOT_FOUND},
)
def download_artifact(
    *,
    job_id: JobId,
    name: Annotated[str, Path(pattern=ARTIFACT_NAME_PATTERN, description="an artifact name")],
    session: SessionDep,
    user: CurrentUser,
) -> FileResponse:
    path = service.artifact_file(session, user, job_id, name)
    return FileResponse(path, filename=name, media_type="application/octet-stream")


def _timm_zip(weights: pathlib.Path) -> pathlib.Path:
    """A zip of ``model.safetensors`` and timm's ``config.json`` (from the weights' metadata),
    in a temporary file the response deletes once sent."""
    try:
        config = read_config(weights)
    except ValueError as exc:
        raise NotFoundError(f"the export of this job is unreadable: {exc}") from None
    fd, name = tempfile.mkstemp(prefix="livt-export-", suffix=".zip")
    os.close(fd)
    try:
        with zipfile.ZipFile(name, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.write(weights, WEIGHTS_FILE)
            archive.writestr(TIMM_CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    except BaseException:
        os.unlink(name)
        raise
    return pathlib.Path(name)


@router.get(
    "/{job_id}/export",
    response_class=FileResponse,
    response_model=None,
    responses={
        200: {
            "content": {"application/octet-stream": {}, "application/zip": {}},
            "description": "safetensors: model.safetensors (the timm config in its metadata); "
            "timm: a zip of model.safetensors and config.json",
        },
        **_NOT_FOUND,
        409: {"description": "the job has not succeeded (the export is written when it does)"},
        **_VALIDATION,
    },
)
def export_job(
    *,
    job_id: JobId,
    session: SessionDep,
    user: CurrentUser,
    format: Annotated[  # noqa: A002 - the query parameter's name
        Literal["safetensors", "timm"],
        Query(description="safetensors: the weights file; timm: a zip for timm's local-dir:"),
    ] = "safetensors",
) -> FileResponse:
    """The weights of a succeeded job for timm (no optimizer state): the classifier, or the
    encoder of a pretrain (MGP) job. ``timm.create_model("local-dir:DIR", pretrained=True)``
    loads the unzipped ``timm`` export."""
    weights = service.export_file(session, user, job_id)
    if format == "safetensors":
        return FileResponse(
            weights, filename=f"{job_id}-{WEIGHTS_FILE}", media_type="application/octet-stream"
        )
    archive = _timm_zip(weights)
    return FileResponse(
        archive,
        filename=f"{job_id}-timm.zip",
        media_type="application/zip",
        background=BackgroundTask(os.unlink, archive),
    )
