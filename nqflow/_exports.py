"""Public names of nqflow's packages, imported on first use (PEP 562).

Each package's ``__init__`` lists its public names once, by module; a name is imported from its
module the first time it is asked for. So ``import nqflow.ops.scheduling`` costs only that
module and what it imports: the scheduler process never loads the engine, scipy or matplotlib
because a sibling module happens to share its package. Code inside nqflow imports from the
module that defines a name; the package names are the API for notebooks, tests and users.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping


def names_of(exports: Mapping[str, tuple[str, ...]]) -> list[str]:
    """The package's ``__all__``: every exported name, sorted."""
    return sorted(name for names in exports.values() for name in names)


def load(package: str, exports: Mapping[str, tuple[str, ...]], name: str) -> object:
    """The exported `name` of `package`, imported from its module (the package's ``__getattr__``)."""
    for module, names in exports.items():
        if name in names:
            return getattr(importlib.import_module(f"{package}.{module}"), name)
    raise AttributeError(f"module {package!r} has no attribute {name!r}")
