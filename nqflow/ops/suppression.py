"""Which new alerts not to send: the cooldown on repeated surges.

A policy, not a transport: the scheduler asks it before recording a window's alerts, and the
alerts it names are kept in the history with their deliveries marked 'suppressed'.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from nqflow.alerts import Alert, Kind


def surge_key(alert: Alert) -> tuple[str, str]:
    """What a repeated surge is the same surge of: its level and its instrument / expiry / product."""
    return alert.level, alert.symbol


def repeats_to_suppress(
    new: Sequence[Alert], already_sent: Sequence[Alert], cooldown_minutes: float, confidence_gain: float
) -> dict[str, str]:
    """Surges that repeat one already sent within the cooldown without escalating.

    A surge on the same level and key whose window starts within `cooldown_minutes` of a
    sent one is sent again only with a higher tier, or a confidence at least `confidence_gain`
    points above the highest sent. Other kinds (orders, sweeps) are separate events and always
    go. Returns alert_id -> the reason, worded for the history.
    """
    cooldown = pd.Timedelta(minutes=cooldown_minutes)
    sent: dict[tuple[str, str], list[Alert]] = {}
    for alert in already_sent:
        sent.setdefault(surge_key(alert), []).append(alert)
    suppressed = {}
    for alert in sorted(new, key=lambda a: a.window_start):
        if alert.kind != Kind.VOLUME_SURGE:
            continue
        start = pd.Timestamp(alert.window_start)
        recent = [a for a in sent.get(surge_key(alert), []) if start - cooldown <= pd.Timestamp(a.window_start) < start]
        if recent:
            tier = max(a.tier or 0 for a in recent)
            confidence = max(a.confidence for a in recent)
            if (alert.tier or 0) <= tier and alert.confidence < confidence + confidence_gain:
                suppressed[alert.alert_id] = (
                    f"cooldown: {alert.level} {alert.symbol} already alerted at {tier:g}x / confidence "
                    f"{confidence:.0f} within {cooldown_minutes:g} min; this {alert.tier or 0:g}x / "
                    f"{alert.confidence:.0f} does not escalate"
                )
                continue
        sent.setdefault(surge_key(alert), []).append(alert)
    return suppressed
