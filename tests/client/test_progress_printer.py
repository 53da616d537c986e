"""The progress lines ``livt wait`` writes into a log or a pipe: one per status or epoch change."""

from __future__ import annotations

import io

from livt.client import Job, Progress
from livt.client_cli import _ProgressPrinter


def _job(status: str, epoch: int, step: int, loss: float) -> Job:
    progress = Progress(epoch=epoch, epochs=40, step=step, steps=10, loss=loss, eta_seconds=6.0)
    return Job(id="j_1", kind="finetune", status=status, progress=progress)


def test_a_line_per_status_or_epoch_change_and_none_for_steps_within_an_epoch() -> None:
    out = io.StringIO()
    printer = _ProgressPrinter(out)
    printer(_job("running", 0, 0, 2.9))
    printer(_job("running", 0, 5, 2.8))  # same epoch: no new line
    printer(_job("cancelling", 0, 6, 2.8))  # same epoch, new status: a line
    printer(_job("cancelled", 0, 6, 2.8))  # and again
    printer(_job("cancelled", 0, 6, 2.8))
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["running", "cancelling", "cancelled"]
    assert "ETA" not in lines[-1]  # a finished job has no ETA
    printer(_job("running", 1, 0, 2.5))
    assert out.getvalue().splitlines()[-1].split()[1:2] == ["running"]
    assert "epoch 2/40" in out.getvalue().splitlines()[-1]
