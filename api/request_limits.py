"""Request bodies are bounded and authenticated before the app reads them.

FastAPI reads and parses a JSON body before it runs a route's dependencies, so without this
module an unauthenticated client could make the API read, parse and validate any body, and one
big body (tens of MB, millions of keys) held the event loop for seconds to minutes. The
:class:`RequestGuard` ASGI middleware sits in front of the app and, for every request that carries
a body:

1. outside the public paths, checks the bearer token first: 401 without reading the body;
2. refuses a declared ``Content-Length`` above ``LIVT_MAX_BODY_BYTES`` at once (413), and counts
   the bytes of a chunked body as they arrive, stopping at the limit (413);
3. for a JSON body, checks its nesting depth (``LIVT_MAX_JSON_DEPTH``), its number of object keys
   (``LIVT_MAX_JSON_KEYS``) and of array items (``LIVT_MAX_JSON_ITEMS``) with a linear scan before
   anything parses it (422 naming the limit): each key or item can become an error entry to
   build and send back, so a body of a megabyte could otherwise cost seconds of work;
4. hands the app the body it read.

Requests without a body (``GET``s, the log stream) pass through untouched. The route's own
authentication still runs afterwards; the check here only decides whether the body is read.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.orm import Session, sessionmaker

from api.schemas import ErrorMessage
from api.services.users import MISSING_TOKEN, TokenRejected, authenticate

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths served without a token (health, the dashboard and its files, the API docs).
PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc"})
PUBLIC_PREFIXES = ("/static/", "/openapi")
#: The OpenAPI ``responses`` entry of every operation that takes a body (the guard answers it).
BODY_TOO_LARGE: dict[int | str, dict[str, Any]] = {
    413: {
        "model": ErrorMessage,
        "description": "the body is larger than LIVT_MAX_BODY_BYTES; send a smaller body",
    }
}


@dataclass(frozen=True)
class BodyLimits:
    """The bounds of a request body: bytes, and for JSON nesting depth, object keys and array
    items."""

    max_bytes: int
    max_json_depth: int
    max_json_keys: int
    max_json_items: int


class BodyRejected(Exception):
    """A body outside :class:`BodyLimits`: ``status`` and a message naming the limit."""

    def __init__(self, status: int, message: str, type_: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_


# One match per string (with the colon that makes it a key, if any) or bracket. The string part
# is the "unrolled loop" form: it never backtracks, and an unterminated string ends the scan
# instead of being retried at every later quote, so the scan is linear in the body size.
_JSON_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?\s*:?|[\[\]{}]', re.DOTALL)
_QUOTE, _COLON, _OPEN_OBJECT, _OPEN_ARRAY = 0x22, 0x3A, 0x7B, 0x5B
#: Bodies up to this size are scanned on the event loop (well under a millisecond).
_SCAN_IN_THREAD_ABOVE = 64 * 1024


def _over(limit: int, what: str, setting: str, fix: str, type_: str) -> BodyRejected:
    return BodyRejected(
        422, f"the JSON body has more than {limit} {what} ({setting}); {fix}", type_
    )


def check_json_shape(body: bytes, limits: BodyLimits) -> None:
    """Raises :class:`BodyRejected` (422) when the JSON text ``body`` nests deeper than
    ``max_json_depth``, or has more than ``max_json_keys`` object keys or ``max_json_items``
    array items (all levels together).

    One pass over the strings and brackets; numbers and literals are only counted through the
    commas between them. Text that is not valid JSON is not judged here: the parser refuses it
    afterwards.
    """
    kinds = bytearray()  # the open containers, innermost last: "{" or "["
    filled = bytearray()  # whether the array at that depth has an item yet
    keys = items = position = 0
    for match in _JSON_TOKENS.finditer(body):
        start, end = match.span()
        in_array = bool(kinds) and kinds[-1] == _OPEN_ARRAY
        if in_array:
            commas = body.count(b",", position, start)
            if not filled[-1] and (commas or body[position:start].strip()):
                filled[-1] = 1  # its first item is a number or a literal
                items += 1
            items += commas
        first = body[start]
        if first == _QUOTE or first in (_OPEN_OBJECT, _OPEN_ARRAY):
            if in_array and not filled[-1]:
                filled[-1] = 1
                items += 1
            if first == _QUOTE:
                if body[end - 1] == _COLON:
                    keys += 1
            else:
                kinds.append(first)
                filled.append(0)
        elif kinds:
            kinds.pop()
            filled.pop()
        position = end
        if keys > limits.max_json_keys:
            raise _over(
                limits.max_json_keys,
                "object keys",
                "LIVT_MAX_JSON_KEYS",
                "send only the fields the request needs",
                "json_too_many_keys",
            )
        if items > limits.max_json_items:
            raise _too_many_items(limits)
        if len(kinds) > limits.max_json_depth:
            raise BodyRejected(
                422,
                f"the JSON body nests deeper than {limits.max_json_depth} levels "
                "(LIVT_MAX_JSON_DEPTH); send a flatter body",
                "json_too_deep",
            )
    if kinds and kinds[-1] == _OPEN_ARRAY:  # numbers after the last string or bracket
        items += body.count(b",", position) + (not filled[-1] and bool(body[position:].strip()))
        if items > limits.max_json_items:
            raise _too_many_items(limits)


def _too_many_items(limits: BodyLimits) -> BodyRejected:
    return _over(
        limits.max_json_items,
        "array items",
        "LIVT_MAX_JSON_ITEMS",
        "send shorter lists",
        "json_too_many_items",
    )


def _too_large(limits: BodyLimits) -> BodyRejected:
    return BodyRejected(
        413,
        f"the request body is larger than {limits.max_bytes} bytes (LIVT_MAX_BODY_BYTES); "
        "send a smaller body",
        "body_too_large",
    )


def _is_json(content_type: str) -> bool:
    # FastAPI parses a body as JSON without a content type, too
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("", "application/json") or (
        media.startswith("application/") and media.endswith("+json")
    )


def _length(declared: str | None) -> int:
    # the server has checked the framing; a value it let through that is no number counts as 0
    try:
        return int(declared or 0)
    except ValueError:
        return 0


def _headers(scope: Scope) -> dict[str, str]:
    # the first of each name, as Starlette's Headers.get does
    out: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        out.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return out


def token_problem(session_factory: sessionmaker[Session], authorization: str | None) -> str | None:
    """Why the ``Authorization`` header does not authenticate anyone, or None when it does."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    if not authorization or scheme.lower() != "bearer" or not credentials:
        return MISSING_TOKEN
    with session_factory() as session:
        try:
            authenticate(session, credentials)
        except TokenRejected as exc:
            return str(exc)
    return None


