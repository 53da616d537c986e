"""Run-time speed settings of a training process: CPU threads, loader workers, the AdamW
implementation and ``torch.compile``.

Cores. A training process gets the cores it may run on: ``$LIVT_JOB_CPUS`` when set (the job
service sets it to a job's share when several jobs run at once), else the process's CPU affinity
(``os.sched_getaffinity``: a container's or ``taskset``'s cores, not the whole machine), divided
among the local ranks of a ``torchrun`` launch: the rank's *share* (:func:`cpu_share`). OpenMP
spinning on more threads than free cores made a 2-thread step 4.3× slower than a 1-thread one on
a loaded 2-core machine, so the defaults never exceed the share.

Threads and loader workers (:func:`plan_cpus`). Loader workers run one torch thread each (their
work is per-image PIL and small tensor ops; more threads only contend with the training step),
so a worker costs one core of the share and the step's torch threads get the rest:

- ``data.num_workers: null`` (auto) and ``threads: null``: no worker on a 1-core share (a worker
  there would only take turns with the training step on the one core, and every batch would
  also be pickled across processes: loading in the training process does the same work without
  that), else half the share, at most :data:`AUTO_MAX_WORKERS` (or ``$LIVT_MAX_DATA_WORKERS``
  when lower: the site limit the job service passes); the step gets the rest.
- auto workers with an explicit ``threads``: the cores the threads leave, at most
  :data:`AUTO_MAX_WORKERS` (0 when they leave none).
- an explicit ``data.num_workers`` with ``threads: null``: the step gets the share less the
  workers, at least 1 thread.
- both explicit: both are used as given.

Whenever the result exceeds the share (explicit settings only can make it), the run logs one
WARNING naming ``threads``, ``data.num_workers`` and the share. The numbers the run uses are
logged at its start, sent in its ``start`` event and written under ``runtime`` in its result.

Compile. ``compile`` is ``auto``, ``on`` or ``off``. ``on`` compiles the training model with
inductor and fails the run when that is impossible; ``off`` stays eager. ``auto`` compiles where
it is known to pay off: on CUDA with Triton and a GPU of compute capability ≥ 7.0. On CPU
inductor works (it needs a C++ compiler) but measured no faster than eager for this project's
models on the reference machine (``bench/results/speed-cpu.md``) while costing tens of seconds of
compilation per run, so ``auto`` stays eager there. Whatever ``auto`` decides, a compile that
fails (at setup or in the first training step) falls back to eager with the reason logged.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from livt_core.contract import JOB_CPUS_ENV, MAX_WORKERS_ENV

logger = logging.getLogger(__name__)


COMPILE_MODES = ("auto", "on", "off")


def available_cpus() -> int:
    """Cores this process may run on: ``$LIVT_JOB_CPUS`` if it is a positive integer, else the
    size of the CPU affinity mask (``os.cpu_count()`` where there is none)."""
    raw = os.environ.get(JOB_CPUS_ENV, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value > 0:
            return value
        logger.warning("ignoring %s=%r: not a positive integer", JOB_CPUS_ENV, raw)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def local_processes() -> int:
    """Training processes sharing this machine's cores (``torchrun``'s ``LOCAL_WORLD_SIZE``)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


#: Most loader processes per rank that ``data.num_workers: null`` (auto) starts: beyond that
#: the cores go to the training step's threads.
AUTO_MAX_WORKERS = 4


def auto_workers_cap() -> int:
    """:data:`AUTO_MAX_WORKERS`, lowered to ``$LIVT_MAX_DATA_WORKERS`` when that is smaller."""
    raw = os.environ.get(MAX_WORKERS_ENV, "").strip()
    if raw.isdigit():
        return min(AUTO_MAX_WORKERS, int(raw))
    if raw:
        logger.warning("ignoring %s=%r: not a non-negative integer", MAX_WORKERS_ENV, raw)
    return AUTO_MAX_WORKERS


