"""Detection quality against the sample market's planted events (ground truth).

An alert *matches* a planted event when it lies in the event's window and touches the
event's instruments (any instrument for a product-wide or 0DTE-wide surge). Recall is
counted per planted kind for events at or above the configured thresholds; an alert that
matches no planted event is a false alert.

A worked order (one party's child orders on one option) is matched by its option and time
instead of its window: the window where its running total crosses the threshold depends on
the threshold. Two-sided decoys (a market maker trading both sides of one option at a similar
size) must raise nothing: any alert on one is a false alert, counted as ``decoys_alerted``.

Planted trades also carry whether they opened or closed positions; with the next-morning
confirmations (`nqflow.engine.positions`) each found event's verdict is checked against it.

Strategy packages are also checked for how they were read: the strategy named right, the
sentiment right (a delta-neutral package is a volatility trade), and never *misread*: a
package's legs reported as directional single-leg alerts (a large order, a sweep or an
instrument surge on a leg, in the package's window).
"""

from __future__ import annotations

import pandas as pd

from nqflow.alerts import Direction, Kind, Level
from nqflow.config import Config
from nqflow.market import hours as cal

EXPECTED_KIND = {
    "block": Kind.LARGE_ORDER,
    "sweep": Kind.SWEEP,
    "strategy": Kind.STRATEGY,
    "surge_instrument": Kind.VOLUME_SURGE,
    "surge_expiry": Kind.VOLUME_SURGE,
    "surge_product": Kind.VOLUME_SURGE,
    "off_book": Kind.OFF_BOOK,
    "worked": Kind.WORKED_ORDER,
}
ORDER_KINDS = ("block", "sweep", "strategy", "worked")  # alert at large_premium_usd
SPANNING = ("worked", "two_sided")  # matched by instrument and time span, not by window
EXPECTED_LEVEL = {"surge_product": Level.PRODUCT, "surge_expiry": Level.EXPIRY}


def expected_events(truth: dict, config: Config, sessions: list[str] | None = None) -> pd.DataFrame:
    """Planted events the engine should alert on under `config`, with the expected kind and tier."""
    events = pd.DataFrame(truth["events"])
    if sessions is not None:
        events = events[events["session"].isin(sessions)]
    t = config.thresholds
    premium = events.get("premium_usd", pd.Series(float("nan"), index=events.index))
    is_order = events["kind"].isin(ORDER_KINDS)
    off_book = events["kind"] == "off_book"
    ratio = events.get("ratio", pd.Series(float("nan"), index=events.index))
    events = events.assign(
        expected_kind=events["kind"].map(EXPECTED_KIND),
        should_alert=(is_order & (premium >= t.large_premium_usd) & (events["kind"] != "two_sided"))
        | (off_book & (premium >= t.off_book_premium_usd))
        | (~is_order & ~off_book & ratio.ge(t.surge_tiers[0])),
    )
    return events


def matches(alert: dict, event: pd.Series) -> bool:
    if event["kind"] in SPANNING:  # one party's (or a market maker's) orders over several windows
        return (
            pd.Timestamp(event["first_time"]) <= pd.Timestamp(alert["event_time"]) <= pd.Timestamp(event["last_time"])
            and bool(set(alert["instrument_ids"] or []) & set(event["instrument_ids"]))
            and alert["kind"] != Kind.OFF_BOOK
        )
    if alert["window_start"] != event["window_start"]:
        return False
    if (event["kind"] == "off_book") != (alert["kind"] == Kind.OFF_BOOK):  # a session-wide alert, not a window's
        return False
    if event["kind"] == "surge_product":
        return True
    if event["kind"] == "surge_expiry":
        return (
            alert["kind"] != Kind.VOLUME_SURGE
            or alert["level"] != Level.EXPIRY
            or alert["symbol"] == event["expiry"]
            or bool(set(alert["instrument_ids"] or []) & set(event["instrument_ids"]))
        )
    return bool(set(alert["instrument_ids"] or []) & set(event["instrument_ids"]))


