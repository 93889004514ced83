"""Detection engine: pure functions on DataFrames, no I/O.

Kinds of alert
--------------
``large_order``  one aggressor order (fills with the same instrument, ts_event and side)
                 whose premium >= ``large_premium_usd``.
``strategy``     a strategy package (`nqflow.engine.strategies`: a spread print and its leg prints, or
                 several strikes printed in one nanosecond) whose gross premium (summed over
                 its option legs) >= ``large_premium_usd``: one alert with its legs, ratios,
                 strategy name, net premium (debit / credit) and net delta. Its legs are never
                 large orders, sweeps or a watch-list order of their own; their contracts
                 still count in volumes, and a surge they dominate folds into the package.
``sweep``        orders of one side on several strikes of one expiry and right, within
                 ``sweep_span_ms`` of each other, whose summed premium >= ``large_premium_usd``.
                 When one order carries >= ``sweep_block_share`` of the premium it is a block
                 with small neighbours, not a sweep, and is judged as a single order. Windows
                 are judged alone, so a sweep straddling a window edge (a few hundred ms in
                 900 s: rare) is seen as two parts.
``worked_order`` one party's order worked in child orders on one option and side, across
                 window edges (`nqflow.engine.worked`): children no more than ``worked_max_gap_s``
                 apart within ``worked_max_span_minutes``, at least ``worked_min_orders`` of them,
                 together >= ``large_premium_usd``, that side holding ``direction_share`` of the
                 option's aggressor premium over the span. Raised once, in the window where the
                 running total crosses; a surge it mostly makes folds into it.
``volume_surge`` window volume at ``instrument``, ``expiry`` or ``product`` level against the
                 expected volume for the slot (`nqflow.engine.baseline`); tiers from ``surge_tiers``
                 (10x / 30x / 50x). ratio = volume / max(expected, floor); a level needs
                 ``*_min_volume`` contracts and ``min_history_sessions`` of history, and no
                 single order may carry more than ``surge_max_order_share`` of the volume (one
                 print is the large-order detector's business, not a surge).

One event, one alert: a finer and a coarser surge in the same window are folded into one.
The finer one owns it when it carries >= ``dominance_share`` of the coarser level's volume (a
single strike explains its expiry's surge); otherwise the coarser one owns it (a broad move).
An instrument surge that is mostly (>= ``dominance_share``) one alerted order or sweep is
folded into that order's alert. A surge folded into a surge is named in the owner's reasons;
one folded into an order, sweep, package or worked order is not: an event alert is judged on
what had traded when it was complete (its instrument volume up to its last print, the future's
price at it), so the live path, which sends it then, and the window notebook give the same
alert, field for field.

Confidence (0-100)
------------------
    score = 100 * (w_s*S + w_p*P + w_i*I + w_c*C + w_v*V) / (w_s + w_p + w_i + w_c + w_v)

S  statistical surprise: p = P(X >= volume) under a count model fitted to the slot's history
   (negative binomial by moments when the history is over-dispersed, var > mean; Poisson
   otherwise; mean floored like the ratio); S = min(1, -log10(p) / surprise_full_log10).
   Orders use their instrument's window volume. No history -> S = 0, said in the reasons.
P  premium: log-scaled between premium_floor_usd (0) and premium_full_usd (1).
I  aggressor imbalance: |buy - sell| / (buy + sell) of aggressor premium (1 for one order whose
   aggressor is known, 0 when no premium has a known aggressor, side N). The alert's
   ``imbalance`` field keeps the sign: +1 all buyer-initiated, -1 all seller-initiated.
C  concentration: share of the alert's volume in its largest order (surges) or the order's
   share of its instruments' window volume (orders and sweeps).
V  volume / open interest, capped at 1 (volume above OI suggests new positions); 0 when OI is unknown.

Packages score imbalance 1 when the package's aggressor is known (one side took it all). A
worked order scores imbalance 2 x side share - 1 and concentration its side share, its surprise
and volume/OI from the option's window volume where it crosses.

Labels: HIGH >= confidence.high, MEDIUM >= confidence.medium, else LOW.

Every alert on an expiry carries ``days_to_expiry`` (calendar days from the trade date, in
Chicago) and ``zero_dte``; an expiry-level surge within `nqflow.engine.baseline.SHORT_DATED_DAYS`
is keyed ``0DTE``, ``1DTE``, ... and compared with the usual volume of that day's expiry.

Two stages
----------
`nqflow.engine.features` computes what no tunable threshold changes (orders, sweep candidates, packages,
window volumes with expected volumes and open interest); `evaluate` here applies the thresholds
above to those features, vectorised over a batch of any size, and folds. `detect_windows` runs
both, so thresholds applied to stored features give the live alerts exactly.

Direction and sentiment
-----------------------
direction: BUY when buyer-initiated premium is >= direction_share of aggressor premium,
SELL when seller-initiated is, else MIXED. sentiment: calls bought and puts sold are bullish,
calls sold and puts bought bearish; the same share decides BULLISH / BEARISH / NEUTRAL.
A package's direction is what its aggressor did (BUY / SELL); its sentiment comes from its net
delta: VOLATILITY when delta-neutral (``delta_neutral_share``), else BULLISH / BEARISH.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from scipy import special

from nqflow.alerts import ALERT_FIELDS, Alert, Direction, Kind, Label, Level, stable_id, usd
from nqflow.config import Config
from nqflow.engine.features import (  # noqa: F401  (re-exported: the building blocks tests and charts use)
    ORDER_KEYS,
    SIDE_COLUMNS,
    WINDOW,
    Features,
    aggregate_orders,
    assign_sweeps,
    compute_features,
    instrument_ids,
    side_columns,
    side_totals,
    stable_argsort,
    window_volumes,
)
from nqflow.engine.gex import wall_reason
from nqflow.engine.levels import (
    PRODUCT_KEY,
    SHORT_DATED_DAYS,
)
from nqflow.engine.strategies import covered_reading, package_headline, read_package
from nqflow.engine.worked import eligible_children, in_time, order_sides, price_drift, worked_crossings
from nqflow.market.contracts import CHICAGO
from nqflow.market.frames import WindowData


@dataclass
class Detection:
    """What one window's detection produced; `alerts` follows ALERT_FIELDS."""

    alerts: pd.DataFrame
    orders: pd.DataFrame
    volumes: pd.DataFrame
    summary: dict = field(default_factory=dict)
    packages: pd.DataFrame = field(default_factory=pd.DataFrame)
    config: Config | None = field(default=None, repr=False)

    @cached_property
    def watch(self) -> pd.DataFrame:
        """Orders, sweeps and packages worth watching below the alert level (`watch_list`); built
        on first use, since a backtest's thousands of windows never look at it."""
        if self.config is None:
            raise ValueError("this Detection was made without its config; the watch list needs its thresholds")
        return watch_list(self.orders, self.config, self.packages)


# --------------------------------------------------------------------------- building blocks
def imbalance_of(buy: float, sell: float) -> float:
    """(buy - sell) / (buy + sell) of aggressor premium, in [-1, 1]; 0 when there is none."""
    total = buy + sell
    return (buy - sell) / total if total > 0 else 0.0


def direction_of(buy: float, sell: float, share: float) -> str:
    total = buy + sell
    if total <= 0:
        return "MIXED"
    return "BUY" if buy / total >= share else "SELL" if sell / total >= share else "MIXED"


def sentiment_of(bullish: float, bearish: float, share: float) -> str:
    total = bullish + bearish
    if total <= 0:
        return "NEUTRAL"
    return "BULLISH" if bullish / total >= share else "BEARISH" if bearish / total >= share else "NEUTRAL"


def tier_of(ratio: float, tiers: tuple[float, ...]) -> float:
    """Highest tier the ratio reaches, 0 when below the first."""
    reached = [t for t in tiers if ratio >= t]
    return float(reached[-1]) if reached else 0.0


