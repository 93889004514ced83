"""Expected volume by time-of-day slot: a SQLite store kept up to date window by window.

Volumes are recorded per (level, key, session, slot) where level is ``instrument`` (key:
instrument_id), ``expiry`` or ``product`` (key: ``NQ``). A slot is a 15-minute bucket counted
from the session open (`nqflow.market.hours.slot_of`), so baselines survive daylight-saving
changes and half days (a half day simply has fewer slots).

The expiry key is the option symbol root (e.g. ``NQZ6``, ``Q2DX6``) while the expiry is more
than `SHORT_DATED_DAYS` calendar days away, and the days to expiry (``0DTE`` .. ``4DTE``)
from then on. An option's volume grows several-fold in its last days, so against its own
history every expiring weekly would "surge" each day; the usual volume of *the day's expiry*
(0DTE) at this time of day is what a desk compares with. Options that close to expiry are
not judged against their own instrument history either (`nqflow.engine.detect.surge_gate`).

Baseline definition (what a "10x" is measured against): for a key and slot, take the
slot's volume in up to N previous sessions in which that slot was recorded and the key had
already traded (zeros where it did not trade in the slot); drop the single busiest session
when there are at least 5 (one earlier spike must not lift the baseline); the mean of what
is left is the expected volume, and the spread feeds the count model in `nqflow.engine.detect`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from nqflow import sqlite
from nqflow.engine.levels import (  # noqa: F401  (re-exported: the store's keys)
    EXPECTED_COLUMNS,
    LEVELS,
    NO_KEYS,
    PRODUCT_KEY,
    SHORT_DATED_DAYS,
    level_keys,
    slot_volumes,
    window_keys,
    window_keys_by,
)
from nqflow.market import hours as cal
from nqflow.market.frames import option_fills

_SCHEMA = """
CREATE TABLE IF NOT EXISTS baseline_volume (
    level TEXT NOT NULL, key TEXT NOT NULL, session TEXT NOT NULL, slot INTEGER NOT NULL,
    volume INTEGER NOT NULL, PRIMARY KEY (level, key, session, slot));
CREATE INDEX IF NOT EXISTS baseline_volume_slot ON baseline_volume (slot, session);
CREATE INDEX IF NOT EXISTS baseline_volume_slot_key ON baseline_volume (slot, level, key, session);
CREATE TABLE IF NOT EXISTS baseline_slot (
    session TEXT NOT NULL, slot INTEGER NOT NULL, PRIMARY KEY (session, slot));
CREATE TABLE IF NOT EXISTS baseline_first_seen (
    level TEXT NOT NULL, key TEXT NOT NULL, session TEXT NOT NULL, PRIMARY KEY (level, key));
