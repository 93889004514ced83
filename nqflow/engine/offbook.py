"""Off-book flow: blocks and other negotiated trades, read from next-day statistics.

CME block trades (and other privately negotiated trades) are reported away from the central
order book: they never appear in the MDP3 trades that the window monitor reads. They do
clear, and CME publishes each session's **cleared volume** (statistics type 6), **final
settlement** (type 3, ``stat_flags`` bit 0 set) and the next morning's **open interest**
(type 9) the following day; Databento carries them in the ``statistics`` schema, with
``ts_ref`` naming the session they belong to.

Per instrument and session::

    off-book volume  = cleared volume - screen volume (contracts in the session's trades)
    off-book premium = off-book volume x final settlement x multiplier
    OI change        = open interest the next morning - open interest that morning

The OI change covers the screen volume too, so it says whether the day *as a whole* opened
or closed positions; it confirms a block when it is at least the block's size.

What off-book volume is not: cleared volume also holds exchange-for-related-position trades
(EFRs: options swapped against an OTC position), trade corrections and other privately
negotiated transactions, so an off-book figure is "traded away from the screen", not
"blocks only". There is no aggressor: direction is ``UNKNOWN``, and the premium is
valued at settlement, not at the negotiated price. Every alert says so in its reasons.

Alerts (kind ``off_book``): off-book volumes of one day whose sizes are in simple ratios (each
an integer multiple, up to ``thresholds.off_book_package_max_ratio``, of a common unit) on
options of one contract size read as **one package** (level ``package``: a vertical, a
calendar, ...); the rest are single options (level ``instrument``). Either is an alert when
its off-book premium is at least ``thresholds.off_book_premium_usd``.

Confidence uses the window alerts' weights (`nqflow.engine.detect.score`) with these components:
surprise = the off-book share of the cleared volume (all of it off the screen reads 1),
premium as for any alert, imbalance 0 (no aggressor is known), concentration 1 for a single
option or a package whose ratios are exact, and volume/OI = OI change / off-book volume
(positions opened by at least the block's size read 1). Whether it opened or closed positions
is the next-morning verdict every alert gets (`nqflow.engine.positions.verdict_of`).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from functools import reduce

import numpy as np
import pandas as pd

from nqflow.alerts import ALERT_FIELDS, Alert, Direction, Kind, Label, Level, stable_id, usd
from nqflow.config import Config
from nqflow.engine.detect import premium_component, score
from nqflow.engine.positions import verdict_of
from nqflow.errors import DataNotYetAvailable
from nqflow.market import hours as cal
from nqflow.market.contracts import CHICAGO
from nqflow.market.frames import (
    OPEN_INTEREST_STAT_TYPE,
    SETTLEMENT_STAT_TYPE,
    DataSource,
    classify_fills,
    final_settlements,
    session_bounds,
)

SETTLEMENT, OPEN_INTEREST = SETTLEMENT_STAT_TYPE, OPEN_INTEREST_STAT_TYPE
CLEARED_VOLUME = 6  # databento_dbn.StatType.CLEARED_VOLUME

OFF_BOOK_COLUMNS = [
    "instrument_id",
    "symbol",
    "product",
    "underlying",
    "expiration",
    "strike",
    "put_call",
    "multiplier",
    "cleared_volume",
    "screen_volume",
    "off_book_volume",
    "settlement",
    "premium_usd",
    "oi_before",
    "oi_after",
    "oi_change",
]


@dataclass
class OffBookDay:
    """One session's off-book reading: per-instrument volumes (OFF_BOOK_COLUMNS) and its alerts (ALERT_FIELDS)."""

    trade_date: dt.date
    volumes: pd.DataFrame
    alerts: pd.DataFrame
    published_at: pd.Timestamp | None

    @property
    def summary(self) -> dict:
        """The day in figures, in a window summary's shape (`nqflow.alerts.WindowSummary`) plus
        the off-book ones, so that reports, the index and the state database read it alike."""
        market_open, market_close = session_bounds(self.trade_date)
        off = self.volumes[self.volumes["off_book_volume"] > 0]
        return {
            "window_start": market_open.isoformat(),
            "window_end": market_close.isoformat(),
            "trade_date": str(self.trade_date),
            "option_trades": int(len(self.volumes)),
            "contracts": int(self.volumes["screen_volume"].sum()),
            "premium_usd": float(off["premium_usd"].fillna(0).sum()),
            "off_book_contracts": int(off["off_book_volume"].sum()),
            "off_book_instruments": int(len(off)),
            "cleared_contracts": int(self.volumes["cleared_volume"].sum()),
            "published_at": self.published_at.isoformat() if self.published_at is not None else None,
            "empty": bool(off.empty),
            "notes": [] if len(off) else ["no off-book volume in this session"],
            "alerts": int(len(self.alerts)),
            "alerts_by_kind": {"off_book": int(len(self.alerts))} if len(self.alerts) else {},
            "max_confidence": float(self.alerts["confidence"].max()) if len(self.alerts) else 0.0,
        }


