"""Experiment kinds: one module each, holding `Spec` (a BaseSpec subclass) and `run(ctx, spec)`, and
optionally `PRELOAD` and `HEADLINE` (the summary keys the runs list shows first, best first).

A new kind is a new module here, or in a folder named in $WORKBENCH_KINDS_PATH (os.pathsep-separated;
a built-in kind of the same name wins); it is found by its file name. Importing it must stay cheap (pydantic,
no torch): the CLI and the TUI import every kind to validate specs. Its run imports torch and the
rest inside its functions, and lists those modules in `PRELOAD`: the worker imports them once in its
fork server, so a run starts without paying for them.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import pkgutil
from functools import cache
from pathlib import Path
from types import ModuleType

__path__ += [p for p in os.environ.get("WORKBENCH_KINDS_PATH", "").split(os.pathsep) if p]


def kind_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def preload_modules() -> list[str]:
    """The heavy modules the kinds' runs import (see PRELOAD), for the worker's fork server."""
    names = ["torch"]
    for kind in kind_names():
        names += [m for m in getattr(load_kind(kind), "PRELOAD", ()) if m not in names]
    return names


def load_kind(name: str) -> ModuleType:
    if name not in kind_names():
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}")


@cache
def headline_keys(kind: str) -> tuple[str, ...]:
    """The summary keys a kind names as its headline (none for an unknown or retired kind).

    Read from the module's source when HEADLINE is a literal there, as it should be: the runs list asks
    for it before its first page shows, and importing a kind (pydantic, its Spec) costs ~0.1 s."""
    if kind not in kind_names():
        return ()
    try:
        tree = ast.parse(
            Path(importlib.util.find_spec(f"{__name__}.{kind}").origin).read_text(encoding="utf-8")
        )
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                getattr(t, "id", None) == "HEADLINE" for t in node.targets
            ):
                return tuple(ast.literal_eval(node.value))
        return ()  # it has none
    except (OSError, TypeError, ValueError, SyntaxError):  # no source to read, or not a literal: import it
        pass
    return tuple(getattr(load_kind(kind), "HEADLINE", ()))
