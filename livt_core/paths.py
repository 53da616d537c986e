"""Confinement of user-supplied paths, and the marker that finds every path field.

Every setting that names a file or folder is typed :data:`PathStr`. The marker (``"format":
"path"`` in the JSON schema) lets :func:`path_fields` list them by introspection, so that the
service confines all of them, including any path field added later, with one function:
:func:`confine_path`. It resolves symlinks and requires the result to stay inside the allowed
roots. Its errors never say where an outside path resolves to.

Imports nothing heavy (no torch): the API, the worker and the library all call it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, Field
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from livt_core.errors import ConfigError, DataError

#: JSON-schema ``format`` of every path-typed field (the marker :func:`path_fields` looks for).
PATH_FORMAT = "path"
#: Longest path accepted (Linux's PATH_MAX).
MAX_PATH_CHARS = 4096


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError(
            "string_nul", "contains a NUL character (\\u0000); remove it from the text"
        )
    return value


#: A user-given string: no NUL character (databases and file systems reject it).
SafeStr = Annotated[str, AfterValidator(_no_nul)]

#: A user-given file or folder; the service confines it with :func:`confine_path`.
PathStr = Annotated[
    str,
    AfterValidator(_no_nul),
    Field(min_length=1, max_length=MAX_PATH_CHARS, json_schema_extra={"format": PATH_FORMAT}),
]


class PathOutsideRootsError(ConfigError):
    """A user-given path does not resolve inside the allowed roots."""


@dataclass(frozen=True)
class PathPolicy:
    """Where user paths may point: data (dataset roots, split files, checkpoint files given by
    path) inside ``data_roots``; checkpoints also inside ``checkpoint_roots`` (e.g. the artifact
    folder of the job a run starts from)."""

    data_roots: tuple[Path, ...]
    checkpoint_roots: tuple[Path, ...] = field(default_factory=tuple)

    def roots_for(self, kind: str) -> tuple[Path, ...]:
        return self.data_roots + self.checkpoint_roots if kind == "checkpoint" else self.data_roots


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(path))


def is_inside(resolved: Path, roots: Sequence[Path]) -> bool:
    """Whether the (already resolved) ``resolved`` equals or lies below one of ``roots``."""
    return any(resolved == r or resolved.is_relative_to(r) for r in (_real(r) for r in roots))


def confine_path(
    path: str | os.PathLike[str],
    roots: Sequence[Path],
    *,
    field: str,
    base: Path | None = None,
    what: str = "data roots",
) -> Path:
    """Resolves ``path`` (symlinks included) and returns it if it lies inside one of ``roots``.

    A relative path is taken relative to ``base`` when given (e.g. the dataset root of a split
    file), else relative to the first root that holds it (else the first root). Raises
    :class:`PathOutsideRootsError` naming ``field``; the message says neither the path nor where
    it resolves to.
    """
    text = os.fspath(path)
    if not text or "\x00" in text or len(text) > MAX_PATH_CHARS:
        raise ConfigError(
            field, "is not a usable path", "give a file or folder name without NUL characters"
        )
    raw = Path(text)
    if raw.is_absolute():
        resolved = _real(raw)
    elif base is not None:
        resolved = _real(base / raw)
    else:
        candidates = [_real(root / raw) for root in roots]
        resolved = next((c for c in candidates if c.exists()), candidates[0] if candidates else raw)
    if roots and is_inside(resolved, roots):
        return resolved
    raise PathOutsideRootsError(
        field,
        f"path is outside the {what}",
        f"use a path inside a data root (a relative path is taken from "
        f"{'the dataset root' if base is not None else 'the data roots'}), or ask the "
        "administrator to add its folder to LIVT_DATA_ROOTS",
    )


# --------------------------------------------------------------------------------------------
# finding the path fields of a model


def _is_path_field(info: FieldInfo) -> bool:
    extra = info.json_schema_extra
    if isinstance(extra, Mapping) and extra.get("format") == PATH_FORMAT:
        return True
    return info.annotation is not None and _format_of(info.annotation) == PATH_FORMAT


def _format_of(annotation: Any) -> str | None:
    for arg in get_args(annotation):
        extra = getattr(arg, "json_schema_extra", None)
        if isinstance(extra, Mapping) and extra.get("format") == PATH_FORMAT:
            return PATH_FORMAT
        if get_args(arg) and _format_of(arg) == PATH_FORMAT:
            return PATH_FORMAT
    return None


def _submodels(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    origin = get_origin(annotation)
    if origin is Union or origin is not None or get_args(annotation):
        for arg in get_args(annotation):
            yield from _submodels(arg)


def path_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted names of every :data:`PathStr` field of ``model`` and its nested models."""
    out: list[str] = []
    for name, info in model.model_fields.items():
        dotted = f"{prefix}{name}"
        if _is_path_field(info):
            out.append(dotted)
            continue
        for sub in _submodels(info.annotation):
            out.extend(path_fields(sub, f"{dotted}."))
    return out


