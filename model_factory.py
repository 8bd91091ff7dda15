"""MODEL_FACTORY: a function of the user's, `package.module:function`, that builds the model."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from typing import Any

from model import ModelLoadError


def _factory_parts(target: str) -> tuple[str, str]:
    module_name, _, function_name = target.partition(":")
    if not module_name or not function_name:
        raise ModelLoadError(f"MODEL_FACTORY={target!r} must look like package.module:function.")
    return module_name, function_name


def import_factory(target: str) -> Callable[[], Any]:
    module_name, function_name = _factory_parts(target)
    try:
        return getattr(importlib.import_module(module_name), function_name)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"MODEL_FACTORY={target!r} could not be imported ({exc}).") from None


def find_module(target: str) -> None:
    """A misspelt MODEL_FACTORY module, looked up by the import system's finders without running any
    of its code (importlib.util.find_spec would import the parent packages)."""
    module_name, _ = _factory_parts(target)
    parts = module_name.split(".")
    search: list[str] | None = None  # sys.path for the top-level name, then each package's folders
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        spec = _find_spec(target, name, search)
        if spec is None:
            raise ModelLoadError(f"MODEL_FACTORY={target!r} could not be imported (no module named {name!r}).")
        search = list(spec.submodule_search_locations or [])


def _find_spec(target: str, name: str, search: list[str] | None) -> ModuleSpec | None:
    for finder in sys.meta_path:
        try:
            spec = finder.find_spec(name, search)
        except Exception as exc:
            raise ModelLoadError(f"MODEL_FACTORY={target!r} could not be looked up ({type(exc).__name__}: {exc}).") from None
        if spec is not None:
            return spec
    return None
