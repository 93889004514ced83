"""What NQ futures options *are*: product specs, CME symbols, expiry rules and Black-76.

The numbers here are contract facts (CME rulebook), not tunable thresholds, so they do
not live in config/monitoring.toml.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
from scipy.special import ndtr

CHICAGO = ZoneInfo("America/Chicago")

#: Dollar value of one index point for NQ futures and options on them.
NQ_POINT_VALUE_USD = 20.0

#: CME month codes.
MONTH_CODES = "FGHJKMNQUVXZ"
QUARTERLY_MONTHS = (3, 6, 9, 12)

#: Databento parent symbols (stype_in="parent") of the NQ option products nqflow watches:
#: quarterly + serial monthly options (NQ), end-of-month (QNE) and Friday weeklies (Q1N-Q5N).
NQ_OPTION_PARENTS = ("NQ.OPT", "QNE.OPT", "Q1N.OPT", "Q2N.OPT", "Q3N.OPT", "Q4N.OPT", "Q5N.OPT")
NQ_FUTURE_PARENT = "NQ.FUT"


def month_code(year: int, month: int) -> str:
    """CME month+year code, e.g. (2026, 12) -> 'Z6'."""
    return f"{MONTH_CODES[month - 1]}{year % 10}"


def third_friday(year: int, month: int) -> dt.date:
    first = dt.date(year, month, 1)
    offset = (4 - first.weekday()) % 7
    return first + dt.timedelta(days=offset + 14)


def option_tick(price_points: np.ndarray | float) -> np.ndarray | float:
    """NQ option tick: 0.05 index points below 5.00 (reduced tick), 0.25 above."""
    return np.where(np.asarray(price_points) < 5.0, 0.05, 0.25)


def round_to_tick(price_points: np.ndarray) -> np.ndarray:
    tick = option_tick(price_points)
    return np.maximum(np.round(price_points / tick) * tick, 0.05)


@dataclass(frozen=True)
class OptionExpiry:
    """One listed expiration of an NQ option product."""

    product: str          # CME option product root, e.g. "NQ", "QNE", "Q2N"
    parent: str           # Databento parent symbol, e.g. "NQ.OPT"
    symbol_root: str      # e.g. "NQZ6", "Q2NV6"
    expiration: dt.datetime  # UTC, tz-aware
    underlying: str       # the NQ future it exercises into, e.g. "NQZ6"
    style: str            # "quarterly" | "monthly" | "eom" | "weekly"

    @property
    def expiry_date(self) -> dt.date:
        return self.expiration.astimezone(CHICAGO).date()


def underlying_future(expiry: dt.date) -> str:
    """Options on NQ exercise into the next quarterly future at or after the expiry month."""
    year, month = expiry.year, expiry.month
    while month not in QUARTERLY_MONTHS:
        month += 1
        if month > 12:
            month, year = 1, year + 1
    return f"NQ{month_code(year, month)}"


def _at_chicago(day: dt.date, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=CHICAGO).astimezone(dt.UTC)


def listed_expiries(first: dt.date, last: dt.date, trading_days: set[dt.date]) -> list[OptionExpiry]:
    """Every NQ option expiry between `first` and `last` (inclusive), by CME's listing rules.

    Quarterly options are AM-settled (trading ends 08:30 CT); serial monthly, end-of-month
    and weekly options end at 15:00 CT. `trading_days` decides the last business day of a month.
    """
    expiries: dict[tuple[str, dt.date], OptionExpiry] = {}
    month_start = dt.date(first.year, first.month, 1)
    while month_start <= last:
        y, m = month_start.year, month_start.month
        code = month_code(y, m)
        tf = third_friday(y, m)
        if m in QUARTERLY_MONTHS:
            expiries[("NQ", tf)] = OptionExpiry("NQ", "NQ.OPT", f"NQ{code}", _at_chicago(tf, 8, 30),
                                                underlying_future(tf), "quarterly")
        else:
            expiries[("NQ", tf)] = OptionExpiry("NQ", "NQ.OPT", f"NQ{code}", _at_chicago(tf, 15, 0),
                                                underlying_future(tf), "monthly")
        next_month = dt.date(y + (m == 12), m % 12 + 1, 1)
        month_days = [d for d in trading_days if month_start <= d < next_month]
        if month_days:
            eom = max(month_days)
            expiries[("QNE", eom)] = OptionExpiry("QNE", "QNE.OPT", f"QNE{code}", _at_chicago(eom, 15, 0),
                                                  underlying_future(eom), "eom")
        friday = month_start + dt.timedelta(days=(4 - month_start.weekday()) % 7)
        week = 1
        while friday < next_month:
            if friday != tf:
                product = f"Q{week}N"
                expiries[(product, friday)] = OptionExpiry(
                    product, f"{product}.OPT", f"{product}{code}", _at_chicago(friday, 15, 0),
                    underlying_future(friday), "weekly")
            friday += dt.timedelta(days=7)
            week += 1
        month_start = next_month
    return sorted((e for e in expiries.values() if first <= e.expiry_date <= last),
                  key=lambda e: (e.expiration, e.product))


def option_raw_symbol(symbol_root: str, put_call: str, strike: float) -> str:
    """CME Globex option symbol as Databento's raw_symbol shows it, e.g. 'NQZ6 C21000'."""
    strike_text = f"{strike:g}" if strike != int(strike) else str(int(strike))
    return f"{symbol_root} {put_call}{strike_text}"


def black76(forward: np.ndarray, strike: np.ndarray, years: np.ndarray, vol: np.ndarray,
            is_call: np.ndarray, rate: float = 0.0) -> np.ndarray:
    """Black-76 price of European options on a future, in the future's price units."""
    forward, strike, years, vol = map(np.asarray, (forward, strike, years, vol))
    years = np.maximum(years, 1e-6)
    sd = vol * np.sqrt(years)
    d1 = (np.log(forward / strike) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    discount = np.exp(-rate * years)
    call = discount * (forward * ndtr(d1) - strike * ndtr(d2))
    put = discount * (strike * ndtr(-d2) - forward * ndtr(-d1))
    return np.where(is_call, call, put)


def smile_vol(forward: np.ndarray, strike: np.ndarray, years: np.ndarray) -> np.ndarray:
    """A simple equity-index smile: downside skew plus curvature, higher for short dates."""
    k = np.log(np.asarray(strike) / np.asarray(forward))
    atm = 0.19 + 0.04 * np.exp(-np.asarray(years) * 24.0)
    scale = 1.0 / np.sqrt(np.maximum(years, 1.0 / 365.0) * 12.0)  # skew steepens near expiry
    return np.clip(atm - 0.55 * k * np.minimum(scale, 3.0) + 1.8 * k * k * scale, 0.08, 1.2)


def years_between(start_ns: np.ndarray | int, end_ns: np.ndarray | int) -> np.ndarray:
    return (np.asarray(end_ns, dtype=np.float64) - np.asarray(start_ns, dtype=np.float64)) / (365.25 * 86400e9)