# --------------------------------------------------------------------------------------------
# confining the paths of a run config


#: Path fields (by last name) that name checkpoints; the others name data.
CHECKPOINT_FIELDS = frozenset({"init", "checkpoint"})
#: Path fields (by last name) resolved relative to their sibling ``root`` when relative.
SPLIT_FIELDS = frozenset({"train_split", "val_split", "test_split"})


def _get(values: Mapping[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def confine_config_paths(
    model: type[BaseModel], values: Mapping[str, Any], policy: PathPolicy
) -> dict[str, Path]:
    """Confines every path field of ``model`` set in ``values`` (its JSON form) to ``policy``.

    ``model`` is a run config (``FinetuneConfig``, ...) or a ``DataConfig``. Split files are
    taken relative to the sibling ``root``. Returns ``{field: resolved path}`` of the fields
    that are set; raises :class:`PathOutsideRootsError` for the first one outside.
    """
    fields = sorted(path_fields(model), key=lambda name: name.rsplit(".", 1)[-1] != "root")
    resolved: dict[str, Path] = {}
    for name in fields:
        value = _get(values, name)
        if value is None:
            continue
        parent, _, leaf = name.rpartition(".")
        items = value if isinstance(value, list) else [value]
        kind = "checkpoint" if leaf in CHECKPOINT_FIELDS else "data"
        base = (
            resolved.get(f"{parent}.root" if parent else "root") if leaf in SPLIT_FIELDS else None
        )
        for item in items:
            if leaf in SPLIT_FIELDS and base is None and not Path(str(item)).is_absolute():
                continue  # a split file without a root: the dataset check reports that
            resolved[name] = confine_path(
                str(item),
                policy.roots_for(kind),
                field=name,
                base=base,
                what="data roots" if kind == "data" else "data or checkpoint roots",
            )
    return resolved


def check_file_inside(path: Path, roots: Sequence[Path], *, what: str) -> Path:
    """For files found while reading a dataset (class folders, images, split-file entries):
    the resolved file if it stays inside ``roots``, else :class:`DataError` (no target shown)."""
    resolved = _real(path)
    if not is_inside(resolved, roots):
        raise DataError(
            f"{what} is a link that leads outside the allowed data roots; replace the link "
            "with the file itself or move its target into a data root"
        )
    return resolved


# --------------------------------------------------------------------------------------------
# JSON bodies


def unsafe_json_values(value: Any, loc: tuple[str | int, ...] = ()) -> Iterator[tuple[Any, str]]:
    """``(loc, message)`` for every NUL character (in a key or a string) and every NaN or
    infinite number in a decoded JSON document: the database cannot store them."""
    if isinstance(value, str):
        if "\x00" in value:
            yield loc, "contains a NUL character (\\u0000); remove it"
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield loc, "must be a finite number (NaN and Infinity are not accepted); use a number"
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                yield (*loc, key), "the key contains a NUL character (\\u0000); remove it"
                continue
            yield from unsafe_json_values(item, (*loc, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from unsafe_json_values(item, (*loc, index))
