"""The run contract (``livt_core.contract``): torch-free, and what the engine writes matches it."""

from __future__ import annotations

import json
import subprocess
import sys

from livt_core import contract, errors
from livt_core.events import JsonlEventWriter, read_events


def test_contract_imports_no_torch():
    code = "import sys, livt_core.contract; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_event_writer_writes_the_fields_of_the_contract(tmp_path):
    path = tmp_path / contract.EVENTS_FILE
    writer = JsonlEventWriter(path, min_step_interval=0.0)
    writer.on_start(
        {
            "kind": "finetune",
            "epochs": 2,
            "start_epoch": 0,
            "steps_per_epoch": 3,
            "world_size": 1,
            "threads": 1,
            "num_workers": 0,
            "cpus": 1,
        }
    )
    step = dict.fromkeys(contract.PROGRESS_FIELDS, 0)
    writer.on_step(step)
    writer.on_epoch_end(0, {"train_loss": 1.0})
    writer.on_checkpoint("last", str(tmp_path / contract.LAST_CHECKPOINT), 0)
    writer.on_result({"overall": 50.0})
    writer.on_error("internal", "boom")
    writer.on_end("failed")
    events, _ = read_events(path)
    assert [e["type"] for e in events] == list(contract.EVENT_TYPES)
    for event in events:
        assert set(event) - {"type", "time"} == set(contract.EVENT_FIELDS[event["type"]])


def test_every_error_reason_has_an_exit_status():
    reasons = {
        cls.reason
        for cls in (errors.LivtError, *errors.LivtError.__subclasses__())
        if hasattr(cls, "reason")
    }
    assert reasons <= set(contract.EXIT_CODES), reasons - set(contract.EXIT_CODES)
    assert len(set(contract.EXIT_CODES.values())) == len(contract.EXIT_CODES)


def test_exit_status_of_a_failed_child_maps_to_a_job_failure_reason():
    for reason in ("invalid_data", "non_finite_loss", "out_of_memory"):
        assert contract.EXIT_FAILURE_REASONS[contract.EXIT_CODES[reason]] == reason
    assert contract.EXIT_FAILURE_REASONS[contract.EXIT_CONFIG] == "invalid_data"
    assert set(contract.EXIT_FAILURE_REASONS.values()) <= set(contract.FAILURE_REASONS)


def test_pretrain_summary_keeps_its_fields():
    summary = {"kind": "pretrain", "epochs": 3, "final_loss": 0.5, "min_loss": 0.4}
    summary["checkpoint"] = f"/runs/j/{contract.LAST_CHECKPOINT}"
    parsed = contract.PretrainSummary.model_validate(summary)
    assert json.loads(parsed.model_dump_json()) == summary
