"""What NQ futures options *are*: product specs, CME symbols, expiry rules and Black-76.

The numbers here are contract facts (CME rulebook), not tunable thresholds, so they do
not live in config/monitoring.toml.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np

from nqflow.products import WEEKDAY_LETTERS

CHICAGO = ZoneInfo("America/Chicago")

#: Dollar value of one index point for NQ futures and options on them.
NQ_POINT_VALUE_USD = 20.0

#: CME month codes.
MONTH_CODES = "FGHJKMNQUVXZ"
QUARTERLY_MONTHS = (3, 6, 9, 12)

MICRO_NQ_POINT_VALUE_USD = 2.0


def month_code(year: int, month: int) -> str:
    """CME month+year code, e.g. (2026, 12) -> 'Z6'."""
    return f"{MONTH_CODES[month - 1]}{year % 10}"


def third_friday(year: int, month: int) -> dt.date:
    first = dt.date(year, month, 1)
    offset = (4 - first.weekday()) % 7
    return first + dt.timedelta(days=offset + 14)


def option_tick(price_points: np.ndarray | float) -> np.ndarray | float:
    """NQ option tick: 0.05 index points at or below 5.00 (reduced tick), 0.25 above."""
    return np.where(np.asarray(price_points) <= 5.0, 0.05, 0.25)


def round_to_tick(price_points: np.ndarray) -> np.ndarray:
    tick = option_tick(price_points)
    return np.maximum(np.round(price_points / tick) * tick, 0.05)


@dataclass(frozen=True)
class OptionExpiry:
    """One listed expiration of an NQ option product."""

    product: str  # CME Globex product code, e.g. "NQ", "QNE", "QN1", "Q2D"
    parent: str  # Databento parent symbol, e.g. "Q2D.OPT"
    symbol_root: str  # e.g. "NQZ6", "Q2DX6"
    expiration: dt.datetime  # UTC, tz-aware
    underlying: str  # the NQ future it exercises into, e.g. "NQZ6"
    style: str  # "quarterly" | "monthly" | "eom" | "weekly"

    @property
    def expiry_date(self) -> dt.date:
        return self.expiration.astimezone(CHICAGO).date()


def roll_date(future_expiry: dt.date) -> dt.date:
    """The day volume rolls out of an expiring quarterly NQ future into the next: CME's equity
    index roll date, the Thursday eight days before the third-Friday expiry. From that trade
    date on, the next quarter is the front (most traded) future."""
    return future_expiry - dt.timedelta(days=8)


def underlying_future(expiry: dt.date, am_quarterly: bool = False) -> str:
    """The quarterly NQ future an option expiring on `expiry` exercises into: the quarter month's
    future until it expires (08:30 CT on its third Friday; the AM quarterly option itself still
    exercises into it), the next quarter's after."""
    year, month = expiry.year, expiry.month
    if month in QUARTERLY_MONTHS:
        tf = third_friday(year, month)
        if expiry > tf or (expiry == tf and not am_quarterly):
            month += 1
    while month not in QUARTERLY_MONTHS:
        month += 1
        if month > 12:
            month, year = 1, year + 1
    return f"NQ{month_code(year, month)}"


def _at_chicago(day: dt.date, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=CHICAGO).astimezone(dt.UTC)


def listed_expiries(first: dt.date, last: dt.date, closes: dict[dt.date, dt.datetime]) -> list[OptionExpiry]:
    """Every NQ option expiry between `first` and `last` (inclusive), by CME's listing rules.

    `closes` maps each trading day to its session close (UTC): it decides trading days, the
    last business day of a month and early closes. Rules:

    - ``NQ``: third Friday; quarterly months AM-settled (trading ends 08:30 CT), serial months
      PM (15:00 CT).
    - ``QNE``: last business day of the month, 15:00 CT. No weekly is listed on that day.
    - ``QN1``, ``QN2``, ``QN4``: first, second and fourth Friday; ``QN3`` the third Friday of
      quarterly months only (serial months have the ``NQ`` monthly there). A fifth Friday that
      is not the month's last business day gets no Friday weekly here (CME has no ``QN5``).
    - ``Q<n>A``..``Q<n>D``: the n-th Monday..Thursday of the month, 15:00 CT.
    - PM expiries end at the session close when that is earlier (holiday half days). A date
      that is not a trading day lists nothing.
    """
    expiries: dict[tuple[str, dt.date], OptionExpiry] = {}

    def pm(day: dt.date) -> dt.datetime:
        end = _at_chicago(day, 15, 0)
        return min(end, closes[day]) if day in closes else end

    def add(product: str, day: dt.date, expiration: dt.datetime, style: str, code: str) -> None:
        if day not in closes:
            return
        expiries[(product, day)] = OptionExpiry(
            product,
            f"{product}.OPT",
            f"{product}{code}",
            expiration,
            underlying_future(day, style == "quarterly"),
            style,
        )

    month_start = dt.date(first.year, first.month, 1)
    while month_start <= last:
        y, m = month_start.year, month_start.month
        code = month_code(y, m)
        next_month = dt.date(y + (m == 12), m % 12 + 1, 1)
        tf = third_friday(y, m)
        if m in QUARTERLY_MONTHS:
            add("NQ", tf, _at_chicago(tf, 8, 30), "quarterly", code)
        else:
            add("NQ", tf, pm(tf), "monthly", code)
        month_days = [d for d in closes if month_start <= d < next_month]
        eom = max(month_days) if month_days else None
        if eom is not None:
            add("QNE", eom, pm(eom), "eom", code)
        for weekday in range(5):
            day = month_start + dt.timedelta(days=(weekday - month_start.weekday()) % 7)
            week = 1
            while day < next_month:
                if day != eom:
                    if weekday < 4:
                        add(f"Q{week}{WEEKDAY_LETTERS[weekday]}", day, pm(day), "weekly", code)
                    elif week in (1, 2, 4) or (week == 3 and m in QUARTERLY_MONTHS):
                        add(f"QN{week}", day, pm(day), "weekly", code)
                day += dt.timedelta(days=7)
                week += 1
        month_start = next_month
    return sorted(
        (e for e in expiries.values() if first <= e.expiry_date <= last), key=lambda e: (e.expiration, e.product)
    )


def option_raw_symbol(symbol_root: str, put_call: str, strike: float) -> str:
    """CME Globex option symbol as Databento's raw_symbol shows it, e.g. 'NQZ6 C21000'."""
    strike_text = f"{strike:g}" if strike != int(strike) else str(int(strike))
    return f"{symbol_root} {put_call}{strike_text}"


def years_between(start_ns: np.ndarray | int, end_ns: np.ndarray | int) -> np.ndarray:
    return (np.asarray(end_ns, dtype=np.float64) - np.asarray(start_ns, dtype=np.float64)) / (365.25 * 86400e9)
