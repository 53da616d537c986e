"""The run observer on its own: events and output lines in, database batches and the job's
outcome out. No process, no database."""

from __future__ import annotations

import signal

import pytest

from livt_service.state import LogRecord
from worker.observer import RunObserver, output_record

STEP = {
    "type": "step", "epoch": 1, "epochs": 3, "step": 2, "steps": 4, "global_step": 6,
    "loss": 0.5, "lr": 1e-3, "images_per_sec": 100.0, "eta_seconds": 9.0, "time": 1.0,
}  # fmt: skip
RESULT = {"many": 90.0, "medium": 60.0, "few": 30.0, "overall": 60.0}


def _finished_run() -> RunObserver:
    observer = RunObserver("/runs/j1")
    observer.on_events(
        [
            {"type": "start", "epochs": 3, "start_epoch": 0, "steps_per_epoch": 4},
            STEP,
            {"type": "epoch", "epoch": 0, "metrics": {"train_loss": 1.0}},
            {"type": "checkpoint", "name": "last", "path": "/runs/j1/checkpoint-last.pth"},
            {"type": "result", "result": RESULT},
            {"type": "end", "status": "succeeded"},
        ]
    )
    return observer


def test_events_and_lines_become_one_batch() -> None:
    observer = _finished_run()
    observer.on_line(LogRecord("epoch 1/3: train_loss 1.0"))
    batch = observer.take_batch()
    assert batch.progress["global_step"] == 6 and "time" not in batch.progress
    assert batch.metrics == {0: {"train_loss": 1.0}}
    assert batch.artifact_names == {"checkpoint-last.pth"}
    assert batch.artifact_dir == "/runs/j1"
    messages = [r.message for r in batch.logs]
    assert messages == ["run started: 3 epochs of 4 steps", "epoch 1/3: train_loss 1.0"]
    assert observer.take_batch().empty()


def test_a_batch_that_could_not_be_written_goes_back_in_front() -> None:
    observer = RunObserver("/runs/j1")
    observer.on_line(LogRecord("first"))
    observer.on_event({"type": "epoch", "epoch": 0, "metrics": {"train_loss": 2.0}})
    failed = observer.take_batch()
    observer.on_line(LogRecord("second"))
    observer.on_event({"type": "epoch", "epoch": 1, "metrics": {"train_loss": 1.0}})
    observer.put_back(failed)
    batch = observer.take_batch()
    assert [r.message for r in batch.logs] == ["first", "second"]
    assert sorted(batch.metrics) == [0, 1]


def test_a_resumed_runs_repeated_epoch_events_are_its_earlier_metric_points() -> None:
    # a resumed run repeats the epoch events of the epochs it continues after: the stream is
    # the one channel of the metrics, the observer reads no history file
    observer = RunObserver("/runs/j1")
    observer.on_events(
        [
            {"type": "start", "epochs": 3, "start_epoch": 2, "steps_per_epoch": 4},
            {"type": "epoch", "epoch": 0, "metrics": {"train_loss": 2.0}},
            {"type": "epoch", "epoch": 1, "metrics": {"train_loss": 1.5}},
            {"type": "epoch", "epoch": "x", "metrics": {"train_loss": 9.0}},
            STEP,
        ]
    )
    batch = observer.take_batch()
    assert batch.metrics == {0: {"train_loss": 2.0}, 1: {"train_loss": 1.5}}
    assert "continuing at epoch 2 of 3" in batch.logs[0].message
    assert not hasattr(observer, "on_history")


def test_output_lines_keep_their_level_and_are_cut() -> None:
    assert output_record("2026 ERROR something broke\n", "INFO").level == "ERROR"
    assert output_record("plain line", "WARNING").level == "WARNING"
    assert output_record("   \n", "INFO") is None
    assert len(output_record("x" * 10_000, "INFO").message) == 4000


def test_a_clean_exit_succeeds_with_the_result_event() -> None:
    conclusion = _finished_run().conclude(0, None)
    assert conclusion.action == "finish"
    assert conclusion.outcome.status == "succeeded"
    assert conclusion.outcome.result == RESULT
    # the result event is the one channel of the result: there is no file to pass in
    with pytest.raises(TypeError):
        _finished_run().conclude(0, None, results_file={"overall": 61.0})  # type: ignore[call-arg]


