"""Triggers: one module per way of asking for work, each with its own ``router``.

Adding a trigger is adding a module here; ``build_router`` finds it.
"""

from __future__ import annotations

import importlib
import pkgutil

from app.router import Router


def build_router() -> Router:
    modules = [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name)
    ]
    return Router(*(module.router for module in modules))