def misread(alert: dict, event: pd.Series) -> bool:
    """A planted package's leg reported as a directional single-leg alert in its window."""
    return (
        event["kind"] == "strategy"
        and alert["window_start"] == event["window_start"]
        and (
            alert["kind"] in (Kind.LARGE_ORDER, Kind.SWEEP)
            or (alert["kind"] == Kind.VOLUME_SURGE and alert["level"] == Level.INSTRUMENT)
        )
        and bool(set(alert["instrument_ids"] or []) & set(event["instrument_ids"]))
    )


def _windows_spanned(event: pd.Series, minutes: int) -> list[str]:
    first = pd.Timestamp(event["first_time"]).floor(f"{minutes}min")
    return [w.isoformat() for w in pd.date_range(first, pd.Timestamp(event["last_time"]), freq=f"{minutes}min")]


def events_by_window(events: pd.DataFrame, minutes: int = 15) -> dict[str, list[pd.Series]]:
    """Planted events by the windows an alert about them can lie in: their own, or every window
    a worked order (or a decoy) spans."""
    out: dict[str, list[pd.Series]] = {}
    for _, event in events.iterrows():
        for window in _windows_spanned(event, minutes) if event["kind"] in SPANNING else [event["window_start"]]:
            out.setdefault(window, []).append(event)
    return out


def evaluate(
    alerts: pd.DataFrame,
    truth: dict,
    config: Config,
    sessions: list[str],
    confirmations: pd.DataFrame | None = None,
) -> dict:
    """Recall per kind, tier and direction accuracy, false alerts per session, and (with the
    alerts' `confirmations`: alert_id, verdict) the verdicts against the planted positions."""
    events = expected_events(truth, config, sessions)
    records = alerts.to_dict("records")
    verdicts = (
        dict(zip(confirmations["alert_id"], confirmations["verdict"]))
        if confirmations is not None and len(confirmations)
        else {}
    )
    # An alert can only match an event of its own window: index both by window once.
    records_by_window: dict[str, list[dict]] = {}
    for a in records:
        records_by_window.setdefault(a["window_start"], []).append(a)
    found = _match_events(events, records_by_window, verdicts, config.schedule.interval_minutes)
    by_window = events_by_window(events, config.schedule.interval_minutes)
    matched_ids = {
        a["alert_id"]
        for a in records
        if any(matches(a, e) and e["kind"] != "two_sided" for e in by_window.get(a["window_start"], ()))
    }
    false_alerts = [a for a in records if a["alert_id"] not in matched_ids]
    quiet = set(truth.get("quiet_sessions", [])) & set(sessions)
    # By session, not by the UTC date of window_start: a session opens the evening before its trade date.
    quiet_alerts = [a for a in records if _session_of(a) in quiet]
    return {
        "sessions": len(sessions),
        **_figures(found, alerts, verdicts),
        "alerts": len(records),
        "false_alerts": len(false_alerts),
        "false_alerts_per_session": round(len(false_alerts) / max(len(sessions), 1), 3),
        "quiet_session_alerts": len(quiet_alerts),
        "missed": found[found["should_alert"] & ~found["found"]]["event_id"].tolist(),
        "false_alert_ids": [a["alert_id"] for a in false_alerts],
        "per_event": found,
    }


