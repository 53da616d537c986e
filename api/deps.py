"""Dependencies of the routes: settings, a database session, the current user, the enqueuer."""

from __future__ import annotations

import hmac
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from api.services.jobs import Enqueue
from api.services.users import MISSING_TOKEN, TokenRejected, authenticate
from livt_service.datasets import EnqueueProfile
from livt_service.models import User
from livt_service.settings import Settings

T = TypeVar("T")


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


#: Methods whose routes only read (at most single-statement writes such as a token's
#: ``last_used_at``): they get an autocommit session (``livt_service.db.get_api_engines``).
READ_METHODS = frozenset({"GET", "HEAD"})


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session per request; closed (and any open transaction rolled back) afterwards.

    ``GET`` and ``HEAD`` requests read through the autocommit engine: no ``BEGIN`` and no
    rollback around their statements, so closing their session does no I/O and happens right
    here; other sessions are closed in a worker thread. (An async dependency: creating a
    session connects to nothing, and a sync one would cost two thread hops per request.)"""
    state = request.app.state
    read = request.method in READ_METHODS
    session = (state.read_sessionmaker if read else state.sessionmaker)()
    try:
        yield session
    finally:
        if read:
            session.close()
        else:
            await anyio.to_thread.run_sync(session.close)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(
    auto_error=False, description="an API token: `livt token create --name NAME` prints one"
)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=message, headers={"WWW-Authenticate": "Bearer"}
    )


def get_current_user(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The owner of the request's bearer token; 401 without one or with an unknown, revoked
    or expired one."""
    if credentials is None:
        raise _unauthorized(MISSING_TOKEN)
    try:
        return authenticate(session, credentials.credentials)
    except TokenRejected as exc:
        raise _unauthorized(str(exc)) from None


CurrentUser = Annotated[User, Depends(get_current_user)]
#: The bearer credentials alone, for routes that authenticate with :func:`run_as_user`.
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def run_as_user(
    session: Session, credentials: HTTPAuthorizationCredentials | None, work: Callable[[User], T]
) -> T:
    """Authenticates (as :data:`CurrentUser` does) and runs ``work(user)`` in one worker
    thread: the polling routes then cost one thread hop per request instead of two.

    ``work`` must only read. A connection found dead on its first use (the database restarted
    since: the API's pools do not pre-ping) is dropped and the request tried once more on a
    fresh one, so a restart costs these routes no failed request."""

    def attempt() -> T:
        try:
            return work(get_current_user(session, credentials))
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            session.rollback()
            return work(get_current_user(session, credentials))

    return await anyio.to_thread.run_sync(attempt)


def require_metrics_access(
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """``/metrics`` shows service-wide counts: the metrics token (``LIVT_METRICS_TOKEN``) or an
    admin's token; 401 without a valid token, 403 for a user who is not an admin."""
    if credentials is None:
        raise _unauthorized(MISSING_TOKEN)
    expected = settings.metrics_token
    if expected is not None and hmac.compare_digest(
        credentials.credentials.encode(), expected.get_secret_value().encode()
    ):
        return
    user = get_current_user(session, credentials)
    if not user.is_admin:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=(
                "/metrics shows service-wide counts and is open to admins and the metrics token "
                "only; scrape it with LIVT_METRICS_TOKEN, or use an admin token "
                "(`livt token create --admin`)"
            ),
        )


MetricsAccess = Depends(require_metrics_access)


async def get_enqueuer() -> Enqueue:
    """``livt_service.queue.enqueue``: sends a job id to a Celery queue (tests swap this)."""
    from livt_service.queue import enqueue

    return enqueue


EnqueueDep = Annotated[Enqueue, Depends(get_enqueuer)]


async def app_enqueuer(app: FastAPI) -> Enqueue:
    """The enqueuer the routes of ``app`` get (its ``dependency_overrides`` included), for the
    app's background threads."""
    provider = app.dependency_overrides.get(get_enqueuer, get_enqueuer)
    enqueue = provider()
    if inspect.isawaitable(enqueue):
        enqueue = await enqueue
    return enqueue


def get_profile_enqueuer() -> EnqueueProfile:
    """``livt_service.queue.enqueue_profile``: sends a dataset profiling to the workers (tests
    swap this)."""
    from livt_service.queue import enqueue_profile

    return enqueue_profile


ProfileEnqueueDep = Annotated[EnqueueProfile, Depends(get_profile_enqueuer)]
