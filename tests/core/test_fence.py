"""The attempt fence of a run folder: a later attempt takes the folder over and from then on an
earlier attempt's run writes nothing there and stops."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from livt_core.checkpoint import load_checkpoint
from livt_core.engine import run
from livt_core.errors import AttemptSuperseded
from livt_core.events import Callback, CallbackList
from livt_core.fence import AttemptFence, attempt_files, current_attempt, take_over
from tests.core.test_engine import _pretrain


def test_take_over_moves_forward_only(tmp_path: Path) -> None:
    assert current_attempt(tmp_path) is None
    assert take_over(tmp_path, 1) and current_attempt(tmp_path) == 1
    assert take_over(tmp_path, 3) and current_attempt(tmp_path) == 3
    assert not take_over(tmp_path, 2)  # a stale runner cannot take the folder back
    assert current_attempt(tmp_path) == 3


def test_a_superseded_attempt_may_not_write_and_stops(tmp_path: Path) -> None:
    take_over(tmp_path, 1)
    fence = AttemptFence(tmp_path, 1, check_interval=0)
    with fence.writing():
        (tmp_path / "a").write_text("ok")
    assert not fence.should_stop()
    take_over(tmp_path, 2)
    with pytest.raises(AttemptSuperseded, match="attempt 2 of this job took over"):
        with fence.writing():
            (tmp_path / "b").write_text("too late")
    assert not (tmp_path / "b").exists()
    assert fence.should_stop()
    assert AttemptFence(tmp_path, 2).is_current()


def test_take_over_waits_for_a_write_in_progress(tmp_path: Path) -> None:
    take_over(tmp_path, 1)
    fence = AttemptFence(tmp_path, 1)
    order: list[str] = []
    with fence.writing():
        taker = threading.Thread(target=lambda: (take_over(tmp_path, 2), order.append("taken")))
        taker.start()
        time.sleep(0.3)
        order.append("written")
    taker.join(5)
    assert order == ["written", "taken"]


def test_each_attempt_has_its_own_stop_file_and_events(tmp_path: Path) -> None:
    one, two = attempt_files(tmp_path, 1), attempt_files(tmp_path, 2)
    assert one.stop != two.stop and one.events != two.events
    assert one.stop.parent == one.events.parent == tmp_path / "attempts" / "1"


class _TakeOverAfterEpoch(Callback):
    """Plays the new attempt: takes the folder over when epoch ``epoch`` has ended."""

    def __init__(self, folder: Path, epoch: int) -> None:
        self.folder, self.epoch = folder, epoch
        self.ends: list[str] = []

    def on_epoch_end(self, epoch: int, metrics: Any) -> None:
        if epoch == self.epoch:
            take_over(self.folder, 2)

    def on_end(self, status: str) -> None:
        self.ends.append(status)


def test_a_run_superseded_mid_way_writes_no_checkpoint_and_stops(tmp_path: Path) -> None:
    config = _pretrain(epochs=3)
    take_over(tmp_path, 1)
    watcher = _TakeOverAfterEpoch(tmp_path, epoch=1)
    fence = AttemptFence(tmp_path, 1, check_interval=0)
    result = run(config, tmp_path, callbacks=CallbackList([watcher, fence]), fence=fence)
    assert result.status == "cancelled" and watcher.ends == ["cancelled"]
    # epoch 0's checkpoint stands; epoch 1's was refused, and epoch 2 never ran
    assert load_checkpoint(tmp_path / "checkpoint-last.pth")["epoch"] == 0
    assert not (tmp_path / "results.json").exists()
