"""The alert: one typed record, its vocabularies, and its one JSON form.

An `Alert` is what every part of nqflow passes around once detection is done: the notebook
glues `Alert.to_json()` dicts with scrapbook, the runner reads them back with
`Alert.from_json` (the check at the boundary: a malformed scrap is a one-line error), the
SQLite history stores that JSON, and the console, log, email and Slack render it. The enums
below are the only lists of kinds, levels, labels, directions and sentiments; CLI choices,
quality, the lab and the charts derive theirs from them.

This module imports nothing from the engine, so the scheduler process can use alerts without
loading detection or scipy.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from nqflow.errors import DataError


class Kind(StrEnum):
    """What was seen: an aggressor order, a multi-strike sweep, a strategy package, or a volume surge."""

    LARGE_ORDER = "large_order"
    SWEEP = "sweep"
    WORKED_ORDER = "worked_order"  # one party's order worked in many child orders, across windows
    STRATEGY = "strategy"
    VOLUME_SURGE = "volume_surge"
    OFF_BOOK = "off_book"  # blocks and other trades away from the book, from next-day statistics
    CONFIRMATION = (
        "confirmation"  # a follow-up: the next morning, which of a session's alerts opened or closed positions
    )
    HEALTH = "health"  # the monitor itself: blind, a window failed for good, a channel down; and each recovery


class Level(StrEnum):
    """What an alert is about: one instrument, one expiry (or days-to-expiry bucket), the whole product, a package."""

    INSTRUMENT = "instrument"
    EXPIRY = "expiry"
    PRODUCT = "product"
    PACKAGE = "package"
    SESSION = "session"  # a follow-up about a whole session's alerts
    SYSTEM = "system"  # a health alert: about nqflow, not the market


class Label(StrEnum):
    """The confidence band (``[confidence] medium`` / ``high`` in config/monitoring.toml)."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"

    @classmethod
    def of(cls, confidence: float, medium: float, high: float) -> Label:
        """The band of a confidence score, given the config's cut-offs."""
        return cls.HIGH if confidence >= high else cls.MEDIUM if confidence >= medium else cls.LOW


class Direction(StrEnum):
    """What the aggressor did: bought, sold, both (MIXED), or UNKNOWN where nothing says
    (no aggressor published: off the book, a print with side ``N``)."""

    BUY = "BUY"
    SELL = "SELL"
    MIXED = "MIXED"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def of_side(cls, side: object) -> Direction:
        """Databento's aggressor side (``B`` buyer-initiated, ``A`` seller-initiated, ``N``) as a direction."""
        return {"B": cls.BUY, "A": cls.SELL}.get(str(side), cls.UNKNOWN)

    @property
    def verb(self) -> str:
        """The direction in a sentence: bought, sold, traded both ways, traded (aggressor unknown)."""
        return {
            Direction.BUY: "bought",
            Direction.SELL: "sold",
            Direction.MIXED: "traded both ways",
            Direction.UNKNOWN: "traded (aggressor unknown)",
        }[self]


def usd(value: float | None) -> str:
    """Money as a trader reads it: $4.44M, -$6.40M, $166k, $950 (empty when unknown). The one
    money formatter: alerts, reports, messages and charts all use it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    sign, size = ("-" if value < 0 else ""), abs(float(value))
    if size >= 1e6:
        return f"{sign}${size / 1e6:,.2f}M"
    if size >= 1e3:
        return f"{sign}${size / 1e3:,.0f}k"
    return f"{sign}${size:,.0f}"


class Sentiment(StrEnum):
    """How the flow reads: on the index's direction, or on volatility (a delta-neutral package)."""

    BULLISH = "BULLISH"
    BEARISH = "BEARISH"
    NEUTRAL = "NEUTRAL"
    VOLATILITY = "VOLATILITY"


KINDS: tuple[str, ...] = tuple(Kind)
LEVELS: tuple[str, ...] = tuple(Level)
LABELS: tuple[str, ...] = tuple(Label)
#: Kinds that are one trading event (an order, a sweep, a package) rather than a volume surge.
EVENT_KINDS: tuple[str, ...] = (Kind.LARGE_ORDER, Kind.SWEEP, Kind.STRATEGY, Kind.WORKED_ORDER)


