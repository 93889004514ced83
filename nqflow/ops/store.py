"""Scheduler state in SQLite: windows (pending/ok/failed), alerts, and per-channel deliveries.

Every alert is recorded before any delivery (the outbox); a delivery row per channel makes
"never twice, never lost" a property of the database rather than of the process.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nqflow import sqlite
from nqflow.alerts import ALERT_FIELDS, Alert, Kind
from nqflow.errors import StorageError
from nqflow.market.frames import session_bounds
from nqflow.paths import resolve

#: Numbered migrations: the database's ``PRAGMA user_version`` is how many have run. Append,
#: never edit: a deployment that has run for weeks upgrades in order when it next opens the file.
#: Migration 1 is the schema as it stood before versions (a file written then is at version 0
#: with these tables already there, hence IF NOT EXISTS).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS windows (
        window_start TEXT PRIMARY KEY, window_end TEXT NOT NULL, status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, next_attempt_at TEXT,
        started_at TEXT, finished_at TEXT, duration_s REAL, notebook_path TEXT, html_path TEXT,
        alerts INTEGER, summary TEXT);
    CREATE TABLE IF NOT EXISTS alerts (
        alert_id TEXT PRIMARY KEY, window_start TEXT NOT NULL, kind TEXT NOT NULL, level TEXT,
        symbol TEXT, confidence REAL, label TEXT, event_time TEXT, payload TEXT NOT NULL, recorded_at TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS alerts_window ON alerts (window_start);
    CREATE TABLE IF NOT EXISTS daily_runs (
        job TEXT NOT NULL, trade_date TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT, next_attempt_at TEXT, finished_at TEXT, duration_s REAL, notebook_path TEXT, html_path TEXT,
        alerts INTEGER, summary TEXT, PRIMARY KEY (job, trade_date));
    CREATE TABLE IF NOT EXISTS health (
        key TEXT PRIMARY KEY, verdict TEXT NOT NULL, title TEXT NOT NULL, detail TEXT NOT NULL,
        observed_at TEXT NOT NULL, raised_at TEXT, cleared_at TEXT);
    CREATE TABLE IF NOT EXISTS deliveries (
        alert_id TEXT NOT NULL, channel TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT, next_attempt_at TEXT, delivered_at TEXT, PRIMARY KEY (alert_id, channel));
    """,
    # 2: a window is keyed by its start and its end (a two-hour window never overwrites the
    # 15-minute window that starts with it); facts about the database itself in `meta`.
    """
    CREATE TABLE windows_v2 (
        window_start TEXT NOT NULL, window_end TEXT NOT NULL, status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, next_attempt_at TEXT,
        started_at TEXT, finished_at TEXT, duration_s REAL, notebook_path TEXT, html_path TEXT,
        alerts INTEGER, summary TEXT, PRIMARY KEY (window_start, window_end));
    INSERT INTO windows_v2 SELECT window_start, window_end, status, attempts, last_error, next_attempt_at,
        started_at, finished_at, duration_s, notebook_path, html_path, alerts, summary FROM windows;
    DROP TABLE windows;
    ALTER TABLE windows_v2 RENAME TO windows;
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 3: what was learned about an alert after it was sent, kept beside it (the alert stays as
    # sent): its next-morning confirmation, a worked order's final total.
    """
    CREATE TABLE IF NOT EXISTS alert_notes (
        alert_id TEXT NOT NULL, note TEXT NOT NULL, trade_date TEXT NOT NULL, payload TEXT NOT NULL,
        recorded_at TEXT NOT NULL, PRIMARY KEY (alert_id, note));
    CREATE INDEX IF NOT EXISTS alert_notes_day ON alert_notes (trade_date, note);
    """,
    # 4: deliveries found by status: every pass of a monitor that runs for weeks asks for the
    # pending and failing ones, which must not mean reading every delivery ever made.
    """
    CREATE INDEX IF NOT EXISTS deliveries_status ON deliveries (status, channel);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Run the migrations `conn`'s database has not had, each in its own transaction with its
    new version; returns the version it is at. A file newer than this code is refused."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"state database is at schema version {version}, newer than this nqflow knows "
            f"({SCHEMA_VERSION}); upgrade nqflow (git pull) before opening it"
        )
    for number in range(version + 1, SCHEMA_VERSION + 1):
        conn.executescript(f"BEGIN; {MIGRATIONS[number - 1]}; PRAGMA user_version = {number}; COMMIT;")
    return SCHEMA_VERSION


