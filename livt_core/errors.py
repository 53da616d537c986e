"""Typed errors raised by the library.

Every error a user can cause names the offending field and how to fix it, so that the CLI and the
service can show it unchanged. ``reason`` is the machine-readable failure class the job service
stores (``invalid_data``, ``non_finite_loss``, ``out_of_memory``, ``internal``).
"""

from __future__ import annotations


class LivtError(Exception):
    """Base class of every error raised on purpose by ``livt_core``."""

    reason = "internal"


class ConfigError(LivtError, ValueError):
    """A configuration value is invalid.

    ``field`` is the dotted path of the offending setting (``"loss"``, ``"data.root"``) and
    ``fix`` tells the user what to do instead.
    """

    reason = "invalid_config"

    def __init__(self, field: str, message: str, fix: str | None = None) -> None:
        self.field = field
        self.message = message
        self.fix = fix
        text = f"{field}: {message}"
        if fix:
            text += f"; {fix}"
        super().__init__(text)

    def __reduce__(self):  # keep the error picklable across processes
        return (type(self), (self.field, self.message, self.fix))


class DataError(LivtError):
    """The data set on disk is missing, malformed or inconsistent with the configuration."""

    reason = "invalid_data"


class CheckpointError(LivtError):
    """A checkpoint file is missing, unreadable, or not a model state dict."""

    reason = "invalid_data"


class NonFiniteLossError(LivtError):
    """The training loss became NaN or infinite."""

    reason = "non_finite_loss"

    def __init__(self, loss: float, epoch: int, step: int) -> None:
        self.loss = loss
        self.epoch = epoch
        self.step = step
        super().__init__(
            f"loss is {loss} at epoch {epoch}, step {step}; lower the learning rate (blr), "
            "enable gradient clipping (clip_grad) or switch amp off"
        )

    def __reduce__(self):
        return (type(self), (self.loss, self.epoch, self.step))


class StopRequested(LivtError):
    """A callback asked the run to stop (cancellation); the last checkpoint is intact."""

    reason = "cancelled"


class AttemptSuperseded(StopRequested):
    """A later attempt of the same job took over the output folder (see ``livt_core.fence``):
    this run stops and writes nothing more there."""

    reason = "superseded"
