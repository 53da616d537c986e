"""Reading settings from the command line and from YAML: the one ``--set KEY=VALUE`` parser of
``livt train`` and of the client commands (``livt submit``), and the YAML loader of config, spec
and preset files. Values are YAML 1.2: only ``true`` / ``false`` are booleans, so ``amp=off``
stays the string ``"off"`` everywhere. Imports no torch."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from livt_core.config.errors import ConfigErrors
from livt_core.errors import ConfigError


class Yaml12Loader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 booleans: only true/false, so ``amp=off`` stays the string."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    """Parses YAML (or JSON, which is YAML) with YAML 1.2 booleans."""
    return yaml.load(text, Loader=Yaml12Loader)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["epochs=5", "data.root=/d", "betas=[0.9,0.95]"]`` → nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigErrors(
                [ConfigError("--set", f"cannot parse {item!r}", "write KEY=VALUE, e.g. epochs=5")]
            )
        value = load_yaml(raw) if raw.strip() else None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigErrors([ConfigError(key, "is set both as a value and as a section")])
        node[parts[-1]] = value
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Reads a YAML or JSON config file into a dict."""
    p = Path(path)
    if not p.is_file():
        raise ConfigErrors([ConfigError("--config", f"file {p} does not exist")])
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if p.suffix == ".json" else load_yaml(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigErrors([ConfigError("--config", f"cannot parse {p}: {exc}")]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigErrors([ConfigError("--config", f"{p} must hold a mapping of settings")])
    return data
