"""Next-morning confirmation: did an alert's flow open positions or close them?

CME publishes each option's open interest the morning after a session (statistics, stat type
9; a Friday's on Sunday). An alert's **open interest change** is the sum over its instruments
(a package's option legs; an expiry or product surge's options that traded in its window) of
that next-morning open interest minus the one published the morning of the session. Against
the alert's volume (contracts), with ``confirm.share``:

- ``opening``: open interest rose by at least share x volume (new positions);
- ``closing``: it fell by at least share x volume (positions taken off);
- ``mixed``: anything between (both, or other traders offsetting it);
- ``unknown``: no instrument has both figures (an option that expired that day has no
  next-morning open interest; statistics missing).

The verdict is recorded beside the alert: the alert itself stays as it was sent. Pure
functions here; `read_confirmations` reads what they need from a source.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nqflow.alerts import ALERT_FIELDS, Alert, Kind, Level, to_alerts
from nqflow.config import Config
from nqflow.engine.levels import level_keys
from nqflow.errors import DataNotYetAvailable
from nqflow.market import hours as cal
from nqflow.market.frames import DataSource, classify_fills

VERDICTS = ("opening", "closing", "mixed", "unknown")
CONFIRM_COLUMNS = [
    "alert_id",
    "kind",
    "symbol",
    "event_time",
    "confidence",
    "volume",
    "oi_before",
    "oi_after",
    "oi_change",
    "instruments",
    "verdict",
]
#: Kinds that are about the market (health and follow-ups are about nqflow).
MARKET_KINDS = frozenset(k for k in Kind if k not in (Kind.HEALTH, Kind.CONFIRMATION))


def verdict_of(volume: float, oi_change: float | None, share: float) -> str:
    """`opening`, `closing` or `mixed` from the open interest change against the volume; `unknown` without it."""
    if oi_change is None or volume <= 0 or np.isnan(oi_change):
        return "unknown"
    if oi_change >= share * volume:
        return "opening"
    if oi_change <= -share * volume:
        return "closing"
    return "mixed"


def alert_instruments(alert: Alert, window_fills: pd.DataFrame | None = None) -> list[int]:
    """The options whose open interest speaks for `alert`: its instruments (a package's option
    legs, futures left out); for an expiry or product surge, the options of its key that traded
    in its window (`window_fills`: that window's option fills)."""
    if alert.level == Level.PACKAGE and alert.legs:
        return [int(leg["instrument_id"]) for leg in alert.legs if leg.get("put_call") in ("C", "P")]
    if alert.instrument_ids:
        return [int(i) for i in alert.instrument_ids]
    if window_fills is None or window_fills.empty or alert.level not in (Level.EXPIRY, Level.PRODUCT):
        return []
    keys = level_keys(window_fills)[alert.level.value]
    return sorted({int(i) for i in window_fills.loc[(keys == alert.symbol).to_numpy(), "instrument_id"]})


def confirm(
    alerts: Sequence[Alert],
    instruments: dict[str, list[int]],
    oi_before: pd.Series,
    oi_after: pd.Series,
    share: float,
) -> pd.DataFrame:
    """One row per alert (`CONFIRM_COLUMNS`): its open interest before and after, summed over the
    instruments in `instruments[alert_id]` that have both figures, and its verdict."""
    rows = []
    for alert in alerts:
        ids = instruments.get(alert.alert_id, [])
        known = [i for i in ids if i in oi_before.index and i in oi_after.index]
        before = float(oi_before.reindex(known).sum()) if known else None
        after = float(oi_after.reindex(known).sum()) if known else None
        change = after - before if known else None  # type: ignore[operator]
        rows.append(
            {
                "alert_id": alert.alert_id,
                "kind": str(alert.kind),
                "symbol": alert.symbol,
                "event_time": alert.event_time,
                "confidence": float(alert.confidence),
                "volume": int(alert.volume),
                "oi_before": None if before is None else int(before),
                "oi_after": None if after is None else int(after),
                "oi_change": None if change is None else int(change),
                "instruments": len(known),
                "verdict": verdict_of(alert.volume, change, share),
            }
        )
    return pd.DataFrame(rows, columns=CONFIRM_COLUMNS)


@dataclass
class Confirmations:
    """A session's confirmations, and when the open interest they read was published."""

    trade_date: dt.date
    table: pd.DataFrame
    published_at: pd.Timestamp | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict:
        counts = self.table["verdict"].value_counts().to_dict() if len(self.table) else {}
        return {
            "trade_date": str(self.trade_date),
            "alerts": int(len(self.table)),
            **{verdict: int(counts.get(verdict, 0)) for verdict in VERDICTS},
            "published_at": self.published_at.isoformat() if self.published_at is not None else None,
        }

    def records(self) -> list[dict]:
        """Plain JSON-safe rows (what the notebook glues and `confirm --json` prints)."""
        counts = ("volume", "oi_before", "oi_after", "oi_change", "instruments")
        frame = self.table.astype(object).where(self.table.notna(), None)
        rows = [
            {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in frame.to_dict("records")
        ]
        return [{k: int(v) if k in counts and v is not None else v for k, v in row.items()} for row in rows]


def read_confirmations(
    source: DataSource, trade_date: dt.date, alerts: Sequence[Alert], config: Config
) -> Confirmations:
    """Session `trade_date`'s market alerts confirmed against the next morning's open interest
    (DataNotYetAvailable until it is published: a verdict is never given on missing data)."""
    following = cal.next_trading_day(trade_date)
    after = source.open_interest(following)
    if after.empty:
        raise DataNotYetAvailable(
            f"open interest after session {trade_date} is not published yet; CME publishes it the next "
            f"morning: try again after {following}'s open"
        )
    before = source.open_interest(trade_date)
    market = [a for a in alerts if a.kind in MARKET_KINDS]
    instruments: dict[str, list[int]] = {}
    wide = [a for a in market if a.level in (Level.EXPIRY, Level.PRODUCT) and not a.instrument_ids]
    fills = None
    if wide:
        row = cal.sessions(trade_date, trade_date).iloc[0]
        fills = classify_fills(source.trades(row.market_open, row.market_close), config.universe.products).options
    for alert in market:
        window_fills = None
        if fills is not None and alert in wide:
            start, end = pd.Timestamp(alert.window_start), pd.Timestamp(alert.window_end)
            window_fills = fills[(fills["ts_event"] >= start) & (fills["ts_event"] < end)]
        instruments[alert.alert_id] = alert_instruments(alert, window_fills)
    table = confirm(
        market,
        instruments,
        before.set_index("instrument_id")["open_interest"],
        after.set_index("instrument_id")["open_interest"],
        config.confirm.share,
    )
    published = pd.Timestamp(after["ts_event"].max()) if "ts_event" in after and len(after) else None
    return Confirmations(trade_date, table, published)


def confirm_days(source: DataSource, alerts: pd.DataFrame, days: Sequence[dt.date], config: Config) -> pd.DataFrame:
    """`read_confirmations` for several sessions' alerts (a frame of ALERT_FIELDS, e.g. a
    backtest's) in one `CONFIRM_COLUMNS` frame; sessions whose next morning is not published
    yet are left out."""
    sessions = alerts["window_start"].map(lambda w: (cal.session_of(pd.Timestamp(w)) or (None,))[0])
    frames = []
    for day in days:
        mine = alerts[(sessions == day).to_numpy()]
        if mine.empty:
            continue
        try:
            frames.append(read_confirmations(source, day, to_alerts(mine[ALERT_FIELDS]), config).table)
        except DataNotYetAvailable:
            continue
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CONFIRM_COLUMNS)
