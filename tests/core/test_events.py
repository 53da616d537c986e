"""The JSONL event stream and the stop-file cancellation signal."""

from __future__ import annotations

import json

from livt_core.events import Callback, CallbackList, JsonlEventWriter, StopFile, read_events


def test_writer_emits_one_strict_json_object_per_event(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = JsonlEventWriter(path, min_step_interval=0.0)
    writer.on_start({"kind": "finetune", "epochs": 2, "start_epoch": 0, "steps_per_epoch": 3})
    writer.on_step({"epoch": 0, "epochs": 2, "step": 1, "steps": 3, "loss": float("nan")})
    writer.on_epoch_end(0, {"train_loss": 1.5, "val_overall": 40.0})
    writer.on_result({"overall": 50.0, "few": None})
    writer.on_end("succeeded")
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["type"] for r in records] == ["start", "step", "epoch", "result", "end"]
    assert records[1]["loss"] is None  # NaN is not JSON
    assert all("time" in r for r in records)


def test_step_events_are_throttled_but_epoch_edges_pass(tmp_path):
    writer = JsonlEventWriter(tmp_path / "e.jsonl", min_step_interval=3600)
    for step in range(10):
        writer.on_step({"epoch": 0, "step": step, "steps": 10})
    writer.close()
    events, _ = read_events(tmp_path / "e.jsonl")
    assert [e["step"] for e in events] == [0, 9]


def test_read_events_resumes_from_offset_and_skips_partial_line(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"type": "start"}\n{"type": "step", "step": 0}\n{"type": "ste')
    events, offset = read_events(path)
    assert [e["type"] for e in events] == ["start", "step"]
    with path.open("a") as fh:
        fh.write('p", "step": 1}\n')
    more, offset2 = read_events(path, offset)
    assert more == [{"type": "step", "step": 1}]
    assert offset2 == path.stat().st_size


def test_read_events_of_missing_file_is_empty(tmp_path):
    assert read_events(tmp_path / "none.jsonl", 7) == ([], 7)


def test_stop_file_and_callback_list(tmp_path):
    stop = StopFile(tmp_path / "STOP")
    seen = []

    class Recorder(Callback):
        def on_epoch_end(self, epoch, metrics):
            seen.append((epoch, dict(metrics)))

    callbacks = CallbackList([Recorder(), stop, None])
    callbacks.on_epoch_end(3, {"train_loss": 0.5})
    assert seen == [(3, {"train_loss": 0.5})]
    assert not callbacks.should_stop()
    (tmp_path / "STOP").touch()
    assert callbacks.should_stop()
