"""Imports go one way: node and tools -> model -> core; the core never imports its engines' packages."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from lisa_ros.core.engine import ENGINE_CLASSES, Engine

PACKAGE = Path(__file__).resolve().parents[2] / "lisa_ros"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, lazily (inside functions) or not."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").glob("*.py")), ids=lambda path: path.name)
def test_core_imports_no_model_node_or_tools_module(path):
    outward = {name for name in imported_modules(path)
               if name.startswith(("lisa_ros.model", "lisa_ros.node", "lisa_ros.tools"))}
    assert not outward, f"{path.name} imports {sorted(outward)}"


@pytest.mark.parametrize("engine_type", sorted(ENGINE_CLASSES))
def test_every_registered_engine_names_an_engine_class(engine_type):
    module_name, _, class_name = ENGINE_CLASSES[engine_type].partition(":")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    assert issubclass(engine_class, Engine) and callable(engine_class.from_options)