#: The next-morning verdict (`nqflow.engine.positions.verdict_of`) as an off-book reason says it.
READING = {
    "opening": ": positions opened",
    "closing": ": positions closed",
    "mixed": ": mixed opening and closing",
    "unknown": "",
}


def about_session(statistics: pd.DataFrame, trade_date: dt.date) -> pd.DataFrame:
    """The statistics records that refer to session `trade_date` (``ts_ref`` on its date)."""
    return statistics[statistics["ts_ref"].dt.tz_convert(None).dt.normalize() == pd.Timestamp(trade_date)]


def off_book_volumes(
    trade_date: dt.date,
    screen: pd.DataFrame,
    statistics_that_day: pd.DataFrame,
    statistics_next_day: pd.DataFrame,
    chain: pd.DataFrame,
) -> pd.DataFrame:
    """Off-book volume, premium and OI change per option of session `trade_date` (OFF_BOOK_COLUMNS).

    `screen`: the session's option fills; `statistics_that_day` / `statistics_next_day`: the
    statistics published during that session and the next one (`DataSource.statistics`).
    Raises DataNotYetAvailable while the next day's cleared volume or final settlement for
    the session is not there yet: a day is never read as "no blocks" before publication.
    """
    published = about_session(statistics_next_day, trade_date)
    cleared = published[published["stat_type"] == CLEARED_VOLUME]
    final = final_settlements(published)
    if cleared.empty or final.empty:
        missing = "cleared volume" if cleared.empty else "final settlement prices (only preliminary so far)"
        raise DataNotYetAvailable(
            f"statistics for session {trade_date} are not published yet ({missing}); CME "
            f"publishes them the next morning: try again after {cal.next_trading_day(trade_date)}'s open"
        )
    cleared_volume = cleared.groupby("instrument_id")["quantity"].last()
    screen_volume = screen.groupby("instrument_id")["size"].sum() if len(screen) else pd.Series(dtype="int64")
    settle = final.groupby("instrument_id")["price"].last()

    def oi(stats: pd.DataFrame) -> pd.Series:
        rows = stats[stats["stat_type"] == OPEN_INTEREST]
        return rows.groupby("instrument_id")["quantity"].last()

    oi_before, oi_after = oi(statistics_that_day), oi(statistics_next_day)

    options = chain[chain["put_call"].isin(["C", "P"])].set_index("instrument_id")
    ids = cleared_volume.index.intersection(options.index)
    info = options.loc[ids]
    frame = pd.DataFrame(
        {
            "instrument_id": ids.astype("int64"),
            "symbol": info["symbol"].astype(str).to_numpy(),
            "product": info["product"].astype(str).to_numpy(),
            "underlying": info["underlying"].astype(str).to_numpy(),
            "expiration": info["expiration"].to_numpy(),
            "strike": info["strike"].to_numpy(dtype=float),
            "put_call": info["put_call"].astype(str).to_numpy(),
            "multiplier": info["multiplier"].to_numpy(dtype=float),
            "cleared_volume": cleared_volume.loc[ids].to_numpy(dtype=float),
            "screen_volume": screen_volume.reindex(ids).fillna(0).to_numpy(dtype=float),
            "settlement": settle.reindex(ids).to_numpy(dtype=float),
            "oi_before": oi_before.reindex(ids).to_numpy(dtype=float),
            "oi_after": oi_after.reindex(ids).to_numpy(dtype=float),
        }
    )
    # Screen volume above cleared volume happens (a busted trade, a late correction): no off-book volume then.
    frame["off_book_volume"] = np.maximum(frame["cleared_volume"] - frame["screen_volume"], 0.0)
    frame["premium_usd"] = frame["off_book_volume"] * frame["settlement"] * frame["multiplier"]
    frame["oi_change"] = frame["oi_after"] - frame["oi_before"]
    return frame[OFF_BOOK_COLUMNS].sort_values("premium_usd", ascending=False, kind="stable").reset_index(drop=True)


