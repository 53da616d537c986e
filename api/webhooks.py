"""Webhooks: a signed JSON POST to a URL when a job or a sweep reaches a terminal state.

A webhook belongs to a user and covers every job of theirs (``job_id`` NULL) or one job. The
deliveries are derived from the database, not from the code paths that end a job: the
dispatcher (a thread of each API process) repeatedly

1. *plans*: for every terminal job attempt a webhook covers and that has no delivery yet, it
   inserts one ``webhook_deliveries`` row (unique per webhook, job and attempt, so API replicas
   and restarts never send twice) holding the payload;
2. *sends* the deliveries that are due: claims each that is still due by moving its
   ``next_attempt_at`` past a lease, POSTs it, and records the answer. A 2xx answer makes it
   ``delivered``; anything else (refused connection, timeout, 5xx, 4xx) schedules a retry after
   ``webhook_backoff_seconds * 2**(attempts-1)`` (capped at an hour) until
   ``webhook_max_attempts``, then ``failed``.

A per-user webhook is also called once when one of the owner's sweeps ends (every job of it
finished and, for an adaptive sweep, no trial left to ask): planning inserts one delivery per
webhook and sweep (unique), with the sweep's status, job counts and table; sending, retries and
the log are those of job deliveries. A per-job webhook is not called for sweeps.

A crash between the two steps, or while sending, loses nothing: the job's state is still there
to plan from, and an unanswered claim expires. Receivers may see a delivery twice (a crash after
the POST but before the answer was stored) and should use ``X-Livt-Delivery`` to drop repeats.

Each POST carries ``X-Livt-Event`` (``job.succeeded`` / ``job.failed`` / ``job.cancelled``, or
``sweep.succeeded`` / ``sweep.failed`` / ``sweep.cancelled``),
``X-Livt-Delivery`` (the delivery id), ``X-Livt-Timestamp`` (Unix seconds) and
``X-Livt-Signature: sha256=<hex>``, the HMAC-SHA256 with the webhook's secret of
``"<timestamp>." + body``; :func:`signature` computes it, so a receiver can check it and reject
old timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from api.errors import InvalidInputError, NotFoundError
from api.poller import Poller
from api.services.sweeps import sweep_status, sweep_table
from livt_service.db import begin_write
from livt_service.models import (
    TERMINAL_STATUSES,
    Job,
    Sweep,
    User,
    Webhook,
    WebhookDelivery,
    new_id,
    utcnow,
)

logger = logging.getLogger(__name__)

#: The longest wait between two attempts of a delivery.
MAX_BACKOFF_SECONDS = 3600.0
#: Deliveries planned / sent per dispatcher round.
BATCH = 50
#: Tries at storing the answer of a POST, and the wait before the second (then twice that).
RECORD_TRIES = 3
RECORD_RETRY_SECONDS = 0.5


# --------------------------------------------------------------------------- signing, payload


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``"<timestamp>." + body`` with the webhook's secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def result_summary(job: Job) -> dict[str, Any] | None:
    """The headline figures of a job's result (the full report is ``GET /jobs/{id}``)."""
    result = job.result or None
    if not result:
        return None
    keys = (
        ("final_loss", "min_loss", "epochs")
        if job.kind == "pretrain"
        else (
            "overall",
            "many",
            "medium",
            "few",
            "top5",
            "ece",
            "split",
        )
    )
    return {k: result.get(k) for k in keys if k in result}


def payload(job: Job) -> dict[str, Any]:
    failure = (
        {"reason": job.failure_reason, "message": job.failure_message}
        if job.failure_reason
        else None
    )
    return {
        "event": f"job.{job.status}",
        "job": {
            "id": job.id,
            "kind": job.kind,
            "name": job.name,
            "status": job.status,
            "attempt": job.attempt,
            "preset": job.preset,
            "dataset": job.dataset,
            "model": job.model,
            "loss": job.loss,
            "pipeline_id": job.pipeline_id,
            "created_at": _iso(job.created_at),
            "started_at": _iso(job.started_at),
            "finished_at": _iso(job.finished_at),
            "url": f"/jobs/{job.id}",
        },
        "result": result_summary(job),
        "failure": failure,
    }


#: The table columns a sweep delivery carries (mean, std and n over the seeds).
SWEEP_METRICS = ("overall", "few")


