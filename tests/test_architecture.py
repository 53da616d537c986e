"""The dependency direction of ``docs/architecture.md``, checked on the source: every import
statement of every module (also those inside functions) is parsed, none is executed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package → the top-level packages it must never import
FORBIDDEN = {
    "livt_core": {"api", "worker", "livt", "livt_service"},
    "livt_service": {"api", "worker", "livt"},
    "api": {"worker", "livt"},
    "worker": {"api", "livt"},
}


def _imports(path: Path) -> set[str]:
    """The dotted names of the modules ``path`` imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package):
    offending = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules(package)
        for name in sorted(_imports(path))
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert not offending, "\n".join(offending)


def test_the_import_checker_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from worker.runner import JobRunner\n    import api.main\n")
    assert _imports(module) == {"worker.runner", "api.main"}


def test_model_registry_does_not_import_the_models():
    assert not {n for n in _imports(ROOT / "livt_core/models/factory.py") if ".models." in n}
    assert "livt_core.models.vit" not in _imports(ROOT / "livt_core/models/mae.py")


def test_contract_and_catalogue_import_no_torch():
    for name in ("contract.py", "catalog.py", "checks/__init__.py"):
        heavy = {n for n in _imports(ROOT / "livt_core" / name) if n.split(".")[0] == "torch"}
        assert not heavy, name