def group_packages(volumes: pd.DataFrame, max_ratio: int) -> list[list[int]]:
    """Rows (positions in `volumes`) read together: off-book volumes on options of one contract size
    (NQ's $20 a point, or the micro's $2) whose sizes are whole multiples (1 to `max_ratio`) of their greatest
    common divisor,
    which must be at least a quarter of the smallest volume (so 500 and 1,000 pair, 7 and 11 do
    not). Largest premium first; each row in one group at most."""
    rows = volumes[volumes["off_book_volume"] > 0]
    groups: list[list[int]] = []
    used: set[int] = set()
    # Not by underlying future: a calendar across the quarterly roll has legs on two futures.
    for _, same in rows.groupby("multiplier", sort=False):
        order = list(same.sort_values("premium_usd", ascending=False).index)
        for anchor in order:
            if anchor in used:
                continue
            group = [anchor]
            for other in order:
                if other in used or other in group:
                    continue
                sizes = [int(volumes.at[i, "off_book_volume"]) for i in group + [other]]
                unit = reduce(math.gcd, sizes)
                if unit >= min(sizes) / 4 and max(sizes) // unit <= max_ratio:
                    group.append(other)
            used.update(group)
            groups.append(group)
    return groups


def off_book_alerts(
    trade_date: dt.date, volumes: pd.DataFrame, config: Config, published_at: pd.Timestamp | None = None
) -> pd.DataFrame:
    """`off_book` alerts of one session (ALERT_FIELDS), strongest first (see the module doc)."""
    t = config.thresholds
    alerts = [
        _off_book_alert(trade_date, volumes.loc[group], config, published_at)
        for group in group_packages(volumes, t.off_book_package_max_ratio)
        # NaN premium (no settlement) is never an alert
        if float(volumes.loc[group, "premium_usd"].sum()) >= t.off_book_premium_usd
    ]
    frame = pd.DataFrame([a.to_json() for a in alerts], columns=ALERT_FIELDS)
    return frame.sort_values(["confidence", "premium_usd"], ascending=False, kind="stable").reset_index(drop=True)


def _off_book_alert(
    trade_date: dt.date, members: pd.DataFrame, config: Config, published_at: pd.Timestamp | None
) -> Alert:
    """One option, or a package of several, traded off the book (the rows of `members`)."""
    market_open, market_close = session_bounds(trade_date)
    premium = float(members["premium_usd"].sum())
    volume = int(members["off_book_volume"].sum())
    sizes = members["off_book_volume"].astype(int).tolist()
    unit = reduce(math.gcd, sizes)
    is_package = len(members) > 1
    cleared = float(members["cleared_volume"].sum())
    oi_change = float(members["oi_change"].sum()) if members["oi_change"].notna().all() else None
    components = {
        "surprise": volume / max(cleared, 1.0),
        "premium": premium_component(premium, config),
        "imbalance": 0.0,
        "concentration": 1.0,
        "volume_oi": min(1.0, max(oi_change, 0.0) / volume) if oi_change is not None else 0.0,
    }
    confidence, label = score(components, config)
    first = members.loc[members["expiration"].idxmin()]  # the nearest expiry speaks for the package
    expiries = [
        root for _, root in sorted({(e, s.split(" ", 1)[0]) for e, s in zip(members["expiration"], members["symbol"])})
    ]
    strategy = _package_name(members) if is_package else None
    legs_text = ", ".join(f"{int(v / unit)} x {s}" for v, s in zip(sizes, members["symbol"]))
    days = (
        (pd.Timestamp(first["expiration"]).tz_convert(CHICAGO).date() - trade_date).days
        if pd.notna(first["expiration"])
        else None
    )
    ids = [int(i) for i in members["instrument_id"]]
    oi_after = members["oi_after"]
    return Alert(
        alert_id=stable_id("off_book", trade_date, ",".join(map(str, ids)), volume),
        kind=Kind.OFF_BOOK,
        level=Level.PACKAGE if is_package else Level.INSTRUMENT,
        window_start=market_open.isoformat(),
        window_end=market_close.isoformat(),
        event_time=(published_at or market_close).isoformat(),
        symbol=f"{strategy} {' / '.join(expiries)}" if is_package else str(first["symbol"]),
        symbols=[str(s) for s in members["symbol"]],
        instrument_ids=ids,
        expiry=expiries[0],
        expiration=pd.Timestamp(first["expiration"]).isoformat() if pd.notna(first["expiration"]) else None,
        strike=None if is_package else float(first["strike"]),
        put_call="".join(sorted(set(members["put_call"]))),
        direction=Direction.UNKNOWN,
        sentiment=None,
        volume=volume,
        premium_usd=round(premium, 2),
        history_sessions=None,
        open_interest=int(oi_after.sum()) if oi_after.notna().all() else None,
        volume_oi=round(volume / oi_after.sum(), 4) if oi_after.notna().all() and oi_after.sum() > 0 else None,
        confidence=confidence,
        label=Label(label),
        reasons=_off_book_reasons(
            trade_date, members, volume, premium, cleared, oi_change, legs_text if is_package else None, config
        ),
        days_to_expiry=days,
        zero_dte=days == 0 if days is not None else None,
        strategy=strategy,
        legs=[
            {"instrument_id": i, "symbol": str(s), "ratio": int(v / unit), "size": int(v), "settlement": float(p)}
            for i, s, v, p in zip(ids, members["symbol"], sizes, members["settlement"])
        ]
        if is_package
        else None,
    )


