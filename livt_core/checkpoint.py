"""Saving and safely loading checkpoints in the released LiVT / MAE format.

Checkpoint format
-----------------
A checkpoint is a ``torch.save`` dict. The released LiVT / MAE files hold::

    {"model": state_dict, "optimizer": state_dict, "epoch": int, "scaler": state_dict | None,
     "args": argparse.Namespace}

(published pretrained weights often hold only ``"model"``). The files this project writes keep
those keys and add a few, with ``args`` as a plain dict so that no class needs unpickling::

    model        timm-style model state dict (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``,
                 ``blocks.{i}.*``, ``norm.*`` / ``fc_norm.*``, ``head.*``; MAE adds
                 ``mask_token`` and ``decoder_*``)
    optimizer    optimizer state dict
    epoch        last completed epoch (0-based)
    scaler       AMP grad-scaler state dict, or None
    args         the resolved run configuration as a plain dict
    global_step  training steps (batches) taken so far
    rng          random-number-generator states for an exact resume
    best         best validation result so far (fine-tuning)
    kind         "pretrain" | "finetune"
    livt_version version of this package that wrote the file

Loading never runs a bare unpickle: ``torch.load(weights_only=True)`` accepts tensors and plain
Python values, plus the classes in :data:`SAFE_GLOBALS`.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from livt_core.errors import CheckpointError

try:  # numpy >= 2
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import scalar as _numpy_scalar

logger = logging.getLogger(__name__)

#: Globals that released checkpoints pickle besides tensors and plain values. Each only builds
#: data: ``argparse.Namespace`` holds the ``args`` of the released LiVT / MAE training scripts;
#: the numpy entries rebuild numpy scalars (e.g. a ``best_acc`` or a class count stored as
#: ``np.float64`` / ``np.int64`` by timm-era scripts). numpy < 2 wrote the scalar constructor as
#: ``numpy.core.multiarray.scalar``, numpy >= 2 as ``numpy._core.multiarray.scalar``; numpy >= 1.25
#: rebuilds a dtype as an instance of its per-type class, hence the ``numpy.dtypes`` entries.
SAFE_GLOBALS: list[Any] = [
    argparse.Namespace,
    (_numpy_scalar, "numpy.core.multiarray.scalar"),
    (_numpy_scalar, "numpy._core.multiarray.scalar"),
    np.dtype,
    np.dtypes.BoolDType,
    np.dtypes.Int8DType,
    np.dtypes.Int16DType,
    np.dtypes.Int32DType,
    np.dtypes.Int64DType,
    np.dtypes.UInt8DType,
    np.dtypes.UInt16DType,
    np.dtypes.UInt32DType,
    np.dtypes.UInt64DType,
    np.dtypes.Float16DType,
    np.dtypes.Float32DType,
    np.dtypes.Float64DType,
]

_DDP_PREFIX = "module."


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically.

    The data goes to a temporary file in the same directory, is flushed to disk, then renamed over
    ``path``: a reader (or a resumed run after a crash) sees either the old or the new file, never
    a partial one. Parent directories are created.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)
    logger.debug("saved checkpoint %s", target)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable on POSIX; some file systems refuse to open directories.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        logger.debug("cannot fsync directory %s", directory)
    finally:
        os.close(fd)


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint dict with ``torch.load(weights_only=True)`` and :data:`SAFE_GLOBALS`.

    Raises:
        CheckpointError: the file is missing, is not a readable ``torch.save`` file, needs a
            class outside the allow-list, or does not hold a dict.
    """
    source = Path(path)
    if not source.exists():
        raise CheckpointError(f"checkpoint {source} does not exist")
    if not source.is_file():
        raise CheckpointError(f"checkpoint {source} is not a file")
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        try:
            obj = torch.load(source, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(_unpickling_message(source, exc)) from exc
        # torch.load reports malformed files through many exception types (RuntimeError for a
        # broken zip, EOFError for an empty file, KeyError for text, ...): all mean "unreadable".
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint {source} is not a readable PyTorch file "
                f"({type(exc).__name__}: {_first_line(str(exc))})"
            ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"checkpoint {source} holds a {type(obj).__name__}, not a dict "
            "(expected {'model': state_dict, ...} or a state dict)"
        )
    return obj


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else "no details"


def _unpickling_message(source: Path, exc: pickle.UnpicklingError) -> str:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(source)
    except Exception:  # a legacy (non-zip) file cannot be inspected statically
        names = []
    if names:
        return (
            f"checkpoint {source} contains objects that are not allowed when loading weights "
            f"safely: {', '.join(names)}; only tensors, plain Python values, argparse.Namespace "
            "and numpy scalars are accepted. Re-save the file with plain values (for example "
            "{'model': model.state_dict()})"
        )
    # torch wraps the unpickler's own reason in a long explanation; keep only the reason.
    text = str(exc).split("WeightsUnpickler error:", 1)[-1]
    return f"checkpoint {source} cannot be loaded safely: {_first_line(text)}"


def extract_model_state(obj: Any) -> dict[str, torch.Tensor]:
    """The model state dict inside a checkpoint.

    Accepts a released-format dict (``{"model": state_dict, ...}``), a ``{"state_dict": ...}``
    dict or a raw state dict. A ``module.`` prefix (left by DistributedDataParallel) is removed.

    Raises:
        CheckpointError: ``obj`` holds no mapping of parameter names to tensors.
    """
    state = obj
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                state = obj[key]
                break
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(
            f"not a state dict: got {type(state).__name__}"
            + (" (empty)" if isinstance(state, Mapping) else "")
        )
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        example = bad[0]
        raise CheckpointError(
            f"not a state dict: {len(bad)} entries are not name → tensor, e.g. {example!r} → "
            f"{type(state[example]).__name__}"
        )
    return {key.removeprefix(_DDP_PREFIX): value for key, value in state.items()}
