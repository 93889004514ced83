"""Third-party imports deferred until first use, for the start-up time of every process.

jsonschema (under nbformat, so under papermill and scrapbook) imports `rfc3987_syntax` whenever
it is installed (jsonschema's ``format-nongpl`` extra installs it, through jupyter-events), and
that module compiles some 35 Earley parsers with lark at import: about a second of CPU in every
process that reads or runs a notebook (each window's kernel, each scheduler command), for the
``iri`` format check, which no notebook schema uses (python-jsonschema/jsonschema#1428).
`defer_rfc3987_syntax` puts a stand-in in its place whose `is_valid_syntax` imports the real
module on its first call, so the check still works, only later.
"""

from __future__ import annotations

import importlib
import sys
import types
from importlib.util import find_spec

DEFERRED = "rfc3987_syntax"


def defer_rfc3987_syntax() -> None:
    """Stand in for `rfc3987_syntax` until it is used; nothing when it is imported already or absent."""
    if DEFERRED in sys.modules or find_spec(DEFERRED) is None:
        return
    stand_in = types.ModuleType(DEFERRED, "deferred by nqflow._deferred: the real module loads on first use")

    def real() -> types.ModuleType:
        if sys.modules.get(DEFERRED) is stand_in:
            del sys.modules[DEFERRED]
        return importlib.import_module(DEFERRED)

    def is_valid_syntax(term: str, value: str) -> bool:
        return real().is_valid_syntax(term, value)

    def attribute(name: str) -> object:  # PEP 562; the import system's own questions are not a use
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(real(), name)

    stand_in.is_valid_syntax = is_valid_syntax  # type: ignore[attr-defined]
    stand_in.__getattr__ = attribute  # type: ignore[method-assign]
    sys.modules[DEFERRED] = stand_in
