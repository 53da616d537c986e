"""The FastAPI application: ``create_app(settings)``.

Serve it with ``uvicorn --factory api.main:create_app`` (or ``livt serve``). In the embedded mode
the app brings its SQLite database to the newest migration when it starts; in production the
``livt db upgrade`` step does that before the API starts.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session, sessionmaker

import livt_core
from api.deps import app_enqueuer
from api.errors import NotFoundError, install_error_handlers
from api.openapi import install_docs, operation_id
from api.request_limits import BodyLimits, RequestGuard
from api.routers import (
    datasets,
    health,
    job_notes,
    jobs,
    metrics,
    pipelines,
    presets,
    sweeps,
    tokens,
    webhooks,
)
from api.services.users import ensure_token
from api.sweep_advance import SweepAdvancer
from api.telemetry import MetricsMiddleware, Telemetry
from api.webhooks import Dispatcher
from livt_service.db import get_api_engines, upgrade_database
from livt_service.settings import Settings, get_settings

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"


def _start(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    if settings.embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade_database(settings.database_url)
        for root in settings.data_roots:
            if root.is_relative_to(settings.data_dir):
                root.mkdir(parents=True, exist_ok=True)
    settings.artifact_dir.mkdir(parents=True, exist_ok=True)
    if settings.bootstrap_token:
        with session_factory() as session:
            ensure_token(session, settings.bootstrap_token)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Builds the app on ``settings`` (default: :func:`livt_service.settings.get_settings`)."""
    settings = settings or get_settings()
    engine, read_engine = get_api_engines(settings.database_url)
    session_factory = sessionmaker(bind=engine, expire_on_commit=False)
    read_session_factory = sessionmaker(bind=read_engine, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(_start, settings, session_factory)
        dispatcher = Dispatcher(
            session_factory,
            poll_seconds=settings.webhook_poll_seconds,
            max_attempts=settings.webhook_max_attempts,
            backoff_seconds=settings.webhook_backoff_seconds,
            timeout_seconds=settings.webhook_timeout_seconds,
        )
        dispatcher.start()
        advancer = SweepAdvancer(
            session_factory,
            settings,
            await app_enqueuer(_app),
            poll_seconds=settings.sweep_advance_seconds,
        )
        advancer.start()
        logger.info("LiVT job service ready (%s mode)", settings.mode)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(advancer.stop)
            await anyio.to_thread.run_sync(dispatcher.stop)

    app = FastAPI(
        title="LiVT job service",
        version=livt_core.__version__,
        description=(
            "Submit LiVT pretrain (MGP), finetune (BFT) and evaluate jobs, follow their progress, "
            "and read per-split (many / medium / few / overall) results. Every endpoint but "
            "/healthz, /readyz and the dashboard needs `Authorization: Bearer <token>`."
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.read_engine = read_engine
    app.state.sessionmaker = session_factory
    app.state.read_sessionmaker = read_session_factory
    app.state.telemetry = Telemetry(session_factory, settings.worker_lost_seconds)
    limits = BodyLimits(
        max_bytes=settings.max_body_bytes,
        max_json_depth=settings.max_json_depth,
        max_json_keys=settings.max_json_keys,
        max_json_items=settings.max_json_items,
    )
    # added first, so it runs inside the metrics middleware, which counts what it refuses
    app.add_middleware(RequestGuard, limits=limits, session_factory=session_factory)
    app.add_middleware(MetricsMiddleware, telemetry=app.state.telemetry)
    install_error_handlers(app)
    for module in (
        jobs,
        job_notes,
        pipelines,
        sweeps,
        datasets,
        presets,
        tokens,
        health,
        metrics,
        webhooks,
    ):
        app.include_router(module.router)
    install_docs(app)

    @app.get("/", include_in_schema=False, response_model=None)
    def dashboard() -> FileResponse:
        index = STATIC_DIR / "index.html"
        if not index.is_file():
            raise NotFoundError("the dashboard is not installed")
        return FileResponse(index)

    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    return app
