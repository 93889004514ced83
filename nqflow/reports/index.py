"""outputs/index.html: the page a reader opens first.

Sessions newest first (alert counts by kind, the session report, the off-book report), then
every recorded alert in one table that sorts and filters in the browser (kind, label, product,
expiry, direction, next-morning verdict, minimum premium), each row linking to the report it
came from (a worked order with its final total when more child orders followed its alert), then
every window with its status. Self-contained: inline style and script, nothing fetched.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from nqflow.alerts import Alert, Kind, usd
from nqflow.market import hours as cal
from nqflow.reports.pages import render

#: What the alert table filters on, each a data- attribute of its rows (``verdict``: the next
#: morning's confirmation, opening / closing / mixed / unknown, once the open interest is out).
FILTERS = ("kind", "label", "product", "expiry", "direction", "verdict")


def alert_product(alert: Alert) -> str:
    """The option product an alert is on: its expiry's root without the month-year code."""
    if alert.kind == Kind.HEALTH:
        return "(monitor)"
    expiry = alert.expiry or ""
    return expiry[:-2] if len(expiry) > 2 else (alert.symbol.split(" ")[0] or "all")


def _text(value) -> str:
    """A database text cell for HTML: NULL reads back from pandas as None or NaN, both empty."""
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _final(total: dict | None) -> str:
    """A worked order's final total beside the premium its alert carried, when more children followed."""
    if not total or not total.get("more_children"):
        return ""
    return f" (final {usd(total['premium_usd'])} in {total['children']} orders)"


def _session_of(window_start: str) -> str:
    found = cal.session_of(pd.Timestamp(window_start))
    return str(found[0]) if found else window_start[:10]


def write_index(
    outputs_dir: Path,
    windows: pd.DataFrame,
    daily_runs: pd.DataFrame | None = None,
    alerts: Sequence[Alert] | None = None,
    notes: dict[str, dict[str, dict]] | None = None,
) -> Path:
    """Write outputs/index.html (see the module doc) and return its path. `notes`: what was
    learned about alerts after they were sent (`StateStore.notes`), by note then alert id."""
    notes = notes or {}
    daily_runs = (
        daily_runs
        if daily_runs is not None
        else pd.DataFrame(columns=["job", "trade_date", "status", "html_path", "summary", "alerts", "last_error"])
    )
    alerts = alerts or []
    link = _Linker(outputs_dir)
    daily = {(d.job, d.trade_date): d for d in daily_runs.itertuples(index=False)}
    sessions = _session_counts(windows, daily_runs, alerts)
    alert_rows, options = _alert_rows(alerts, windows, daily, notes, link)
    page = render(
        "index.html.j2",
        generated=f"{pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M:%S}",
        sessions=_session_rows(sessions, windows, daily, link),
        alert_count=len(alerts),
        window_count=len(windows),
        filters=[(key, sorted(options[key])) for key in FILTERS],
        alert_columns=ALERT_COLUMNS,
        alerts=alert_rows,
        windows=_window_rows(windows, link),
    )
    outputs_dir.mkdir(parents=True, exist_ok=True)
    index = outputs_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


class _Linker:
    """A link to a report relative to the index, or nothing when the file is gone."""

    def __init__(self, outputs_dir: Path):
        self.outputs_dir = outputs_dir

    def __call__(self, path, text: str) -> dict[str, str] | None:
        # relpath, not relative_to: a report written under an earlier outputs folder still links
        if isinstance(path, str) and path and Path(path).exists():
            return {"href": Path(os.path.relpath(path, self.outputs_dir)).as_posix(), "text": text}
        return None


def _session_counts(windows: pd.DataFrame, daily_runs: pd.DataFrame, alerts: Sequence[Alert]) -> dict[str, Counter]:
    """Every session the index knows (from windows, daily jobs and alerts) with its alerts by kind."""
    sessions: dict[str, Counter] = {}
    for w in windows.itertuples(index=False):
        sessions.setdefault(_session_of(w.window_start), Counter())
    for day in daily_runs["trade_date"]:
        sessions.setdefault(day, Counter())
    for alert in alerts:
        sessions.setdefault(_session_of(alert.window_start), Counter())[str(alert.kind)] += 1
    return sessions