def sweep_ended(sweep: Sweep) -> bool:
    """Every job finished and, for an adaptive sweep, every trial asked and told (or the sweep
    was cancelled): see :func:`api.services.sweeps.sweep_status`."""
    return sweep_status(sweep) != "running"


def sweep_payload(sweep: Sweep) -> dict[str, Any]:
    status = sweep_status(sweep)
    counts: dict[str, int] = {}
    for job in sweep.jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    finished = [j.finished_at for j in sweep.jobs if j.finished_at is not None]
    table = [
        {
            "params": row["params"],
            "n": row["n"],
            "status": row["status"],
            **{m: row[m] for m in SWEEP_METRICS},
        }
        for row in sweep_table(sweep)
    ]
    return {
        "event": f"sweep.{status}",
        "sweep": {
            "id": sweep.id,
            "name": sweep.name,
            "status": status,
            "counts": counts,
            "num_jobs": len(sweep.jobs),
            "created_at": _iso(sweep.created_at),
            "finished_at": _iso(max(finished)) if finished else None,
            "url": f"/sweeps/{sweep.id}",
        },
        "table": table,
    }


# --------------------------------------------------------------------------- owner's API


def check_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:  # e.g. an unclosed [IPv6 bracket
        ok = False
    if not ok or any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidInputError.single(
            ("body", "url"), "must be an absolute http:// or https:// URL, e.g. https://ci/hook"
        )
    return url


def create_webhook(session: Session, user: User, url: str, job_id: str | None) -> Webhook:
    check_url(url)
    if job_id is not None:
        job = session.get(Job, job_id)
        if job is None or (job.owner_id != user.id and not user.is_admin):
            raise InvalidInputError.single(
                ("body", "job_id"), f"no job {job_id} of yours: name one of `livt jobs -q`"
            )
    hook = Webhook(
        id=new_id("wh"), owner_id=user.id, job_id=job_id, url=url, secret=secrets.token_hex(32)
    )
    session.add(hook)
    session.commit()
    return hook


def list_webhooks(session: Session, user: User) -> list[Webhook]:
    return list(
        session.scalars(select(Webhook).where(Webhook.owner_id == user.id).order_by(Webhook.id))
    )


def get_webhook(session: Session, user: User, webhook_id: str) -> Webhook:
    hook = session.get(Webhook, webhook_id)
    if hook is None or hook.owner_id != user.id:
        raise NotFoundError(f"no webhook {webhook_id}")
    return hook


def delete_webhook(session: Session, user: User, webhook_id: str) -> None:
    hook = get_webhook(session, user, webhook_id)
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id))
    session.delete(hook)
    session.commit()


def deliveries(session: Session, user: User, webhook_id: str, limit: int) -> list[WebhookDelivery]:
    hook = get_webhook(session, user, webhook_id)
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == hook.id)
            .order_by(WebhookDelivery.id.desc())
            .limit(limit)
        )
    )


# --------------------------------------------------------------------------- dispatcher


def plan(session: Session) -> int:
    """Inserts a delivery for each terminal job attempt a webhook covers and for each ended
    sweep a per-user webhook covers; returns how many.

    Each step first looks for candidates in a plain read, so a round with nothing to plan takes
    no lock; when there are some it opens a write transaction (:func:`begin_write`), reads the
    rows again and inserts. The unique keys of ``webhook_deliveries`` keep what another API
    process planned meanwhile from being planned twice."""
    return _plan_jobs(session) + _plan_sweeps(session)


def _insert(session: Session, delivery: WebhookDelivery) -> int:
    try:
        with session.begin_nested():
            session.add(delivery)
        return 1
    except IntegrityError:  # another API process planned it first
        return 0


