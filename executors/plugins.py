"""Name -> ``"module:Class"`` registries whose classes are imported on first use (as fsspec registers
filesystems): executor backends (``executors.base.get_backend``) and sinks (``dstream.sinks.get_sink``).
Optional dependencies (Dask, say) are then imported only by the users who ask for them."""
from __future__ import annotations

import importlib
from typing import Generic, TypeVar

T = TypeVar("T")


class LazyRegistry(Generic[T]):
    """Classes of one ``kind`` by name, given as ``"module:Class"`` and imported when first asked for."""

    def __init__(self, kind: str, entries: dict[str, str]) -> None:
        #: what the classes are, for error messages ("executor backend", "sink")
        self.kind = kind
        #: name -> "module:Class"
        self.entries = dict(entries)

    def register(self, name: str, target: str) -> None:
        """Register ``target`` (``"module:Class"``) under ``name``, replacing any earlier entry."""
        if target.count(":") != 1:
            raise ValueError(f"{self.kind} {name!r}: the target must look like 'module:Class', got {target!r}")
        self.entries[name] = target

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``, importing its module now."""
        try:
            target = self.entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {sorted(self.entries)}") from None
        module, cls = target.split(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as exc:
            raise ImportError(f"{self.kind} {name!r} ({target}) cannot be loaded: {exc}") from exc