def tail_probability(volume, mean, variance) -> np.ndarray:
    """P(X >= volume) under a negative binomial (over-dispersed, var > mean) or Poisson count model.

    Vectorised over arrays of volumes, means and variances. The tails are the special functions
    `scipy.stats`' survival functions are made of (for a count k >= 1, P(X >= k) is the regularised
    incomplete beta I_{1-p}(k, r) and Poisson's `pdtrc(k - 1, mean)`), so the engine never imports
    `scipy.stats`, which took 0.8 s of every window notebook's start; they agree with
    `stats.nbinom.sf` to 1e-12 relatively and with `stats.poisson.sf` exactly."""
    volume = np.floor(np.asarray(volume, dtype=float))
    mean = np.maximum(np.asarray(mean, dtype=float), 1e-9)
    variance = np.asarray(variance, dtype=float)
    over = variance > mean * 1.0001
    r = np.where(over, mean * mean / np.where(over, variance - mean, 1.0), 1.0)
    p = r / (r + mean)
    count = np.maximum(volume, 1.0)  # P(X >= 0) = 1 is the `where` below; the functions want k >= 1
    nb = special.betainc(count, r, 1.0 - p)
    poisson = special.pdtrc(count - 1.0, mean)
    return np.where(volume <= 0, 1.0, np.where(over, nb, poisson))


# --------------------------------------------------------------------------- scoring
def score(components: dict[str, float], config: Config) -> tuple[float, str]:
    c = config.confidence
    weights = {
        "surprise": c.weight_surprise,
        "premium": c.weight_premium,
        "imbalance": c.weight_imbalance,
        "concentration": c.weight_concentration,
        "volume_oi": c.weight_volume_oi,
    }
    total = sum(weights.values())
    # min and max of Python floats, as np.clip gives (NaN kept): np.clip's per-call cost was a
    # tenth of a loose threshold pass's order alerts
    value = 100.0 * sum(weights[k] * min(max(float(components.get(k, 0.0)), 0.0), 1.0) for k in weights) / total
    return round(value, 1), str(Label.of(value, c.medium, c.high))


def premium_component(premium: float, config: Config) -> float:
    c = config.confidence
    if premium <= c.premium_floor_usd:
        return 0.0
    return min(1.0, math.log(premium / c.premium_floor_usd) / math.log(c.premium_full_usd / c.premium_floor_usd))


def surprise_component(p_value: float, config: Config) -> float:
    return min(1.0, -math.log10(max(p_value, 1e-300)) / config.confidence.surprise_full_log10)


# --------------------------------------------------------------------------- the engine
def detect_window(window: WindowData, expected: pd.DataFrame | None, config: Config) -> Detection:
    """Find large orders, sweeps, strategy packages and volume surges in one window.

    `expected` is the expected volume of this window's slot per (level, key)
    (`nqflow.engine.baseline.BaselineStore.expected`, or `expected_volume` of a history); None or
    empty when there is no history yet.
    """
    return detect_windows([window], [expected], config)[0]


def detect_windows(
    windows: Sequence[WindowData],
    expected: Sequence[pd.DataFrame | None] | pd.DataFrame,
    config: Config,
    keep: Sequence[int] | None = None,
) -> list[Detection]:
    """`detect_window` for many windows at once (a whole session, in a backtest), one Detection each.

    The two stages back to back: `nqflow.engine.features.compute_features`, then `evaluate`. Every
    grouping is also by window except a worked order's, which reads the earlier windows of its
    session in the batch (`nqflow.engine.monitor.run_window` gives a window its lookback for
    it); so each result equals what the window gives with the windows before it, and batching
    only saves pandas' per-call overhead, which dominates 15-minute windows. `expected[i]` is
    window i's expected volume, or `expected` is one frame of all windows with ``window``
    (`nqflow.engine.monitor.SessionWindows.expected`). `keep`: the positions of the windows whose Detection is wanted
    (all when None), in order; the others are still detected, for the worked orders they hold.
    """
    features = compute_features(windows, expected, config)
    return split(features, evaluate(features, config, score_every_volume=True), config, keep)


@dataclass
class Evaluation:
    """The threshold stage's answer for a batch of features: ``alerts`` (ALERT_FIELDS plus
    ``window``, by window, then confidence and premium, highest first), the orders' final
    ``sweep_id`` (-1 where the block-share rule broke a candidate up) and the scored volumes
    (baseline, ratio, p_value and ``gate``: why a row cannot be a surge, "" when it can)."""

    alerts: pd.DataFrame
    sweep_id: np.ndarray
    volumes: pd.DataFrame
    records: list[dict] = field(default_factory=list)  # the alerts' JSON form, row for row


def evaluate(features: Features, config: Config, score_every_volume: bool = False) -> Evaluation:
    """The threshold stage: every alert of every window of `features` under `config`'s thresholds.

    Vectorised over the whole batch (one session or a year of them): the floors, ratios and
    surge gate are column operations; only candidates that pass the thresholds are scored
    and built, and each window's candidates are folded (one event, one alert). The tail
    probability, the one costly column, is computed only for the volume rows an alert reads,
    unless `score_every_volume` (the live path, whose charts show every row).
    """
    t = config.thresholds
    orders = features.orders
    if orders.empty:
        return Evaluation(
            pd.DataFrame(columns=[WINDOW, *ALERT_FIELDS]),
            np.empty(0, dtype="int64"),
            features.volumes.assign(gate=pd.Series(dtype=object)),
        )
    sweep = orders["sweep_id"].to_numpy(dtype="int64").copy()
    if (sweep >= 0).any():
        # A "sweep" that is mostly one order is a block with small neighbours: judge its orders singly.
        grouped = orders.loc[sweep >= 0, "premium_usd"].groupby(sweep[sweep >= 0])
        dominated = grouped.max() >= t.sweep_block_share * grouped.sum()
        sweep[np.isin(sweep, dominated.index[dominated.to_numpy()])] = -1
    volumes = _scored_volumes(features.volumes, config)
    gate = _surge_gate_codes(volumes, config)
    volumes["gate"] = _gate_reasons(gate, volumes.index)  # "" where a surge may alert, else why not (charts show it)
    context = _Context(features, volumes, config, score_every_volume)
    context.surge_rows = np.flatnonzero(gate == 0)
    orders = orders.assign(sweep_id=sweep)
    candidates = (
        _order_alerts(context, orders)
        + _worked_alerts(context, orders, pd.factorize(features.windows["trade_date"])[0][orders[WINDOW].to_numpy()])
        + _strategy_alerts(context)
        + _surge_alerts(context)
    )
    by_window: dict[int, list[_Candidate]] = {}
    for candidate in candidates:
        by_window.setdefault(candidate.window, []).append(candidate)
    rows: list[dict] = []
    windows: list[int] = []
    walls = features.windows["walls"].to_numpy()
    for window in sorted(by_window):
        folded = sorted(_fold(by_window[window], config), key=lambda a: (-a.confidence, -a.premium_usd))
        _name_nearest_walls(folded, json.loads(walls[window]))
        rows.extend(alert.to_json() for alert in folded)
        windows.extend([window] * len(folded))
    alerts = pd.DataFrame(rows, columns=ALERT_FIELDS) if rows else pd.DataFrame(columns=ALERT_FIELDS)
    alerts.insert(0, WINDOW, np.asarray(windows, dtype="int64"))
    if score_every_volume:
        context.p_values()
    return Evaluation(alerts, sweep, context.volumes, rows)