def _plan_sweeps(session: Session) -> int:
    session.expire_all()  # read the sweeps' jobs as they are now, not as the job step saw them
    last_finish = (
        select(func.max(Job.finished_at)).where(Job.sweep_id == Sweep.id).scalar_subquery()
    )
    unfinished = (
        select(Job.id)
        .where(Job.sweep_id == Sweep.id, Job.status.not_in(TERMINAL_STATUSES))
        .exists()
    )
    done = and_(WebhookDelivery.webhook_id == Webhook.id, WebhookDelivery.sweep_id == Sweep.id)
    # ids only and no limit: an adaptive sweep waiting for its next trials matches here but is
    # skipped below, and must not crowd out the sweeps that did end
    candidates = session.execute(
        select(Webhook.id, Sweep.id)
        .join(Sweep, and_(Webhook.job_id.is_(None), Webhook.owner_id == Sweep.owner_id))
        .outerjoin(WebhookDelivery, done)
        .where(
            WebhookDelivery.id.is_(None),
            ~unfinished,
            last_finish.is_not(None),
            last_finish >= Webhook.created_at,
        )
        .order_by(Sweep.created_at, Sweep.id)
    ).all()
    ended: list[tuple[str, str]] = []
    for webhook_id, sweep_id in candidates:
        if len(ended) >= BATCH:
            break
        sweep = session.get(Sweep, sweep_id)
        if sweep is not None and sweep_ended(sweep):
            ended.append((webhook_id, sweep_id))
    if not ended:
        session.commit()
        return 0
    begin_write(session)
    session.expire_all()  # what the write transaction reads, not the plain read above
    planned = 0
    for webhook_id, sweep_id in ended:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None or not sweep_ended(sweep):
            continue
        body = sweep_payload(sweep)
        planned += _insert(
            session,
            WebhookDelivery(
                webhook_id=webhook_id, sweep_id=sweep.id, event=body["event"], payload=body
            ),
        )
    session.commit()
    return planned


def _plan_jobs(session: Session) -> int:
    covers = or_(
        Webhook.job_id == Job.id, and_(Webhook.job_id.is_(None), Webhook.owner_id == Job.owner_id)
    )
    done = and_(
        WebhookDelivery.webhook_id == Webhook.id,
        WebhookDelivery.job_id == Job.id,
        WebhookDelivery.job_attempt == Job.attempt,
    )
    candidates = session.execute(
        select(Webhook.id, Job.id, Job.attempt)
        .join(Job, covers)
        .outerjoin(WebhookDelivery, done)
        .where(
            Job.status.in_(TERMINAL_STATUSES),
            Job.finished_at.is_not(None),
            Job.finished_at >= Webhook.created_at,
            WebhookDelivery.id.is_(None),
        )
        .limit(BATCH)
    ).all()
    if not candidates:
        session.commit()
        return 0
    begin_write(session)
    jobs = {
        job.id: job
        for job in session.scalars(
            select(Job)
            .where(Job.id.in_({job_id for _, job_id, _ in candidates}))
            .execution_options(populate_existing=True)
        )
    }
    planned = 0
    for webhook_id, job_id, attempt in candidates:
        job = jobs.get(job_id)
        if job is None or job.attempt != attempt or job.status not in TERMINAL_STATUSES:
            continue  # retried (or deleted) since the read: planned from its new state later
        delivery = WebhookDelivery(
            webhook_id=webhook_id,
            job_id=job.id,
            job_attempt=job.attempt,
            event=f"job.{job.status}",
            payload=payload(job),
        )
        planned += _insert(session, delivery)
    session.commit()
    return planned


def backoff(attempts: int, base: float) -> float:
    return min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, attempts - 1))


@dataclass(frozen=True)
class _Claim:
    """What a dispatcher took from a delivery it claimed, until its ``lease_until``."""

    delivery_id: int
    lease_until: datetime
    url: str
    secret: str
    event: str
    body: dict[str, Any]
    attempts: int


