"""Threshold lab: how many alerts a threshold would raise, and how many of them were real.

The lab runs one backtest with loose thresholds (`LOOSE`) and then reads curves off its
alerts by filtering: every rule that a threshold controls is a ">= threshold" test on a
column the alert carries, so raising a threshold above the loose value removes exactly the
alerts that fail it:

- ``large_premium_usd`` -> ``premium_usd`` of large_order / sweep / strategy alerts (a package: its gross premium);
- the first surge tier -> ``ratio`` of volume_surge alerts;
- ``instrument_min_volume`` -> ``volume`` of instrument-level surges;
- a confidence cut -> ``confidence`` of every alert.

One caveat, stated in the notebook too: folding (one event, one alert) is decided with the
loose thresholds, so a point on a curve can differ by an alert or two from a backtest run
at that threshold. Confirm the chosen setting with a backtest at that setting.

Against ground truth (the sample market) each point also gets the true alerts (matching a
planted event), precision, and recall of the planted events that threshold should catch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import pandas as pd

from nqflow.alerts import EVENT_KINDS, Kind, Level
from nqflow.config import Config
from nqflow.quality import evaluate, expected_events, matches

#: Overrides for the one loose run the curves are read from (each below its default).
LOOSE = {"thresholds.large_premium_usd": 1_000_000.0, "thresholds.surge_tiers": [5.0, 30.0, 50.0],
         "thresholds.instrument_min_volume": 25}

#: Curve name -> (alert column, kinds it filters, level it filters or None, threshold it stands for).
CURVES = {
    "large_premium_usd": ("premium_usd", EVENT_KINDS, None, "large_premium_usd"),
    "surge_ratio": ("ratio", (Kind.VOLUME_SURGE,), None, "surge_tiers"),
    "instrument_min_volume": ("volume", (Kind.VOLUME_SURGE,), Level.INSTRUMENT, None),
    "confidence": ("confidence", None, None, None),
}


def mark_planted(alerts: pd.DataFrame, truth: dict) -> pd.DataFrame:
    """Add ``planted``: True when an alert matches a planted event of the ground truth."""
    events = pd.DataFrame(truth["events"])
    by_window = {w: group for w, group in events.groupby("window_start")}
    planted = [any(matches(a, e) for _, e in by_window.get(a["window_start"], events.iloc[:0]).iterrows())
               for a in alerts.to_dict("records")]
    return alerts.assign(planted=pd.Series(planted, index=alerts.index, dtype=bool))


def _passes(alerts: pd.DataFrame, curve: str, value: float) -> pd.Series:
    column, kinds, level, _ = CURVES[curve]
    governed = pd.Series(True, index=alerts.index)
    if kinds is not None:
        governed &= alerts["kind"].isin(kinds)
    if level is not None:
        governed &= alerts["level"] == level
    # Alerts the threshold does not govern pass untouched.
    return ~governed | (pd.to_numeric(alerts[column], errors="coerce") >= value)


def current_values(config: Config) -> dict[str, float]:
    """Where each curve's threshold stands in `config` (confidence: no cut)."""
    t = config.thresholds
    return {"large_premium_usd": t.large_premium_usd, "surge_ratio": t.surge_tiers[0],
            "instrument_min_volume": float(t.instrument_min_volume), "confidence": 0.0}


def threshold_curve(alerts: pd.DataFrame, curve: str, values: Iterable[float], config: Config,
                    truth: dict | None = None, sessions: list[str] | None = None) -> pd.DataFrame:
    """Alerts (and, with ground truth, true alerts, precision, recall) at each value of one
    threshold, the other thresholds held at their values in `config`."""
    if curve not in CURVES:
        raise ValueError(f"unknown curve {curve!r}; pick one of {', '.join(CURVES)}")
    others = pd.Series(True, index=alerts.index)
    for name, value in current_values(config).items():
        if name != curve:
            others &= _passes(alerts, name, value)
    alerts = alerts[others]
    rows = []
    for value in values:
        kept = alerts[_passes(alerts, curve, value)]
        row = {"curve": curve, "value": value, "alerts": len(kept)}
        if truth is not None:
            true = int(kept["planted"].sum()) if "planted" in kept else int(mark_planted(kept, truth)["planted"].sum())
            result = evaluate(kept, truth, _config_at(config, curve, value), sessions or [])
            row.update(true_alerts=true, false_alerts=len(kept) - true,
                       precision=round(true / len(kept), 3) if len(kept) else None, recall=result["recall"])
        rows.append(row)
    return pd.DataFrame(rows)


def _config_at(config: Config, curve: str, value: float) -> Config:
    """The config whose expectations (which planted events should alert) match a curve point."""
    threshold = CURVES[curve][3]
    t = config.thresholds
    if threshold == "large_premium_usd":
        t = dataclasses.replace(t, large_premium_usd=float(value))
    elif threshold == "surge_tiers":
        t = dataclasses.replace(t, surge_tiers=(float(value), *t.surge_tiers[1:]))
    return dataclasses.replace(config, thresholds=t)


def summary_table(alerts: pd.DataFrame, truth: dict | None, config: Config, sessions: list[str]) -> dict:
    """Headline figures of one backtest: alerts per kind and, with ground truth, recall and precision."""
    out = {"sessions": len(sessions), "alerts": len(alerts), "by_kind": alerts["kind"].value_counts().to_dict()}
    if truth is not None:
        result = evaluate(alerts, truth, config, sessions)
        planted = mark_planted(alerts, truth)["planted"]
        out.update(recall=result["recall"], recall_by_kind=result["recall_by_kind"],
                   precision=round(float(planted.mean()), 3) if len(alerts) else None,
                   false_alerts_per_session=result["false_alerts_per_session"],
                   expected_events=int(expected_events(truth, config, sessions)["should_alert"].sum()))
    return out
