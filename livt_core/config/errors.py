"""Errors of config validation: :class:`ConfigErrors` (one :class:`ConfigError` per bad field)
and the translation of pydantic's errors into entries that name the field and the fix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from livt_core.contract import KINDS
from livt_core.errors import ConfigError, LivtError


class ConfigErrors(LivtError, ValueError):
    """One or more invalid settings; ``errors`` holds a :class:`ConfigError` per field."""

    reason = "invalid_config"

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors))

    def __reduce__(self):
        return (type(self), (self.errors,))


def _loc_to_field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    # a discriminated union adds the tag (e.g. "finetune") as the first element
    if parts and parts[0] in KINDS:
        parts = parts[1:]
    return ".".join(parts) or "config"


#: Fixes for pydantic's own messages, which say what is wrong but not what to do.
_PYDANTIC_FIXES = {
    "less_than_equal": "set {field} to {le} or less",
    "less_than": "set {field} below {lt}",
    "greater_than_equal": "set {field} to {ge} or more",
    "greater_than": "set {field} above {gt}",
    "int_type": "write a whole number such as 1 (not true/false, 1.0 or a string)",
    "int_from_float": "write a whole number such as 1",
    "int_parsing": "write a whole number such as 1",
    "float_type": "write a number such as 0.001 (not true/false)",
    "float_parsing": "write a number such as 0.001",
    "finite_number": "write a finite number (NaN and Infinity are not accepted)",
    "string_type": "write a string",
    "string_nul": "remove the NUL character",
    "string_too_long": "shorten {field} to {max_length} characters",
    "string_too_short": "set {field} to a non-empty value",
    "too_long": "give at most {max_length} values",
    "literal_error": "use one of: {expected}",
    "bool_type": "write true or false",
    "bool_parsing": "write true or false",
    "dict_type": "write an object",
    "tuple_type": "write a list",
    "list_type": "write a list",
}


def errors_from_validation(exc: ValidationError, prefix: str = "") -> list[ConfigError]:
    """Turns a pydantic ValidationError into ConfigErrors that name the field and the fix."""
    out = []
    for err in exc.errors(include_url=False):
        field = _loc_to_field(err.get("loc", ()))
        ctx_field = (err.get("ctx") or {}).get("field")
        if ctx_field:
            field = f"{field}.{ctx_field}" if field != "config" else ctx_field
        if prefix:
            field = f"{prefix}.{field}" if field != "config" else prefix
        kind = err.get("type")
        msg = str(err.get("msg", "invalid value"))
        fix = None
        if kind == "extra_forbidden":
            msg = "unknown setting"
            fix = "remove it or check its spelling (`livt train KIND --print-config` lists every setting)"
        elif kind == "missing":
            msg = "is required"
            fix = "set it"
        elif kind in _PYDANTIC_FIXES:
            try:
                fix = _PYDANTIC_FIXES[kind].format(**{**(err.get("ctx") or {}), "field": field})
            except (KeyError, IndexError):
                fix = None
        out.append(ConfigError(field, msg, fix))
    return out
