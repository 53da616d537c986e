"""``/metrics``: Prometheus text exposition (jobs by status, queue depth, HTTP traffic)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.deps import MetricsAccess
from api.telemetry import CONTENT_TYPE

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    response_model=None,
    dependencies=[MetricsAccess],
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"},
        401: {"description": "no token, or not a valid one"},
        403: {"description": "a valid token of a user who is not an admin"},
    },
)
def metrics(*, request: Request) -> Response:
    """Service-wide job counts, queue depth and HTTP traffic. Scrape it with the metrics token
    (``LIVT_METRICS_TOKEN``; ``authorization`` in the Prometheus scrape config) or an admin's
    token."""
    return Response(request.app.state.telemetry.render(), media_type=CONTENT_TYPE)
