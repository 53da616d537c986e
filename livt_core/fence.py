"""Fencing of a run's output folder between attempts of the same job.

The job service may declare a worker lost (no heartbeat) and start a new attempt of its job in the
same folder while the old training process still runs, e.g. behind a frozen worker. The folder
then belongs to the newest attempt: each attempt first takes it over (:func:`take_over` writes
its number into ``ATTEMPT``), and a run started with ``--attempt N`` makes every write of its
files (config, history, results, checkpoints) under :meth:`AttemptFence.writing`, which holds the
folder's lock and refuses (:class:`~livt_core.errors.AttemptSuperseded`) once ``ATTEMPT`` names a
later attempt. The lock makes "check, then write" atomic against a take-over, and the whole
scheme works through the file system alone, so an old process that cannot reach the database is
fenced as well. Such a run also stops at its next step (:meth:`AttemptFence.should_stop`).

Each attempt's stop signal and event stream are files of its own (:func:`attempt_files`), so a
stale worker stopping its own run can never stop the new one. No torch import here.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from livt_core.contract import (
    ATTEMPT_FILE,
    ATTEMPT_LOCK_FILE,
    ATTEMPTS_DIR,
    EVENTS_FILE,
    STOP_FILE,
)
from livt_core.errors import AttemptSuperseded
from livt_core.events import Callback

#: The run folder's names for the fence are the run contract's (``livt_core.contract``).
LOCK_FILE = ATTEMPT_LOCK_FILE


@dataclass(frozen=True)
class AttemptFiles:
    """The files of one attempt: its event stream and its stop signal."""

    folder: Path
    events: Path
    stop: Path


def attempt_files(output_dir: str | os.PathLike[str], attempt: int) -> AttemptFiles:
    folder = Path(output_dir) / ATTEMPTS_DIR / str(int(attempt))
    return AttemptFiles(folder=folder, events=folder / EVENTS_FILE, stop=folder / STOP_FILE)


@contextmanager
def _locked(output_dir: Path) -> Iterator[None]:
    output_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(output_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def current_attempt(output_dir: str | os.PathLike[str]) -> int | None:
    """The attempt that owns the folder (None: no attempt took it over)."""
    try:
        text = (Path(output_dir) / ATTEMPT_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def take_over(output_dir: str | os.PathLike[str], attempt: int) -> bool:
    """Makes ``attempt`` the owner of the folder; from then on the runs of earlier attempts write
    nothing there. Returns False (and changes nothing) when a later attempt already owns it."""
    folder = Path(output_dir)
    with _locked(folder):
        owner = current_attempt(folder)
        if owner is not None and owner > attempt:
            return False
        tmp = folder / f"{ATTEMPT_FILE}.tmp"
        tmp.write_text(f"{int(attempt)}\n", encoding="utf-8")
        os.replace(tmp, folder / ATTEMPT_FILE)
    return True


class AttemptFence(Callback):
    """The fence of a run that is attempt ``attempt`` of its job (see the module docstring).

    As a callback it asks the run to stop once a later attempt owns the folder (checked at most
    every ``check_interval`` seconds).
    """

    def __init__(
        self, output_dir: str | os.PathLike[str], attempt: int, check_interval: float = 1.0
    ) -> None:
        self.output_dir = Path(output_dir)
        self.attempt = int(attempt)
        self.check_interval = check_interval
        self._checked_at = 0.0
        self._superseded = False

    def is_current(self) -> bool:
        owner = current_attempt(self.output_dir)
        return owner is None or owner <= self.attempt

    def _refusal(self) -> AttemptSuperseded:
        return AttemptSuperseded(
            f"attempt {current_attempt(self.output_dir)} of this job took over "
            f"{self.output_dir}; attempt {self.attempt} stops without writing there"
        )

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Holds the folder's lock around a write; raises AttemptSuperseded instead of letting
        a superseded run write."""
        with _locked(self.output_dir):
            if not self.is_current():
                self._superseded = True
                raise self._refusal()
            yield

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._superseded and now - self._checked_at >= self.check_interval:
            self._checked_at = now
            self._superseded = not self.is_current()
        return self._superseded


class NoFence:
    """The fence of a run outside the job service: every write is allowed."""

    @contextmanager
    def writing(self) -> Iterator[None]:
        yield