@dataclass
class Alert:
    """One alert. Times are ISO 8601 text in UTC; money in USD; prices in index points.

    Optional fields are None where they do not apply (a product surge has no strike, an order
    has no tier) or are unknown (open interest not published)."""

    alert_id: str
    kind: Kind
    level: Level
    window_start: str
    window_end: str
    event_time: str
    symbol: str
    direction: Direction
    volume: int
    premium_usd: float
    confidence: float
    label: Label
    reasons: list[str] = field(default_factory=list)
    symbols: list[str] | None = None
    instrument_ids: list[int] | None = None
    expiry: str | None = None
    expiration: str | None = None
    strike: float | None = None
    put_call: str | None = None
    sentiment: Sentiment | None = None
    buy_volume: int | None = None
    sell_volume: int | None = None
    baseline: float | None = None
    ratio: float | None = None
    tier: float | None = None
    history_sessions: int | None = None
    p_value: float | None = None
    buy_premium_usd: float | None = None
    sell_premium_usd: float | None = None
    imbalance: float | None = None
    underlying_price: float | None = None
    open_interest: int | None = None
    volume_oi: float | None = None
    days_to_expiry: int | None = None
    zero_dte: bool | None = None
    strategy: str | None = None
    legs: list[dict] | None = None
    net_premium_usd: float | None = None
    net_delta: float | None = None
    child_orders: int | None = None  # a worked order: its child orders so far, the first and the last
    first_time: str | None = None
    last_time: str | None = None
    vwap: float | None = None  # volume-weighted price of its child orders, index points
    price_drift: str | None = None  # "ascending", "descending" or "flat": the child orders' prices over time

    def __post_init__(self) -> None:
        name = self.alert_id if isinstance(self.alert_id, str) else "<no id>"
        for key in _FIELD_NAMES:
            setattr(self, key, _checked(name, key, getattr(self, key)))
        if not 0 <= self.confidence <= 100:
            raise DataError(f"alert {name} confidence {self.confidence} is outside [0, 100]")

    # -- the one JSON form ----------------------------------------------------------------
    def to_json(self) -> dict:
        """A JSON-safe dict in `ALERT_FIELDS` order (enums as their text)."""
        return {name: _json_value(getattr(self, name)) for name in ALERT_FIELDS}

    @classmethod
    def from_json(cls, data: Any) -> Alert:
        """An alert from its JSON dict (a scrap, a history row); a malformed one is a one-line error."""
        if not isinstance(data, dict):
            raise DataError(
                "an alert is not a JSON object; the notebook must glue a list of dicts (nqflow.alerts.to_records)"
            )
        name = data.get("alert_id", "<no id>")
        missing = [k for k in ALERT_FIELDS if k not in data and k not in LATER_FIELDS]
        if missing:
            raise DataError(f"alert {name} lacks fields {missing}; glue nqflow.alerts.to_records(...) in the notebook")
        unknown = sorted(set(data) - set(ALERT_FIELDS))
        if unknown:
            raise DataError(
                f"alert {name} has unknown fields {unknown}; glue nqflow.alerts.to_records(...) in the notebook"
            )
        values: dict[str, Any] = {k: data.get(k) for k in ALERT_FIELDS}
        return cls(**values)

    @property
    def is_event(self) -> bool:
        """An order, sweep or package (one trading event), not a surge."""
        return self.kind in EVENT_KINDS


#: Every field of an alert, in the dataclass's order (what `Alert.__post_init__` checks).
_FIELD_NAMES = tuple(spec.name for spec in dataclasses.fields(Alert))

# The record's column order, as tables show it (the dataclass must list required fields first).
ALERT_FIELDS: list[str] = [
    "alert_id",
    "kind",
    "level",
    "window_start",
    "window_end",
    "event_time",
    "symbol",
    "symbols",
    "instrument_ids",
    "expiry",
    "expiration",
    "strike",
    "put_call",
    "direction",
    "sentiment",
    "volume",
    "buy_volume",
    "sell_volume",
    "baseline",
    "ratio",
    "tier",
    "history_sessions",
    "p_value",
    "premium_usd",
    "buy_premium_usd",
    "sell_premium_usd",
    "imbalance",
    "underlying_price",
    "open_interest",
    "volume_oi",
    "confidence",
    "label",
    "reasons",
    "days_to_expiry",
    "zero_dte",
    "strategy",
    "legs",
    "net_premium_usd",
    "net_delta",
    "child_orders",
    "first_time",
    "last_time",
    "vwap",
    "price_drift",
]
#: Fields added after alerts were first recorded: an alert stored before them reads back with None.
LATER_FIELDS: frozenset[str] = frozenset({"child_orders", "first_time", "last_time", "vwap", "price_drift"})
assert sorted(ALERT_FIELDS) == sorted(spec.name for spec in dataclasses.fields(Alert))

_ENUMS = {"kind": Kind, "level": Level, "label": Label, "direction": Direction, "sentiment": Sentiment}
_TYPES: dict[str, type] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "list[str]": list,
    "list[int]": list,
    "list[dict]": list,
}


@functools.cache
def _field_type(key: str) -> tuple[bool, str]:
    """(optional, base type name) of an `Alert` field, from its annotation (read once per field:
    every alert checks every field, hundreds of alerts a lab re-evaluation)."""
    annotation = Alert.__dataclass_fields__[key].type
    return annotation.endswith("| None"), annotation.removesuffix(" | None")


