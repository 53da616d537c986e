"""Users and API tokens: tokens are random, shown once, and stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from livt_core.errors import ConfigError
from livt_service.db import begin_write
from livt_service.models import ApiToken, User, utcnow

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "livt_"
USER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
#: ``last_used_at`` is written at most this often per token, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def generate_token() -> str:
    """``livt_`` + 32 random bytes, URL-safe base 64."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def get_or_create_user(session: Session, name: str, *, admin: bool = False) -> User:
    """The user called ``name``, created if missing; ``admin=True`` also promotes one."""
    if not USER_NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            "name", f"invalid user name {name!r}", "use 1-100 letters, digits, '.', '_', '@', '-'"
        )
    begin_write(session)  # read-then-insert: hold the write lock from the read on (SQLite WAL)
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, is_admin=admin)
        session.add(user)
        session.flush()
        logger.info("created user %s%s", name, " (admin)" if admin else "")
    elif admin and not user.is_admin:
        user.is_admin = True
        logger.info("user %s is now an admin", name)
    return user


def create_token(session: Session, user: User, token: str | None = None) -> str:
    """Stores a new token of ``user`` (a random one unless given) and returns it in clear."""
    value = token or generate_token()
    session.add(ApiToken(user_id=user.id, token_hash=hash_token(value), prefix=value[:12]))
    session.flush()
    return value


def authenticate(session: Session, token: str) -> User | None:
    """The user owning ``token`` if it exists and is not revoked; records its use."""
    digest = hash_token(token)
    row = session.scalar(
        select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
    )
    if row is None:
        return None
    user = row.user
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        begin_write(session)
        session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
        session.commit()
    return user


def ensure_token(session: Session, token: str, *, user_name: str = "admin") -> None:
    """Makes ``token`` a valid admin token (the ``LIVT_BOOTSTRAP_TOKEN`` at start-up)."""
    digest = hash_token(token)
    begin_write(session)
    if session.scalar(select(ApiToken.id).where(ApiToken.token_hash == digest)) is not None:
        return
    user = get_or_create_user(session, user_name, admin=True)
    create_token(session, user, token)
    session.commit()
    logger.info("bootstrap token registered for user %s", user_name)