HEALTH_SCOPES = ("live",)  # processes beside the window loop that judge health conditions of their own


def health_scope(key: str) -> str:
    """Which process owns a health condition key (`StateStore.update_health`)."""
    head = key.split(":", 1)[0]
    return head if head in HEALTH_SCOPES and ":" in key else ""


@dataclass(frozen=True)
class RunOutcome:
    """How one run of a window's or a daily job's notebook ended, as the store records it."""

    status: str  # ok, failed, or (daily jobs) waiting
    finished_at: str
    duration_s: float
    notebook_path: str | None = None
    html_path: str | None = None
    alerts: int | None = None
    summary: dict | None = None
    error: str | None = None
    next_attempt_at: str | None = None

    def columns(self) -> tuple:
        """The values of the runs tables' columns, status to next_attempt_at, in their order."""
        return (
            self.status,
            self.finished_at,
            self.duration_s,
            self.notebook_path,
            self.html_path,
            self.alerts,
            json.dumps(self.summary) if self.summary is not None else None,
            self.error,
            self.next_attempt_at,
        )


class StateStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.connect() as conn:
                migrate(conn)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(
                f"cannot write the state database {self.path} ({exc}): make its folder "
                f"writable for this user, or point data.state_db / --state-db elsewhere"
            ) from None

    def connect(self):
        """A transaction on the state database (`nqflow.sqlite.connect`), rows readable by name."""
        return sqlite.connect(self.path, rows_as_mappings=True)

    # -- facts about the database itself ------------------------------------------------
    def meta(self, key: str) -> str | None:
        with self.connect() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str, replace: bool = True) -> None:
        """Set `key`; with ``replace=False`` only when it is not set yet (a first-seen time)."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self.connect() as conn:
            conn.execute(f"{verb} INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- windows -------------------------------------------------------------------------
    def window(self, start: str, end: str) -> dict | None:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT * FROM windows WHERE window_start = ? AND window_end = ?", (start, end)
            ).fetchone()
        return dict(row) if row else None

    def count_windows(self, status: str) -> int:
        with self.connect() as conn:
            return conn.execute("SELECT COUNT(*) FROM windows WHERE status = ?", (status,)).fetchone()[0]

    def start_attempt(self, start: str, end: str, now: str) -> int:
        with self.connect() as conn:
            conn.execute(
                "INSERT INTO windows (window_start, window_end, status) VALUES (?, ?, 'pending') "
                "ON CONFLICT (window_start, window_end) DO NOTHING",
                (start, end),
            )
            conn.execute(
                "UPDATE windows SET status = 'pending', attempts = attempts + 1, started_at = ?, "
                "next_attempt_at = NULL WHERE window_start = ? AND window_end = ?",
                (now, start, end),
            )
            return conn.execute(
                "SELECT attempts FROM windows WHERE window_start = ? AND window_end = ?", (start, end)
            ).fetchone()[0]

    def finish_window(self, start: str, end: str, outcome: RunOutcome) -> None:
        """Record how one attempt at the window [start, end) ended."""
        with self.connect() as conn:
            conn.execute(
                "UPDATE windows SET status = ?, finished_at = ?, duration_s = ?, notebook_path = ?, "
                "html_path = ?, alerts = ?, summary = ?, last_error = ?, next_attempt_at = ? "
                "WHERE window_start = ? AND window_end = ?",
                (*outcome.columns(), start, end),
            )

    def recover_interrupted(self, now: str) -> list[str]:
        """Windows left 'pending' by a scheduler that died mid-window become failed attempts due
        now (their notebook may have half run); returns their starts. Call it holding the lock."""
        with self.connect() as conn:
            starts = [r[0] for r in conn.execute("SELECT window_start FROM windows WHERE status = 'pending'")]
            conn.execute(
                "UPDATE windows SET status = 'failed', next_attempt_at = ?, last_error = "
                "'interrupted: the scheduler stopped while this window ran' WHERE status = 'pending'",
                (now,),
            )
        return starts

    def windows(self, limit: int = 200) -> pd.DataFrame:
        with self.connect() as conn:
            return pd.read_sql_query("SELECT * FROM windows ORDER BY window_start DESC LIMIT ?", conn, params=[limit])

    # The scheduler asks the next three on every pass of a run that lasts weeks: plain rows of the
    # columns it needs, not a frame of every column (a frame of 500 windows is 2-3 ms a pass).
    def window_starts(self, limit: int) -> list[str]:
        """The starts of the latest `limit` windows recorded, newest first."""
        with self.connect() as conn:
            return [
                r[0]
                for r in conn.execute("SELECT window_start FROM windows ORDER BY window_start DESC LIMIT ?", (limit,))
            ]

    def windows_to_retry(self, now: str, max_attempts: int, among: int) -> list[tuple[str, str]]:
        """(start, end) of the failed windows among the latest `among` that have attempts left and
        whose retry time has come by `now`."""
        with self.connect() as conn:
            return [
                (r[0], r[1])
                for r in conn.execute(
                    "SELECT window_start, window_end FROM (SELECT * FROM windows ORDER BY window_start DESC LIMIT ?) "
                    "WHERE status = 'failed' AND attempts < ? AND coalesce(next_attempt_at, '') <= ?",
                    (among, max_attempts, now),
                )
            ]

    def report_paths(self, window_starts: Sequence[str]) -> dict[str, str]:
        """window_start -> its HTML report, for those of `window_starts` that have one."""
        starts = sorted(set(window_starts))
        paths: dict[str, str] = {}
        with self.connect() as conn:
            for i in range(0, len(starts), 500):  # within SQLite's oldest limit on bound variables (999)
                chunk = starts[i : i + 500]
                paths.update(
                    conn.execute(
                        f"SELECT window_start, html_path FROM windows WHERE html_path IS NOT NULL AND window_start IN "
                        f"({', '.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                )
        return paths

    # -- daily runs: one notebook per session and job (off_book, session), see scheduling.DAILY_JOBS --
    def daily_run(self, job: str, trade_date: str) -> dict | None:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT * FROM daily_runs WHERE job = ? AND trade_date = ?", (job, trade_date)
            ).fetchone()
        return dict(row) if row else None

    def record_daily_run(self, job: str, trade_date: str, outcome: RunOutcome, attempt: bool = True) -> None:
        """Record how a daily job's run ended (`outcome.status`: ok, waiting, the data not
        published, or failed); `attempt=False` spends no attempt (waiting for the data)."""
        with self.connect() as conn:
            conn.execute(
                "INSERT INTO daily_runs (job, trade_date, status) VALUES (?, ?, ?) "
                "ON CONFLICT (job, trade_date) DO NOTHING",
                (job, trade_date, outcome.status),
            )
            status, *rest = outcome.columns()
            conn.execute(
                "UPDATE daily_runs SET status = ?, attempts = attempts + ?, finished_at = ?, duration_s = ?, "
                "notebook_path = ?, html_path = ?, alerts = ?, summary = ?, last_error = ?, next_attempt_at = ? "
                "WHERE job = ? AND trade_date = ?",
                (status, int(attempt), *rest, job, trade_date),
            )

    def daily_runs(self, job: str | None = None, limit: int = 400) -> pd.DataFrame:
        query, params = "SELECT * FROM daily_runs", []
        if job:
            query, params = query + " WHERE job = ?", [job]
        with self.connect() as conn:
            return pd.read_sql_query(query + " ORDER BY trade_date DESC LIMIT ?", conn, params=[*params, limit])

    # -- health conditions (nqflow.ops.health): first seen, raised, cleared --------------------------
    def health_states(self, active_only: bool = True) -> dict[str, dict]:
        query = "SELECT * FROM health" + (" WHERE cleared_at IS NULL" if active_only else "")
        with self.connect() as conn:
            return {row["key"]: dict(row) for row in conn.execute(query).fetchall()}

    def update_health(self, conditions: list, now: str, scope: str = "") -> tuple[list, list]:
        """Record the conditions holding at `now` (`nqflow.ops.health.Condition`); returns those raised
        now and those cleared now, each with the time it was raised. A condition is raised once it
        has held for its delay; one that ends before that is forgotten.

        Each process judges its own conditions: `scope` "live" is the live stream's (keys
        ``live:...``), "" the window loop's (every other key), so neither clears the other's."""
        raised, cleared = [], []
        current = {c.key: c for c in conditions}
        with self.connect() as conn:
            active = {
                row["key"]: dict(row)
                for row in conn.execute("SELECT * FROM health WHERE cleared_at IS NULL")
                if health_scope(row["key"]) == scope
            }
            for key, condition in current.items():
                row = active.get(key)
                if row is None:
                    conn.execute(
                        "INSERT OR REPLACE INTO health (key, verdict, title, detail, observed_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (key, condition.verdict.name.lower(), condition.title, condition.detail, now),
                    )
                    row = {"observed_at": now, "raised_at": None}
                if row["raised_at"] is None and pd.Timestamp(now) - pd.Timestamp(row["observed_at"]) >= condition.delay:
                    conn.execute(
                        "UPDATE health SET raised_at = ?, title = ?, detail = ? WHERE key = ?",
                        (now, condition.title, condition.detail, key),
                    )
                    raised.append((condition, now))
            for key, row in active.items():
                if key in current:
                    continue
                if row["raised_at"] is None:
                    conn.execute("DELETE FROM health WHERE key = ?", (key,))
                else:
                    conn.execute("UPDATE health SET cleared_at = ? WHERE key = ?", (now, key))
                    cleared.append((row, row["raised_at"]))
        return raised, cleared

    # -- alerts and the outbox -------------------------------------------------------------
    def record_alerts(
        self, alerts: Sequence[Alert], channels: list[str], now: str, suppressed: dict[str, str] | None = None
    ) -> list[Alert]:
        """Record alerts and queue a delivery per channel, in one transaction; returns only alerts
        not seen before. Alerts in `suppressed` (id -> reason) are kept in the
        history but their deliveries are recorded as 'suppressed' instead of queued. Every alert
        is checked and stored in its one JSON form (`Alert.to_json`)."""
        suppressed = suppressed or {}
        new: list[Alert] = []
        with self.connect() as conn:
            for record, alert in ((a, a.to_json()) for a in alerts):
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO alerts (alert_id, window_start, kind, level, symbol, confidence, label, "
                    "event_time, payload, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        alert["alert_id"],
                        alert["window_start"],
                        alert["kind"],
                        alert["level"],
                        alert["symbol"],
                        alert["confidence"],
                        alert["label"],
                        alert["event_time"],
                        json.dumps(alert),
                        now,
                    ),
                )
                if cursor.rowcount:
                    new.append(record)
                    reason = suppressed.get(alert["alert_id"])
                    conn.executemany(
                        "INSERT OR IGNORE INTO deliveries (alert_id, channel, status, last_error) VALUES (?, ?, ?, ?)",
                        [
                            (alert["alert_id"], channel, "suppressed" if reason else "pending", reason)
                            for channel in channels
                        ],
                    )
        return new

    def record_notes(self, note: str, trade_date: str, rows: Sequence[dict], now: str) -> int:
        """Keep `note` rows (each with its ``alert_id``) beside their alerts; a later reading of
        the same note replaces the earlier one. Returns how many rows were new."""
        with self.connect() as conn:
            known = {
                r[0]
                for r in conn.execute(
                    "SELECT alert_id FROM alert_notes WHERE note = ? AND trade_date = ?", (note, trade_date)
                )
            }
            conn.executemany(
                "INSERT OR REPLACE INTO alert_notes (alert_id, note, trade_date, payload, recorded_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(row["alert_id"], note, trade_date, json.dumps(row), now) for row in rows],
            )
        return len({row["alert_id"] for row in rows} - known)

    def notes(self, note: str, trade_date: str | None = None) -> dict[str, dict]:
        """Alert id -> the `note` kept beside it (of one session, or all)."""
        query, params = "SELECT alert_id, payload FROM alert_notes WHERE note = ?", [note]
        if trade_date:
            query += " AND trade_date = ?"
            params.append(trade_date)
        with self.connect() as conn:
            return {r[0]: json.loads(r[1]) for r in conn.execute(query, params)}

    def requeue_daily(self, job: str, trade_date: str, now: str, why: str) -> bool:
        """Have a session's finished `job` run again (its report is out of date: `why`); False
        when it has not run yet (it will, with what is known then)."""
        with self.connect() as conn:
            cursor = conn.execute(
                "UPDATE daily_runs SET status = 'waiting', next_attempt_at = ?, last_error = ? "
                "WHERE job = ? AND trade_date = ? AND status = 'ok'",
                (now, why, job, trade_date),
            )
        return bool(cursor.rowcount)

    def channels_that_carried(self, alert_ids: Sequence[str]) -> list[str]:
        """The channels that delivered (or still owe) at least one of these alerts."""
        if not alert_ids:
            return []
        marks = ",".join("?" * len(alert_ids))
        with self.connect() as conn:
            rows = conn.execute(
                f"SELECT DISTINCT channel FROM deliveries WHERE alert_id IN ({marks}) "
                "AND status IN ('sent', 'pending', 'sending', 'in_doubt')",
                list(alert_ids),
            ).fetchall()
        return sorted(r[0] for r in rows)

    def surges_sent_since(self, since: str) -> list[Alert]:
        """Volume-surge alerts from windows starting at or after `since` that were queued for
        delivery on some channel (not suppressed as repeats): what escalation compares against."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT a.payload FROM alerts a WHERE a.kind = 'volume_surge' AND a.window_start >= ? AND EXISTS "
                "(SELECT 1 FROM deliveries d WHERE d.alert_id = a.alert_id AND d.status != 'suppressed') "
                "ORDER BY a.window_start",
                (since,),
            ).fetchall()
        return _read_alerts(rows)

    def alerts(
        self,
        since: str | None = None,
        kind: str | None = None,
        min_confidence: float = 0.0,
        window_start: str | None = None,
        until: str | None = None,
    ) -> list[Alert]:
        """Recorded alerts, newest window first; `since` / `until` bound window_start ([since, until))."""
        query = "SELECT payload FROM alerts WHERE confidence >= ?"
        params: list[object] = [min_confidence]
        if since:
            query += " AND window_start >= ?"
            params.append(since)
        if until:
            query += " AND window_start < ?"
            params.append(until)
        if kind:
            query += " AND kind = ?"
            params.append(kind)
        if window_start:
            query += " AND window_start = ?"
            params.append(window_start)
        with self.connect() as conn:
            rows = conn.execute(query + " ORDER BY window_start DESC, confidence DESC", params).fetchall()
        return _read_alerts(rows)

    def channels_with_outbox(self) -> set[str]:
        """The channels with a delivery pending or begun (`sending`): the others have nothing to
        send or to settle, and a sender's pass asks no more of them."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT DISTINCT channel FROM deliveries WHERE status IN ('pending', 'sending')"
            ).fetchall()
        return {r[0] for r in rows}

    def due_deliveries(self, channel: str, now: str, max_attempts: int) -> list[Alert]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT a.payload FROM deliveries d JOIN alerts a USING (alert_id) WHERE d.channel = ? AND "
                "d.status = 'pending' AND d.attempts < ? AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= ?) "
                "ORDER BY a.window_start, a.confidence DESC",
                (channel, max_attempts, now),
            ).fetchall()
        return _read_alerts(rows)

    def mark_sending(self, alert_ids: list[str], channel: str) -> None:
        """Say, before a channel is asked to send these, that the send has begun: a row still
        'sending' when the next sender takes the lock was cut short by a crash (`in_flight`)."""
        with self.connect() as conn:
            conn.executemany(
                "UPDATE deliveries SET status = 'sending' WHERE alert_id = ? AND channel = ?",
                [(a, channel) for a in alert_ids],
            )

    def in_flight(self, channel: str) -> list[Alert]:
        """Alerts a sender began to send on `channel` and never recorded as sent or failed."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT a.payload FROM deliveries d JOIN alerts a USING (alert_id) WHERE d.channel = ? AND "
                "d.status = 'sending' ORDER BY a.window_start, a.confidence DESC",
                (channel,),
            ).fetchall()
        return _read_alerts(rows)

    def mark_pending(self, alert_ids: list[str], channel: str) -> None:
        with self.connect() as conn:
            conn.executemany(
                "UPDATE deliveries SET status = 'pending' WHERE alert_id = ? AND channel = ?",
                [(a, channel) for a in alert_ids],
            )

    def mark_in_doubt(self, alert_ids: list[str], channel: str, reason: str) -> None:
        with self.connect() as conn:
            conn.executemany(
                "UPDATE deliveries SET status = 'in_doubt', last_error = ? WHERE alert_id = ? AND channel = ?",
                [(reason, a, channel) for a in alert_ids],
            )

    def mark_delivered(self, alert_ids: list[str], channel: str, now: str) -> None:
        with self.connect() as conn:
            conn.executemany(
                "UPDATE deliveries SET status = 'sent', attempts = attempts + 1, delivered_at = ?, "
                "last_error = NULL WHERE alert_id = ? AND channel = ?",
                [(now, a, channel) for a in alert_ids],
            )

    def mark_failed(self, alert_ids: list[str], channel: str, error: str, next_attempt_at: str) -> None:
        with self.connect() as conn:
            conn.executemany(
                "UPDATE deliveries SET status = 'pending', attempts = attempts + 1, last_error = ?, "
                "next_attempt_at = ? WHERE alert_id = ? AND channel = ?",
                [(error, next_attempt_at, a, channel) for a in alert_ids],
            )

    def mark_skipped(self, alert_ids: list[str], channel: str, reason: str) -> None:
        with self.connect() as conn:
            conn.executemany(
                "UPDATE deliveries SET status = 'skipped', last_error = ? WHERE alert_id = ? AND channel = ?",
                [(reason, a, channel) for a in alert_ids],
            )

    def deliveries(self) -> pd.DataFrame:
        with self.connect() as conn:
            return pd.read_sql_query("SELECT * FROM deliveries ORDER BY alert_id, channel", conn)

    def pending_deliveries(self) -> pd.DataFrame:
        """The deliveries still to be made (`deliveries`' columns): a failed one stays pending with
        its error until it is sent (`nqflow.ops.notify`)."""
        with self.connect() as conn:
            return pd.read_sql_query(
                "SELECT * FROM deliveries WHERE status = 'pending' ORDER BY alert_id, channel", conn
            )


