"""Experiment kinds: one module each, holding `Spec` (a BaseSpec subclass) and `run(ctx, spec)`.

A new kind is a new module here; it is found by its file name, and imported only when needed so
that the CLI does not pay for torch when it validates a `sleep` job.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def kind_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load_kind(name: str) -> ModuleType:
    if name not in kind_names():
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}")
