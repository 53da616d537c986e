"""``PATCH /jobs/{id}`` (name, tags, notes) and ``DELETE /jobs/{id}``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.deps import CurrentUser, SessionDep, SettingsDep
from api.request_limits import BODY_TOO_LARGE
from api.schemas import ID_PATTERN, JobPublic
from api.services import job_notes as service
from livt_core.paths import SafeStr

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[str, Path(description="a job id, j_...", pattern=ID_PATTERN)]
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,49}$"


class JobUpdate(BaseModel):
    """The fields to change; those left out keep their value."""

    model_config = ConfigDict(extra="forbid")

    name: SafeStr | None = Field(None, min_length=1, max_length=200)
    tags: list[Annotated[str, Field(pattern=TAG_PATTERN)]] | None = Field(
        None,
        max_length=20,
        description="labels: 1-50 letters, digits, '.', '_', ':' or '-', at most 20, each once",
    )
    notes: SafeStr | None = Field(None, max_length=10_000)

    @field_validator("tags")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("lists a tag twice; give each tag once")
        return value


@router.patch(
    "/{job_id}",
    response_model=JobPublic,
    responses={404: {"description": "no such job, or not yours"}, **BODY_TOO_LARGE},
)
def update_job(
    *, job_id: JobId, body: JobUpdate, session: SessionDep, user: CurrentUser
) -> JobPublic:
    """Renames the job, replaces its tags or its notes (``notes: null`` clears them)."""
    changes = body.model_dump(exclude_unset=True)
    if changes.get("name") is None:
        changes.pop("name", None)  # a job always has a name
    return JobPublic.from_job(service.update_job(session, user, job_id, changes))


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={
        404: {"description": "no such job, or not yours"},
        409: {"description": "the job is not finished, or another job starts from it"},
    },
)
def delete_job(
    *, job_id: JobId, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> Response:
    """Deletes a finished job with its logs, metrics and artifact files (owner or admin)."""
    service.delete_job(session, settings, user, job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
