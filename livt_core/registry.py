"""A small typed name → factory registry shared by models, losses and data sets."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Generic, TypeVar

from livt_core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; unknown names raise a :class:`ConfigError` listing valid ones.

    ``field`` is the configuration field the name comes from (``"model"``, ``"loss"``), so that
    the error names it. ``known``: the names the catalogue (``livt_core.catalog``) declares;
    registering any other name fails.
    """

    def __init__(self, kind: str, field: str, known: Collection[str] | None = None) -> None:
        self.kind = kind
        self.field = field
        self.known = None if known is None else frozenset(known)
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            if self.known is not None and key not in self.known:
                raise ValueError(f"{self.kind} {key!r} is missing from livt_core.catalog")
            self._entries[key] = obj
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                self.field,
                f"unknown {self.kind} {name!r}",
                f"use one of: {', '.join(sorted(self._entries))}",
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
