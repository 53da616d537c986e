"""The baseline of ``bench/service.py``: the least a FastAPI + SQLAlchemy app does to serve a job.

``GET /jobs/{id}`` reads the same row of the same database as the real API (one ``SELECT`` by
primary key, every column) and returns its columns as JSON; no authentication, no middleware.
``GET /healthz`` answers a constant. Serve it with uvicorn, as the real API is served::

    BASELINE_DATABASE_URL=sqlite:///... uvicorn bench.service_baseline:app --port 18102
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, HTTPException
from sqlalchemy import create_engine, make_url, select
from sqlalchemy.orm import Session

from livt_service.models import Job

_URL = os.environ["BASELINE_DATABASE_URL"]
_ARGS = {"check_same_thread": False} if make_url(_URL).get_backend_name() == "sqlite" else {}
engine = create_engine(_URL, connect_args=_ARGS)
app = FastAPI()


@app.get("/jobs/{job_id}")
def get_job(job_id: str) -> dict[str, Any]:
    with Session(engine) as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        if job is None:
            raise HTTPException(404, "not found")
        return {column.key: getattr(job, column.key) for column in Job.__table__.columns}


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
