"""Re-exports imported on first use (PEP 562), for modules that must stay cheap to import.

DAG parsing imports the package, the policy and the model; the names they re-export from
heavier modules are loaded only when code asks for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    namespace: dict[str, Any], locations: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Build a module's ``__getattr__`` and ``__dir__`` that import re-exported names on first use.

    :param namespace: the re-exporting module's ``globals()``
    :param locations: re-exported name -> the module that defines it
    :return: ``(__getattr__, __dir__)``, to be assigned at the module's top level
    """
    module = namespace["__name__"]

    def getattr_(name: str) -> Any:
        source = locations.get(name)
        if source is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        # cached in the module, so the next lookup does not come back here
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(locations))

    return getattr_, dir_