def _off_book_reasons(
    trade_date: dt.date,
    members: pd.DataFrame,
    volume: int,
    premium: float,
    cleared: float,
    oi_change: float | None,
    legs_text: str | None,
    config: Config,
) -> list[str]:
    """What an off-book alert says: the volume against the screen's, the premium at settlement,
    the open interest's verdict, and what off-book volume cannot tell."""
    first = members.loc[members["expiration"].idxmin()]
    return [
        f"{volume:,} contracts traded off the order book "
        f"({'package: ' + legs_text if legs_text else first['symbol']}): cleared volume {cleared:,.0f} vs "
        f"{members['screen_volume'].sum():,.0f} on the screen in session {trade_date}",
        f"{usd(premium)} premium at final settlement "
        + ", ".join(f"{p:g}" for p in members["settlement"])
        + f" >= {usd(config.thresholds.off_book_premium_usd)} threshold",
        (
            "open interest "
            + ", ".join(
                f"{s}: {b:,.0f} -> {a:,.0f}"
                for s, b, a in zip(members["symbol"], members["oi_before"], members["oi_after"])
            )
            + READING[verdict_of(volume, oi_change, config.confirm.share)]
            if oi_change is not None
            else "open interest change unknown"
        ),
        "no aggressor is disseminated for off-book trades: direction unknown; valued at settlement, not the "
        "negotiated price",
        "cleared volume also holds exchange-for-related-position (EFR) and other negotiated trades, not only blocks",
    ]


def _package_name(members: pd.DataFrame) -> str:
    """A plain name for what the legs look like (`nqflow.engine.strategies` names on-screen packages)."""
    same_expiry = members["expiration"].nunique() == 1
    same_strike = members["strike"].nunique() == 1
    same_right = members["put_call"].nunique() == 1
    if len(members) == 2 and same_expiry and same_right:
        return "vertical"
    if len(members) == 2 and same_strike and same_right:
        return "calendar"
    if len(members) == 2 and same_expiry and same_strike:
        return "straddle"
    if len(members) == 2 and same_expiry:
        return "strangle" if set(members["put_call"]) == {"C", "P"} else "other"
    return "other"


def read_off_book(source: DataSource, trade_date: dt.date, config: Config) -> OffBookDay:
    """Session `trade_date`'s off-book volumes and alerts, once the next day's statistics are out
    (DataNotYetAvailable before)."""
    row = cal.sessions(trade_date, trade_date)
    if row.empty:
        raise DataNotYetAvailable(f"{trade_date} is not a CME Globex trading day; pick a session date")
    following = cal.next_trading_day(trade_date)
    statistics_next_day = source.statistics(following)
    statistics_that_day = source.statistics(trade_date)
    screen = classify_fills(
        source.trades(row.iloc[0].market_open, row.iloc[0].market_close), config.universe.products
    ).options
    volumes = off_book_volumes(trade_date, screen, statistics_that_day, statistics_next_day, source.chain(trade_date))
    volumes = volumes[volumes["product"].isin(config.universe.products)].reset_index(drop=True)
    published = about_session(statistics_next_day, trade_date)
    published_at = published.loc[published["stat_type"] == CLEARED_VOLUME, "ts_event"].max()
    return OffBookDay(trade_date, volumes, off_book_alerts(trade_date, volumes, config, published_at), published_at)


def read_off_book_days(source: DataSource, days: list[dt.date], config: Config) -> pd.DataFrame:
    """`off_book` alerts of several sessions in one frame (ALERT_FIELDS); days whose statistics
    are not published yet are left out."""
    frames = []
    for day in days:
        try:
            frames.append(read_off_book(source, day, config).alerts)
        except DataNotYetAvailable:
            continue
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ALERT_FIELDS)
