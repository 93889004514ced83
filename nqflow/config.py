"""Typed, validated monitoring config loaded from config/monitoring.toml.

Every threshold lives in the TOML file; the dataclass defaults below mirror it so that
code and tests can build a config without a file, and `tests/test_config.py` checks that
the two agree. Unknown keys and wrong types are one-line errors naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nqflow.errors import ConfigError
from nqflow.paths import CONFIG_PATH
from nqflow.products import MICRO_NQ_OPTION_PRODUCTS, NQ_OPTION_PARENTS, NQ_OPTION_PRODUCTS, product_of_parent

DEFAULT_CONFIG_PATH = CONFIG_PATH


@dataclass(frozen=True)
class Schedule:
    interval_minutes: int = 15
    availability_delay_minutes: int = 2
    max_catchup_windows: int = 96
    max_attempts: int = 4
    retry_backoff_seconds: float = 60.0
    poll_seconds: float = 20.0
    session_reports: bool = True
    off_book: bool = True
    dealer_positioning: bool = True
    daily_lookback_sessions: int = 5
    daily_wait_minutes: float = 30.0


@dataclass(frozen=True)
class Data:
    source: str = "replay"
    replay_dir: str = "data/sample"
    cache_dir: str = "data/cache"
    state_db: str = "data/state.sqlite"
    outputs_dir: str = "outputs"


@dataclass(frozen=True)
class Universe:
    dataset: str = "GLBX.MDP3"
    option_parents: tuple[str, ...] = NQ_OPTION_PARENTS
    micro_option_parents: tuple[str, ...] = ()
    underlying_parent: str = "NQ.FUT"

    @property
    def parents(self) -> tuple[str, ...]:
        """Every watched option parent: the NQ products, then any opted-in micro products."""
        return (*self.option_parents, *self.micro_option_parents)

    @property
    def products(self) -> frozenset[str]:
        """Watched product codes as definitions name them (``asset``)."""
        return frozenset(product_of_parent(p) for p in self.parents)


@dataclass(frozen=True)
class Thresholds:
    large_premium_usd: float = 3_000_000.0
    watch_premium_usd: float = 1_000_000.0
    sweep_span_ms: int = 500
    sweep_min_strikes: int = 2
    surge_tiers: tuple[float, ...] = (10.0, 30.0, 50.0)
    baseline_sessions: int = 20
    min_history_sessions: int = 3
    instrument_min_volume: int = 75
    instrument_baseline_floor: float = 8.0
    expiry_min_volume: int = 300
    expiry_baseline_floor: float = 30.0
    product_min_volume: int = 600
    product_baseline_floor: float = 100.0
    surge_max_order_share: float = 0.5
    dominance_share: float = 0.5
    sweep_block_share: float = 0.8
    direction_share: float = 0.65
    delta_neutral_share: float = 0.15
    off_book_premium_usd: float = 3_000_000.0
    off_book_package_max_ratio: int = 4
    worked_max_gap_s: float = 120.0
    worked_max_span_minutes: float = 30.0
    worked_min_orders: int = 8
    worked_flat_drift_share: float = 0.002


@dataclass(frozen=True)
class Confirm:
    share: float = 0.5


@dataclass(frozen=True)
class Confidence:
    weight_surprise: float = 0.35
    weight_premium: float = 0.25
    weight_imbalance: float = 0.15
    weight_concentration: float = 0.10
    weight_volume_oi: float = 0.15
    premium_floor_usd: float = 250_000.0
    premium_full_usd: float = 20_000_000.0
    surprise_full_log10: float = 12.0
    medium: float = 40.0
    high: float = 70.0


@dataclass(frozen=True)
class Channel:
    enabled: bool = True
    min_confidence: float = 0.0
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogChannel(Channel):
    path: str = "logs/institutional_alerts.log"
    max_bytes: int = 5_000_000
    backup_count: int = 5


@dataclass(frozen=True)
class EmailChannel(Channel):
    enabled: bool = False
    host: str = "localhost"
    port: int = 587
    security: str = "starttls"
    user: str = ""
    password_env: str = "NQFLOW_SMTP_PASSWORD"
    sender: str = "nqflow@localhost"
    recipients: tuple[str, ...] = ()
    timeout_seconds: float = 10.0
    min_confidence: float = 40.0
    report_base_url: str = ""


@dataclass(frozen=True)
class SlackChannel(Channel):
    enabled: bool = False
    webhook_url_env: str = "NQFLOW_SLACK_WEBHOOK_URL"
    timeout_seconds: float = 10.0
    min_confidence: float = 40.0


@dataclass(frozen=True)
class Notify:
    cooldown_minutes: float = 60.0
    escalation_confidence_gain: float = 10.0
    retry_backoff_seconds: float = 30.0
    max_delivery_attempts: int = 20
    console: Channel = field(default_factory=Channel)
    log: LogChannel = field(default_factory=LogChannel)
    email: EmailChannel = field(default_factory=EmailChannel)
    slack: SlackChannel = field(default_factory=SlackChannel)


@dataclass(frozen=True)
class DatabentoSettings:
    api_key_env: str = "DATABENTO_API_KEY"
    budget_usd: float = 25.0
    gateway: str = ""
    max_retries: int = 4
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    timeout_seconds: float = 60.0
    range_cache_seconds: float = 30.0
    live: bool = False
    live_gateway: str = ""


@dataclass(frozen=True)
class Live:
    max_silent_minutes: float = 5.0
    flash_every_seconds: float = 0.2
    record_grace_seconds: float = 2.0
    reconnect_max_seconds: float = 60.0
    heartbeat_seconds: int = 10


@dataclass(frozen=True)
class Health:
    blind_minutes: float = 45.0
    channel_down_minutes: float = 60.0
    max_data_lag_minutes: float = 30.0


@dataclass(frozen=True)
class Retention:
    notebook_days: int = 14
    report_days: int = 90


@dataclass(frozen=True)
class Config:
    schedule: Schedule = field(default_factory=Schedule)
    data: Data = field(default_factory=Data)
    universe: Universe = field(default_factory=Universe)
    thresholds: Thresholds = field(default_factory=Thresholds)
    confidence: Confidence = field(default_factory=Confidence)
    confirm: Confirm = field(default_factory=Confirm)
    notify: Notify = field(default_factory=Notify)
    databento: DatabentoSettings = field(default_factory=DatabentoSettings)
    live: Live = field(default_factory=Live)
    health: Health = field(default_factory=Health)
    retention: Retention = field(default_factory=Retention)
    path: str = ""  # where it was loaded from (not a TOML key)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("path")
        return out


#: data.source is checked by the source registry (`nqflow.sources.source_spec`) when the source is
#: made, before any work: the config layer imports nothing below it.
_CHOICES = {"notify.email.security": ("starttls", "ssl", "none")}


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key} must be a whole number, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key} must be a string, got {value!r}")
        return value
    if origin is tuple:
        inner = typing.get_args(annotation)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key} must be a list, got {value!r}")
        return tuple(_coerce(v, inner, key) for v in value)
    raise ConfigError(f"config key {key} has an unsupported type")  # pragma: no cover


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"config section [{prefix}] must be a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if not (cls is Config and f.name == "path")]
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = (
                f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?"
                if close
                else f"; known keys: {', '.join(names)}"
            )
            raise ConfigError(f"unknown config key {full}{hint}")
        annotation = hints[key]
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            kwargs[key] = _build(annotation, value, full)
        else:
            kwargs[key] = _coerce(value, annotation, full)
            if full in _CHOICES and kwargs[key] not in _CHOICES[full]:
                raise ConfigError(f"config key {full} must be one of {', '.join(_CHOICES[full])}, got {value!r}")
    return cls(**kwargs)


def _validate(config: Config) -> Config:
    t, c = config.thresholds, config.confidence
    tiers = list(t.surge_tiers)
    if not tiers or tiers != sorted(tiers) or tiers[0] <= 1:
        raise ConfigError(f"config key thresholds.surge_tiers must be increasing ratios above 1, got {tiers}")
    for key in ("large_premium_usd", "instrument_baseline_floor", "expiry_baseline_floor", "product_baseline_floor"):
        if getattr(t, key) <= 0:
            raise ConfigError(f"config key thresholds.{key} must be positive, got {getattr(t, key)}")
    if t.watch_premium_usd < 0:
        raise ConfigError(
            f"config key thresholds.watch_premium_usd must be 0 (off) or positive, got {t.watch_premium_usd}"
        )
    for key in ("dominance_share", "sweep_block_share", "direction_share", "surge_max_order_share"):
        if not 0 < getattr(t, key) <= 1:
            raise ConfigError(f"config key thresholds.{key} must be in (0, 1], got {getattr(t, key)}")
    for key in ("worked_max_gap_s", "worked_max_span_minutes", "worked_min_orders"):
        if getattr(t, key) <= 0:
            raise ConfigError(f"config key thresholds.{key} must be positive, got {getattr(t, key)}")
    if t.worked_max_gap_s > t.worked_max_span_minutes * 60:
        raise ConfigError(
            f"config key thresholds.worked_max_gap_s ({t.worked_max_gap_s:g}) must not exceed "
            f"worked_max_span_minutes ({t.worked_max_span_minutes:g}) in seconds"
        )
    if not 0 < config.confirm.share <= 1:
        raise ConfigError(f"config key confirm.share must be in (0, 1], got {config.confirm.share}")
    _validate_parents(config.universe)
    if not 0 < t.delta_neutral_share < 1:
        raise ConfigError(f"config key thresholds.delta_neutral_share must be in (0, 1), got {t.delta_neutral_share}")
    if t.baseline_sessions < 1 or t.min_history_sessions < 1:
        raise ConfigError("config keys thresholds.baseline_sessions and min_history_sessions must be at least 1")
    if not 0 <= c.medium <= c.high <= 100:
        raise ConfigError(
            f"config keys confidence.medium/high must satisfy 0 <= medium <= high <= 100, got {c.medium}/{c.high}"
        )
    for section in ("health", "retention"):
        for key, value in dataclasses.asdict(getattr(config, section)).items():
            if value <= 0:
                raise ConfigError(f"config key {section}.{key} must be positive, got {value}")
    if config.schedule.interval_minutes <= 0 or 60 % config.schedule.interval_minutes:
        raise ConfigError(
            f"config key schedule.interval_minutes must divide 60, got {config.schedule.interval_minutes}"
        )
    return config


def _validate_parents(universe: Universe) -> None:
    """Only NQ option products (and, opted in, micro NQ products) are watched: a typo such as
    Q1N.OPT would otherwise resolve to nothing on Databento and fail quietly."""
    for key, parents, valid in (
        ("option_parents", universe.option_parents, NQ_OPTION_PRODUCTS),
        ("micro_option_parents", universe.micro_option_parents, MICRO_NQ_OPTION_PRODUCTS),
    ):
        bad = [p for p in parents if not p.endswith(".OPT") or product_of_parent(p) not in valid]
        if bad:
            raise ConfigError(
                f"config key universe.{key} lists {', '.join(bad)}, not NQ option products; "
                f"use Databento parents <code>.OPT with codes from {', '.join(valid)}"
            )
        if len(set(parents)) != len(parents):
            raise ConfigError(f"config key universe.{key} lists a parent twice; remove the repeat")


def _nest(overrides: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load and validate the TOML config, then apply dotted-key overrides ("thresholds.large_premium_usd")."""
    path = Path(path) if path else DEFAULT_CONFIG_PATH
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; pass --config or copy config/monitoring.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML ({exc}); fix the line it names") from None
    if overrides:
        raw = _merge(raw, _nest(overrides))
    config = _build(Config, raw, "")
    return _validate(dataclasses.replace(config, path=str(path)))


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one `section.key=value` command-line override; the value is read as TOML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. thresholds.large_premium_usd=5e6")
    key, value = text.split("=", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value  # a bare word is a string
    return key.strip(), parsed
