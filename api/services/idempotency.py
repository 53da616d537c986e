"""Idempotency keys: a key names one request, and only that request may repeat it.

The job a key created stores a hash of the canonical form of the request that created it
(``request_hash``). Repeating the key with the same request gives that job back; with a different
one it is a conflict (409 naming the key), never the old job in silence.

A request is canonical when its keys are sorted and it has no insignificant whitespace: the
same JSON object sent twice, in whatever key order or layout, hashes the same. The body is taken
after validation with ``exclude_unset`` (what the client sent, not the defaults filled in), which
is also what a job keeps as its ``spec``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from api.errors import ConflictError
from livt_service.models import Job


def canonical_json(value: Any) -> str:
    """``value`` as JSON with sorted keys and no spaces (one text for equal objects)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_hash(value: Any) -> str:
    """SHA-256 (hex) of :func:`canonical_json` of ``value``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def job_request_hash(spec: dict[str, Any]) -> str:
    """The hash of a ``POST /jobs`` body (the validated spec, ``exclude_unset``)."""
    return request_hash({"jobs": spec})


def stage_request_hash(pipeline: dict[str, Any], stage: int) -> str:
    """The hash a ``POST /pipelines`` body gives the job of stage ``stage``.

    It covers the whole pipeline, not only the stage: a stage's job depends on the stages before
    it, and repeating the key means repeating the request that made that pipeline.
    """
    return request_hash({"pipelines": pipeline, "stage": stage})


def check_same_request(job: Job, key: str, digest: str, *, where: str = "idempotency_key") -> None:
    """Raises a 409 :class:`ConflictError` unless ``job`` was made by the request ``digest``.

    A job without a stored hash (a pipeline stage created before hashes were kept) cannot be
    matched and conflicts too.
    """
    if job.request_hash == digest:
        return
    made_by = (
        f"stage {job.stage} of pipeline {job.pipeline_id}"
        if job.pipeline_id is not None
        else f"job {job.id}"
    )
    raise ConflictError(
        f"{where} {key!r} was already used for a different request ({made_by}); repeat that "
        "exact request to get its result back, or use a new idempotency_key for a new job"
    )
