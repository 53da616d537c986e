"""The API's documentation: ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from files shipped in
the package (``api/static/vendor``, no CDN: they work on an offline cluster), operation ids like
``createJob``, and the error answers of every operation documented with their bodies.

Error bodies (``api.errors``): ``{"detail": "<what is wrong and the fix>"}`` for 401, 403, 404,
409, 413 and 503; ``{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`` for 422.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

VENDOR = "/static/vendor"
SWAGGER_JS = f"{VENDOR}/swagger-ui/swagger-ui-bundle.js"
SWAGGER_CSS = f"{VENDOR}/swagger-ui/swagger-ui.css"
SWAGGER_FAVICON = f"{VENDOR}/swagger-ui/favicon-32x32.png"
REDOC_JS = f"{VENDOR}/redoc/redoc.standalone.js"
#: Swagger UI settings: no call to the public validator badge service.
SWAGGER_PARAMETERS = {"validatorUrl": None, "displayOperationId": True}

#: The docs pages may load from this server only (inline scripts and styles are the pages' own;
#: ReDoc runs its search in a blob: worker): nothing leaves the machine, not even the logo
#: ReDoc links from its CDN.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)

#: Operations that need no token (they get no 401 / 503 entry).
PUBLIC_OPERATIONS = frozenset({"healthz", "readyz"})


class FieldProblem(BaseModel):
    """One bad input: where (``loc``: ``body`` / ``query`` / ``path`` / ``header``, then the
    field), what is wrong and the fix (``msg``), and a type tag."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrors(BaseModel):
    """A 422: every problem found, each naming its field and the fix."""

    detail: list[FieldProblem] = Field(description="at most 50 entries, then one counting the rest")


#: Default descriptions of the error statuses.
ERROR_DESCRIPTIONS = {
    401: "no token, or an unknown, revoked or expired one: send Authorization: Bearer <token>",
    403: "the token's user may not do this (admins only)",
    404: "no such object, or not yours",
    409: "the object's state does not allow this",
    413: "the body is larger than LIVT_MAX_BODY_BYTES; send a smaller body",
    503: "a dependency (database or broker) is unreachable; retry after Retry-After seconds",
}


def operation_id(route: APIRoute) -> str:
    """``create_job`` → ``createJob``: the route function's name in camelCase."""
    first, *rest = route.name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def _error_content(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Adds the error answers to every operation of an OpenAPI ``schema`` (in place): 401 and
    503 to each one that needs a token, a body schema to each 4xx / 5xx entry without one, and
    :class:`ValidationErrors` as the 422 body."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (FieldProblem, ValidationErrors):
        components[model.__name__] = model.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if operation.get("operationId") not in PUBLIC_OPERATIONS:
                for code in (401, 503):
                    responses.setdefault(str(code), {"description": ERROR_DESCRIPTIONS[code]})
            for code, response in responses.items():
                if not code.isdigit() or int(code) < 400:
                    continue
                if int(code) == 422:
                    response["content"] = _error_content("ValidationErrors")
                    response.setdefault("description", "invalid input")
                elif "content" not in response:
                    response["content"] = _error_content("ErrorMessage")
                if not response.get("description"):
                    response["description"] = ERROR_DESCRIPTIONS.get(int(code), "error")
    return schema


def install_docs(app: FastAPI) -> None:
    """The OpenAPI spec (with :func:`document_errors`), ``/docs`` and ``/redoc``. Build the app
    with ``docs_url=None, redoc_url=None, generate_unique_id_function=operation_id``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = document_errors(spec)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    title = app.title

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return _self_only(
            get_swagger_ui_html(
                openapi_url="/openapi.json",
                title=f"{title}: API",
                swagger_js_url=SWAGGER_JS,
                swagger_css_url=SWAGGER_CSS,
                swagger_favicon_url=SWAGGER_FAVICON,
                oauth2_redirect_url="/docs/oauth2-redirect",
                swagger_ui_parameters=SWAGGER_PARAMETERS,
            )
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _self_only(
            get_redoc_html(
                openapi_url="/openapi.json",
                title=f"{title}: API",
                redoc_js_url=REDOC_JS,
                redoc_favicon_url=SWAGGER_FAVICON,
                with_google_fonts=False,
            )
        )


def _self_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page
