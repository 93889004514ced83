"""The alert record: JSON-safe conversion for scrapbook, and validation when read back."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from nqflow.detect import ALERT_FIELDS
from nqflow.errors import DataError

KINDS = ("large_order", "sweep", "strategy", "volume_surge")
LEVELS = ("instrument", "expiry", "product", "package")
LABELS = ("LOW", "MEDIUM", "HIGH")
REQUIRED = {"alert_id": str, "kind": str, "level": str, "window_start": str, "window_end": str,
            "event_time": str, "symbol": str, "direction": str, "volume": int, "premium_usd": float,
            "confidence": float, "label": str, "reasons": list}


def plain(value: Any) -> Any:
    """Recursively turn numpy/pandas scalars into JSON-safe Python values."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return plain(value)
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def to_records(alerts: pd.DataFrame) -> list[dict]:
    """Alerts as plain JSON-safe dicts in ALERT_FIELDS order (what the notebook glues)."""
    return [{field: _plain(row.get(field)) for field in ALERT_FIELDS} for row in alerts.to_dict("records")]


def validate(alert: dict) -> dict:
    """Check one alert read back from a notebook's scraps; a bad one is a one-line error."""
    name = alert.get("alert_id", "<no id>") if isinstance(alert, dict) else "<not a dict>"
    if not isinstance(alert, dict):
        raise DataError(f"alert {name} is not a JSON object; the notebook must glue a list of dicts")
    missing = [k for k in ALERT_FIELDS if k not in alert]
    if missing:
        raise DataError(f"alert {name} lacks fields {missing}; glue nqflow.alerts.to_records(...) in the notebook")
    for key, kind in REQUIRED.items():
        value = alert[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else isinstance(value, kind)
        if not ok:
            raise DataError(f"alert {name} field {key} should be {kind.__name__}, got {value!r}")
    if alert["kind"] not in KINDS or alert["level"] not in LEVELS or alert["label"] not in LABELS:
        raise DataError(f"alert {name} has unknown kind/level/label {alert['kind']}/{alert['level']}/{alert['label']}")
    if not 0 <= alert["confidence"] <= 100:
        raise DataError(f"alert {name} confidence {alert['confidence']} is outside [0, 100]")
    return alert


def one_line(alert: dict) -> str:
    """A readable one-line summary (console, log lines, message subjects)."""
    tier = f" {alert['tier']:g}x" if alert.get("tier") else ""
    if alert.get("zero_dte"):
        tier += " 0DTE"
    ratio = f" ratio {alert['ratio']:.1f}x" if alert.get("ratio") and alert["kind"] == "volume_surge" else ""
    return (f"[{alert['label']} {alert['confidence']:.0f}] {alert['kind']}{tier} {alert['level']} {alert['symbol']} "
            f"{alert['direction']} {alert.get('sentiment') or ''} vol {alert['volume']:,} "
            f"premium ${alert['premium_usd'] / 1e6:,.2f}M{ratio} @ {alert['event_time'][:19]}Z").replace("  ", " ")
