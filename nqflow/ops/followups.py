"""Follow-up messages: what was learned about a session's alerts after they were sent.

The next morning's open interest tells which alerts opened positions and which closed them
(`nqflow.engine.positions`). The verdicts are kept beside the alerts (``alert_notes``) and sent
once per session as one message, through the same outbox as alerts (never twice, never lost),
on the channels that carried the alerts it follows up. This module builds that message; it
imports no engine, so the scheduler process stays light.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence

from nqflow.alerts import Alert, Direction, Kind, Label, Level, stable_id
from nqflow.config import Confidence
from nqflow.market.frames import session_bounds

VERDICT_ORDER = {"opening": 0, "closing": 1, "mixed": 2, "unknown": 3}


def confirmation_line(row: dict) -> str:
    """One verdict as a sentence, e.g. ``opening: large_order NQH7 C21300, 1,234 contracts: open
    interest +1,180 (12,000 -> 13,180)``."""
    head = f"{row['verdict']}: {row['kind']} {row['symbol']}, {row['volume']:,} contracts"
    if row.get("oi_change") is None:
        return f"{head}: no open interest before and after (expired, or not published)"
    return f"{head}: open interest {row['oi_change']:+,} ({row['oi_before']:,} -> {row['oi_after']:,})"


def confirmation_message(trade_date: str, rows: Sequence[dict], cuts: Confidence) -> Alert:
    """Session `trade_date`'s confirmations as one follow-up (kind ``confirmation``), its reasons
    one line per alert (openings first), with the strongest confirmed alert's confidence and its
    band under the config's cut-offs `cuts` (so a channel that carried that alert carries its
    follow-up)."""
    confidence = max((float(row.get("confidence") or 0.0) for row in rows), default=0.0)
    market_open, market_close = session_bounds(dt.date.fromisoformat(trade_date))
    counts = Counter(row["verdict"] for row in rows)
    ordered = sorted(rows, key=lambda r: (VERDICT_ORDER.get(r["verdict"], 9), -r["volume"]))
    summary = ", ".join(f"{counts[v]} {v}" for v in VERDICT_ORDER if counts[v])
    label = Label.of(confidence, cuts.medium, cuts.high)
    return Alert(
        alert_id=stable_id("confirmation", trade_date),
        kind=Kind.CONFIRMATION,
        level=Level.SESSION,
        window_start=market_open.isoformat(),
        window_end=market_close.isoformat(),
        event_time=market_close.isoformat(),
        symbol=f"session {trade_date}",
        direction=Direction.UNKNOWN,
        volume=int(sum(row["volume"] for row in rows)),
        premium_usd=0.0,
        confidence=round(min(max(confidence, 0.0), 100.0), 1),
        label=label,
        reasons=[f"next-morning open interest for {len(rows)} alert(s): {summary}", *map(confirmation_line, ordered)],
    )