class Dispatcher(Poller):
    """Plans and sends deliveries every ``poll_seconds`` in a daemon thread.

    Several dispatchers may run on one database (API replicas): a delivery is sent by the one
    that claims it, and every write that depends on what it read runs in a write transaction
    (:func:`livt_service.db.begin_write`), so on SQLite it waits for the lock instead of failing
    with "database is locked" when API requests wrote since the read. A round that fails on the
    database is logged and the next round tries again; a claim it left expires after its lease.
    """

    name = "livt-webhooks"

    def __init__(
        self,
        session_factory: Callable[[], Session],
        *,
        poll_seconds: float,
        max_attempts: int,
        backoff_seconds: float,
        timeout_seconds: float,
    ) -> None:
        super().__init__(poll_seconds=poll_seconds)
        self.session_factory = session_factory
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self._http = httpx.Client(
            timeout=timeout_seconds, headers={"User-Agent": "livt-webhooks/1"}
        )

    def stop(self, timeout: float | None = None) -> None:
        """Ends the loop after the current round (a POST in flight ends within its timeout)."""
        super().stop(self.timeout_seconds + 5 if timeout is None else timeout)
        self._http.close()

    def run_once(self) -> int:
        """One round: plan, then send what is due. Returns the number of POSTs made."""
        with self.session_factory() as session:
            plan(session)
        sent = 0
        for delivery_id in self._due():
            if self.stopping:
                break
            sent += self._send(delivery_id)
        return sent

    def _due(self) -> list[int]:
        with self.session_factory() as session:
            return list(
                session.scalars(
                    select(WebhookDelivery.id)
                    .where(
                        WebhookDelivery.status == "pending",
                        WebhookDelivery.next_attempt_at <= utcnow(),
                    )
                    .order_by(WebhookDelivery.next_attempt_at)
                    .limit(BATCH)
                )
            )

    def _claim(self, delivery_id: int) -> _Claim | None:
        """Moves the delivery's ``next_attempt_at`` past a lease if it is still due; None when
        it is not (sent, or claimed by another dispatcher, since :meth:`_due` read it)."""
        lease_until = utcnow() + timedelta(seconds=self.timeout_seconds + 30)
        with self.session_factory() as session:
            begin_write(session)
            row = session.execute(
                select(WebhookDelivery, Webhook)
                .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .where(WebhookDelivery.id == delivery_id)
            ).one_or_none()
            if row is None:
                return None
            delivery, hook = row
            if delivery.status != "pending" or delivery.next_attempt_at > utcnow():
                return None
            # compare-and-set: on PostgreSQL two replicas may read the same row; only the
            # first UPDATE still matches it
            claimed = session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.status == "pending",
                    WebhookDelivery.next_attempt_at == delivery.next_attempt_at,
                )
                .values(next_attempt_at=lease_until)
            ).rowcount
            session.commit()
            if not claimed:
                return None
            return _Claim(
                delivery_id=delivery_id,
                lease_until=lease_until,
                url=hook.url,
                secret=hook.secret,
                event=delivery.event,
                body=delivery.payload,
                attempts=delivery.attempts,
            )

    def _send(self, delivery_id: int) -> int:
        claim = self._claim(delivery_id)
        if claim is None:
            return 0
        body = json.dumps(
            {**claim.body, "delivery": delivery_id}, sort_keys=True, separators=(",", ":")
        ).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Livt-Event": claim.event,
            "X-Livt-Delivery": str(delivery_id),
            "X-Livt-Timestamp": timestamp,
            "X-Livt-Signature": signature(claim.secret, timestamp, body),
        }
        code: int | None = None
        error: str | None = None
        try:
            response = self._http.post(claim.url, content=body, headers=headers)
            code = response.status_code
            if not response.is_success:
                error = f"HTTP {code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        attempts = claim.attempts + 1
        now = utcnow()
        values: dict[str, Any] = {"attempts": attempts, "last_status_code": code}
        if error is None:
            values.update(status="delivered", delivered_at=now, last_error=None)
        elif attempts >= self.max_attempts:
            values.update(status="failed", last_error=error)
        else:
            wait = backoff(attempts, self.backoff_seconds)
            values.update(last_error=error, next_attempt_at=now + timedelta(seconds=wait))
        self._record(claim, values)
        if error is not None:
            logger.info("webhook delivery %d attempt %d: %s", delivery_id, attempts, error)
        return 1

    def _record(self, claim: _Claim, values: dict[str, Any]) -> None:
        """Stores the answer of a POST, retrying a failed write (a connection that died, a
        database that restarts) :data:`RECORD_TRIES` times: the receiver has the POST, and an
        answer that is not stored makes it a repeat once the claim's lease ends. Written only
        while the claim holds."""
        for attempt in range(1, RECORD_TRIES + 1):
            try:
                with self.session_factory() as session:
                    begin_write(session)
                    stored = session.execute(
                        update(WebhookDelivery)
                        .where(
                            WebhookDelivery.id == claim.delivery_id,
                            WebhookDelivery.status == "pending",
                            WebhookDelivery.next_attempt_at == claim.lease_until,
                        )
                        .values(**values)
                    ).rowcount
                    session.commit()
            except SQLAlchemyError as exc:
                if attempt == RECORD_TRIES:
                    raise
                logger.warning(
                    "webhook delivery %d: storing the answer failed (%s), trying again",
                    claim.delivery_id,
                    exc,
                )
                time.sleep(RECORD_RETRY_SECONDS * attempt)
                continue
            if not stored:
                logger.warning(
                    "webhook delivery %d: claimed again after its lease ran out (or deleted) "
                    "before its answer was stored; the answer is dropped",
                    claim.delivery_id,
                )
            return
