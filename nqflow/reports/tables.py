"""Tables as a trader reads them: no index column, headers in words, money as $4.44M, counts
with separators, times as UTC clock times to the millisecond, alert kinds in words, sides as
BUY / SELL / UNKNOWN, reasons as sentences, nothing shown as NaN, and every table wrapping to the
page instead of scrolling sideways."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from nqflow.alerts import Direction, usd

#: Column names as a reader says them (anything else: underscores become spaces, `_usd` goes).
HEADERS = {
    "event_time": "time (UTC)",
    "ts_event": "time (UTC)",
    "premium_usd": "premium",
    "side": "aggressor",
    "days_to_expiry": "days to expiry",
    "open_interest": "open interest",
    "volume_oi": "volume / OI",
    "net_premium_usd": "net premium",
    "gross_premium_usd": "gross premium",
    "put_call": "call / put",
    "oi_before": "OI before",
    "oi_after": "OI after",
    "oi_change": "OI change",
    "child_orders": "child orders",
    "first_time": "first child (UTC)",
    "last_time": "last child (UTC)",
    "alert_children": "children at the alert",
    "alert_premium_usd": "premium at the alert",
    "children": "children in all",
    "opened_or_closed": "opened / closed",
}

#: The page's CSS for tables: wrap long text, fit the page, no sideways scroll.
TABLE_STYLES = [
    {"selector": "", "props": "width: 100%; max-width: 100%; table-layout: auto; border-collapse: collapse;"},
    {"selector": "th", "props": "text-align: left; white-space: normal; padding: 2px 6px;"},
    # break-word, not anywhere: a long word may break, but a short one ("UNKNOWN") keeps its column wide enough
    {
        "selector": "td",
        "props": "text-align: left; white-space: normal; overflow-wrap: break-word; "
        "word-break: normal; padding: 2px 6px; vertical-align: top;",
    },
]


def sentences(reasons: Iterable[str] | str | None) -> str:
    """Reasons (a list of clauses) as sentences: capitalised, each ending with a full stop."""
    if reasons is None or (isinstance(reasons, float) and math.isnan(reasons)):
        return ""
    items = [reasons] if isinstance(reasons, str) else list(reasons)
    return " ".join(f"{r[:1].upper()}{r[1:]}{'' if r.rstrip().endswith('.') else '.'}" for r in items if r)


def _cell(column: str, value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return ""
    if isinstance(value, (list, tuple)):
        return sentences(value) if column == "reasons" else ", ".join(map(str, value))
    if column.endswith("_usd"):
        return usd(float(value))  # type: ignore[arg-type]
    if column in ("side", "aggressor"):
        return Direction.of_side(value).value
    if column in (
        "event_time",
        "ts_event",
        "first_time",
        "last_time",
    ):  # a report covers one window or session: its date is in the title
        ts = pd.Timestamp(value).tz_convert("UTC")
        return f"{ts:%H:%M:%S}.{ts.microsecond // 1000:03d}Z"
    if column == "kind":
        return str(value).replace("_", " ")
    if column in ("confidence",):
        return f"{float(value):.0f}"  # type: ignore[arg-type]
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer() and column != "price"):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def readable(frame: pd.DataFrame, empty: str = "none") -> Styler:
    """`frame` for reading (see the module doc); an empty frame is one line saying why (`empty`)."""
    if frame.empty:
        frame = pd.DataFrame({"": [empty]})
    table = pd.DataFrame({column: [_cell(str(column), v) for v in frame[column]] for column in frame.columns})
    table.columns = [HEADERS.get(str(c), str(c).removesuffix("_usd").replace("_", " ")) for c in frame.columns]
    return table.style.hide(axis="index").set_table_styles(TABLE_STYLES)
