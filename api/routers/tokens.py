"""``/tokens``: list and revoke API tokens (your own; every user's for an admin).

Tokens are created on the server with ``livt token create`` (the value is shown once there).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import CurrentUser, SessionDep
from api.schemas import TokenList, TokenPublic, TokenStatus
from api.services import users as service

router = APIRouter(prefix="/tokens", tags=["tokens"])

#: Text a database column can hold (PostgreSQL text refuses NUL).
NO_NUL = r"^[^\x00]*$"
TokenRef = Annotated[
    str, Path(description="a token id, or its prefix (livt_...)", pattern=NO_NUL, max_length=100)
]


@router.get("", response_model=TokenList)
def list_tokens(
    *,
    session: SessionDep,
    user: CurrentUser,
    user_name: Annotated[str | None, Query(alias="user", max_length=100, pattern=NO_NUL)] = None,
    status: TokenStatus | None = None,
) -> TokenList:
    """Your tokens (every user's for an admin; ``user`` narrows to one), oldest first."""
    tokens = service.list_tokens(session, user, user_name=user_name, status=status)
    return TokenList(items=[TokenPublic.from_token(t) for t in tokens])


@router.post(
    "/{token}/revoke",
    response_model=TokenPublic,
    responses={404: {"description": "no such token, or not yours"}},
)
def revoke_token(*, token: TokenRef, session: SessionDep, user: CurrentUser) -> TokenPublic:
    """Revoke a token of yours (any token for an admin); it answers 401 from then on. Revoking
    a revoked token changes nothing."""
    return TokenPublic.from_token(service.revoke_token(session, user, token))
