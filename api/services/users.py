"""Users and API tokens: tokens are random, shown once, and stored as SHA-256 hashes.

A token works until it is revoked or, when it was given an expiry, until that time. People name a
token by its id or by its ``prefix`` (the first 12 characters, which ``livt token list`` shows);
neither lets anyone use it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import Select, bindparam, select, update
from sqlalchemy.orm import Session, joinedload

from api.errors import InvalidInputError, NotFoundError
from livt_core.errors import ConfigError
from livt_service.db import begin_write
from livt_service.models import ApiToken, User, utcnow

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "livt_"
USER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
#: The 401 message for a request without a bearer token.
MISSING_TOKEN = (
    "missing API token; send 'Authorization: Bearer <token>' (create a token with "
    "`livt token create --name NAME`)"
)
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


def create_token(
    session: Session, user: User, token: str | None = None, *, expires_at: datetime | None = None
) -> str:
    """Stores a new token of ``user`` (a random one unless given) and returns it in clear.

    ``expires_at``: when it stops working (None: never).
    """
    value = token or generate_token()
    session.add(
        ApiToken(
            user_id=user.id,
            token_hash=hash_token(value),
            prefix=value[:12],
            expires_at=expires_at,
        )
    )
    session.flush()
    return value


class TokenRejected(Exception):
    """A bearer token that does not authenticate anyone; the message says why and what to do."""


def _when(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


#: The token and its user in one query: authentication is one round trip. Built once (the
#: statement is a third of the CPU time of a small request when built per call).
_TOKEN_QUERY = (
    select(ApiToken)
    .options(joinedload(ApiToken.user, innerjoin=True))
    .where(ApiToken.token_hash == bindparam("digest"))
)


def authenticate(session: Session, token: str) -> User:
    """The user owning ``token``; records its use (at most once a minute).

    Raises:
        TokenRejected: the token is unknown, revoked or expired.
    """
    digest = hash_token(token)
    row = session.scalar(_TOKEN_QUERY, {"digest": digest})
    now = utcnow()
    if row is None:
        raise TokenRejected(
            "invalid API token; check it, or create a new one with `livt token create`"
        )
    if row.revoked_at is not None:
        raise TokenRejected(
            f"this API token was revoked at {_when(row.revoked_at)}; create a new one with "
            "`livt token create`"
        )
    if row.expires_at is not None and row.expires_at <= now:
        raise TokenRejected(
            f"this API token expired at {_when(row.expires_at)}; create a new one with "
            "`livt token create` (--expires-in sets how long it lasts)"
        )
    user = row.user
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        begin_write(session)
        session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
        session.commit()
    return user


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: The longest expiry a token can be given (ten years).
MAX_TOKEN_LIFETIME = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """``"90m"``, ``"12h"``, ``"30d"``, ``"2w"`` or plain seconds → a positive ``timedelta``.

    Raises:
        ConfigError: the text is not such a duration, is zero or is longer than ten years.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ConfigError(
            "expires_in",
            f"invalid duration {text!r}",
            "write a whole number with a unit: s, m, h, d or w (e.g. 30d, 12h)",
        )
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0 or seconds > MAX_TOKEN_LIFETIME.total_seconds():
        raise ConfigError(
            "expires_in",
            f"duration {text!r} is out of range",
            "give a duration above 0 and at most 3650d, or leave it out for no expiry",
        )
    return timedelta(seconds=seconds)


def visible_tokens(viewer: User | None) -> Select[tuple[ApiToken]]:
    """``SELECT`` of the tokens ``viewer`` may see: their own, all for an admin or for
    ``None`` (the command line on the server)."""
    query = select(ApiToken).order_by(ApiToken.id)
    if viewer is not None and not viewer.is_admin:
        query = query.where(ApiToken.user_id == viewer.id)
    return query


def list_tokens(
    session: Session,
    viewer: User | None,
    *,
    user_name: str | None = None,
    status: str | None = None,
) -> list[ApiToken]:
    """The tokens ``viewer`` may see, oldest first; optionally one user's, or one status."""
    query = visible_tokens(viewer)
    if user_name is not None:
        query = query.join(User, ApiToken.user_id == User.id).where(User.name == user_name)
    tokens = list(session.scalars(query))
    if status is not None:
        now = utcnow()
        tokens = [t for t in tokens if t.status(now) == status]
    return tokens


def find_token(session: Session, viewer: User | None, ref: str | int) -> ApiToken:
    """The token ``ref`` (an id or a prefix) among those ``viewer`` may see.

    Raises:
        NotFoundError: no such token, or not ``viewer``'s.
        InvalidInputError: a prefix that several tokens share.
    """
    query = visible_tokens(viewer)
    text = str(ref).strip()
    if text.isascii() and text.isdigit():
        matches = list(session.scalars(query.where(ApiToken.id == int(text))))
    else:
        matches = list(session.scalars(query.where(ApiToken.prefix == text[:12])))
    if not matches:
        raise NotFoundError(f"token {text} not found; `livt token list` shows the ids and prefixes")
    if len(matches) > 1:
        ids = ", ".join(str(t.id) for t in matches)
        raise InvalidInputError.single(
            ("path", "token"),
            f"prefix {text!r} is shared by tokens {ids}; name the token by its id",
        )
    return matches[0]


def revoke_token(session: Session, viewer: User | None, ref: str | int) -> ApiToken:
    """Revokes the token ``ref`` (id or prefix) if ``viewer`` may see it; a revoked token
    stays revoked (its time is kept)."""
    begin_write(session)
    token = find_token(session, viewer, ref)
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        logger.info("token %d (%s) of %s revoked", token.id, token.prefix, token.user.name)
    session.commit()
    return token


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
