"""What the market is: the NQ option products and their listing rules, CME Globex hours,
Black-76 pricing, and the tidy frames every data source gives (`DataSource`, `WindowData`).
"""

from __future__ import annotations

from nqflow import _exports

_EXPORTS: dict[str, tuple[str, ...]] = {
    "contracts": (
        "CHICAGO",
        "NQ_POINT_VALUE_USD",
        "MICRO_NQ_POINT_VALUE_USD",
        "OptionExpiry",
        "listed_expiries",
        "option_raw_symbol",
        "underlying_future",
        "years_between",
    ),
    "hours": (
        "SLOT_MINUTES",
        "sessions",
        "trading_days",
        "previous_trading_day",
        "next_trading_day",
        "session_of",
        "window_is_open",
        "slot_of",
        "session_windows",
        "to_utc",
        "windows_between",
    ),
    "pricing": ("black76", "black76_delta", "implied_vol", "smile_vol"),
    "frames": (
        "DataSource",
        "WindowData",
        "ClassifiedFills",
        "TRADE_COLUMNS",
        "CHAIN_COLUMNS",
        "LEG_COLUMNS",
        "STATISTICS_COLUMNS",
        "classify_fills",
        "front_future",
        "front_futures",
        "load_window",
        "option_fills",
        "session_bounds",
        "tidy_statistics",
        "tidy_trades",
        "window_from",
    ),
}
__all__ = _exports.names_of(_EXPORTS)


def __getattr__(name: str) -> object:
    return _exports.load(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return __all__
