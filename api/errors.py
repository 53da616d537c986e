"""Errors the service layer raises and the HTTP answers they become.

Services raise :class:`NotFoundError` (404), :class:`ConflictError` (409),
:class:`UnavailableError` (503) or :class:`InvalidInputError` (422). A 422 has the same shape as
FastAPI's own validation errors, ``{"detail": [{"loc": ["body", ...], "msg": "...", "type":
"..."}]}``, and every ``msg`` says what is wrong and how to fix it.

A database that cannot be reached (stopped, restarting, its connections dropped) is a 503 with
``Retry-After`` too, never a 500: the engine's pool checks connections before use, so the next
request after it is back works.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from livt_core.contract import KINDS
from livt_core.errors import ConfigError

logger = logging.getLogger(__name__)

Loc = tuple[str | int, ...]

#: Seconds a client is told to wait (``Retry-After``) when the database is unreachable.
DATABASE_RETRY_AFTER_SECONDS = 5

#: SQLAlchemy errors that mean "the database cannot be reached right now" (not bad input).
DATABASE_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeoutError,
)

#: A 422 lists at most this many problems (a long list of bad items would otherwise make an
#: answer of megabytes); one more entry says how many were left out.
MAX_REPORTED_ERRORS = 50


@dataclass(frozen=True)
class FieldError:
    """One bad input: where it is (``loc``), what is wrong and the fix (``msg``), a type tag."""

    loc: Loc
    msg: str
    type: str = "value_error"

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


class ServiceError(Exception):
    """Base of the errors a service function raises on purpose."""

    status_code = 500

    def __init__(self, detail: Any) -> None:
        self.detail = detail
        super().__init__(str(detail))


class NotFoundError(ServiceError):
    status_code = 404


class ConflictError(ServiceError):
    status_code = 409


class UnavailableError(ServiceError):
    status_code = 503


class InvalidInputError(ServiceError):
    """The request is well-formed JSON but names something invalid (422)."""

    status_code = 422

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__([e.as_dict() for e in self.errors])

    @classmethod
    def single(cls, loc: Loc, msg: str, type_: str = "value_error") -> InvalidInputError:
        return cls([FieldError(loc, msg, type_)])


def field_loc(field: str, prefix: Loc = ("body",)) -> Loc:
    """``"data.root"`` → ``("body", "data", "root")``; ``"config"`` means the whole body."""
    if field in ("", "config"):
        return prefix
    return (*prefix, *field.split("."))


def config_error_message(error: ConfigError) -> str:
    return f"{error.message}; {error.fix}" if error.fix else error.message


# Fixes for pydantic's own messages, which say what is wrong but not what to do.
_FIXES = {
    "missing": "add this field",
    "extra_forbidden": "remove it or check its spelling",
    "int_parsing": "use a whole number",
    "int_type": "use a whole number",
    "float_parsing": "use a number",
    "string_type": "use a string",
    "bool_parsing": "use true or false",
    "dict_type": "use a JSON object",
    "model_type": "use a JSON object",
    "list_type": "use a JSON array",
    "json_invalid": "send a valid JSON body",
    "model_attributes_type": "send a JSON object",
    "union_tag_not_found": 'add "kind": "pretrain", "finetune" or "evaluate"',
    "union_tag_invalid": "set kind to one of them",
}
_JOB_KINDS = KINDS


def _request_loc(loc: Sequence[Any], type_: str) -> list[Any]:
    """Drops the union tag pydantic puts into the location of errors inside a job spec
    (``["body", "finetune", "init"]`` → ``["body", "init"]``) and points tag errors at ``kind``."""
    out: list[Any] = []
    for part in loc:
        after_container = bool(out) and (out[-1] == "body" or isinstance(out[-1], int))
        if part in _JOB_KINDS and after_container:
            continue
        out.append(part)
    if type_ in ("union_tag_invalid", "union_tag_not_found"):
        out.append("kind")
    return out


def _bounded(detail: list[dict[str, Any]], total: int | None = None) -> list[dict[str, Any]]:
    """The first :data:`MAX_REPORTED_ERRORS` of ``detail`` and a line counting the rest
    (``total``: how many there were, when ``detail`` holds only the first ones)."""
    total = len(detail) if total is None else total
    if total <= MAX_REPORTED_ERRORS:
        return detail
    left_out = total - MAX_REPORTED_ERRORS
    return [
        *detail[:MAX_REPORTED_ERRORS],
        {
            "loc": ["body"],
            "msg": f"and {left_out} more problems like these; fix the ones above and send again",
            "type": "more_errors",
        },
    ]


async def _service_error(_request: Request, exc: ServiceError) -> JSONResponse:
    detail = exc.detail
    if isinstance(exc, InvalidInputError):
        detail = _bounded(detail)
    return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=exc.status_code)


def database_unavailable_response() -> JSONResponse:
    """The 503 of a request that needed the database while it was unreachable."""
    return JSONResponse(
        {
            "detail": "the database is unreachable right now; retry in "
            f"{DATABASE_RETRY_AFTER_SECONDS} s (GET /readyz says when it is back)"
        },
        status_code=503,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    first = str(exc).strip().splitlines()
    logger.warning("database unreachable: %s: %s", type(exc).__name__, first[0] if first else "")
    return database_unavailable_response()


async def _request_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = []
    errors = exc.errors()
    for error in errors[:MAX_REPORTED_ERRORS]:
        type_ = str(error.get("type"))
        msg = str(error.get("msg", "invalid value"))
        fix = _FIXES.get(type_)
        if fix and fix not in msg:
            msg = f"{msg}; {fix}"
        loc = _request_loc(error.get("loc", ()), type_)
        detail.append({"loc": loc, "msg": msg, "type": type_})
    detail = _bounded(detail, len(errors))
    return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _request_validation_error)  # type: ignore[arg-type]
    for error in DATABASE_UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, _database_unavailable)
