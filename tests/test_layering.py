"""Imports point one way: the user API (dstream) -> dstream.driver -> dstream.executors.

The executors know tasks and Arrow tables, not streams; the driver knows time, jobs and checkpoints, not
operator semantics. Any import (at module level or inside a function) that points up a layer fails here.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dstream.driver
import dstream.executors

LAYERS = {  # package -> the dstream packages its modules may import
    "dstream.executors": ("dstream.executors",),
    "dstream.driver": ("dstream.driver", "dstream.executors"),
}


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import in a module of ``package``, relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
    return found


def upward_imports(package: str, directory: Path) -> list[str]:
    allowed = LAYERS[package]
    bad = []
    for path in sorted(directory.glob("*.py")):
        for line, module in _imports(path, package):
            if (module == "dstream" or module.startswith("dstream.")) and not module.startswith(allowed):
                bad.append(f"{path.name}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_no_layer_imports_a_layer_above_it(package):
    directory = Path(dstream.executors.__file__ if package == "dstream.executors" else dstream.driver.__file__).parent
    assert upward_imports(package, directory) == []


def test_the_check_catches_an_upward_import(tmp_path):
    (tmp_path / "ok.py").write_text("from dstream.executors.base import Task\nfrom . import blockstore\n")
    (tmp_path / "bad.py").write_text("def f():\n    from dstream.rdd import RDD\n    import dstream.streaming\n")
    assert upward_imports("dstream.executors", tmp_path) == ["bad.py:2 imports dstream.rdd",
                                                            "bad.py:3 imports dstream.streaming"]
    (tmp_path / "up.py").write_text("from dstream.driver.jobs import Job\n")
    assert "up.py:1 imports dstream.driver.jobs" in upward_imports("dstream.executors", tmp_path)
    assert "up.py:1 imports dstream.driver.jobs" not in upward_imports("dstream.driver", tmp_path)