"""


def expected_volume(history: pd.DataFrame, max_sessions: int) -> pd.DataFrame:
    """Summarise per-session slot volumes into the expected volume per (level, key).

    `history` has columns level, key, session, volume (zeros included: one row per session
    the key counts in). Uses each key's latest `max_sessions` sessions. Returns
    EXPECTED_COLUMNS (`summarise`).
    """
    if history.empty:
        return summarise(pd.DataFrame(columns=["level", "key", "n", "total", "total2", "top"]))
    recent = history.sort_values("session", kind="stable").groupby(["level", "key"], sort=False).tail(max_sessions)
    volume = recent["volume"].astype(float)
    grouped = pd.DataFrame({"level": recent["level"], "key": recent["key"], "v": volume, "v2": volume**2}).groupby(
        ["level", "key"], sort=False
    )
    return summarise(
        grouped.agg(n=("v", "size"), total=("v", "sum"), total2=("v2", "sum"), top=("v", "max")).reset_index()
    )


def summarise(moments: pd.DataFrame) -> pd.DataFrame:
    """Expected volume from a key's slot-volume moments over its n sessions of history.

    `moments`: level, key, n (sessions, zeros included), total, total2 (sum of squares) and top
    (largest). Returns level, key, history_sessions (n), expected (trimmed mean: the busiest
    session dropped when n >= 5), mean, and variance of the kept sessions. The one definition
    of the baseline: `expected_volume` (from rows) and `BaselineStore.expected` (sums taken in
    SQLite) both end here.
    """
    if moments.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in EXPECTED_COLUMNS})
    n = moments["n"].to_numpy(dtype=float)
    total, total2, top = (moments[c].to_numpy(dtype=float) for c in ("total", "total2", "top"))
    trim = n >= 5
    kept_n = n - trim
    kept_sum = total - np.where(trim, top, 0.0)
    kept_sum2 = total2 - np.where(trim, top**2, 0.0)
    expected = kept_sum / kept_n
    variance = np.where(kept_n > 1, (kept_sum2 - kept_n * expected**2) / np.maximum(kept_n - 1, 1), expected)
    return pd.DataFrame(
        {
            "level": moments["level"].to_numpy(),
            "key": moments["key"].to_numpy(),
            "history_sessions": n.astype(int),
            "expected": expected,
            "mean": total / n,
            "variance": np.maximum(variance, 0.0),
        }
    )


class BaselineStore:
    """Per-slot volume history in SQLite (the same file as the scheduler's state by default)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite.connect(self.path) as conn:
            conn.executescript(_SCHEMA)

    def record(self, session: dt.date, slots: list[int], volumes: pd.DataFrame) -> None:
        """Record the volumes of whole slots of a session. Idempotent: re-recording replaces.
        Rows of `volumes` outside `slots` are ignored, also for when a key was first seen."""
        day = str(session)
        volumes = volumes[volumes["slot"].isin(slots)]
        level, key = volumes["level"].astype(str).tolist(), volumes["key"].astype(str).tolist()
        with sqlite.connect(self.path) as conn:
            conn.executemany("DELETE FROM baseline_volume WHERE session = ? AND slot = ?", [(day, s) for s in slots])
            conn.executemany(
                "INSERT INTO baseline_volume (level, key, session, slot, volume) VALUES (?, ?, ?, ?, ?)",
                zip(
                    level,
                    key,
                    [day] * len(level),
                    volumes["slot"].astype(int).tolist(),
                    volumes["volume"].astype(int).tolist(),
                ),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO baseline_slot (session, slot) VALUES (?, ?)", [(day, s) for s in slots]
            )
            conn.executemany(
                "INSERT INTO baseline_first_seen (level, key, session) VALUES (?, ?, ?) "
                "ON CONFLICT (level, key) DO UPDATE SET session = excluded.session WHERE excluded.session < session",
                [(lv, k, day) for lv, k in dict.fromkeys(zip(level, key))],
            )

    def complete_sessions(self) -> set[str]:
        """Sessions whose every slot is recorded."""
        with sqlite.connect(self.path) as conn:
            counts = dict(conn.execute("SELECT session, COUNT(*) FROM baseline_slot GROUP BY session").fetchall())
        return {day for day, n in counts.items() if n >= len(cal.session_windows(dt.date.fromisoformat(day)))}

    def recorded_slots(self, session: dt.date) -> set[int]:
        with sqlite.connect(self.path) as conn:
            rows = conn.execute("SELECT slot FROM baseline_slot WHERE session = ?", (str(session),)).fetchall()
        return {r[0] for r in rows}

    def expected(
        self,
        session: dt.date,
        slots: list[int],
        max_sessions: int,
        keys: dict[int, pd.DataFrame] | pd.DataFrame | None = None,
    ) -> dict[int, pd.DataFrame]:
        """Expected volume (EXPECTED_COLUMNS) per slot of `session`, from up to `max_sessions`
        earlier sessions in which the slot was recorded (the module doc's definition).

        `keys` maps a slot to the (level, key) pairs wanted there (product is always added); a
        slot it leaves out gets every key seen before. `keys` may also be one frame of slot, level
        and key (a whole session's), where a slot it lacks wants the product only. A key counts the sessions from the
        one it
        first traded in, zeros included. The sums are taken in SQLite over the wanted keys only,
        so a whole session's slots cost one query and little memory.
        """
        day = str(session)
        with sqlite.connect(self.path) as conn:
            recorded = pd.read_sql_query(
                "SELECT slot, session FROM baseline_slot WHERE session < ?", conn, params=[day]
            )
            chosen = (
                recorded[recorded["slot"].isin(slots)]
                .sort_values("session", ascending=False)
                .groupby("slot")
                .head(max_sessions)
            )
            first_seen = pd.read_sql_query(
                "SELECT level, key, session AS first_session FROM baseline_first_seen WHERE session < ?",
                conn,
                params=[day],
            )
            if isinstance(keys, pd.DataFrame):  # one frame of (slot, level, key); a slot it lacks wants none
                keyed = set(slots)
                wanted = [keys[["level", "key", "slot"]].astype({"level": str, "key": str})]
            else:
                keys = keys or {}
                keyed = set(keys)
                wanted = [keys[slot][["level", "key"]].astype(str).assign(slot=slot) for slot in slots if slot in keys]
            wanted.append(
                pd.DataFrame({"level": "product", "key": PRODUCT_KEY, "slot": [s for s in slots if s in keyed]})
            )
            every_key = [slot for slot in slots if slot not in keyed]
            if every_key:
                wanted.append(first_seen[["level", "key"]].merge(pd.DataFrame({"slot": every_key}), how="cross"))
            wanted = pd.concat(wanted, ignore_index=True).drop_duplicates()
            wanted = wanted[wanted["slot"].isin(chosen["slot"])].merge(first_seen, on=["level", "key"])
            wanted["n"] = _sessions_since(chosen, wanted)
            wanted = wanted[wanted["n"] > 0].reset_index(drop=True)
            # A slot's chosen sessions are its latest recorded ones, so they are exactly the
            # recorded sessions from the oldest chosen one on: one index range per wanted key.
            since = chosen.groupby("slot")["session"].min()
            conn.execute(
                "CREATE TEMP TABLE wanted (row INTEGER PRIMARY KEY, slot INTEGER, level TEXT, key TEXT, since TEXT)"
            )
            # Plain lists: iterating Arrow-backed columns row by row is slow.
            conn.executemany(
                "INSERT INTO wanted VALUES (?, ?, ?, ?, ?)",
                zip(
                    range(len(wanted)),
                    wanted["slot"].tolist(),
                    wanted["level"].tolist(),
                    wanted["key"].tolist(),
                    wanted["slot"].map(since).tolist(),
                ),
            )
            # CROSS JOIN keeps the planner scanning `wanted` and seeking the index for each row.
            sums = pd.read_sql_query(
                "SELECT w.row, SUM(v.volume) AS total, SUM(v.volume * v.volume) AS total2, MAX(v.volume) AS top "
                "FROM wanted w CROSS JOIN baseline_volume v INDEXED BY baseline_volume_slot_key "
                "WHERE v.slot = w.slot AND v.level = w.level AND v.key = w.key AND v.session >= w.since "
                "AND v.session < ? GROUP BY w.row",
                conn,
                params=[day],
            ).set_index("row")
        moments = wanted.join(sums).fillna({"total": 0, "total2": 0, "top": 0})  # no rows: zero in every session
        expected = summarise(moments)
        rows = moments.groupby("slot").indices if len(moments) else {}
        return {slot: expected.take(rows.get(slot, [])).reset_index(drop=True) for slot in slots}


def _sessions_since(chosen: pd.DataFrame, wanted: pd.DataFrame) -> np.ndarray:
    """For each wanted (slot, first_session): how many of the slot's chosen sessions are on or after it."""

    def day_number(text: pd.Series) -> np.ndarray:
        return pd.to_datetime(text, format="%Y-%m-%d").to_numpy(dtype="datetime64[D]").astype("int64")

    span = 1_000_000  # > any day number, so slot * span + day orders by slot, then day
    marks = np.sort(chosen["slot"].to_numpy(dtype="int64") * span + day_number(chosen["session"]))
    slot = wanted["slot"].to_numpy(dtype="int64")
    return np.searchsorted(marks, slot * span + span - 1, side="right") - np.searchsorted(
        marks, slot * span + day_number(wanted["first_session"]), side="left"
    )


def session_slot_volumes(source, trade_date: dt.date) -> tuple[list[int], pd.DataFrame]:
    """Every slot of one whole session and its volumes (`slot_volumes`), read from a data source."""
    row = cal.sessions(trade_date, trade_date).iloc[0]
    trades = option_fills(source.trades(row.market_open, row.market_close))
    return list(range(len(cal.session_windows(trade_date)))), slot_volumes(trades, row.market_open)


def record_session(store: BaselineStore, source, trade_date: dt.date) -> None:
    """Record every slot of one whole session from a data source (used to build or rebuild history)."""
    store.record(trade_date, *session_slot_volumes(source, trade_date))


def ensure_history(
    store: BaselineStore, source, trade_date: dt.date, max_sessions: int, available: list[dt.date] | None = None
) -> list[dt.date]:
    """Make sure the `max_sessions` sessions before `trade_date` that the source has are recorded.

    Sessions already recorded are not read again, so after the first call this costs one
    SQLite query. Returns the sessions it had to read.
    """
    if available is None:
        available = (
            source.sessions_available()
            if hasattr(source, "sessions_available")
            else cal.trading_days(trade_date - dt.timedelta(days=max_sessions * 2), trade_date)
        )
    previous = [d for d in available if d < trade_date][-max_sessions:]
    complete = store.complete_sessions() if previous else set()
    missing = [day for day in previous if str(day) not in complete]
    if missing and hasattr(source, "prepare_sessions"):
        source.prepare_sessions(missing)  # a paid source prices the whole build first, and may refuse it
    for day in missing:
        record_session(store, source, day)
    return missing