async def _answer(
    send: Send, status: int, detail: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestGuard:
    """ASGI middleware: authenticates and bounds request bodies before the app reads them (see
    the module docstring). ``session_factory`` opens the sessions the token check uses."""

    def __init__(
        self, app: ASGIApp, *, limits: BodyLimits, session_factory: sessionmaker[Session]
    ) -> None:
        self.app = app
        self.limits = limits
        self.session_factory = session_factory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        declared = headers.get("content-length")
        if not chunked and declared in (None, "0"):
            await self.app(scope, receive, send)  # no body
            return
        path = scope.get("path", "")
        if path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES):
            problem = await self._token_problem(headers.get("authorization"))
            if problem is not None:
                await _answer(
                    send,
                    401,
                    problem,
                    [(b"www-authenticate", b"Bearer"), (b"connection", b"close")],
                )
                return
        try:
            if not chunked and _length(declared) > self.limits.max_bytes:
                raise _too_large(self.limits)
            body = await self._read_body(receive)
            if body is None:
                return  # the client went away
            if _is_json(headers.get("content-type", "")):
                if len(body) < _SCAN_IN_THREAD_ABOVE:
                    check_json_shape(body, self.limits)
                else:  # a long scan must not hold the event loop
                    await anyio.to_thread.run_sync(check_json_shape, body, self.limits)
        except BodyRejected as exc:
            if exc.status == 413:
                # the rest of the body is not read: the connection cannot carry another request
                await _answer(send, 413, exc.message, [(b"connection", b"close")])
            else:
                await _answer(
                    send, exc.status, [{"loc": ["body"], "msg": exc.message, "type": exc.type}]
                )
            return
        await self.app(scope, _replay(body, receive), send)

    async def _token_problem(self, authorization: str | None) -> str | None:
        try:
            return await anyio.to_thread.run_sync(
                token_problem, self.session_factory, authorization
            )
        except Exception:
            # The database could not be asked: leave the answer to the route, whose own token
            # check reports the outage the way every other endpoint does. The body it then reads
            # is still bounded by the size limit.
            logger.warning("token check before the body failed; the route decides", exc_info=True)
            return None

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, counted as it streams in; :class:`BodyRejected` at the limit."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_bytes:
                raise _too_large(self.limits)
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app ``body`` once, then the client's own messages
    (``http.disconnect``)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
