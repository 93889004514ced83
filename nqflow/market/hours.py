"""CME Globex equity-options trading hours: sessions, daily halt, weekends and holidays.

Uses pandas_market_calendars' CME_Equity calendar rather than hand-written hours. A
*session* is named by its trade date and runs from 17:00 CT the evening before to
16:00 CT (earlier on holiday half days). *Slots* are 15-minute buckets counted from the
session open, so time-of-day baselines stay aligned across daylight-saving changes.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import numpy as np
import pandas as pd
import pandas_market_calendars as mcal

from nqflow.errors import NqflowError

SLOT_MINUTES = 15


@lru_cache(maxsize=1)
def _calendar():
    return mcal.get_calendar("CME_Equity")


_YEARS: dict[int, pd.DataFrame] = {}


def _year_schedules(years: range) -> list[pd.DataFrame]:
    """The schedules of `years`, kept by calendar year: asking the calendar costs 10-40 ms a call
    whatever its span and a backtest asks about every day, so the years not yet kept are asked for
    in one call (a process's first `session_of` needs three years: 80 ms, not 150)."""
    missing = [year for year in years if year not in _YEARS]
    if missing:
        schedule = _calendar().schedule(dt.date(missing[0], 1, 1), dt.date(missing[-1], 12, 31), tz="UTC")
        schedule.index = [ts.date() for ts in schedule.index]
        schedule = schedule[["market_open", "market_close"]]
        for year in missing:
            _YEARS[year] = schedule[(schedule.index >= dt.date(year, 1, 1)) & (schedule.index <= dt.date(year, 12, 31))]
    return [_YEARS[year] for year in years]


@lru_cache(maxsize=64)
def _schedule(first: dt.date, last: dt.date) -> pd.DataFrame:
    years = range((first - dt.timedelta(days=7)).year, (last + dt.timedelta(days=7)).year + 1)
    schedule = pd.concat(_year_schedules(years))
    return schedule[(schedule.index >= first - dt.timedelta(days=7)) & (schedule.index <= last + dt.timedelta(days=7))]


def sessions(first: dt.date, last: dt.date) -> pd.DataFrame:
    """Sessions with trade dates in [first, last]: index trade_date, columns market_open/market_close (UTC)."""
    frame = _schedule(first, last)
    return frame[(frame.index >= first) & (frame.index <= last)]


def trading_days(first: dt.date, last: dt.date) -> list[dt.date]:
    return list(sessions(first, last).index)


@lru_cache(maxsize=512)
def previous_trading_day(trade_date: dt.date) -> dt.date:
    """The trading day before `trade_date` (a Monday's is the Friday before)."""
    return trading_days(trade_date - dt.timedelta(days=10), trade_date - dt.timedelta(days=1))[-1]


@lru_cache(maxsize=512)
def next_trading_day(trade_date: dt.date) -> dt.date:
    """The trading day after `trade_date` (a Friday's is Monday, whose session opens on Sunday evening)."""
    return trading_days(trade_date + dt.timedelta(days=1), trade_date + dt.timedelta(days=10))[0]


@lru_cache(maxsize=16)
def _bounds(year: int) -> tuple[list[dt.date], np.ndarray, np.ndarray, list[pd.Timestamp], list[pd.Timestamp]]:
    """The sessions whose trade dates fall from 1 December of `year` - 1 to 31 January of
    `year` + 1 (every session that can hold an instant of `year`), as sorted nanosecond bounds:
    `session_of` is asked for every window a long-running scheduler has recorded, on every pass,
    so it searches arrays instead of filtering a frame."""
    frame = _schedule(dt.date(year - 1, 12, 1), dt.date(year + 1, 1, 31))
    opens, closes = frame["market_open"], frame["market_close"]
    return (
        list(frame.index),
        opens.to_numpy(dtype="datetime64[ns]").view("int64"),
        closes.to_numpy(dtype="datetime64[ns]").view("int64"),
        list(opens),
        list(closes),
    )


def session_of(ts: pd.Timestamp) -> tuple[dt.date, pd.Timestamp, pd.Timestamp] | None:
    """The session containing instant `ts` as (trade_date, open, close), or None if the market is closed."""
    ts = to_utc(ts)
    days, opens, closes, open_times, close_times = _bounds(ts.year)
    i = int(np.searchsorted(opens, ts.value, side="right")) - 1  # the last session opened at or before ts
    if i < 0 or ts.value >= closes[i]:
        return None
    return days[i], open_times[i], close_times[i]


def window_is_open(start: pd.Timestamp, end: pd.Timestamp) -> bool:
    """True when any part of [start, end) lies inside a trading session."""
    start, end = to_utc(start), to_utc(end)
    _, opens, closes, _, _ = _bounds(start.year)  # holds January's sessions too: a window across New Year
    i = int(np.searchsorted(opens, end.value, side="left")) - 1  # the last session opened before end
    return i >= 0 and bool(closes[i] > start.value)


def slot_of(ts: pd.Timestamp, session_open: pd.Timestamp) -> int:
    """Index of the 15-minute slot that `ts` falls in, counted from the session open."""
    return int((to_utc(ts) - session_open) // pd.Timedelta(minutes=SLOT_MINUTES))


@lru_cache(maxsize=256)
def session_windows(trade_date: dt.date, minutes: int = SLOT_MINUTES) -> tuple[tuple[pd.Timestamp, pd.Timestamp], ...]:
    """All [start, end) windows of one session, aligned to the session open."""
    row = sessions(trade_date, trade_date)
    if row.empty:
        raise NqflowError(f"{trade_date} is not a CME Globex equity trading day; pick a weekday that is not a holiday")
    open_, close = row.iloc[0].market_open, row.iloc[0].market_close
    step = pd.Timedelta(minutes=minutes)
    starts = pd.date_range(open_, close - step, freq=step)
    return tuple((s, min(s + step, close)) for s in starts)


def to_utc(value) -> pd.Timestamp:
    """Parse a timestamp and insist on a timezone: naive times are ambiguous around the halt and DST."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise NqflowError(
            f"cannot parse timestamp {value!r}; use ISO 8601 with a zone, e.g. 2026-10-30T14:30:00Z"
        ) from exc
    if ts is pd.NaT:
        raise NqflowError(f"timestamp {value!r} is empty; use ISO 8601 with a zone, e.g. 2026-10-30T14:30:00Z")
    if ts.tzinfo is None:
        raise NqflowError(f"timestamp {value!r} has no timezone; add one, e.g. {ts.isoformat()}Z")
    return ts.tz_convert("UTC")


def windows_between(start: pd.Timestamp, end: pd.Timestamp, minutes: int) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Every `minutes`-long window from `start` (floored) up to `end`, open market or not."""
    step = pd.Timedelta(minutes=minutes)
    first = start.floor(step)
    return [(s, s + step) for s in pd.date_range(first, end - step, freq=step)]
