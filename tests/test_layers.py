"""The three layers import one way only (core → service → ui), and core stays free of web code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MODULES = Path(__file__).resolve().parents[1] / "modules"

FORBIDDEN = {
    "core": ("modules.service", "modules.ui", "gradio", "fastapi", "starlette", "uvicorn"),
    "service": ("modules.ui", "gradio"),
}


def imported_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_lower_layers_do_not_import_higher_ones(layer):
    files = sorted((MODULES / layer).rglob("*.py"))
    assert files, f"no files in modules/{layer}"
    offences = [
        f"{path.relative_to(MODULES)} imports {name}"
        for path in files
        for name in imported_names(path)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[layer])
    ]
    assert not offences, "\n".join(offences)


def test_own_code_never_imports_a1111_facades():
    """Top-level ``modules/<name>.py`` files are extension facades; Hanga's layers never use them."""
    facades = {f"modules.{path.stem}" for path in MODULES.glob("*.py") if path.stem != "__init__"}
    offences = [
        f"{path.relative_to(MODULES)} imports {name}"
        for layer in ("core", "service", "ui")
        for path in (MODULES / layer).rglob("*.py")
        for name in imported_names(path)
        if name in facades
    ]
    assert not offences, "\n".join(offences)
