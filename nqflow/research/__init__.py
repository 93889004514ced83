"""For quants: backtests on Dask workers, the threshold lab, detection quality against ground
truth, the demo, and the deterministic sample market (`nqflow.research.sample`).
"""

from __future__ import annotations

from nqflow import _exports

_EXPORTS: dict[str, tuple[str, ...]] = {
    "backtest": ("BacktestResult", "backtest", "build_features", "dask_client", "load_features"),
    "lab": ("Lab", "lab_widget", "summary_table"),
    "quality": ("evaluate", "expected_events", "matches"),
    "demo": ("demo",),
}
__all__ = _exports.names_of(_EXPORTS)


def __getattr__(name: str) -> object:
    return _exports.load(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return __all__