def split(
    features: Features, evaluation: Evaluation, config: Config, keep: Sequence[int] | None = None
) -> list[Detection]:
    """One `Detection` per window of a batch (those at the positions `keep`, when given), each as
    if its window had been detected alone (sweep ids renumbered from 0 in each window)."""
    orders, volumes, packages, table = features.orders, evaluation.volumes, features.packages, features.windows
    n = len(table)
    kept = list(range(n)) if keep is None else list(keep)
    order_bounds = _bounds(orders[WINDOW], list(range(n)))
    volume_bounds = _bounds(volumes[WINDOW], list(range(n)))
    alert_bounds = _bounds(evaluation.alerts[WINDOW], list(range(n)))
    package_rows = packages.groupby(WINDOW).indices if len(packages) else {}
    order_columns = [c for c in orders.columns if c not in (WINDOW, "expiry_key")]
    package_columns = [c for c in packages.columns if c != WINDOW]
    volume_columns = [c for c in volumes.columns if c not in (WINDOW, "open_interest", "instrument_id")]
    feature_sweep = orders["sweep_id"].to_numpy(dtype="int64") if len(orders) else np.empty(0, dtype="int64")
    final_sweep = np.asarray(evaluation.sweep_id, dtype="int64")
    volume_ids = volumes["instrument_id"].to_numpy()
    # Selecting the columns costs the same for a window as for the batch: for a few windows of a
    # batch (the live path keeps one) each window's rows are selected; for many (a session), the
    # batch's once, then each window is a slice of it.
    if len(kept) > BATCH_SELECT_FROM:  # each window's selection (`_in`) is then a slice
        orders, volumes, packages = orders[order_columns], volumes[volume_columns], packages[package_columns]
    results = []
    rows = dict(zip(kept, table.iloc[kept].itertuples(index=False)))  # the kept windows' rows only
    for i in kept:
        row = rows[i]
        summary = window_summary(row)
        if row.empty:
            results.append(
                Detection(
                    pd.DataFrame(columns=ALERT_FIELDS),
                    aggregate_orders(pd.DataFrame()),
                    pd.DataFrame(),
                    summary,
                    pd.DataFrame(),
                    config,
                )
            )
            continue
        lo, hi = order_bounds[i]
        own_orders = _rows(orders, lo, hi, order_columns)
        sweep = final_sweep[lo:hi].copy()
        in_sweep = sweep >= 0
        if in_sweep.any():  # numbered from the window's first sweep candidate
            candidates = feature_sweep[lo:hi]
            sweep[in_sweep] -= int(candidates[candidates >= 0].min())
        own_orders["sweep_id"] = sweep
        v_lo, v_hi = volume_bounds[i]
        own_volumes = _rows(volumes, v_lo, v_hi, volume_columns)
        own_volumes.insert(
            volume_columns.index("expiry_key") + 1, "instrument_ids", instrument_ids(volume_ids[v_lo:v_hi])
        )
        # Built from the window's own records, so its dtypes are what the window alone gives:
        # the batch's own frame when the batch is this window (the live path's one window).
        if n == 1:
            frame = evaluation.alerts.drop(columns=WINDOW)
        else:
            frame = pd.DataFrame(evaluation.records[slice(*alert_bounds[i])], columns=ALERT_FIELDS)
        own_packages = _in(packages.take(package_rows.get(i, [])), package_columns).reset_index(drop=True)
        summary["alerts"] = int(len(frame))
        summary["alerts_by_kind"] = frame["kind"].value_counts().to_dict() if len(frame) else {}
        summary["max_confidence"] = float(frame["confidence"].max()) if len(frame) else 0.0
        product = np.flatnonzero((own_volumes["level"] == "product").to_numpy(dtype=bool, na_value=False))
        if len(product):  # the window's product row, read in place (not a frame of it)
            summary["product_expected_volume"] = float(own_volumes["baseline"].iat[product[0]])
            summary["product_ratio"] = round(float(own_volumes["ratio"].iat[product[0]]), 3)
            summary["history_sessions"] = int(own_volumes["history_sessions"].iat[product[0]])
        results.append(Detection(frame, own_orders, own_volumes, summary, own_packages, config))
    return results


#: `split` selects the columns of the batch's frames once when it keeps more windows than this.
BATCH_SELECT_FROM = 4


def _rows(frame: pd.DataFrame, lo: int, hi: int, columns: list[str]) -> pd.DataFrame:
    """Rows [lo, hi) of `frame` in `columns`, numbered from 0."""
    return _in(frame.iloc[lo:hi], columns).reset_index(drop=True)


