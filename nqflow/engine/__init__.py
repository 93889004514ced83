"""Detection: pure functions on DataFrames. Levels and the volume baseline, strategy packages,
the threshold-free feature stage and the threshold stage, off-book reading, a session read for
flow, and the in-process monitor. The engine never opens the state store and never draws.
"""

from __future__ import annotations

from nqflow import _exports

_EXPORTS: dict[str, tuple[str, ...]] = {
    "levels": ("LEVELS", "SHORT_DATED_DAYS", "days_to_expiry", "level_keys", "slot_volumes", "window_keys"),
    "baseline": ("BaselineStore", "ensure_history", "expected_volume", "record_session", "session_slot_volumes"),
    "strategies": ("STRATEGIES", "PACKAGE_COLUMNS", "find_packages", "name_strategy", "read_package"),
    "features": (
        "Features",
        "FEATURE_VERSION",
        "compute_features",
        "concat_features",
        "market_features",
        "read_features",
        "write_features",
        "with_expected",
    ),
    "detect": (
        "Detection",
        "Evaluation",
        "detect_window",
        "detect_windows",
        "evaluate",
        "score",
        "tail_probability",
        "tier_of",
        "watch_list",
    ),
    "offbook": ("OffBookDay", "off_book_alerts", "off_book_volumes", "read_off_book", "read_off_book_days"),
    "session_flow": ("SessionFlow", "read_session_flow"),
    "monitor": ("WindowResult", "SessionWindows", "load_session", "run_session", "run_window"),
    "flash": ("FLASH_KINDS", "FlashMonitor"),
}
__all__ = _exports.names_of(_EXPORTS)


def __getattr__(name: str) -> object:
    return _exports.load(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return __all__
