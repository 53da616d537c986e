"""A daemon thread of the API process that runs a round of work every ``poll_seconds``.

The webhook dispatcher (:mod:`api.webhooks`) and the sweep advancer (:mod:`api.sweep_advance`)
are pollers: each round reads the database and acts on what it found. A round that fails on the
database (away, busy) is logged as a warning and the next round tries again; any other error is
logged with its traceback and never stops the loop. ``poll_seconds`` 0 starts no thread.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.exc import SQLAlchemyError

logger = logging.getLogger(__name__)


class Poller:
    """Calls :meth:`run_once` every ``poll_seconds`` in a daemon thread named ``name``."""

    #: the thread's name, also the prefix of the loop's log lines
    name = "livt-poller"

    def __init__(self, *, poll_seconds: float) -> None:
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """One round; returns how much it did (for logs and tests)."""
        raise NotImplementedError

    def start(self) -> None:
        """Starts the thread (not when ``poll_seconds`` is 0)."""
        if self.poll_seconds <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Asks the loop to end after the current round and waits up to ``timeout`` s."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except SQLAlchemyError as exc:  # database away or busy: try again next round
                logger.warning("%s: %s", self.name, exc)
            except Exception:
                logger.exception("%s round failed", self.name)
            self._stop.wait(self.poll_seconds)