def _read_alerts(rows: Sequence[tuple]) -> list[Alert]:
    """Alerts from their stored JSON (the first column of each row)."""
    return [Alert.from_json(json.loads(r[0])) for r in rows]


def recorded_alerts(config, state_db: str, trade_date: dt.date) -> pd.DataFrame:
    """The market alerts recorded for session `trade_date` in the state database (ALERT_FIELDS),
    the off-book ones of that session included; none when there is no database yet."""
    path = resolve(state_db or config.data.state_db)
    if not path.exists():
        return pd.DataFrame(columns=ALERT_FIELDS)
    market_open, market_close = session_bounds(trade_date)
    rows = StateStore(path).alerts(since=market_open.isoformat(), until=market_close.isoformat())
    # the market's alerts: health alerts are about the monitor, and live in the index
    market = [a.to_json() for a in rows if a.kind not in (Kind.HEALTH, Kind.CONFIRMATION)]
    return pd.DataFrame(market, columns=ALERT_FIELDS)


def recorded_notes(config, state_db: str, note: str, trade_date: dt.date) -> dict[str, dict]:
    """Alert id -> the `note` recorded beside it for session `trade_date` (`StateStore.notes`);
    none when there is no database yet."""
    path = resolve(state_db or config.data.state_db)
    return StateStore(path).notes(note, str(trade_date)) if path.exists() else {}
