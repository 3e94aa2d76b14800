"""Imports point one way, down the layers of ARCHITECTURE.md:

    dstream.executors  <-  dstream.driver  <-  core  <-  io  <-  streaming  <-  recovery  <-  api  <-  demo

A module may import its own layer and the layers below it, never one above; imports under
``if TYPE_CHECKING:`` are for type hints only and never run, so they may point anywhere. No import hides
inside a function (only optional dependencies are imported on first use), and the modules do not import
each other in a cycle. Every module must be placed in a layer here, so a new one is placed consciously.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest


#: lowest first; a name ending in ".*" covers a package and everything in it; the longest match wins
LAYERS: list[tuple[str, list[str]]] = [
    ("executors", ["dstream.executors.*"]),
    ("driver", ["dstream.driver.*"]),
    ("core", ["dstream.version", "dstream.durations", "dstream.row", "dstream.records", "dstream.conf",
              "dstream.shuffle", "dstream.sql", "dstream.rdd", "dstream.broadcast", "dstream.accumulators",
              "dstream.sinks", "dstream.html"]),
    ("io", ["dstream.io", "dstream.wal", "dstream.sinks.*"]),
    ("streaming", ["dstream.state", "dstream.dstream", "dstream.sources", "dstream.graph", "dstream.views"]),
    ("recovery", ["dstream.recovery"]),
    ("api", ["dstream", "dstream.context", "dstream.streaming", "dstream.testing"]),
    ("demo", ["dstream.demo.*"]),
]
#: third-party modules that may be imported inside a function: optional dependencies, loaded on first use
OPTIONAL_IMPORTS = {"duckdb", "distributed", "dask", "matplotlib", "rich", "tqdm", "IPython", "s3fs", "aiohttp",
                    "prometheus_client"}
#: dependencies imported where they are used, so that a driver that never uses them starts without them:
#: pandas takes 0.2 s to import (pyarrow imports it anyway on its first array built from Python objects)
DEFERRED_IMPORTS = {"pandas"}


def layer_of(module: str) -> int | None:
    """The index in LAYERS of ``module``'s layer, or None when no layer lists it."""
    best: tuple[int, int] | None = None  # (length of the matching name, layer)
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            base = name[:-2] if name.endswith(".*") else name
            if module == base or (name.endswith(".*") and module.startswith(base + ".")):
                if best is None or len(base) > best[0]:
                    best = (len(base), index)
    return None if best is None else best[1]


def all_modules() -> dict[str, Path]:
    """Every module of the installed dstream distribution (editable or wheel) -> its source file.

    The subpackages mapped from other directories (``driver/``, ``executors/``, ``demo/``) are walked on
    their own: an editable install does not list them under ``dstream.__path__``."""
    found: dict[str, Path] = {}
    for package in ("dstream", "dstream.driver", "dstream.executors", "dstream.demo"):
        root = importlib.import_module(package)
        found[package] = Path(root.__file__)
        for info in pkgutil.walk_packages(root.__path__, package + "."):
            spec = importlib.util.find_spec(info.name)
            if spec is not None and spec.origin and spec.origin.endswith(".py"):
                found[info.name] = Path(spec.origin)
    return found


class _Imports(ast.NodeVisitor):
    """Collects (line, imported module, inside a function?) outside ``if TYPE_CHECKING:`` blocks."""

    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.depth = 0
        self.found: list[tuple[int, str, bool]] = []

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
                (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [(node.lineno, alias.name, self.depth > 0) for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            parts = parts[:len(parts) - node.level + 1]
            base = ".".join(parts + ([base] if base else []))
        for alias in node.names:  # ``from dstream import records`` imports the module dstream.records
            sub = f"{base}.{alias.name}"
            self.found.append((node.lineno, sub if sub in self.known else base, self.depth > 0))


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[int, str, bool]]:
    visitor = _Imports(module, path.name == "__init__.py", known)
    visitor.visit(ast.parse(path.read_text(), str(path)))
    return visitor.found


def upward_imports(modules: dict[str, Path]) -> list[str]:
    bad = []
    for module, path in sorted(modules.items()):
        own = layer_of(module)
        for line, target, _ in imports_of(module, path, set(modules)):
            if target == "dstream" or target.startswith("dstream."):
                theirs = layer_of(target)
                if own is not None and theirs is not None and theirs > own:
                    bad.append(f"{path.name}:{line} ({module}, {LAYERS[own][0]}) imports {target} "
                               f"({LAYERS[theirs][0]})")
    return bad


def function_level_imports(modules: dict[str, Path]) -> list[str]:
    return [f"{path.name}:{line} ({module}) imports {target} inside a function"
            for module, path in sorted(modules.items())
            for line, target, in_function in imports_of(module, path, set(modules))
            if in_function and target.split(".")[0] not in OPTIONAL_IMPORTS | DEFERRED_IMPORTS]


def import_cycles(modules: dict[str, Path]) -> list[list[str]]:
    """Cycles among the modules' module-level imports (each cycle once, as the path that closes it)."""
    graph = {m: sorted({t for _, t, in_function in imports_of(m, p, set(modules))
                        if not in_function and t in modules and t != m and not m.startswith(t + ".")})
             for m, p in modules.items()}
    cycles, state = [], {}  # state: 1 on the DFS stack, 2 done

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in graph[m]:
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return all_modules()


def test_every_module_has_a_layer(modules):
    assert [m for m in sorted(modules) if layer_of(m) is None] == []


def test_no_module_imports_a_layer_above_it(modules):
    assert upward_imports(modules) == []


def test_no_import_hides_inside_a_function(modules):
    assert function_level_imports(modules) == []


def test_modules_do_not_import_each_other_in_a_cycle(modules):
    assert import_cycles(modules) == []


def test_the_checks_catch_what_they_forbid(tmp_path):
    """The checks above fail on an upward import, a function-level import and a cycle."""
    (tmp_path / "rdd.py").write_text(
        "from typing import TYPE_CHECKING\nfrom dstream.executors.base import Task\nfrom dstream import records\n"
        "if TYPE_CHECKING:\n    from dstream.streaming import StreamingContext\n"
        "def f():\n    import duckdb\n    from dstream.io import CheckpointRDD\n")
    (tmp_path / "records.py").write_text("import dstream.sources\n")
    (tmp_path / "sources.py").write_text("from . import records\n")
    modules = {"dstream.rdd": tmp_path / "rdd.py", "dstream.records": tmp_path / "records.py",
               "dstream.sources": tmp_path / "sources.py"}
    assert upward_imports(modules) == [
        "rdd.py:8 (dstream.rdd, core) imports dstream.io (io)",
        "records.py:1 (dstream.records, core) imports dstream.sources (streaming)"]
    assert function_level_imports(modules) == ["rdd.py:8 (dstream.rdd) imports dstream.io inside a function"]
    assert import_cycles(modules) == [["dstream.records", "dstream.sources", "dstream.records"]]
    assert layer_of("dstream.sinks") == 2 and layer_of("dstream.sinks.files") == 3
    assert layer_of("dstream.demo.harness") == len(LAYERS) - 1 and layer_of("dstream.newmodule") is None


def test_importing_dstream_does_not_import_the_deferred_dependencies():
    """``import dstream`` (and the recovery demo's driver) leaves pandas for the first use: a restarted driver
    is 0.2 s sooner at its first batch."""
    code = ("import sys, dstream, dstream.demo.app; "
            f"print(sorted(m for m in {sorted(DEFERRED_IMPORTS)!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
