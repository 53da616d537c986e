"""``/pipelines``: pretrain → finetune → evaluate chains, each stage from the previous one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from api.deps import CurrentUser, EnqueueDep, SessionDep, SettingsDep
from api.request_limits import BODY_TOO_LARGE
from api.schemas import ID_PATTERN, JobPublic, PipelineCreate, PipelinePublic
from api.services import jobs as service
from livt_service.models import Pipeline

router = APIRouter(prefix="/pipelines", tags=["pipelines"])


def _public(pipeline: Pipeline) -> PipelinePublic:
    return PipelinePublic(
        id=pipeline.id, name=pipeline.name, jobs=[JobPublic.from_job(j) for j in pipeline.jobs]
    )


@router.post(
    "",
    response_model=PipelinePublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {
            "model": PipelinePublic,
            "description": "the pipeline an identical request with the same stage keys made",
        },
        409: {"description": "a stage idempotency_key was used for a different request"},
        422: {"description": "a stage is invalid; loc is ['body', 'stages', i, ...]"},
        **BODY_TOO_LARGE,
    },
)
def create_pipeline(
    *,
    body: PipelineCreate,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    enqueue: EnqueueDep,
) -> PipelinePublic:
    """Create every stage's job; the first runs now, each later one when its predecessor
    succeeds (and is cancelled if the predecessor fails or is cancelled)."""
    pipeline, created = service.create_pipeline(session, settings, user, body, enqueue)
    if not created:
        response.status_code = status.HTTP_200_OK
    return _public(pipeline)


@router.get("/{pipeline_id}", response_model=PipelinePublic, responses={404: {}})
def get_pipeline(
    *,
    pipeline_id: Annotated[str, Path(description="a pipeline id, p_...", pattern=ID_PATTERN)],
    session: SessionDep,
    user: CurrentUser,
) -> PipelinePublic:
    return _public(service.get_pipeline(session, user, pipeline_id))