def test_a_clean_exit_without_a_result_event_has_no_result() -> None:
    observer = RunObserver("/runs/j1")
    observer.on_events([{"type": "end", "status": "succeeded"}])
    outcome = observer.conclude(0, None).outcome
    assert (outcome.status, outcome.result) == ("succeeded", None)


@pytest.mark.parametrize("stopped", ["cancel", "shutdown", None])
@pytest.mark.parametrize("returncode", [-signal.SIGTERM, -signal.SIGKILL, 3])
def test_a_run_that_reported_success_succeeds_however_it_was_stopped(
    stopped: str | None, returncode: int
) -> None:
    # the run wrote its result and `end: succeeded`, then a cancel (or shutdown) arrived while
    # the process was still exiting, and the supervisor had to kill it: the result wins
    conclusion = _finished_run().conclude(returncode, stopped)
    assert conclusion.action == "finish"
    assert (conclusion.outcome.status, conclusion.outcome.result) == ("succeeded", RESULT)


def test_a_cancelled_run_is_cancelled_and_a_shut_down_one_requeued() -> None:
    observer = RunObserver("/runs/j1")
    observer.on_event(STEP)
    cancelled = observer.conclude(3, "cancel")
    assert (cancelled.action, cancelled.outcome.status) == ("finish", "cancelled")
    assert cancelled.outcome.progress["step"] == 2
    assert observer.conclude(-signal.SIGTERM, "shutdown").action == "requeue"


def test_a_lost_job_is_left_alone_even_after_success() -> None:
    assert _finished_run().conclude(0, "lost").action == "leave"


def test_a_typed_error_event_is_the_failure() -> None:
    observer = RunObserver("/runs/j1")
    observer.on_events(
        [
            {"type": "error", "reason": "non_finite_loss", "message": "loss is nan"},
            {"type": "end", "status": "failed"},
        ]
    )
    outcome = observer.conclude(5, None).outcome
    assert (outcome.status, outcome.reason, outcome.message) == (
        "failed",
        "non_finite_loss",
        "loss is nan",
    )
    assert observer.take_batch().logs[0].level == "ERROR"


def test_a_crash_quotes_the_last_output_lines() -> None:
    observer = RunObserver("/runs/j1", tail_lines=2)
    for line in ("one", "two", "Traceback: boom"):
        observer.on_line(LogRecord(line))
    outcome = observer.conclude(1, None).outcome
    assert outcome.reason == "internal"
    assert outcome.message.endswith("two\nTraceback: boom") and "one" not in outcome.message


def test_an_unrequested_stop_is_an_internal_failure() -> None:
    outcome = RunObserver("/runs/j1").conclude(3, None).outcome
    assert (outcome.status, outcome.reason) == ("failed", "internal")


def test_step_points_keep_the_first_step_of_each_span_and_stay_bounded() -> None:
    observer = RunObserver("/runs/j1")
    epochs, steps = 10, 1000  # 10,000 steps: spans of 5 steps for at most 2,000 points
    for g in range(1, epochs * steps + 1):
        observer.on_event({**STEP, "epoch": (g - 1) // steps, "epochs": epochs,
                           "step": (g - 1) % steps,
                           "steps": steps, "global_step": g, "loss": 1.0 / (g + 1)})  # fmt: skip
    batch = observer.take_batch()
    assert len(batch.steps) == 2000
    assert [batch.steps[b]["global_step"] for b in (0, 1, 1999)] == [1, 6, 9996]
    assert batch.steps[1] == {
        "global_step": 6, "epoch": 0, "metrics": {"loss": 1 / 7, "lr": 1e-3, "images_per_sec": 100.0}
    }  # fmt: skip
    # a short run keeps every step it reports
    short = RunObserver("/runs/j2")
    short.on_events([STEP, {**STEP, "step": 3, "global_step": 7}])
    assert sorted(short.take_batch().steps) == [5, 6]
