"""Dependencies of the routes: settings, a database session, the current user, the enqueuer."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.services.jobs import Enqueue
from api.services.users import MISSING_TOKEN, TokenRejected, authenticate
from livt_service.datasets import EnqueueProfile
from livt_service.models import User
from livt_service.settings import Settings


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """A session per request; closed (and any open transaction rolled back) afterwards."""
    with request.app.state.sessionmaker() as session:
        yield session


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


def get_enqueuer() -> Enqueue:
    """``livt_service.queue.enqueue``: sends a job id to a Celery queue (tests swap this)."""
    from livt_service.queue import enqueue

    return enqueue


EnqueueDep = Annotated[Enqueue, Depends(get_enqueuer)]


def get_profile_enqueuer() -> EnqueueProfile:
    """``livt_service.queue.enqueue_profile``: sends a dataset profiling to the workers (tests
    swap this)."""
    from livt_service.queue import enqueue_profile

    return enqueue_profile


ProfileEnqueueDep = Annotated[EnqueueProfile, Depends(get_profile_enqueuer)]
