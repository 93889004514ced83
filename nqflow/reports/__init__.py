"""What readers see: charts (Okabe-Ito, titles, units, alt text), the report index, and the
nbconvert templates of the HTML reports.
"""

from __future__ import annotations

from nqflow import _exports

_EXPORTS: dict[str, tuple[str, ...]] = {
    "tables": ("readable",),
    "charts": (
        "Chart",
        "KIND_COLOURS",
        "aggression",
        "alerts_per_session",
        "alerts_table",
        "off_book_by_strike",
        "premium_timeline",
        "session_alerts_table",
        "session_cumulative_premium",
        "session_headline",
        "session_premium_by_expiry",
        "session_premium_by_strike",
        "surge_ratios",
        "threshold_curves",
        "volume_by_strike",
        "watch_table",
    ),
    "index": ("write_index",),
}
__all__ = _exports.names_of(_EXPORTS)


def __getattr__(name: str) -> object:
    return _exports.load(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return __all__