def _session_rows(sessions: dict[str, Counter], windows: pd.DataFrame, daily: dict, link: _Linker) -> list[dict]:
    window_status = Counter((_session_of(w.window_start), w.status) for w in windows.itertuples(index=False))
    rows = []
    for day in sorted(sessions, reverse=True):
        counts = sessions[day]
        report, off_book, gex = daily.get(("session", day)), daily.get(("off_book", day)), daily.get(("gex", day))
        rows.append(
            {
                "day": day,
                "ok": window_status[(day, "ok")],
                "failed": window_status[(day, "failed")],
                "alerts": sum(counts.values()),
                "by_kind": ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
                "report": link(report.html_path, "session report") if report is not None else None,
                "off_book": link(off_book.html_path, "off-book report") if off_book is not None else None,
                "off_book_status": off_book.status if off_book is not None and off_book.status != "ok" else "",
                "gex": link(gex.html_path, "dealer gamma") if gex is not None else None,
                "gex_status": gex.status if gex is not None and gex.status != "ok" else "",
            }
        )
    return rows


def _alert_rows(
    alerts: Sequence[Alert], windows: pd.DataFrame, daily: dict, notes: dict[str, dict[str, dict]], link: _Linker
) -> tuple[list[dict], dict[str, set[str]]]:
    """The alert table's rows, newest first, and every value each filter offers."""
    verdicts, finals = notes.get("confirmation", {}), notes.get("worked_final", {})
    reports = {w.window_start: w.html_path for w in windows.itertuples(index=False)}
    rows: list[dict] = []
    options: dict[str, set[str]] = {key: set() for key in FILTERS}
    for alert in sorted(alerts, key=lambda a: a.event_time or a.window_start, reverse=True):
        if alert.kind == Kind.CONFIRMATION:  # a follow-up message: its verdicts are on the alerts' rows
            continue
        values = {
            "kind": str(alert.kind),
            "label": str(alert.label),
            "product": alert_product(alert),
            "expiry": alert.expiry or "",
            "direction": str(alert.direction),
            "verdict": (verdicts.get(alert.alert_id) or {}).get("verdict", ""),
        }
        for key, value in values.items():
            if value:
                options[key].add(value)
        premium = alert.premium_usd
        if alert.kind == Kind.OFF_BOOK:
            source = daily.get(("off_book", _session_of(alert.window_start)))
            where = link(source.html_path, "off-book report") if source is not None else None
        else:
            where = link(reports.get(alert.window_start), "window report")
        dte = alert.days_to_expiry
        confidence = alert.confidence
        rows.append(
            {
                "data": list(values.items()),
                "premium_value": f"{premium:.2f}",
                "time": (alert.event_time or alert.window_start)[:19],
                "kind": values["kind"],
                "label": values["label"],
                "confidence": confidence,
                "confidence_text": f"{confidence:.0f}",
                "product": values["product"],
                "symbol": alert.symbol,
                "expiry": values["expiry"],
                "dte": "" if dte is None else dte,
                "direction": values["direction"],
                "volume": alert.volume,
                "volume_text": f"{alert.volume:,}",
                "premium": usd(premium),
                "final": _final(finals.get(alert.alert_id)),
                "verdict": values["verdict"],
                "report": where,
            }
        )
    return rows, options


ALERT_COLUMNS = (
    ("event time (UTC)", "text"),
    ("kind", "text"),
    ("label", "text"),
    ("confidence", "number"),
    ("product", "text"),
    ("symbol", "text"),
    ("expiry", "text"),
    ("days to expiry", "number"),
    ("direction", "text"),
    ("volume", "number"),
    ("premium", "number"),
    ("opened / closed", "text"),
    ("report", "text"),
)


def _window_rows(windows: pd.DataFrame, link: _Linker) -> list[dict]:
    rows = []
    for w in windows.sort_values("window_start", ascending=False).itertuples(index=False):
        summary = json.loads(w.summary) if isinstance(w.summary, str) and w.summary else {}
        rows.append(
            {
                "start": w.window_start,
                "status": w.status,
                "attempts": w.attempts,
                "alerts": "" if pd.isna(w.alerts) else int(w.alerts),
                "by_kind": ", ".join(f"{k} {v}" for k, v in (summary.get("alerts_by_kind") or {}).items()),
                "max_confidence": summary.get("max_confidence", ""),
                "report": link(w.html_path, "report"),
                "notebook": link(w.notebook_path, "notebook"),
                "error": _text(w.last_error),
            }
        )
    return rows
