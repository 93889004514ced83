"""outputs/index.html: the page a reader opens first.

Sessions newest first (alert counts by kind, the session report, the off-book report), then
every recorded alert in one table that sorts and filters in the browser (kind, label, product,
expiry, direction, next-morning verdict, minimum premium), each row linking to the report it
came from (a worked order with its final total when more child orders followed its alert), then
every window with its status. Self-contained: inline style and script, nothing fetched.
"""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from pathlib import Path

import pandas as pd

from nqflow.alerts import usd
from nqflow.market import hours as cal

#: What the alert table filters on, each a data- attribute of its rows (``verdict``: the next
#: morning's confirmation, opening / closing / mixed / unknown, once the open interest is out).
FILTERS = ("kind", "label", "product", "expiry", "direction", "verdict")

SCRIPT = """
const table = document.getElementById('alerts');
const rows = Array.from(table.tBodies[0].rows);
const controls = Array.from(document.querySelectorAll('[data-filter]'));
const keys = controls.map(c => c.dataset.filter).filter(key => key !== 'premium');  // the FILTERS
function apply() {
  const wanted = Object.fromEntries(controls.map(c => [c.dataset.filter, c.value]));
  const minimum = parseFloat(wanted.premium || '0') * 1e6 || 0;
  let shown = 0;
  for (const row of rows) {
    const ok = keys.every(
      key => !wanted[key] || row.dataset[key] === wanted[key]) && parseFloat(row.dataset.premium) >= minimum;
    row.hidden = !ok;
    shown += ok ? 1 : 0;
  }
  document.getElementById('shown').textContent = shown + ' of ' + rows.length + ' alerts shown';
}
controls.forEach(c => c.addEventListener('input', apply));
Array.from(table.tHead.rows[0].cells).forEach((th, column) => th.addEventListener('click', () => {
  const numeric = th.dataset.type === 'number';
  const down = th.dataset.order !== 'desc';
  Array.from(table.tHead.rows[0].cells).forEach(other => delete other.dataset.order);
  th.dataset.order = down ? 'desc' : 'asc';
  const key = row => numeric ? parseFloat(row.cells[column].dataset.value || '-1e18') : row.cells[column].textContent;
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (down ? -1 : 1));
  rows.forEach(row => table.tBodies[0].appendChild(row));
}));
apply();
"""

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#24292f}
table{border-collapse:collapse;margin-bottom:2em}
td,th{border:1px solid #d0d7de;padding:4px 8px;font-size:14px}th{background:#f6f8fa}
#alerts th{cursor:pointer}#alerts th[data-order=desc]::after{content:' \\25BC'}
#alerts th[data-order=asc]::after{content:' \\25B2'}
tr.failed td{background:#ffebe9}tr.pending td,tr.waiting td{background:#fff8c5}
td.number{text-align:right;font-variant-numeric:tabular-nums}.filters label{margin-right:1em}"""


def alert_product(alert: dict) -> str:
    """The option product an alert is on: its expiry's root without the month-year code."""
    if alert["kind"] == "health":
        return "(monitor)"
    expiry = alert.get("expiry") or ""
    return expiry[:-2] if len(expiry) > 2 else (str(alert.get("symbol") or "").split(" ")[0] or "all")


def _text(value) -> str:
    """A database text cell for HTML: NULL reads back from pandas as None or NaN, both empty."""
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _final(total: dict | None) -> str:
    """A worked order's final total beside the premium its alert carried, when more children followed."""
    if not total or not total.get("more_children"):
        return ""
    return html.escape(f" (final {usd(total['premium_usd'])} in {total['children']} orders)")


def _session_of(window_start: str) -> str:
    found = cal.session_of(pd.Timestamp(window_start))
    return str(found[0]) if found else window_start[:10]


def write_index(
    outputs_dir: Path,
    windows: pd.DataFrame,
    daily_runs: pd.DataFrame | None = None,
    alerts: list[dict] | None = None,
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
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nqflow: NQ options institutional flow</title>
<style>{STYLE}</style></head>
<body><h1>nqflow: NQ options institutional flow</h1>
<p>Generated {pd.Timestamp.now(tz="UTC"):%Y-%m-%d %H:%M:%S}Z. {len(sessions)} sessions, {len(alerts)} alerts,
{len(windows)} windows.</p>
<h2>Sessions</h2>
<table id="sessions"><thead><tr><th>session</th><th>windows ok</th><th>windows failed</th><th>alerts</th>
<th>by kind</th><th>session report</th><th>off the order book</th><th>dealer positioning</th></tr></thead>
<tbody>{"".join(_session_rows(sessions, windows, daily, link))}</tbody></table>
<h2>Alerts</h2>
<p class="filters">{_filters(options)}<label>premium at least ($M) <input data-filter="premium" type="number" min="0"
step="0.5" value="0" size="6"></label> <span id="shown"></span></p>
<table id="alerts"><thead><tr>{_alert_headers()}</tr></thead><tbody>{"".join(alert_rows)}</tbody></table>
<h2>Windows</h2>
<table id="windows"><thead><tr><th>window start (UTC)</th><th>status</th><th>attempts</th><th>alerts</th>
<th>by kind</th>
<th>max confidence</th><th>report</th><th>notebook</th><th>error</th></tr></thead>
<tbody>{"".join(_window_rows(windows, link))}</tbody></table>
<script>{SCRIPT}</script></body></html>"""
    outputs_dir.mkdir(parents=True, exist_ok=True)
    index = outputs_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


class _Linker:
    """A link to a report relative to the index, or nothing when the file is gone."""

    def __init__(self, outputs_dir: Path):
        self.outputs_dir = outputs_dir

    def __call__(self, path, text: str) -> str:
        # relpath, not relative_to: a report written under an earlier outputs folder still links
        return (
            f'<a href="{html.escape(Path(os.path.relpath(path, self.outputs_dir)).as_posix())}">{text}</a>'
            if isinstance(path, str) and path and Path(path).exists()
            else ""
        )


def _session_counts(windows: pd.DataFrame, daily_runs: pd.DataFrame, alerts: list[dict]) -> dict[str, Counter]:
    """Every session the index knows (from windows, daily jobs and alerts) with its alerts by kind."""
    sessions: dict[str, Counter] = {}
    for w in windows.itertuples(index=False):
        sessions.setdefault(_session_of(w.window_start), Counter())
    for day in daily_runs["trade_date"]:
        sessions.setdefault(day, Counter())
    for alert in alerts:
        sessions.setdefault(_session_of(alert["window_start"]), Counter())[alert["kind"]] += 1
    return sessions


def _session_rows(sessions: dict[str, Counter], windows: pd.DataFrame, daily: dict, link: _Linker) -> list[str]:
    window_status = Counter((_session_of(w.window_start), w.status) for w in windows.itertuples(index=False))
    rows = []
    for day in sorted(sessions, reverse=True):
        counts = sessions[day]
        report, off_book, gex = daily.get(("session", day)), daily.get(("off_book", day)), daily.get(("gex", day))
        rows.append(
            f"<tr><td>{html.escape(day)}</td><td class=number>{window_status[(day, 'ok')]}</td>"
            f"<td class=number>{window_status[(day, 'failed')]}</td><td class=number>{sum(counts.values())}</td>"
            f"<td>{html.escape(', '.join(f'{k} {v}' for k, v in sorted(counts.items())))}</td>"
            f"<td>{link(report.html_path, 'session report') if report is not None else ''}</td>"
            f"<td>{link(off_book.html_path, 'off-book report') if off_book is not None else ''}"
            f"{html.escape(' ' + off_book.status) if off_book is not None and off_book.status != 'ok' else ''}</td>"
            f"<td>{link(gex.html_path, 'dealer gamma') if gex is not None else ''}"
            f"{html.escape(' ' + gex.status) if gex is not None and gex.status != 'ok' else ''}</td></tr>"
        )
    return rows


def _alert_rows(
    alerts: list[dict], windows: pd.DataFrame, daily: dict, notes: dict[str, dict[str, dict]], link: _Linker
) -> tuple[list[str], dict[str, set[str]]]:
    """The alert table's rows, newest first, and every value each filter offers."""
    verdicts, finals = notes.get("confirmation", {}), notes.get("worked_final", {})
    reports = {w.window_start: w.html_path for w in windows.itertuples(index=False)}
    rows: list[str] = []
    options: dict[str, set[str]] = {key: set() for key in FILTERS}
    for alert in sorted(alerts, key=lambda a: a.get("event_time") or a["window_start"], reverse=True):
        if alert["kind"] == "confirmation":  # a follow-up message: its verdicts are on the alerts' rows
            continue
        values = {
            "kind": alert["kind"],
            "label": alert.get("label") or "",
            "product": alert_product(alert),
            "expiry": alert.get("expiry") or "",
            "direction": alert.get("direction") or "",
            "verdict": (verdicts.get(alert["alert_id"]) or {}).get("verdict", ""),
        }
        for key, value in values.items():
            if value:
                options[key].add(value)
        premium = float(alert.get("premium_usd") or 0.0)
        if alert["kind"] == "off_book":
            source = daily.get(("off_book", _session_of(alert["window_start"])))
            where = link(source.html_path, "off-book report") if source is not None else ""
        else:
            where = link(reports.get(alert["window_start"]), "window report")
        dte = alert.get("days_to_expiry")
        data = " ".join(f'data-{k}="{html.escape(v)}"' for k, v in values.items())
        rows.append(
            f'<tr {data} data-premium="{premium:.2f}">'
            f"<td>{html.escape(str(alert.get('event_time') or alert['window_start'])[:19])}</td>"
            f"<td>{html.escape(values['kind'])}</td><td>{html.escape(values['label'])}</td>"
            f'<td class=number data-value="{alert.get("confidence") or 0}">{alert.get("confidence") or 0:.0f}</td>'
            f"<td>{html.escape(values['product'])}</td><td>{html.escape(str(alert.get('symbol') or ''))}</td>"
            f"<td>{html.escape(values['expiry'])}</td>"
            f'<td class=number data-value="{"" if dte is None else dte}">{"" if dte is None else dte}</td>'
            f"<td>{html.escape(values['direction'])}</td>"
            f'<td class=number data-value="{alert.get("volume") or 0}">{alert.get("volume") or 0:,}</td>'
            f'<td class=number data-value="{premium:.2f}">{usd(premium)}{_final(finals.get(alert["alert_id"]))}</td>'
            f"<td>{html.escape(values['verdict'])}</td><td>{where}</td></tr>"
        )
    return rows, options


def _filters(options: dict[str, set[str]]) -> str:
    return "".join(
        f'<label>{key} <select data-filter="{key}"><option value="">all</option>'
        + "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in sorted(options[key]))
        + "</select></label>"
        for key in FILTERS
    )


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


def _alert_headers() -> str:
    return "".join(f'<th data-type="{kind}">{name}</th>' for name, kind in ALERT_COLUMNS)


def _window_rows(windows: pd.DataFrame, link: _Linker) -> list[str]:
    rows = []
    for w in windows.sort_values("window_start", ascending=False).itertuples(index=False):
        summary = json.loads(w.summary) if isinstance(w.summary, str) and w.summary else {}
        by_kind = ", ".join(f"{k} {v}" for k, v in (summary.get("alerts_by_kind") or {}).items())
        rows.append(
            f'<tr class="{html.escape(w.status)}"><td>{html.escape(w.window_start)}</td>'
            f"<td>{html.escape(w.status)}</td><td>{w.attempts}</td>"
            f"<td>{'' if pd.isna(w.alerts) else int(w.alerts)}</td><td>{html.escape(by_kind)}</td>"
            f"<td>{summary.get('max_confidence', '')}</td>"
            f"<td>{link(w.html_path, 'report')}</td><td>{link(w.notebook_path, 'notebook')}</td>"
            f"<td>{html.escape(_text(w.last_error))}</td></tr>"
        )
    return rows