def _checked(name: str, key: str, value: Any) -> Any:
    """`value` normalised to field `key`'s type (numpy scalars to Python, text to enums), or a one-line error."""
    optional, base = _field_type(key)
    value = _plain(value)
    if value is None:
        if optional:
            return None
        raise DataError(f"alert {name} field {key} is missing (None); it is required")
    if key in _ENUMS:
        try:
            return _ENUMS[key](value)
        except ValueError:
            raise DataError(
                f"alert {name} has unknown {key} {value!r}; expected one of {', '.join(_ENUMS[key])}"
            ) from None
    expected = _TYPES[base]
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif expected is int:
        if isinstance(value, float) and value.is_integer():  # a count that went through a float column
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise DataError(f"alert {name} field {key} should be {base}, got {value!r}")
    return value


def plain(value: Any) -> Any:
    """Recursively turn numpy/pandas scalars into JSON-safe Python values."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value
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


def _json_value(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value.value
    return value


class WindowSummary(TypedDict, total=False):
    """What one window held, as the notebook glues it (``summary``) and the state database keeps it."""

    window_start: str
    window_end: str
    trade_date: str | None
    option_trades: int
    orders: int
    contracts: int
    premium_usd: float
    buy_premium_usd: float
    sell_premium_usd: float
    underlying_last: float | None
    empty: bool
    notes: list[str]
    alerts: int
    alerts_by_kind: dict[str, int]
    max_confidence: float
    packages: int
    packages_by_strategy: dict[str, int]
    zero_dte_contract_share: float
    product_expected_volume: float
    product_ratio: float
    history_sessions: int


#: Summary fields every window has, with their JSON types (the rest appear when they apply).
SUMMARY_REQUIRED: dict[str, tuple[type, ...]] = {
    "window_start": (str,),
    "window_end": (str,),
    "option_trades": (int,),
    "contracts": (int,),
    "premium_usd": (int, float),
    "empty": (bool,),
    "notes": (list,),
    "alerts": (int,),
    "max_confidence": (int, float),
}


def check_summary(data: Any) -> WindowSummary:
    """A window summary read back from a notebook's scraps; a malformed one is a one-line error."""
    if not isinstance(data, dict):
        raise DataError("the window summary is not a JSON object; the notebook must glue plain(result.summary)")
    for key, types in SUMMARY_REQUIRED.items():
        if key not in data:
            raise DataError(f"the window summary lacks {key!r}; glue plain(result.summary) in the notebook")
        if not isinstance(data[key], types) or (bool not in types and isinstance(data[key], bool)):
            raise DataError(f"the window summary's {key} should be {types[0].__name__}, got {data[key]!r}")
    return data  # type: ignore[return-value]


def to_alerts(frame: pd.DataFrame) -> list[Alert]:
    """A Detection's alerts frame (ALERT_FIELDS columns) as typed alerts."""
    return [Alert(**{k: row.get(k) for k in ALERT_FIELDS}) for row in frame.to_dict("records")]


def to_records(frame: pd.DataFrame) -> list[dict]:
    """Alerts as plain JSON-safe dicts in ALERT_FIELDS order (what the notebook glues)."""
    return [alert.to_json() for alert in to_alerts(frame)]


def validate(alert: dict) -> dict:
    """One alert's JSON read back (a scrap, a history row), checked and normalised."""
    return Alert.from_json(alert).to_json()


def stable_id(*parts) -> str:
    """Same event -> same id on every re-run (of a window, a day, a health condition)."""
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def one_line(alert: dict | Alert) -> str:
    """A readable one-line summary (console, log lines, message subjects)."""
    a = alert.to_json() if isinstance(alert, Alert) else alert
    if a["kind"] == Kind.HEALTH:
        return (
            f"[{a['label']}] health {a['symbol']}: {a['reasons'][0] if a['reasons'] else ''} @ {a['event_time'][:19]}Z"
        )
    if a["kind"] == Kind.CONFIRMATION:
        return f"[follow-up] {a['symbol']}: {a['reasons'][0] if a['reasons'] else ''}"
    tier = f" {a['tier']:g}x" if a.get("tier") else ""
    if a.get("zero_dte"):
        tier += " 0DTE"
    ratio = f" ratio {a['ratio']:.1f}x" if a.get("ratio") and a["kind"] == Kind.VOLUME_SURGE else ""
    return (
        f"[{a['label']} {a['confidence']:.0f}] {a['kind']}{tier} {a['level']} {a['symbol']} "
        f"{a['direction']} {a.get('sentiment') or ''} vol {a['volume']:,} "
        f"premium {usd(a['premium_usd'])}{ratio} @ {a['event_time'][:19]}Z"
    ).replace("  ", " ")
