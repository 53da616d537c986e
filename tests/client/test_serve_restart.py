"""``livt serve`` restarts its worker when it dies, and the wait before each restart is capped:
repeated kills do not make the requeue of a running job slower and slower."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from livt.serve import RESTART_DELAY, EmbeddedWorker, next_restart_delay
from livt_service.settings import Settings


def test_restart_delay_doubles_up_to_the_cap_and_starts_over_after_a_healthy_run() -> None:
    delays, delay = [], RESTART_DELAY / 2
    for _ in range(6):
        delay = next_restart_delay(delay, ran_seconds=3.0, cap=5.0)
        delays.append(delay)
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert next_restart_delay(5.0, ran_seconds=3600.0, cap=5.0) == RESTART_DELAY


def test_the_cap_is_a_setting_with_a_small_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVT_WORKER_RESTART_DELAY_MAX_SECONDS", raising=False)
    assert 1.0 <= Settings().worker_restart_delay_max_seconds <= 10.0
    monkeypatch.setenv("LIVT_WORKER_RESTART_DELAY_MAX_SECONDS", "2.5")
    assert Settings().worker_restart_delay_max_seconds == 2.5


@pytest.mark.slow
def test_a_worker_that_keeps_dying_is_restarted_at_the_capped_pace(tmp_path: Path) -> None:
    # a "worker" that dies at once: it notes when it started, then exits with status 1
    starts = tmp_path / "starts"
    program = textwrap.dedent(
        f"""
        import sys, time
        with open({str(starts)!r}, "a") as fh:
            fh.write(f"{{time.monotonic()}}\\n")
        sys.exit(1)
        """
    )
    cap = 1.5
    embedded = EmbeddedWorker([sys.executable, "-c", program], restart_delay_max=cap)
    embedded.start()
    try:
        time.sleep(9.0)
    finally:
        embedded.stop(timeout=5)
    times = [float(t) for t in starts.read_text().split()]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # uncapped doubling (1, 2, 4, 8 s) gives 4 starts in 9 s; capped at 1.5 s it gives 6 or more
    assert len(times) >= 6, f"starts {len(times)}, gaps {gaps}"
    assert max(gaps) < cap + 1.0, gaps
