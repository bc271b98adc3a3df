"""Sub-commands of `tradeloom`, one module per area; each module defines `register(app)`.

Modules import their heavy dependencies inside the command functions so `tradeloom --help` stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer


def register_all(app: typer.Typer) -> None:
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        importlib.import_module(f"{__name__}.{module.name}").register(app)
