"""``/metrics``: Prometheus text exposition (jobs by status, queue depth, HTTP traffic)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.deps import CurrentUser
from api.telemetry import CONTENT_TYPE

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    response_model=None,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
def metrics(*, request: Request, user: CurrentUser) -> Response:
    """Scrape with a bearer token (``authorization`` in the Prometheus scrape config)."""
    return Response(request.app.state.telemetry.render(), media_type=CONTENT_TYPE)
