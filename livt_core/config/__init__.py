"""Validated run configurations and the per-dataset presets that fill them; torch-free.

- :mod:`~livt_core.config.schema`: ``DataConfig`` and the three run kinds on a shared base,
- :mod:`~livt_core.config.presets`: the presets, one YAML file each in ``presets/``,
- :mod:`~livt_core.config.resolve`: defaults ← preset ← overrides (``resolve_config``),
- :mod:`~livt_core.config.overrides`: the ``--set KEY=VALUE`` parser and the YAML 1.2 loader,
- :mod:`~livt_core.config.errors`: ``ConfigErrors`` and pydantic errors → field + fix.
"""

from livt_core.config.errors import ConfigErrors, errors_from_validation
from livt_core.config.overrides import load_config_file, load_yaml, parse_overrides
from livt_core.config.presets import PRESET_DIR, PRESETS, list_presets, preset_overrides
from livt_core.config.resolve import config_from_dict, deep_merge, resolve_config
from livt_core.config.schema import (
    CONFIG_CLASSES,
    DataConfig,
    EvaluateConfig,
    FinetuneConfig,
    PretrainConfig,
    RunConfig,
)
from livt_core.contract import KINDS

__all__ = [
    "CONFIG_CLASSES",
    "KINDS",
    "PRESETS",
    "PRESET_DIR",
    "ConfigErrors",
    "DataConfig",
    "EvaluateConfig",
    "FinetuneConfig",
    "PretrainConfig",
    "RunConfig",
    "config_from_dict",
    "deep_merge",
    "errors_from_validation",
    "list_presets",
    "load_config_file",
    "load_yaml",
    "parse_overrides",
    "preset_overrides",
    "resolve_config",
]
