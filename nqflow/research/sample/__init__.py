"""The deterministic sample market: a realistic NQ option chain as real GLBX.MDP3 DBN files,
with planted institutional events and their ground truth (`ground_truth.json`).
"""

from __future__ import annotations

from nqflow import _exports

_EXPORTS: dict[str, tuple[str, ...]] = {
    "generator": ("GENERATOR_VERSION", "SampleSpec", "generate_sample_market", "load_ground_truth", "sample_folder"),
}
__all__ = _exports.names_of(_EXPORTS)


def __getattr__(name: str) -> object:
    return _exports.load(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return __all__
