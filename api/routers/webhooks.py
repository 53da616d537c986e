"""``/webhooks``: URLs called when your jobs end (all of them, or one), and their delivery log.

The payload, the signature header and the retries are described in :mod:`api.webhooks`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from api import webhooks as service
from api.deps import CurrentUser, SessionDep
from api.request_limits import BODY_TOO_LARGE
from livt_service.models import Webhook, WebhookDelivery

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

WebhookId = Annotated[str, Path(description="a webhook id, wh_...", pattern=r"^wh_[0-9a-z]{1,40}$")]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"url": "https://ci.example.org/livt-hook"}]},
    )

    url: str = Field(max_length=2000, description="http(s) URL that gets a POST per finished job")
    job_id: str | None = Field(
        None, max_length=32, description="only this job of yours; omitted: every job of yours"
    )


class WebhookPublic(BaseModel):
    id: str
    url: str
    job_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, hook: Webhook) -> WebhookPublic:
        return cls(id=hook.id, url=hook.url, job_id=hook.job_id, created_at=hook.created_at)


class WebhookCreated(WebhookPublic):
    secret: str = Field(
        description="HMAC-SHA256 key of X-Livt-Signature; shown only in this answer"
    )


class WebhookList(BaseModel):
    items: list[WebhookPublic]


class DeliveryPublic(BaseModel):
    id: int
    job_id: str | None = Field(description="the job, for a job.* event")
    job_attempt: int | None
    sweep_id: str | None = Field(description="the sweep, for a sweep.* event")
    event: str
    status: str = Field(description="pending (retries left), delivered or failed")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict

    @classmethod
    def of(cls, d: WebhookDelivery) -> DeliveryPublic:
        return cls(
            id=d.id,
            job_id=d.job_id,
            job_attempt=d.job_attempt,
            sweep_id=d.sweep_id,
            event=d.event,
            status=d.status,
            attempts=d.attempts,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
            created_at=d.created_at,
            delivered_at=d.delivered_at,
            payload=d.payload,
        )


class DeliveryList(BaseModel):
    items: list[DeliveryPublic]


@router.post(
    "",
    response_model=WebhookCreated,
    status_code=status.HTTP_201_CREATED,
    responses={
        422: {"description": "not an http(s) URL, or job_id is not a job of yours"},
        **BODY_TOO_LARGE,
    },
)
def create_webhook(
    *, body: WebhookCreate, session: SessionDep, user: CurrentUser
) -> WebhookCreated:
    """Call ``url`` when a job of yours (or the one ``job_id``) succeeds, fails or is cancelled.
    Keep the ``secret`` of the answer: it signs every delivery and is not shown again."""
    hook = service.create_webhook(session, user, body.url, body.job_id)
    return WebhookCreated(**WebhookPublic.of(hook).model_dump(), secret=hook.secret)


@router.get("", response_model=WebhookList)
def list_webhooks(*, session: SessionDep, user: CurrentUser) -> WebhookList:
    return WebhookList(items=[WebhookPublic.of(h) for h in service.list_webhooks(session, user)])


@router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryList,
    responses={404: {"description": "no such webhook, or not yours"}},
)
def list_deliveries(
    *,
    webhook_id: WebhookId,
    session: SessionDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveryList:
    """The delivery log of a webhook of yours, newest first: status, tries, last answer."""
    items = service.deliveries(session, user, webhook_id, limit)
    return DeliveryList(items=[DeliveryPublic.of(d) for d in items])


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={404: {"description": "no such webhook, or not yours"}},
)
def delete_webhook(*, webhook_id: WebhookId, session: SessionDep, user: CurrentUser) -> Response:
    """Stop calling the URL; its pending deliveries are dropped with it."""
    service.delete_webhook(session, user, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