def _in(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`frame` in `columns`: itself when it holds just those, in order (no copy of each column)."""
    return frame if list(frame.columns) == columns else frame[columns]


def window_summary(row) -> dict:
    """A window's summary (`nqflow.alerts.WindowSummary`) from its row of `Features.windows`,
    before its alerts are counted in."""
    summary = {
        "window_start": row.window_start.isoformat(),
        "window_end": row.window_end.isoformat(),
        "trade_date": row.trade_date if isinstance(row.trade_date, str) else None,
        "option_trades": int(row.option_trades),
        "orders": int(row.orders),
        "contracts": int(row.contracts),
        "premium_usd": float(row.premium_usd),
        "buy_premium_usd": float(row.buy_premium_usd),
        "sell_premium_usd": float(row.sell_premium_usd),
        "underlying_last": None if pd.isna(row.underlying_last) else float(row.underlying_last),
        "empty": bool(row.empty),
        "notes": json.loads(row.notes),
        "alerts": 0,
        "alerts_by_kind": {},
        "max_confidence": 0.0,
    }
    if not row.empty:
        summary["packages"] = int(row.packages)
        summary["packages_by_strategy"] = json.loads(row.packages_by_strategy)
        summary["zero_dte_contract_share"] = float(row.zero_dte_contract_share)
    return summary


def watch_list(orders: pd.DataFrame, config: Config, packages: pd.DataFrame | None = None) -> pd.DataFrame:
    """Orders, sweeps and packages worth watching: premium at or above ``watch_premium_usd`` but
    below ``large_premium_usd`` (those are alerts). Empty when the watch level is 0 (off).

    `orders` is a Detection's orders (with sweep_id); a sweep is listed once, as its summed
    premium, a package once, as its gross premium (its legs are not listed as orders).
    Largest premium first.
    """
    t = config.thresholds
    columns = ["kind", "event_time", "symbol", "side", "size", "premium_usd", "orders"]
    if t.watch_premium_usd <= 0 or orders.empty:
        return pd.DataFrame(columns=columns)
    if "package_id" in orders:
        orders = orders[orders["package_id"] < 0]  # a package's legs are listed as the package
    sweep = orders["sweep_id"] if "sweep_id" in orders else pd.Series(-1, index=orders.index)
    group = np.where(sweep >= 0, -1 - sweep.to_numpy(), np.arange(len(orders)))  # a sweep's orders share a group
    grouped = orders.assign(group=group).groupby("group", sort=False)
    listed = grouped.agg(
        event_time=("ts_event", "min"),
        symbol=("symbol", "first"),
        side=("side", "first"),
        size=("size", "sum"),
        premium_usd=("premium_usd", "sum"),
        orders=("size", "size"),
        strikes=("strike", "nunique"),
        expiry=("expiry", "first"),
        put_call=("put_call", "first"),
    )
    is_sweep = listed.index < 0
    listed["kind"] = np.where(is_sweep, "sweep", "order")
    listed.loc[is_sweep, "symbol"] = (
        listed["expiry"] + " " + listed["put_call"] + " x" + listed["strikes"].astype(str) + " strikes"
    )
    if packages is not None and len(packages):
        listed = pd.concat(
            [
                listed,
                pd.DataFrame(
                    {
                        "kind": "package",
                        "event_time": pd.to_datetime(packages["ts_event"], utc=True),
                        "symbol": packages["strategy"] + " " + packages["expiry"],
                        "side": packages["side"],
                        "size": packages["quantity"],
                        "premium_usd": packages["gross_premium_usd"],
                        "orders": packages["legs"].map(len),
                    }
                ),
            ],
            ignore_index=True,
        )
    listed = listed[(listed["premium_usd"] >= t.watch_premium_usd) & (listed["premium_usd"] < t.large_premium_usd)]
    return listed.sort_values("premium_usd", ascending=False)[columns].reset_index(drop=True)


def _bounds(window_column: pd.Series, windows: list[int]) -> dict[int, tuple[int, int]]:
    """Row range of each window in a frame sorted by window."""
    values = window_column.to_numpy()
    lo = np.searchsorted(values, windows, side="left")
    hi = np.searchsorted(values, windows, side="right")
    return {w: (int(a), int(b)) for w, a, b in zip(windows, lo, hi)}


def _level_masks(volumes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(instrument rows, expiry rows) of a volumes frame; the rest are product rows."""
    level = volumes["level"]
    return (level == "instrument").to_numpy(dtype=bool), (level == "expiry").to_numpy(dtype=bool)


def _scored_volumes(volumes: pd.DataFrame, config: Config) -> pd.DataFrame:
    """Window volumes with their floored baseline and ratio; ``p_value`` is filled in by `_Context`."""
    t = config.thresholds
    instrument, expiry = _level_masks(volumes)
    floors = np.where(
        instrument, t.instrument_baseline_floor, np.where(expiry, t.expiry_baseline_floor, t.product_baseline_floor)
    ).astype(float)
    expected = volumes["expected"].to_numpy(dtype=float, na_value=np.nan)
    baseline = np.maximum(np.nan_to_num(expected, nan=0.0), floors)
    # A shallow copy: the new columns are the only ones written (copy-on-write guards the rest).
    volumes = volumes.copy(deep=False)
    volumes["baseline"] = baseline
    volumes["ratio"] = volumes["volume"].to_numpy(dtype=float) / baseline
    volumes["p_value"] = np.nan
    return volumes


_ID_SPAN = 1 << 32  # instrument ids are 32-bit in DBN: window * span + id is one sortable code


class _Context:
    """What the candidate builders share: the window table, the scored volumes (tail
    probabilities computed on demand), instrument rows by (window, key), the price path."""

    def __init__(self, features: Features, volumes: pd.DataFrame, config: Config, every_volume: bool):
        self.config = config
        self.volumes = volumes
        # Each window's bounds as text only for the windows that get a candidate: a year has
        # 22,825 windows and a Timestamp's isoformat costs more than most of a threshold pass.
        self._window_start, self._window_end = features.windows["window_start"], features.windows["window_end"]
        self._window_texts: dict[int, tuple[str, str]] = {}
        # the rows where a surge may alert (gate ""): set by `evaluate` with the gate
        self.surge_rows = np.empty(0, dtype=np.int64)
        self.packages = features.packages
        self.orders = features.orders
        # the orders' (window, time, instrument, size), by window and time, on first use
        self._prints: tuple[np.ndarray, ...] | None = None
        # (sorted window-and-instrument codes, their volume rows), built on first use
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None
        path = features.underlying
        self._path_window = path[WINDOW].to_numpy(dtype="int64")
        self._path_ts = path["ts_event"].to_numpy(dtype="datetime64[ns]").astype("int64")
        self._path_price = path["price"].to_numpy(dtype=float)
        self._scored = np.zeros(len(volumes), dtype=bool)
        self._model: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # `count_model`, on first use

    @cached_property
    def _volume_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """Each volume row's window and instrument id (-1 off the instrument level)."""
        return self.volumes[WINDOW].to_numpy(dtype="int64"), self.volumes["instrument_id"].to_numpy(dtype="int64")

    @cached_property
    def evidence_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The volumes' history sessions, open interest and expected volume as arrays: every
        event candidate reads its instrument rows of them (taken once, not once a candidate)."""
        v = self.volumes
        return (
            v["history_sessions"].to_numpy(),
            v["open_interest"].to_numpy(dtype=float),
            v["baseline"].to_numpy(dtype=float),
        )

    def window_text(self, window: int) -> tuple[str, str]:
        """The window's start and end in ISO text (made once per window that has a candidate)."""
        text = self._window_texts.get(window)
        if text is None:
            text = self._window_texts[window] = (
                self._window_start.array[window].isoformat(),
                self._window_end.array[window].isoformat(),
            )
        return text

    def window_end(self, window: int) -> pd.Timestamp:
        return self._window_end.iloc[window]

    def p_values(self, rows: np.ndarray | None = None) -> None:
        """Fill ``p_value`` for these volume rows (all when None): P(X >= volume) under the slot's
        count model with its mean floored like the ratio and its variance never below that mean."""
        rows = np.arange(len(self.volumes)) if rows is None else np.asarray(rows, dtype="int64")
        rows = rows[~self._scored[rows]]
        if not len(rows):
            return
        v = self.volumes
        history, baseline, variance = self.count_model(rows)
        p = np.where(history > 0, tail_probability(v["volume"].to_numpy()[rows], baseline, variance), 1.0)
        column = v["p_value"].to_numpy(dtype=float).copy()
        column[rows] = p
        v["p_value"] = column
        self._scored[rows] = True

    def count_model(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The volume rows' count model: history sessions, mean (floored like the ratio) and
        variance (never below that mean). Read from the frame once per batch: an event alert asks
        for a few rows at a time, hundreds of times over a lab's batch of 400,000 rows."""
        if self._model is None:
            v = self.volumes
            baseline = v["baseline"].to_numpy(dtype=float)
            variance = np.nan_to_num(v["variance"].to_numpy(dtype=float, na_value=np.nan), nan=0.0)
            self._model = (v["history_sessions"].to_numpy(), baseline, np.maximum(variance, baseline))
        history, baseline, variance = self._model
        return history[rows], baseline[rows], variance[rows]

    def so_far(self, rows: np.ndarray, until: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
        """Each instrument volume row's volume in its window up to and including `until` (an
        event's last print), and that volume's tail probability against the slot's whole expected
        volume (1.0 without history). An event alert is judged on what had traded when it was
        complete, never on prints after it: so the live path, judging it the moment it is
        complete, and the window notebook give the same alert field for field."""
        rows = np.asarray(rows, dtype="int64")
        if self._prints is None:
            orders = self.orders
            window = orders[WINDOW].to_numpy(dtype="int64")
            ts = orders["ts_event"].to_numpy(dtype="datetime64[ns]").astype("int64")
            columns = (
                window,
                ts,
                orders["instrument_id"].to_numpy(dtype="int64"),
                orders["size"].to_numpy(dtype="int64"),
            )
            # Orders come by window and time (`aggregate_orders`): each window's are then one
            # slice, searched by its number, never the whole batch sorted for a few rows.
            if not in_time(window, ts):
                order = np.lexsort((ts, window))
                columns = tuple(c[order] for c in columns)
            self._prints = columns
        window, ts, instrument, size = self._prints
        volume_window, volume_instrument = self._volume_keys
        wanted_window = volume_window[rows]
        wanted_id = volume_instrument[rows]
        volume = np.zeros(len(rows), dtype="int64")
        bounds = np.searchsorted(window, np.concatenate([wanted_window, wanted_window + 1])).tolist()
        for k, option in enumerate(wanted_id.tolist()):
            lo, hi = bounds[k], bounds[k + len(rows)]
            mine = (instrument[lo:hi] == option) & (ts[lo:hi] <= until.value)
            volume[k] = size[lo:hi][mine].sum()
        history, baseline, variance = self.count_model(rows)
        p = np.where(history > 0, tail_probability(volume, baseline, variance), 1.0) if len(rows) else np.ones(0)
        return volume, np.asarray(p, dtype=float)

    def instrument_rows(self, windows: np.ndarray, instrument_ids: np.ndarray) -> np.ndarray:
        """Volume row of each (window, instrument id); -1 when the window has none."""
        if not len(instrument_ids):
            return np.empty(0, dtype="int64")
        if self._lookup is None:
            ids = self.volumes["instrument_id"].to_numpy(dtype="int64")
            rows = np.flatnonzero(ids >= 0)
            codes = self.volumes[WINDOW].to_numpy(dtype="int64")[rows] * _ID_SPAN + ids[rows]
            order = stable_argsort(codes)
            self._lookup = (codes[order], rows[order])
        codes, rows = self._lookup
        wanted = np.asarray(windows, dtype="int64") * _ID_SPAN + np.asarray(instrument_ids, dtype="int64")
        at = np.minimum(np.searchsorted(codes, wanted), len(codes) - 1)
        return np.where(codes[at] == wanted, rows[at], -1)

    def underlying_at(self, window: int, ts: pd.Timestamp) -> float | None:
        """The front future's last price at or before `ts` in the window (its first print after `ts`
        when it printed only later; None when it did not print): never a price from long after
        the event, so the alert is the same whenever it is judged."""
        lo, hi = np.searchsorted(self._path_window, [window, window + 1])
        if lo == hi:
            return None
        at = lo + int(np.searchsorted(self._path_ts[lo:hi], ts.value, side="right")) - 1
        return float(self._path_price[at if at >= lo else lo])

    def candidate(
        self,
        window: int,
        owns: list[tuple[str, str]],
        expiry_key: str | None = None,
        expiry_keys: set[str] | None = None,
        **values,
    ) -> _Candidate:
        start, end = self.window_text(window)
        alert = Alert(window_start=start, window_end=end, **values)
        return _Candidate(alert, window, owns, expiry_key, set(expiry_keys or ()))


@dataclass
class _Candidate:
    """An alert before folding, with the bookkeeping the fold needs beside it (never inside it):
    the batch window it came from, the (level, key) volumes it owns, and its expiry-level keys."""

    alert: Alert
    window: int
    owns: list[tuple[str, str]]
    expiry_key: str | None = None  # a surge's own expiry-level key
    expiry_keys: set[str] = field(default_factory=set)  # an order's, sweep's or package's expiry-level keys


@dataclass(frozen=True)
class _Evidence:
    """What an event alert's confidence and its shared reasons rest on: its own premium and
    volume, its aggressor imbalance and concentration components, and its instruments' window
    volume up to its last print against the slot's history (`_instrument_evidence`)."""

    premium: float
    volume: int
    imbalance: float  # the imbalance component before its absolute value, in [-1, 1]
    concentration: float
    inst_volume: float
    history: int
    p_value: float
    baseline: float | None
    total_oi: int | None

    def scored(self, config: Config) -> tuple[float, str]:
        """Confidence and label (`score`) from the five components (module doc)."""
        return score(
            {
                "surprise": surprise_component(self.p_value, config) if self.history else 0.0,
                "premium": premium_component(self.premium, config),
                "imbalance": abs(self.imbalance),
                "concentration": self.concentration,
                "volume_oi": min(1.0, self.volume / self.total_oi) if self.total_oi else 0.0,
            },
            config,
        )

    def surprise_reason(self, upto: str, subject: str) -> str:
        if self.history:
            return (
                f"instrument volume {self.inst_volume:,.0f} in the window up to {upto} vs "
                f"{self.baseline:,.1f} expected for the slot; tail probability {self.p_value:.1e} "
                f"over {self.history} sessions"
            )
        return f"no volume history for this {subject}: surprise not scored"

    def oi_reason(self, above_note: bool = False) -> str:
        if not self.total_oi:
            return "open interest unknown"
        ratio = self.volume / self.total_oi
        above = " (above OI: likely new positions)" if above_note and self.volume > self.total_oi else ""
        return f"volume/open interest {ratio:.2f}{above}"


def _instrument_evidence(
    context: _Context, rows: np.ndarray, until: pd.Timestamp, volume: int, every_row: bool = True
) -> tuple[float, int, float, float | None, int | None]:
    """(instrument volume up to `until`, history sessions, tail probability, expected volume,
    open interest) over the instrument volume rows `rows` (-1: none); open interest only when
    every instrument has a row (`every_row`) and a published figure."""
    rows = np.asarray(rows, dtype="int64")
    rows = rows[rows >= 0]
    if not len(rows):
        return float(volume), 0, 1.0, None, None
    history_sessions, open_interest, baseline = context.evidence_columns
    so_far, so_far_p = context.so_far(rows, until)
    history = int(history_sessions[rows].max())
    oi = open_interest[rows]
    return (
        float(so_far.sum()),
        history,
        float(so_far_p.min()) if history else 1.0,
        float(baseline[rows].sum()),
        int(oi.sum()) if every_row and not np.isnan(oi).any() else None,
    )


def _event_fields(
    context: _Context, index: int, at: pd.Timestamp, evidence: _Evidence, reasons: list[str], days: int
) -> dict:
    """The fields every event alert fills the same way from its evidence and score."""
    confidence, label = evidence.scored(context.config)
    total_oi = evidence.total_oi
    return {
        "volume": evidence.volume,
        "history_sessions": evidence.history,
        "p_value": evidence.p_value,
        "premium_usd": round(evidence.premium, 2),
        "underlying_price": context.underlying_at(index, at),
        "open_interest": total_oi,
        "volume_oi": round(evidence.volume / total_oi, 4) if total_oi else None,
        "confidence": confidence,
        "label": label,
        "reasons": reasons + _dte_reason(days),
        "days_to_expiry": days,
        "zero_dte": days == 0,
    }


def _order_groups(orders: pd.DataFrame, t) -> list[tuple[str, np.ndarray]]:
    """(kind, order rows) of every alerted sweep (by sweep id) and single order (in time order)."""
    premium_all = orders["premium_usd"].to_numpy(dtype=float)
    sweep_all = orders["sweep_id"].to_numpy(dtype="int64")
    in_sweep = np.flatnonzero(sweep_all >= 0)
    groups: list[tuple[str, np.ndarray]] = []
    if len(in_sweep):
        sweep_premium = pd.Series(premium_all[in_sweep]).groupby(sweep_all[in_sweep]).sum()
        members_of = pd.Series(in_sweep).groupby(sweep_all[in_sweep]).indices
        for sweep_id in sweep_premium.index[sweep_premium.to_numpy() >= t.large_premium_usd]:
            groups.append(("sweep", in_sweep[members_of[sweep_id]]))
    single = np.flatnonzero(
        (sweep_all < 0) & (orders["package_id"].to_numpy() < 0) & (premium_all >= t.large_premium_usd)
    )
    groups.extend(("large_order", np.array([row])) for row in single)
    return groups


def _order_alerts(context: _Context, orders: pd.DataFrame) -> list[_Candidate]:
    """Sweeps whose summed premium, and single orders (not package legs, not in a sweep) whose
    premium, reach ``large_premium_usd``: sweeps first (by sweep id), then orders in time order."""
    groups = _order_groups(orders, context.config.thresholds)
    if not groups:
        return []
    chosen = np.concatenate([rows for _, rows in groups])
    members_all = orders.iloc[chosen]
    # One lookup for every member's instrument row of window volume.
    volume_row = context.instrument_rows(members_all[WINDOW].to_numpy(), members_all["instrument_id"].to_numpy())
    records = members_all.to_dict("records")
    sides = side_columns(members_all).to_dict("records")
    alerts, offset = [], 0
    for kind, rows in groups:
        n = len(rows)
        alerts.append(
            _order_candidate(
                context,
                kind,
                records[offset : offset + n],
                sides[offset : offset + n],
                volume_row[offset : offset + n],
            )
        )
        offset += n
    return alerts


def _order_candidate(
    context: _Context, kind: str, members: list[dict], member_sides: list[dict], member_rows: np.ndarray
) -> _Candidate:
    """One large order or sweep (its member orders) as an alert candidate."""
    t = context.config.thresholds
    index = int(members[0][WINDOW])
    premium = float(sum(m["premium_usd"] for m in members))
    ids = sorted({int(m["instrument_id"]) for m in members})
    first = min(members, key=lambda m: m["ts_event"])  # the earliest (the first of equals)
    volume = int(sum(m["size"] for m in members))
    totals = {k: float(sum(s[k] for s in member_sides)) for k in SIDE_COLUMNS}
    # Each distinct instrument once, in id order (a sweep may hit one strike twice).
    by_id = {int(m["instrument_id"]): int(r) for m, r in zip(members, member_rows)}
    inst_volume, history, p_value, baseline, total_oi = _instrument_evidence(
        context, np.array([by_id[i] for i in ids], dtype="int64"), max(m["ts_event"] for m in members), volume
    )
    imbalance = imbalance_of(totals["buy_premium_usd"], totals["sell_premium_usd"])
    evidence = _Evidence(
        premium, volume, imbalance, volume / max(inst_volume, volume), inst_volume, history, p_value, baseline, total_oi
    )
    strikes = sorted({m["strike"] for m in members})
    side = str(first["side"])
    direction = Direction.of_side(side)
    sentiment = sentiment_of(totals["bullish_premium_usd"], totals["bearish_premium_usd"], t.direction_share)
    right = "calls" if first["put_call"] == "C" else "puts"
    event_time = first["ts_event"]
    if kind == "sweep":
        span = max(m["ts_event"] for m in members) - min(m["ts_event"] for m in members)
        what = (
            f"sweep of {len(strikes)} strikes {strikes[0]:g}-{strikes[-1]:g} {first['expiry']} {right}, "
            f"{len(members)} orders within {span.total_seconds() * 1000:.0f} ms"
        )
        alert_id = stable_id("sweep", ",".join(map(str, ids)), event_time.value, side)
    else:
        clock = f"{event_time:%H:%M:%S}.{event_time.microsecond // 1000:03d}Z"
        what = f"one aggressor order, {int(first['fills'])} fill(s) at {clock}"
        alert_id = stable_id("large_order", ids[0], event_time.value, side)
    reasons = [
        f"{usd(premium)} premium >= {usd(t.large_premium_usd)} threshold ({what})",
        f"{volume:,} contracts {direction.verb} by the aggressor: {right} {direction.verb} reads {sentiment.lower()}"
        if side in ("B", "A")
        else f"{volume:,} {right} with no known aggressor (side {side}): direction and sentiment unknown",
        evidence.surprise_reason(f"this {kind.replace('_', ' ')}", "instrument"),
        evidence.oi_reason(above_note=True),
    ]
    return context.candidate(
        index,
        [("instrument", str(i)) for i in ids],
        expiry_keys={m["expiry_key"] for m in members},
        alert_id=alert_id,
        kind=kind,
        level="instrument" if kind == "large_order" else "expiry",
        event_time=event_time.isoformat(),
        symbol=str(first["symbol"])
        if kind == "large_order"
        else f"{first['expiry']} {first['put_call']}{strikes[0]:g}-{strikes[-1]:g}",
        symbols=sorted({str(m["symbol"]) for m in members}),
        instrument_ids=ids,
        expiry=str(first["expiry"]),
        expiration=pd.Timestamp(first["expiration"]).isoformat(),
        strike=float(strikes[0]) if len(strikes) == 1 else None,
        put_call=str(first["put_call"]),
        direction=direction,
        sentiment=sentiment,
        buy_volume=totals["buy_volume"],
        sell_volume=totals["sell_volume"],
        baseline=baseline,
        ratio=inst_volume / baseline if baseline else None,
        tier=None,
        buy_premium_usd=totals["buy_premium_usd"],
        sell_premium_usd=totals["sell_premium_usd"],
        imbalance=round(imbalance, 4),
        **_event_fields(context, index, event_time, evidence, reasons, min(int(m["days_to_expiry"]) for m in members)),
    )


def alerted_orders(orders: pd.DataFrame, t) -> np.ndarray:
    """Orders that are an alert of their own: a single order at ``large_premium_usd`` or more (not
    a package leg, not in a sweep), or a member of a sweep whose summed premium reaches it."""
    premium = orders["premium_usd"].to_numpy(dtype=float)
    sweep = orders["sweep_id"].to_numpy(dtype="int64")
    single = (sweep < 0) & (orders["package_id"].to_numpy() < 0) & (premium >= t.large_premium_usd)
    in_sweep = sweep >= 0
    if not in_sweep.any():
        return single
    totals = pd.Series(premium[in_sweep]).groupby(sweep[in_sweep]).sum()
    big = totals.index[totals.to_numpy() >= t.large_premium_usd].to_numpy()
    return single | (in_sweep & np.isin(sweep, big))


def _worked_alerts(context: _Context, orders: pd.DataFrame, session: np.ndarray) -> list[_Candidate]:
    """Worked orders (`nqflow.engine.worked`): one alert at the child order where each crosses
    ``large_premium_usd``, in that child's window. `session` numbers each order's session."""
    t = context.config.thresholds
    if orders.empty:
        return []
    sides = order_sides(orders)
    eligible = eligible_children(orders, alerted_orders(orders, t), sides)
    crossings = worked_crossings(orders, session, eligible, t, sides)
    if crossings.empty:
        return []
    rows = crossings["row"].to_numpy(dtype="int64")
    windows = orders[WINDOW].to_numpy(dtype="int64")[rows]
    volume_row = context.instrument_rows(windows, orders["instrument_id"].to_numpy(dtype="int64")[rows])
    return [
        _worked_candidate(context, orders.iloc[crossing.child_rows], crossing, int(window), int(vrow))
        for crossing, window, vrow in zip(crossings.itertuples(index=False), windows, volume_row)
    ]


def _worked_candidate(context: _Context, children: pd.DataFrame, crossing, index: int, vrow: int) -> _Candidate:
    """One worked order at its crossing child (`children` in time order, the crossing child last)."""
    t = context.config.thresholds
    last, first = children.iloc[-1], children.iloc[0]
    premium, volume = float(crossing.premium_usd), int(crossing.contracts)
    side = str(last["side"])
    direction = Direction.of_side(side)
    sentiment = "BULLISH" if (side == "B") == (last["put_call"] == "C") else "BEARISH"
    inst_volume, history, p_value, baseline, total_oi = _instrument_evidence(
        context, np.array([vrow], dtype="int64"), last["ts_event"], volume
    )
    share = float(crossing.side_share)
    evidence = _Evidence(premium, volume, 2.0 * share - 1.0, share, inst_volume, history, p_value, baseline, total_oi)
    sizes = children["size"].to_numpy(dtype=float)
    prices = children["vwap"].to_numpy(dtype=float)
    vwap = float(np.average(prices, weights=sizes))
    drift = price_drift(prices, sizes, t.worked_flat_drift_share)
    first_time, last_time = pd.Timestamp(first["ts_event"]), pd.Timestamp(last["ts_event"])
    minutes = (last_time - first_time).total_seconds() / 60.0
    right = "calls" if last["put_call"] == "C" else "puts"
    reasons = [
        f"{usd(premium)} premium in {crossing.children} child orders >= {usd(t.large_premium_usd)} threshold: "
        f"one order worked from {_clock(first_time)} to {_clock(last_time)} ({minutes:.0f} min), "
        f"the largest child {usd(float(children['premium_usd'].max()))}",
        f"{volume:,} {right} {direction.verb} at a VWAP of {vwap:,.2f} ({drift}): reads {sentiment.lower()}",
        f"{'buyers' if side == 'B' else 'sellers'} hold {share:.0%} of this option's aggressor "
        f"premium over the span (>= {t.direction_share:.0%}): one side working, not a market maker",
        evidence.surprise_reason("the crossing child", "option"),
        evidence.oi_reason(),
    ]
    instrument_id = int(last["instrument_id"])
    return context.candidate(
        index,
        [("instrument", str(instrument_id))],
        expiry_keys={str(last["expiry_key"])},
        alert_id=stable_id("worked_order", instrument_id, first_time.value, side),
        kind="worked_order",
        level="instrument",
        event_time=last_time.isoformat(),
        symbol=str(last["symbol"]),
        symbols=[str(last["symbol"])],
        instrument_ids=[instrument_id],
        expiry=str(last["expiry"]),
        expiration=pd.Timestamp(last["expiration"]).isoformat(),
        strike=float(last["strike"]),
        put_call=str(last["put_call"]),
        direction=direction,
        sentiment=sentiment,
        buy_volume=float(volume if side == "B" else 0),
        sell_volume=float(volume if side == "A" else 0),
        baseline=baseline,
        ratio=inst_volume / baseline if baseline else None,
        tier=None,
        buy_premium_usd=premium if side == "B" else 0.0,
        sell_premium_usd=premium if side == "A" else 0.0,
        imbalance=1.0 if side == "B" else -1.0,
        child_orders=int(crossing.children),
        first_time=first_time.isoformat(),
        last_time=last_time.isoformat(),
        vwap=round(vwap, 4),
        price_drift=drift,
        **_event_fields(context, index, last_time, evidence, reasons, int(last["days_to_expiry"])),
    )


def _clock(ts: pd.Timestamp) -> str:
    return f"{ts:%H:%M:%S}Z"


def _dte_reason(days: int | None) -> list[str]:
    if days is None or pd.isna(days):
        return []
    return ["0DTE: expires today" if days == 0 else f"{days} day(s) to expiry"]


def _strategy_alerts(context: _Context) -> list[_Candidate]:
    """A package whose gross premium reaches ``large_premium_usd`` is one alert of kind ``strategy``."""
    packages = context.packages
    big = (
        packages[packages["gross_premium_usd"] >= context.config.thresholds.large_premium_usd]
        if len(packages)
        else packages
    )
    if big.empty:
        return []
    lookups = [(int(p.window), int(i)) for p in big.itertuples(index=False) for i in p.option_leg_ids]
    volume_row = context.instrument_rows(np.array([w for w, _ in lookups]), np.array([i for _, i in lookups]))
    alerts, offset = [], 0
    for package in big.itertuples(index=False):
        rows = volume_row[offset : offset + len(package.option_leg_ids)]
        offset += len(package.option_leg_ids)
        alerts.append(_strategy_candidate(context, package, rows))
    return alerts


def _strategy_candidate(context: _Context, package, rows: np.ndarray) -> _Candidate:
    """One strategy package (a row of `Features.packages`; `rows`: its option legs' volume rows)."""
    t = context.config.thresholds
    index = int(package.window)
    direction, sentiment, net_delta = read_package(package._asdict(), t.delta_neutral_share)
    if package.strategy == "covered":
        net_delta = 0.0  # delta-neutral as agreed: the futures legs offset the options' delta
    event_time = pd.Timestamp(package.ts_event, tz="UTC")
    volume = int(sum(leg["size"] for leg in package.legs if leg["put_call"] != "F"))
    inst_volume, history, p_value, _, total_oi = _instrument_evidence(
        context, rows, event_time, volume, every_row=bool((np.asarray(rows) >= 0).all())
    )
    premium = float(package.gross_premium_usd)
    one_side = 1.0 if package.side in ("B", "A") else 0.0  # one aggressor took the whole package
    evidence = _Evidence(
        premium, volume, one_side, volume / max(inst_volume, volume), inst_volume, history, p_value, None, total_oi
    )
    days_by_leg = [
        (_days_between(event_time, leg["expiration"]), leg["symbol"]) for leg in package.legs if leg["put_call"] != "F"
    ]
    reasons = _package_reasons(package, direction, sentiment, net_delta, volume, t) + [evidence.oi_reason()]
    return context.candidate(
        index,
        [("instrument", str(i)) for i in package.option_leg_ids],
        expiry_keys={f"{d}DTE" if d <= SHORT_DATED_DAYS else symbol.split(" ", 1)[0] for d, symbol in days_by_leg},
        alert_id=stable_id(
            "strategy",
            package.spread_id,
            ",".join(map(str, package.leg_instrument_ids)),
            package.ts_event,
            package.side,
        ),
        kind="strategy",
        level="package",
        event_time=event_time.isoformat(),
        symbol=package_headline(package.strategy, package.legs),
        symbols=[leg["symbol"] for leg in package.legs],
        instrument_ids=list(package.leg_instrument_ids),
        expiry=str(package.expiry),
        expiration=pd.Timestamp(package.expiration, tz="UTC").isoformat(),
        strike=None,
        put_call=package.put_call,
        direction=direction,
        sentiment=sentiment,
        buy_volume=float(volume if package.side == "B" else 0),
        sell_volume=float(volume if package.side == "A" else 0),
        baseline=None,
        ratio=None,
        tier=None,
        buy_premium_usd=premium if package.side == "B" else 0.0,
        sell_premium_usd=premium if package.side == "A" else 0.0,
        imbalance=1.0 if package.side == "B" else -1.0 if package.side == "A" else 0.0,
        strategy=package.strategy,
        legs=[{k: leg[k] for k in LEG_FIELDS} for leg in package.legs],
        net_premium_usd=round(float(package.net_premium_usd), 2),
        net_delta=round(float(net_delta), 2),
        **_event_fields(context, index, event_time, evidence, reasons, min(d for d, _ in days_by_leg)),
    )


#: The fields of each leg a strategy alert carries.
LEG_FIELDS = ("instrument_id", "symbol", "put_call", "strike", "ratio", "sign", "size", "price", "delta")


def _package_reasons(package, direction: str, sentiment: str, net_delta: float, volume: int, t) -> list[str]:
    """What a strategy alert says of its package: the trade, its delta, why it is one trade."""
    premium, net = float(package.gross_premium_usd), float(package.net_premium_usd)
    legs_text = ", ".join(f"{'+' if leg['sign'] > 0 else '-'}{leg['ratio']} {leg['symbol']}" for leg in package.legs)
    verb = {"BUY": "bought", "SELL": "sold"}.get(direction, "traded (aggressor unknown)")
    source = {
        "definition": "legs from the spread's definition",
        "prints": "legs inferred from the prints at its ts_event (the definition lists none)",
        "no spread instrument": "no spread instrument: legs printed together at one ts_event",
    }[package.source]
    reasons = [
        f"{package.strategy.replace('_', ' ')} package {verb}: {usd(premium)} gross premium >= "
        f"{usd(t.large_premium_usd)} threshold, net {usd(abs(net))} {'debit' if net >= 0 else 'credit'} "
        f"per the buyer; {package.quantity:,} x ({legs_text})",
        f"net delta {net_delta:+,.0f} futures-equivalent for the aggressor: "
        + ("delta-neutral, a volatility trade" if sentiment == "VOLATILITY" else f"reads {sentiment.lower()}"),
        f"one trade, not {len(package.legs)} bets: {source}; its legs are not reported as orders or sweeps",
    ]
    if package.spread_symbol:
        reasons.append(
            f"exchange instrument {package.spread_symbol}, {package.quantity:,} packages of "
            f"{volume:,} option contracts in all"
        )
    covered = covered_reading(package.legs) if package.strategy == "covered" else None
    if covered is not None:
        agreed, model = covered
        reasons.insert(
            2,
            f"covered: the futures ratio says the two sides agreed a delta of {agreed:.2f} per option, "
            f"the model gives {model:.2f} (a gap of {abs(agreed - model):.2f}); read as traded, "
            f"delta-neutral by construction",
        )
    return reasons


def _days_between(event_time: pd.Timestamp, expiration_ns: int) -> int:
    """`nqflow.engine.levels.days_to_expiry` for one instant and one expiration (ns since the epoch)."""
    trade = (event_time.tz_convert(CHICAGO) + pd.Timedelta(hours=7)).date()
    return (pd.Timestamp(expiration_ns, tz="UTC").tz_convert(CHICAGO).date() - trade).days


BELOW_FIRST_TIER = "below the first tier"
SHORT_DATED = "short-dated: judged at its days-to-expiry level"


def surge_gate(volumes: pd.DataFrame, config: Config) -> pd.Series:
    """Why each row of scored window volumes cannot be a surge alert, or "" when it can.

    The reasons, first that applies: "below the first tier", "thin" (under the level's
    minimum volume), "short history" (under ``min_history_sessions``), "one order" (its
    largest order holds more than ``surge_max_order_share``: one print is the large-order
    detector's business, not a surge), "short-dated: ..." (an option within
    `nqflow.engine.baseline.SHORT_DATED_DAYS` of expiry: its own history grows toward expiry, so it is
    judged at its days-to-expiry level, e.g. 0DTE). Rows that pass may still be folded into another alert.
    """
    return _gate_reasons(_surge_gate_codes(volumes, config), volumes.index)


#: `surge_gate`'s reasons by code (0: none, the row may alert); named from codes, as np.select
#: over text builds a fixed-width text array per row.
_GATE_REASONS = np.array(["", BELOW_FIRST_TIER, "thin", "short history", "one order", SHORT_DATED], dtype=object)


def _gate_reasons(codes: np.ndarray, index: pd.Index) -> pd.Series:
    """The gate's codes named (`_GATE_REASONS`), as the object column the charts read."""
    return pd.Series(_GATE_REASONS[codes], index=index, dtype=object)


def _surge_gate_codes(volumes: pd.DataFrame, config: Config) -> np.ndarray:
    """`surge_gate` as codes into `_GATE_REASONS` (0 where a surge may alert)."""
    t = config.thresholds
    instrument, expiry = _level_masks(volumes)
    minimum = np.where(instrument, t.instrument_min_volume, np.where(expiry, t.expiry_min_volume, t.product_min_volume))
    dte = (
        volumes["days_to_expiry"].astype(float)
        if "days_to_expiry" in volumes
        else pd.Series(np.nan, index=volumes.index)
    )
    short_dated = instrument & (dte.to_numpy() <= SHORT_DATED_DAYS)
    return np.select(
        [
            volumes["ratio"].to_numpy() < t.surge_tiers[0],
            volumes["volume"].to_numpy() < minimum,
            volumes["history_sessions"].to_numpy() < t.min_history_sessions,
            volumes["top_order_share"].to_numpy() > t.surge_max_order_share,
            short_dated,
        ],
        [1, 2, 3, 4, 5],
        default=0,
    )


def _surge_alerts(context: _Context) -> list[_Candidate]:
    config = context.config
    t = config.thresholds
    passing = context.surge_rows
    context.p_values(passing)
    surging = context.volumes.iloc[passing]
    alerts = []
    for row in surging.itertuples(index=False):
        index = int(row.window)
        tier = tier_of(row.ratio, t.surge_tiers)
        direction = direction_of(row.buy_premium_usd, row.sell_premium_usd, t.direction_share)
        sentiment = sentiment_of(row.bullish_premium_usd, row.bearish_premium_usd, t.direction_share)
        imbalance = imbalance_of(row.buy_premium_usd, row.sell_premium_usd)
        open_interest = int(row.open_interest) if row.level == "instrument" and not pd.isna(row.open_interest) else None
        components = {
            "surprise": surprise_component(row.p_value, config),
            "premium": premium_component(row.premium_usd, config),
            "imbalance": abs(imbalance),
            "concentration": row.top_order_share,
            "volume_oi": min(1.0, row.volume / open_interest) if open_interest else 0.0,
        }
        confidence, label = score(components, config)
        short = " (fewer than the configured sessions)" if row.history_sessions < t.baseline_sessions else ""
        reasons = [
            f"{row.volume:,} contracts vs expected {row.baseline:,.1f} for this time of day: {row.ratio:,.1f}x "
            f"(tier {tier:g}x) over {row.history_sessions} sessions of history{short}",
            f"tail probability {row.p_value:.1e} under the slot's count model",
            f"aggressor premium {usd(row.buy_premium_usd)} bought vs {usd(row.sell_premium_usd)} sold: "
            f"{direction.lower()}, reads {sentiment.lower()}",
            f"largest single order is {row.top_order_share:.0%} of the volume",
        ]
        if open_interest:
            reasons.append(f"volume/open interest {row.volume / open_interest:.2f}")
        dte = None if pd.isna(row.days_to_expiry) else int(row.days_to_expiry)
        alerts.append(
            context.candidate(
                index,
                [(row.level, str(row.key))],
                expiry_key=row.expiry_key,
                alert_id=stable_id("volume_surge", row.level, row.key, context.window_text(index)[0]),
                kind="volume_surge",
                level=row.level,
                event_time=row.first_ts.isoformat(),
                symbol=row.symbol,
                symbols=[row.symbol] if row.level == "instrument" else [],
                instrument_ids=[int(row.instrument_id)] if row.instrument_id >= 0 else [],
                expiry=row.expiry or None,
                expiration=row.expiration.isoformat() if not pd.isna(row.expiration) else None,
                strike=None if math.isnan(row.strike) else row.strike,
                put_call=row.put_call or None,
                direction=direction,
                sentiment=sentiment,
                volume=int(row.volume),
                buy_volume=row.buy_volume,
                sell_volume=row.sell_volume,
                baseline=round(float(row.baseline), 3),
                ratio=round(float(row.ratio), 3),
                tier=tier,
                history_sessions=int(row.history_sessions),
                p_value=float(row.p_value),
                premium_usd=round(row.premium_usd, 2),
                buy_premium_usd=row.buy_premium_usd,
                sell_premium_usd=row.sell_premium_usd,
                imbalance=round(imbalance, 4),
                underlying_price=context.underlying_at(index, context.window_end(index)),
                open_interest=open_interest,
                volume_oi=round(row.volume / open_interest, 4) if open_interest else None,
                confidence=confidence,
                label=label,
                reasons=reasons + _dte_reason(dte),
                days_to_expiry=dte,
                zero_dte=dte == 0 if dte is not None else None,
            )
        )
    return alerts


def _name_nearest_walls(alerts: list[Alert], walls: dict[str, float]) -> None:
    """Each alert's last reason: the session's dealer wall nearest its strike (its future's price
    without one), when the walls are known (`nqflow.engine.gex.wall_reason`). It does not move the
    confidence: where dealers hedge is context for the flow, not evidence that it is institutional."""
    for alert in alerts:
        reason = wall_reason(walls, alert.strike, alert.underlying_price)
        if reason is not None:
            alert.reasons.append(reason)


def _fold(candidates: list[_Candidate], config: Config) -> list[Alert]:
    """One event, one alert: fold nested surges and order-driven instrument surges (see module doc)."""
    share = config.thresholds.dominance_share
    surges = {c.owns[0]: c.alert for c in candidates if c.alert.kind == Kind.VOLUME_SURGE}
    surge_expiry_key = {c.alert.alert_id: c.expiry_key for c in candidates if c.alert.kind == Kind.VOLUME_SURGE}
    dropped: set[str] = set()

    def fold(loser: Alert, owner: Alert, why: str) -> None:
        dropped.add(loser.alert_id)
        if not owner.is_event:
            # An event alert stays what it was when it was complete (the live path sends it then);
            # the surge it explains is dropped, and shown in the window's volume table.
            owner.reasons.append(f"also {why}")

    # instrument <-> expiry <-> product, fine to coarse
    for fine_level, coarse_level in ((Level.INSTRUMENT, Level.EXPIRY), (Level.EXPIRY, Level.PRODUCT)):
        for (level, _key), fine in list(surges.items()):
            if level != fine_level or fine.alert_id in dropped:
                continue
            coarse_key = (
                coarse_level.value,
                (surge_expiry_key[fine.alert_id] or "") if coarse_level == Level.EXPIRY else PRODUCT_KEY,
            )
            coarse = surges.get(coarse_key)
            if coarse is None or coarse.alert_id in dropped:
                continue
            if fine.volume >= share * coarse.volume:
                fold(
                    coarse,
                    fine,
                    f"{coarse_level} {coarse.symbol} surged {coarse.ratio:.1f}x, "
                    f"{fine.volume / coarse.volume:.0%} of it on {fine.symbol}",
                )
            else:
                fold(fine, coarse, f"includes {fine_level} {fine.symbol} at {fine.ratio:.1f}x")
    # instrument surges driven by an alerted order, sweep or package
    for candidate in (c for c in candidates if c.alert.is_event):
        event = candidate.alert
        for level_key in candidate.owns:
            surge = surges.get(level_key)
            if surge is None or surge.alert_id in dropped:
                continue
            order_volume = event.volume / max(len(candidate.owns), 1)
            if order_volume >= share * surge.volume:
                fold(
                    surge,
                    event,
                    f"{surge.symbol} window volume {surge.volume:,} is "
                    f"{surge.ratio:.1f}x its usual (tier {surge.tier:g}x)",
                )
        # ... and expiry surges that are mostly this order, sweep or package
        for key in sorted(candidate.expiry_keys):
            surge = surges.get(("expiry", key))
            if surge is not None and surge.alert_id not in dropped and event.volume >= share * surge.volume:
                fold(
                    surge,
                    event,
                    f"expiry {surge.symbol} window volume {surge.volume:,} is "
                    f"{surge.ratio:.1f}x its usual (tier {surge.tier:g}x), "
                    f"{event.volume / surge.volume:.0%} of it this {event.kind.replace('_', ' ')}",
                )
    return [c.alert for c in candidates if c.alert.alert_id not in dropped]
