"""Dependencies of the routes: settings, a database session, the current user, the enqueuer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.services.jobs import Enqueue
from api.services.users import authenticate
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
    """The owner of the request's bearer token; 401 without one or with an unknown one."""
    if credentials is None:
        raise _unauthorized(
            "missing API token; send 'Authorization: Bearer <token>' (create a token with "
            "`livt token create --name NAME`)"
        )
    user = authenticate(session, credentials.credentials)
    if user is None:
        raise _unauthorized(
            "invalid or revoked API token; create a new one with `livt token create`"
        )
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_enqueuer() -> Enqueue:
    """``livt_service.queue.enqueue``: sends a job id to a Celery queue (tests swap this)."""
    from livt_service.queue import enqueue

    return enqueue


EnqueueDep = Annotated[Enqueue, Depends(get_enqueuer)]
