"""Readiness checks: can the service reach its database and its broker right now?"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, text

logger = logging.getLogger(__name__)


def check_database(engine: Engine) -> None:
    """Runs ``SELECT 1``; raises whatever the driver raises when the database is down."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def check_broker(url: str, queue: str, timeout: float) -> None:
    """Connects to the Celery broker and asks for the size of ``queue``.

    Connecting alone proves little for transports that connect lazily (the SQLAlchemy one), so
    the check makes one real round trip: a passive declaration of the queue. A broker that
    answers "no such queue" is reachable.
    """
    from kombu import Connection
    from kombu.exceptions import ChannelError

    with Connection(url, connect_timeout=timeout, transport_options={"max_retries": 0}) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
        try:
            conn.default_channel.queue_declare(queue=queue, passive=True)
        except ChannelError:
            logger.debug("broker %s has no queue %s yet", conn.as_uri(), queue)
