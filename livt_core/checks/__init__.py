"""Checks of a job that need the training stack (torch), run in a short-lived helper process.

The job service validates what it can without torch (``livt_core.config``,
``livt_core.catalog``). Three checks need to load or build something: that a checkpoint file
holds a model state dict, that a loss's option values are accepted, and that a data set root
holds a readable training split. :func:`run_checks` runs them in ``python -m livt_core.checks``
(one JSON request on stdin, one JSON answer on stdout) and raises the same typed errors the
checks raise, so that the caller answers as if it had run them itself. This module imports no
torch; :mod:`livt_core.checks.run` does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from livt_core.errors import CheckpointError, ConfigError, DataError, LivtError

#: Seconds a helper may take (importing torch, reading a large checkpoint, indexing a folder).
CHECK_TIMEOUT = 600.0

ERROR_TYPES: dict[str, type[LivtError]] = {
    "ConfigError": ConfigError,
    "DataError": DataError,
    "CheckpointError": CheckpointError,
}


class CheckFailed(LivtError):
    """The helper process itself failed (crashed, timed out, answered garbage)."""


def checkpoint(path: str) -> dict[str, Any]:
    """A request: does ``path`` hold a model state dict (:class:`CheckpointError` if not)."""
    return {"check": "checkpoint", "path": str(path)}


def loss(name: str, *, tau: float, smoothing: float, options: Mapping[str, Any]) -> dict[str, Any]:
    """A request: are the loss's option values accepted (:class:`ConfigError` if not)."""
    return {
        "check": "loss",
        "name": name,
        "tau": tau,
        "smoothing": smoothing,
        "options": dict(options),
    }


def dataset(
    data: Mapping[str, Any], *, allowed_roots: Sequence[Any] | None = None
) -> dict[str, Any]:
    """A request: build the training split of ``data`` (a ``DataConfig`` as a dict), its files
    confined to ``allowed_roots`` when given; the answer holds its ``classes``,
    ``class_counts`` and ``num_train``."""
    roots = None if allowed_roots is None else [str(r) for r in allowed_roots]
    return {"check": "dataset", "data": dict(data), "allowed_roots": roots}


def error_from_json(data: Mapping[str, Any]) -> LivtError:
    kind = ERROR_TYPES.get(str(data.get("type")))
    if kind is ConfigError:
        return ConfigError(str(data["field"]), str(data["message"]), data.get("fix"))
    if kind is not None:
        return kind(str(data["message"]))
    return CheckFailed(str(data.get("message", "the check failed")))


def run_checks(
    requests: Sequence[Mapping[str, Any]], *, timeout: float = CHECK_TIMEOUT
) -> list[dict[str, Any]]:
    """Runs ``requests`` in one helper process and returns one answer per request.

    Raises the first failing check's :class:`ConfigError` / :class:`DataError` /
    :class:`CheckpointError`, or :class:`CheckFailed` when the helper does not answer.
    """
    if not requests:
        return []
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "livt_core.checks"],
            input=json.dumps(list(requests)),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"the check did not finish within {timeout:g} s") from None
    try:
        answers = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise CheckFailed(f"the check process failed: {tail[0]}") from None
    for answer in answers:
        if "error" in answer:
            raise error_from_json(answer["error"])
    return answers