def _match_events(
    events: pd.DataFrame, records_by_window: dict[str, list[dict]], verdicts: dict, minutes: int
) -> pd.DataFrame:
    """Each planted event with the alert that found it (the first of the right kind and level)."""

    def candidates(event: pd.Series) -> list[dict]:
        if event["kind"] not in SPANNING:
            return list(records_by_window.get(event["window_start"], ()))
        return [a for w in _windows_spanned(event, minutes) for a in records_by_window.get(w, ())]

    found = []
    for _, event in events.iterrows():
        hits = [a for a in candidates(event) if matches(a, event)]
        level = EXPECTED_LEVEL.get(event["kind"])
        if event["kind"] == "off_book":
            package = event.get("package")
            level = Level.PACKAGE if package is not None and pd.notna(package) and bool(package) else Level.INSTRUMENT
        right_kind = [a for a in hits if a["kind"] == event["expected_kind"] and a["level"] == (level or a["level"])]
        best = right_kind[0] if right_kind else None
        # Off-book trades carry no aggressor: the right direction is UNKNOWN.
        side_direction = Direction.of_side(event.get("side"))
        is_strategy = event["kind"] == "strategy"
        found.append(
            {
                "event_id": event["event_id"],
                "kind": event["kind"],
                "should_alert": bool(event["should_alert"]),
                "found": best is not None,
                "alert_id": best["alert_id"] if best else None,
                "direction_ok": bool(best and best["direction"] == side_direction),
                "tier_expected": event.get("tier"),
                "tier_found": best["tier"] if best else None,
                "confidence": best["confidence"] if best else None,
                "zero_dte": bool(event.get("zero_dte") is True),
                "strategy_ok": bool(best and best.get("strategy") == event["strategy"]) if is_strategy else None,
                "sentiment_ok": bool(best and best.get("sentiment") == event["sentiment"]) if is_strategy else None,
                "misread": any(misread(a, event) for a in records_by_window.get(event["window_start"], ()))
                if is_strategy
                else None,
                "alerted": len(hits),
                "position": _text(event.get("position")),
                "verdict": verdicts.get(best["alert_id"]) if best else None,
            }
        )
    return pd.DataFrame(found)


def _rate(values: pd.Series) -> float | None:
    return round(float(values.mean()), 3) if len(values) else None


def _figures(found: pd.DataFrame, alerts: pd.DataFrame, verdicts: dict) -> dict:
    """The figures over the matched events: recall, strategies, worked orders, decoys, verdicts."""
    decoys = found[found["kind"] == "two_sided"]
    worked = found[(found["kind"] == "worked") & found["should_alert"]]
    graded = found[
        found["found"] & found["position"].isin(["opening", "closing", "unknown"]) & found["verdict"].notna()
    ]
    by_kind = {}
    if verdicts:
        confirmed = alerts[alerts["alert_id"].isin(verdicts)].assign(verdict=lambda f: f["alert_id"].map(verdicts))
        by_kind = {
            str(kind): round(float((group["verdict"] == "opening").mean()), 3)
            for kind, group in confirmed.groupby("kind")
        }
    positives = found[found["should_alert"]]
    recall = positives.groupby("kind")["found"].mean().to_dict() if len(positives) else {}
    surges = positives[positives["kind"].str.startswith("surge") & positives["found"]]
    strategies = found[found["kind"] == "strategy"]
    found_strategies = strategies[strategies["found"]]
    return {
        "events": int(len(found)),
        "positives": int(len(positives)),
        "strategy_named_right": _rate(found_strategies["strategy_ok"]),
        "strategy_sentiment_right": _rate(found_strategies["sentiment_ok"]),
        "misread_rate": _rate(strategies["misread"]),
        "worked_recall": _rate(worked["found"]),
        "worked_orders": int(len(worked)),
        "decoys": int(len(decoys)),
        "decoys_alerted": int((decoys["alerted"] > 0).sum()) if len(decoys) else 0,
        "verdicts_graded": int(len(graded)),
        "verdicts_right": _rate(graded["position"] == graded["verdict"]),
        "verdicts_wrong": graded[graded["position"] != graded["verdict"]]["event_id"].tolist(),
        "opening_share_by_kind": by_kind,
        "zero_dte_recall": _rate(positives[positives["zero_dte"]]["found"]),
        "recall_by_kind": {k: round(v, 3) for k, v in recall.items()},
        "recall": _rate(positives["found"]),
        "direction_accuracy": _rate(positives[positives["found"]]["direction_ok"])
        if positives["found"].any()
        else None,
        "tier_accuracy": _rate(surges["tier_expected"] == surges["tier_found"]),
        "below_threshold_alerted": int(found[~found["should_alert"] & found["found"]].shape[0]),
    }


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _session_of(alert: dict) -> str | None:
    session = cal.session_of(pd.Timestamp(alert["window_start"]))
    return str(session[0]) if session else None