def cpu_share() -> int:
    """Cores of this training process: :func:`available_cpus` divided among the local
    processes, at least 1."""
    return max(1, available_cpus() // local_processes())


def auto_workers(share: int, threads: int | None = None) -> int:
    """Loader processes of a run with ``data.num_workers: null`` on ``share`` cores, given the
    run's ``threads`` (None: the default threads take what the workers leave)."""
    if share <= 1:
        return 0
    free = share // 2 if threads is None else share - threads
    return max(0, min(auto_workers_cap(), free))


def default_threads(num_workers: int = 0) -> int:
    """torch intra-op threads of one training process when the run does not set ``threads``:
    its :func:`cpu_share`, less one core per loader process (``num_workers``), at least 1."""
    return max(1, cpu_share() - max(num_workers, 0))


@dataclass(frozen=True)
class CpuPlan:
    """The threads and loader processes one training process runs, on its ``share`` of cores."""

    threads: int
    num_workers: int
    share: int
    auto_threads: bool
    auto_workers: bool

    @property
    def oversubscribed(self) -> bool:
        return self.threads + self.num_workers > self.share

    def describe(self) -> str:
        """The log line of the plan."""
        threads = "auto" if self.auto_threads else self.threads
        workers = "auto" if self.auto_workers else self.num_workers
        return (
            f"torch threads {self.threads} (threads={threads}), {self.num_workers} loader "
            f"worker(s) (data.num_workers={workers}) on a share of {self.share} core(s)"
        )

    def record(self) -> dict[str, int]:
        """What the run records of it (its ``start`` event and ``runtime`` in its result)."""
        return {"threads": self.threads, "num_workers": self.num_workers, "cpus": self.share}


def plan_cpus(threads: int | None, num_workers: int | None) -> CpuPlan:
    """The threads and loader workers of a run's ``threads`` and ``data.num_workers`` settings
    (None: auto) on this process's :func:`cpu_share`, by the rules of the module doc. Logs one
    WARNING when explicit settings exceed the share."""
    share = cpu_share()
    workers = auto_workers(share, threads) if num_workers is None else num_workers
    count = threads if threads is not None else max(1, share - workers)
    plan = CpuPlan(count, workers, share, threads is None, num_workers is None)
    if plan.oversubscribed:
        logger.warning(
            "threads=%d + data.num_workers=%d exceed this process's share of %d core(s) "
            "(%s): the processes will take turns on the cores; lower threads or "
            "data.num_workers, or set them to null (auto)",
            count,
            workers,
            share,
            _share_source(),
        )
    return plan


def _share_source() -> str:
    local = local_processes()
    raw = os.environ.get(JOB_CPUS_ENV, "").strip()
    origin = f"{JOB_CPUS_ENV}={raw}" if raw.isdigit() and int(raw) > 0 else "the CPU affinity"
    return origin if local == 1 else f"{origin} divided among {local} local processes"


def configure_threads(threads: int | None, num_workers: int = 0) -> int:
    """Sets torch's intra-op threads to ``threads`` (or :func:`default_threads`); returns it."""
    count = threads if threads is not None else default_threads(num_workers)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


def loader_worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one torch thread per worker, then the run's seeding."""
    from livt_core.optim import seed_worker

    torch.set_num_threads(1)
    seed_worker(worker_id)


# -- AdamW ---------------------------------------------------------------------------------------


def adamw_implementation(device: torch.device) -> dict[str, bool]:
    """The fastest AdamW kernel for parameters on ``device``: ``fused`` (one kernel over all
    parameters; CUDA, and CPU since torch 2.4), else ``foreach`` (multi-tensor ops)."""
    if device.type in ("cuda", "cpu") and _fused_adamw_supported(device):
        return {"fused": True}
    return {"foreach": True}


def _fused_adamw_supported(device: torch.device) -> bool:
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        return device.type in _get_fused_kernels_supported_devices()
    except ImportError:  # a torch without the helper: fused on CUDA only
        return device.type == "cuda"


def set_adamw_implementation(optimizer: torch.optim.Optimizer, impl: dict[str, bool]) -> None:
    """Re-applies ``impl`` to every group, e.g. after loading a state saved with another one."""
    for group in optimizer.param_groups:
        group["fused"] = bool(impl.get("fused", False))
        group["foreach"] = bool(impl.get("foreach", False))


# -- torch.compile -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompileDecision:
    """Whether to compile, and why (logged and recorded in the run's log)."""

    enabled: bool
    reason: str


def inductor_unavailable(device: torch.device) -> str | None:
    """Why inductor cannot compile for ``device`` here, or None when it can."""
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed"
        major, _minor = torch.cuda.get_device_capability(device)
        if major < 7:
            return f"the GPU has compute capability {major}.x; inductor needs ≥ 7.0"
        return None
    if device.type == "cpu":
        compiler = os.environ.get("CXX") or "g++"
        if shutil.which(compiler) is None and shutil.which("c++") is None:
            return f"no C++ compiler ({compiler}) on PATH"
        return None
    return f"inductor does not support device type {device.type}"


def decide_compile(mode: str, device: torch.device) -> CompileDecision:
    """``compile`` setting + device → :class:`CompileDecision` (see the module doc).

    Raises :class:`~livt_core.errors.ConfigError` for ``on`` where inductor cannot run."""
    from livt_core.errors import ConfigError

    if mode not in COMPILE_MODES:
        raise ConfigError("compile", f"unknown mode {mode!r}", "use auto, on or off")
    if mode == "off":
        return CompileDecision(False, "compile=off")
    missing = inductor_unavailable(device)
    if mode == "on":
        if missing is not None:
            raise ConfigError(
                "compile", f"torch.compile cannot run on {device.type}: {missing}", "use auto/off"
            )
        return CompileDecision(True, "compile=on")
    if missing is not None:
        return CompileDecision(False, f"compile=auto: eager, {missing}")
    if device.type == "cuda":
        return CompileDecision(True, "compile=auto: inductor on CUDA")
    return CompileDecision(
        False, "compile=auto: eager on CPU (inductor measured no faster than eager here)"
    )


class CompiledStep:
    """A training model called through ``torch.compile`` with an eager fallback.

    ``model`` itself is not changed (its state-dict keys stay timm's): the compiled callable is
    held beside it. With ``strict`` (compile=on) a compile error propagates; otherwise the first
    failing call logs the reason, switches to eager for the rest of the run and retries eagerly.
    """

    def __init__(self, model: nn.Module, *, strict: bool) -> None:
        self.model = model
        self.strict = strict
        self.compiled: Callable[..., Any] | None = torch.compile(model, backend="inductor")
        self.fallback_reason: str | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.model(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eagerly
            if self.strict or not _is_compile_error(exc):
                raise
            self.disable(f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}")
            return self.model(*args, **kwargs)

    def disable(self, reason: str) -> None:
        """Runs eagerly from now on; logs ``reason``."""
        self.compiled = None
        self.fallback_reason = reason
        logger.warning("torch.compile failed, training eagerly: %s", reason)

    @property
    def active(self) -> bool:
        return self.compiled is not None


def _is_compile_error(exc: BaseException) -> bool:
    """Errors raised by dynamo / inductor / the C++ or Triton toolchain, not by the model."""
    module = type(exc).__module__ or ""
    if module.startswith(("torch._dynamo", "torch._inductor", "torch._functorch", "triton")):
        return True
    try:
        from torch._dynamo.exc import BackendCompilerFailed, TorchDynamoException

        return isinstance(exc, BackendCompilerFailed | TorchDynamoException)
    except ImportError:
        return False


def maybe_compile(model: nn.Module, mode: str, device: torch.device) -> tuple[Any, str]:
    """``model`` or a :class:`CompiledStep` around it, per :func:`decide_compile`; and why."""
    decision = decide_compile(mode, device)
    logger.info("%s", decision.reason)
    if not decision.enabled:
        return model, decision.reason
    try:
        return CompiledStep(model, strict=mode == "on"), decision.reason
    except Exception as exc:  # noqa: BLE001 - torch.compile itself refused
        if mode == "on":
            raise
        reason = f"torch.compile failed, training eagerly: {type(exc).__name__}: {exc}"
        logger.warning("%s", reason)
        return model, reason
