"""``/healthz`` (the process answers) and ``/readyz`` (its database and broker answer)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
from fastapi import APIRouter, Request, Response, status

from api.errors import DATABASE_RETRY_AFTER_SECONDS
from api.schemas import Health, Readiness
from api.services.health import check_broker, check_database

router = APIRouter(tags=["health"])


async def _probe(check: Callable[[], None], timeout: float) -> str:
    try:
        with anyio.fail_after(timeout):
            await anyio.to_thread.run_sync(check, abandon_on_cancel=True)
    except TimeoutError:
        return f"down: no answer within {timeout:g} s"
    except Exception as exc:
        text = str(exc).strip().splitlines()
        return f"down: {type(exc).__name__}: {text[0] if text else 'no details'}"
    return "ok"


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "what is down, and why"}},
)
async def readyz(*, request: Request, response: Response) -> Readiness:
    settings = request.app.state.settings
    engine = request.app.state.engine
    timeout = settings.readiness_timeout_seconds
    database = await _probe(lambda: check_database(engine), timeout)
    broker = await _probe(
        lambda: check_broker(settings.broker_url, settings.default_queue, timeout), timeout
    )
    if database != "ok" or broker != "ok":
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return Readiness(database=database, broker=broker)
