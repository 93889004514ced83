"""Detection engine: pure functions on DataFrames, no I/O.

Kinds of alert
--------------
``large_order``  one aggressor order (fills with the same instrument, ts_event and side)
                 whose premium >= ``large_premium_usd``.
``strategy``     a strategy package (`nqflow.strategies`: a spread print and its leg prints, or
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
``volume_surge`` window volume at ``instrument``, ``expiry`` or ``product`` level against the
                 expected volume for the slot (`nqflow.baseline`); tiers from ``surge_tiers``
                 (10x / 30x / 50x). ratio = volume / max(expected, floor); a level needs
                 ``*_min_volume`` contracts and ``min_history_sessions`` of history, and no
                 single order may carry more than ``surge_max_order_share`` of the volume (one
                 print is the large-order detector's business, not a surge).

One event, one alert: a finer and a coarser surge in the same window are folded into one.
The finer one owns it when it carries >= ``dominance_share`` of the coarser level's volume (a
single strike explains its expiry's surge); otherwise the coarser one owns it (a broad move).
An instrument surge that is mostly (>= ``dominance_share``) one alerted order or sweep is
folded into that order's alert. Folded alerts are named in the owner's reasons.

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

Packages score imbalance 1 when the package's aggressor is known (one side took it all).

Labels: HIGH >= confidence.high, MEDIUM >= confidence.medium, else LOW.

Every alert on an expiry carries ``days_to_expiry`` (calendar days from the trade date, in
Chicago) and ``zero_dte``; an expiry-level surge within `nqflow.baseline.SHORT_DATED_DAYS`
is keyed ``0DTE``, ``1DTE``, ... and compared with the usual volume of that day's expiry.

Direction and sentiment
-----------------------
direction: BUY when buyer-initiated premium is >= direction_share of aggressor premium,
SELL when seller-initiated is, else MIXED. sentiment: calls bought and puts sold are bullish,
calls sold and puts bought bearish; the same share decides BULLISH / BEARISH / NEUTRAL.
A package's direction is what its aggressor did (BUY / SELL); its sentiment comes from its net
delta: VOLATILITY when delta-neutral (``delta_neutral_share``), else BULLISH / BEARISH.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from scipy import stats

from nqflow.alerts import ALERT_FIELDS, Alert, Kind, Level, stable_id
from nqflow.config import Config
from nqflow.data import WindowData
from nqflow.levels import (
    EXPECTED_COLUMNS,
    PRODUCT_KEY,
    SHORT_DATED_DAYS,
    days_to_expiry,
    expiry_key,
    expiry_level_key,
    level_keys,
)
from nqflow.strategies import find_packages, read_package

ORDER_KEYS = ["instrument_id", "ts_event", "side"]


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
def aggregate_orders(trades: pd.DataFrame, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """Collapse fills into aggressor orders: same instrument, ts_event and side (and `by` columns,
    e.g. the window of a batch). Sorted by `by`, event time and instrument."""
    keys = [*by, *ORDER_KEYS]
    if trades.empty:
        return pd.DataFrame(columns=[*keys, "symbol", "expiry", "expiration", "strike", "put_call",
                                     "size", "premium_usd", "vwap", "fills", "package_id", "days_to_expiry"])
    if "package_id" not in trades:
        trades = trades.assign(package_id=-1)
    grouped = trades.groupby(keys, sort=False, observed=True)
    orders = grouped.agg(symbol=("symbol", "first"), expiration=("expiration", "first"), strike=("strike", "first"),
                         put_call=("put_call", "first"), size=("size", "sum"), premium_usd=("premium_usd", "sum"),
                         fills=("size", "size"), multiplier=("multiplier", "first"),
                         package_id=("package_id", "max")).reset_index()
    orders["vwap"] = orders["premium_usd"] / (orders["size"] * orders["multiplier"])
    orders["expiry"] = expiry_key(orders["symbol"])
    orders["days_to_expiry"] = days_to_expiry(orders["ts_event"], orders["expiration"]).astype("int64")
    return orders.sort_values([*by, "ts_event", "instrument_id"], kind="stable").reset_index(drop=True)


def assign_sweeps(orders: pd.DataFrame, span_ms: int, min_strikes: int, by: tuple[str, ...] = ()) -> pd.Series:
    """Sweep id per order (-1 when not part of a sweep).

    A sweep: aggressor orders (side B or A) on one expiry and right, the same side (and the same
    `by` values), each within `span_ms` of the first, touching at least `min_strikes` strikes.
    Scanning in time order, a sweep starts at the first order whose next `span_ms` hold enough
    strikes, and the scan resumes after it. `orders` must be in time order within each group.
    """
    sweep = np.full(len(orders), -1, dtype="int64")
    # Legs of a package are one trade with their package, never separate orders of a sweep.
    free = orders["package_id"].to_numpy() < 0 if "package_id" in orders else np.ones(len(orders), dtype=bool)
    aggressive = np.flatnonzero(orders["side"].isin(["B", "A"]).to_numpy() & free)
    if len(aggressive) < min_strikes:
        return pd.Series(sweep, index=orders.index)
    candidates = orders.iloc[aggressive]
    group = candidates.groupby([*by, "expiry", "put_call", "side"], sort=False).ngroup().to_numpy()
    in_groups = np.argsort(group, kind="stable")  # each group contiguous, still in time order
    group, rows = group[in_groups], aggressive[in_groups]
    times = candidates["ts_event"].to_numpy(dtype="datetime64[ns]").astype("int64")[in_groups]
    strikes = candidates["strike"].to_numpy(dtype=float)[in_groups]
    span = int(span_ms) * 1_000_000
    # A sweep can only start where the order min_strikes - 1 places on is in the same group and
    # within the span; only those starts (few) are examined one by one.
    reach = min_strikes - 1
    starts = np.flatnonzero((group[reach:] == group[:len(group) - reach]) &
                            (times[reach:] - times[:len(group) - reach] <= span))
    group_ends = np.append(np.flatnonzero(np.diff(group)) + 1, len(group))
    next_id, resume = 0, 0
    for start in starts:
        if start < resume:
            continue
        end = group_ends[np.searchsorted(group_ends, start, side="right")]
        stop = start + int(np.searchsorted(times[start:end], times[start] + span, side="right"))
        if np.unique(strikes[start:stop]).size >= min_strikes:
            sweep[rows[start:stop]] = next_id
            next_id, resume = next_id + 1, stop
    return pd.Series(sweep, index=orders.index)


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

    Vectorised over arrays of volumes, means and variances."""
    volume = np.asarray(volume, dtype=float)
    mean = np.maximum(np.asarray(mean, dtype=float), 1e-9)
    variance = np.asarray(variance, dtype=float)
    over = variance > mean * 1.0001
    r = np.where(over, mean * mean / np.where(over, variance - mean, 1.0), 1.0)
    p = r / (r + mean)
    nb = stats.nbinom.sf(volume - 1, r, p)
    poisson = stats.poisson.sf(volume - 1, mean)
    return np.where(volume <= 0, 1.0, np.where(over, nb, poisson))


def _side_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-row buyer/seller volume and premium, and bullish/bearish premium, as columns to sum."""
    buy = (frame["side"] == "B").to_numpy()
    sell = (frame["side"] == "A").to_numpy()
    call = (frame["put_call"] == "C").to_numpy()
    size = frame["size"].to_numpy(dtype=float)
    prem = frame["premium_usd"].to_numpy(dtype=float)
    return pd.DataFrame({
        "buy_volume": size * buy, "sell_volume": size * sell,
        "buy_premium_usd": prem * buy, "sell_premium_usd": prem * sell,
        "bullish_premium_usd": prem * ((buy & call) | (sell & ~call)),
        "bearish_premium_usd": prem * ((sell & call) | (buy & ~call)),
    }, index=frame.index)


SIDE_COLUMNS = ["buy_volume", "sell_volume", "buy_premium_usd", "sell_premium_usd",
                "bullish_premium_usd", "bearish_premium_usd"]


def window_volumes(orders: pd.DataFrame, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per level and key (and `by` values): volume, premium, side totals and the largest order's
    share of the volume. Rows come by `by`, then level (instrument, expiry, product), then first trade."""
    if orders.empty:
        return pd.DataFrame(columns=["level", *by, "key", "volume"])
    base = pd.concat([orders[[*by, "instrument_id", "symbol", "expiry", "expiration", "strike", "put_call", "size",
                              "premium_usd", "ts_event", "days_to_expiry"]], _side_columns(orders)], axis=1)
    keys = level_keys(orders)
    base["expiry_key"] = keys["expiry"]
    frames = []
    for level, key in keys.items():
        grouped = base.groupby([*(base[b] for b in by), key.rename("key")], sort=False)
        sums = grouped[["size", "premium_usd", *SIDE_COLUMNS]].sum()
        out = sums.rename(columns={"size": "volume"})
        out["top_order_share"] = grouped["size"].max() / sums["size"].clip(lower=1)
        out["instruments"] = grouped["instrument_id"].nunique()
        out["first_ts"] = grouped["ts_event"].min()
        key_values = out.index.get_level_values("key")
        if level == "instrument":
            out = out.join(grouped[["symbol", "expiry", "expiration", "strike", "put_call", "days_to_expiry",
                                    "expiry_key"]].first())
            out["instrument_ids"] = [[int(i)] for i in key_values]
        else:
            out["symbol"] = key_values
            out["expiry"] = grouped["expiry"].first() if level == "expiry" else ""
            out["expiration"] = grouped["expiration"].first() if level == "expiry" else pd.NaT
            out["days_to_expiry"] = grouped["days_to_expiry"].min() if level == "expiry" else np.nan
            out["expiry_key"] = key_values if level == "expiry" else ""
            out["strike"] = float("nan")
            out["put_call"] = ""
            out["instrument_ids"] = [[] for _ in range(len(out))]
        out = out.reset_index()
        out.insert(0, "level", level)
        frames.append(out)
    volumes = pd.concat(frames, ignore_index=True)
    if by:
        volumes = volumes.sort_values(list(by), kind="stable", ignore_index=True)
    volumes["volume"] = volumes["volume"].astype("int64")
    return volumes


def side_totals(frame: pd.DataFrame) -> dict[str, float]:
    """Buyer/seller-initiated volume and premium, and bullish/bearish premium, of some fills or orders."""
    return {k: float(v) for k, v in _side_columns(frame).sum().items()}


# --------------------------------------------------------------------------- scoring
def score(components: dict[str, float], config: Config) -> tuple[float, str]:
    c = config.confidence
    weights = {"surprise": c.weight_surprise, "premium": c.weight_premium, "imbalance": c.weight_imbalance,
               "concentration": c.weight_concentration, "volume_oi": c.weight_volume_oi}
    total = sum(weights.values())
    value = 100.0 * sum(weights[k] * float(np.clip(components.get(k, 0.0), 0, 1)) for k in weights) / total
    label = "HIGH" if value >= c.high else "MEDIUM" if value >= c.medium else "LOW"
    return round(value, 1), label


def premium_component(premium: float, config: Config) -> float:
    c = config.confidence
    if premium <= c.premium_floor_usd:
        return 0.0
    return min(1.0, math.log(premium / c.premium_floor_usd) / math.log(c.premium_full_usd / c.premium_floor_usd))


def surprise_component(p_value: float, config: Config) -> float:
    return min(1.0, -math.log10(max(p_value, 1e-300)) / config.confidence.surprise_full_log10)


def _usd(value: float) -> str:
    return f"${value / 1e6:,.2f}M" if value >= 1e6 else f"${value / 1e3:,.0f}k"


# --------------------------------------------------------------------------- the engine
WINDOW = "window"  # column naming a window's position in a batch given to `detect_windows`


def detect_window(window: WindowData, expected: pd.DataFrame | None, config: Config) -> Detection:
    """Find large orders, sweeps and volume surges in one window.

    `expected` is the expected volume of this window's slot per (level, key)
    (`nqflow.baseline.BaselineStore.expected`, or `expected_volume` of a history); None or
    empty when there is no history yet.
    """
    return detect_windows([window], [expected], config)[0]


def detect_windows(windows: Sequence[WindowData], expected: Sequence[pd.DataFrame | None],
                   config: Config) -> list[Detection]:
    """`detect_window` for many windows at once (a whole session, in a backtest), one Detection each.

    Windows are independent: orders, sweeps, volumes and baselines never cross windows (every
    grouping is also by window), so each result equals what `detect_window` gives for that
    window alone. Batching only saves pandas' per-call overhead, which dominates 15-minute
    windows. `expected[i]` is window i's expected volume.
    """
    if len(windows) != len(expected):
        raise ValueError(f"{len(windows)} windows but {len(expected)} expected-volume frames")
    t = config.thresholds
    busy = [i for i, w in enumerate(windows) if not w.trades.empty]
    results: list[Detection | None] = [None] * len(windows)
    for i, w in enumerate(windows):
        if w.trades.empty:
            results[i] = Detection(pd.DataFrame(columns=ALERT_FIELDS), aggregate_orders(w.trades),
                                   pd.DataFrame(), _summary(w, 0, {}), pd.DataFrame(), config)
    if not busy:
        return results
    by = (WINDOW,)
    trades = pd.concat([windows[i].trades for i in busy], ignore_index=True)
    trades[WINDOW] = np.repeat(busy, [len(windows[i].trades) for i in busy])
    packages = _packages(windows, busy, trades)
    trades["package_id"] = packages.attrs.pop("package_of")
    orders = aggregate_orders(trades, by)
    orders["sweep_id"] = assign_sweeps(orders, t.sweep_span_ms, t.sweep_min_strikes, by)
    # Sweep ids are numbered across the batch; each window's are renumbered from 0 as if alone.
    first_sweep = orders[orders["sweep_id"] >= 0].groupby(WINDOW)["sweep_id"].min()
    # A "sweep" that is mostly one order is a block with small neighbours: judge its orders singly.
    grouped = orders[orders["sweep_id"] >= 0].groupby("sweep_id")["premium_usd"]
    dominated = grouped.max() >= t.sweep_block_share * grouped.sum()
    orders.loc[orders["sweep_id"].isin(dominated.index[dominated]), "sweep_id"] = -1
    volumes = _scored_volumes(window_volumes(orders, by), [(i, expected[i]) for i in busy], config)
    volumes["gate"] = surge_gate(volumes, config)  # "" where a surge may alert, else why not (charts show it)

    alerts = (_order_alerts(windows, orders, volumes, config) + _strategy_alerts(windows, packages, volumes, config)
              + _surge_alerts(windows, volumes, config))
    by_window: dict[int, list[_Candidate]] = {i: [] for i in busy}
    for candidate in alerts:
        by_window[candidate.window].append(candidate)
    sides = _side_columns(trades)[["buy_premium_usd", "sell_premium_usd"]]
    trade_totals = pd.concat([trades[["size", "premium_usd"]], sides], axis=1).groupby(trades[WINDOW]).sum()
    trade_totals["option_trades"] = trades.groupby(WINDOW).size()
    # Cut the batch back into windows by row ranges; the window column is dropped once, not per window.
    order_bounds = _bounds(orders[WINDOW], busy)
    volume_bounds = _bounds(volumes[WINDOW], busy)
    package_rows = packages.groupby("window").indices if len(packages) else {}  # packages are not sorted by window
    orders, volumes, packages = orders.drop(columns=WINDOW), volumes.drop(columns=WINDOW), packages.drop(columns="window")
    totals_of = trade_totals.to_dict("index")
    no_alerts = pd.DataFrame(columns=ALERT_FIELDS)
    zero_dte = (orders["days_to_expiry"] == 0).to_numpy()
    for i in busy:
        own_orders = orders.iloc[slice(*order_bounds[i])].reset_index(drop=True)
        if i in first_sweep.index:
            own_orders.loc[own_orders["sweep_id"] >= 0, "sweep_id"] -= first_sweep[i]
        own_volumes = volumes.iloc[slice(*volume_bounds[i])].reset_index(drop=True)
        folded = _fold(by_window[i], config)
        if folded:
            frame = pd.DataFrame([alert.to_json() for alert in folded], columns=ALERT_FIELDS)
            frame = frame.sort_values(["confidence", "premium_usd"], ascending=False, kind="stable").reset_index(drop=True)
        else:
            frame = no_alerts.copy()
        summary = _summary(windows[i], len(own_orders), totals_of[i])
        own_packages = packages.take(package_rows.get(i, [])).reset_index(drop=True)
        summary["packages"] = int(len(own_packages))
        summary["packages_by_strategy"] = own_packages["strategy"].value_counts().to_dict() if len(own_packages) else {}
        size = own_orders["size"].to_numpy()
        zero = zero_dte[slice(*order_bounds[i])]
        summary["zero_dte_contract_share"] = round(float(size[zero].sum() / max(size.sum(), 1)), 4)
        summary["alerts"] = int(len(frame))
        summary["alerts_by_kind"] = frame["kind"].value_counts().to_dict() if len(frame) else {}
        summary["max_confidence"] = float(frame["confidence"].max()) if len(frame) else 0.0
        product = own_volumes[own_volumes["level"] == "product"]
        if len(product):
            summary["product_expected_volume"] = float(product["baseline"].iloc[0])
            summary["product_ratio"] = round(float(product["ratio"].iloc[0]), 3)
            summary["history_sessions"] = int(product["history_sessions"].iloc[0])
        results[i] = Detection(frame, own_orders, own_volumes, summary, own_packages, config)
    return results


def _packages(windows: Sequence[WindowData], busy: list[int], trades: pd.DataFrame) -> pd.DataFrame:
    """Strategy packages of a batch of windows (`nqflow.strategies.find_packages`); the package id of
    every option fill rides along in ``attrs["package_of"]``."""
    def stacked(frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, pd.Series]:
        frames = [(i, f) for i, f in frames if len(f)]
        if not frames:
            return pd.DataFrame(columns=["ts_event", "instrument_id", "price", "size", "side", "symbol"]), pd.Series(dtype="int64")
        return (pd.concat([f for _, f in frames], ignore_index=True),
                pd.Series(np.repeat([i for i, _ in frames], [len(f) for _, f in frames])))
    spreads, spread_window = stacked([(i, windows[i].spreads) for i in busy])
    futures, futures_window = stacked([(i, windows[i].futures) for i in busy])
    underlying, _ = stacked([(i, windows[i].underlying) for i in busy])
    legs_frames = {id(windows[i].legs): windows[i].legs for i in busy if len(windows[i].legs)}
    legs = pd.concat(legs_frames.values(), ignore_index=True).drop_duplicates(["spread_id", "leg_index"]) \
        if legs_frames else pd.DataFrame(columns=["spread_id"])
    packages, package_of = find_packages(trades, futures, spreads, legs, underlying, trades[WINDOW], spread_window,
                                         futures_window)
    # Numbered from 0 in each window, as if the window were detected alone.
    local = packages.groupby("window").cumcount().to_numpy() if len(packages) else np.empty(0, dtype=np.int64)
    package_of = np.where(package_of >= 0, local[np.maximum(package_of, 0)] if len(local) else -1, -1)
    packages = packages.assign(package_id=local)
    packages.attrs["package_of"] = package_of
    return packages


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
    listed = grouped.agg(event_time=("ts_event", "min"), symbol=("symbol", "first"), side=("side", "first"),
                         size=("size", "sum"), premium_usd=("premium_usd", "sum"), orders=("size", "size"),
                         strikes=("strike", "nunique"), expiry=("expiry", "first"), put_call=("put_call", "first"))
    is_sweep = listed.index < 0
    listed["kind"] = np.where(is_sweep, "sweep", "order")
    listed.loc[is_sweep, "symbol"] = listed["expiry"] + " " + listed["put_call"] + " x" + listed["strikes"].astype(str) + " strikes"
    if packages is not None and len(packages):
        listed = pd.concat([listed, pd.DataFrame({
            "kind": "package", "event_time": pd.to_datetime(packages["ts_event"], utc=True),
            "symbol": packages["strategy"] + " " + packages["expiry"], "side": packages["side"],
            "size": packages["quantity"], "premium_usd": packages["gross_premium_usd"],
            "orders": packages["legs"].map(len)})], ignore_index=True)
    listed = listed[(listed["premium_usd"] >= t.watch_premium_usd) & (listed["premium_usd"] < t.large_premium_usd)]
    return listed.sort_values("premium_usd", ascending=False)[columns].reset_index(drop=True)


def _bounds(window_column: pd.Series, windows: list[int]) -> dict[int, tuple[int, int]]:
    """Row range of each window in a frame sorted by window."""
    values = window_column.to_numpy()
    lo = np.searchsorted(values, windows, side="left")
    hi = np.searchsorted(values, windows, side="right")
    return {w: (int(a), int(b)) for w, a, b in zip(windows, lo, hi)}


def _scored_volumes(volumes: pd.DataFrame, expected: list[tuple[int, pd.DataFrame | None]], config: Config) -> pd.DataFrame:
    """Window volumes with their slot's expected volume, floored baseline, ratio and tail probability."""
    t = config.thresholds
    known = [e.assign(**{WINDOW: i}) for i, e in expected if e is not None and len(e)]
    known = pd.concat(known, ignore_index=True) if known else \
        pd.DataFrame({WINDOW: pd.Series(dtype="int64"), **{c: pd.Series(dtype=object) for c in EXPECTED_COLUMNS}})
    volumes = volumes.merge(known[[WINDOW, *EXPECTED_COLUMNS]], on=[WINDOW, "level", "key"], how="left")
    volumes["history_sessions"] = volumes["history_sessions"].fillna(0).astype(int)
    floors = volumes["level"].map({"instrument": t.instrument_baseline_floor, "expiry": t.expiry_baseline_floor,
                                   "product": t.product_baseline_floor})
    volumes["baseline"] = np.maximum(volumes["expected"].astype(float).fillna(0.0), floors)
    volumes["ratio"] = volumes["volume"] / volumes["baseline"]
    # The model's mean is floored like the ratio; its variance is never below that mean.
    variance = np.maximum(volumes["variance"].astype(float).fillna(0.0), volumes["baseline"])
    volumes["p_value"] = np.where(volumes["history_sessions"] > 0,
                                  tail_probability(volumes["volume"], volumes["baseline"], variance), 1.0)
    return volumes


def _summary(window: WindowData, orders: int, totals: dict) -> dict:
    """What a window held: `totals` are its option fills' size, premium_usd, buy/sell premium and count."""
    return {
        "window_start": window.start.isoformat(), "window_end": window.end.isoformat(),
        "trade_date": str(window.trade_date) if window.trade_date else None,
        "option_trades": int(totals.get("option_trades", 0)), "orders": int(orders),
        "contracts": int(totals.get("size", 0)), "premium_usd": float(totals.get("premium_usd", 0.0)),
        "buy_premium_usd": float(totals.get("buy_premium_usd", 0.0)),
        "sell_premium_usd": float(totals.get("sell_premium_usd", 0.0)),
        "underlying_last": float(window.underlying["price"].iloc[-1]) if len(window.underlying) else None,
        "empty": bool(window.empty), "notes": list(window.notes), "alerts": 0, "alerts_by_kind": {},
        "max_confidence": 0.0,
    }


def _underlying_at(window: WindowData, ts: pd.Timestamp) -> float | None:
    u = window.underlying
    if u.empty:
        return None
    before = u[u["ts_event"] <= ts]
    return float((before if len(before) else u)["price"].iloc[-1])


@dataclass
class _Candidate:
    """An alert before folding, with the bookkeeping the fold needs beside it (never inside it):
    the batch window it came from, the (level, key) volumes it owns, and its expiry-level keys."""

    alert: Alert
    window: int
    owns: list[tuple[str, str]]
    expiry_key: str | None = None  # a surge's own expiry-level key
    expiry_keys: set[str] = field(default_factory=set)  # an order's, sweep's or package's expiry-level keys


def _candidate(window: WindowData, index: int, owns: list[tuple[str, str]], expiry_key: str | None = None,
               expiry_keys: set[str] | None = None, **values) -> _Candidate:
    alert = Alert(window_start=window.start.isoformat(), window_end=window.end.isoformat(), **values)
    return _Candidate(alert, index, owns, expiry_key, set(expiry_keys or ()))


class _OpenInterest:
    """Open interest by instrument, per window, built only for windows that have an alert."""

    def __init__(self, windows: Sequence[WindowData]):
        self.windows, self.cache = windows, {}

    def __getitem__(self, window: int) -> pd.Series:
        if window not in self.cache:
            oi = self.windows[window].open_interest
            self.cache[window] = oi.set_index("instrument_id")["open_interest"] if not oi.empty else pd.Series(dtype="int64")
        return self.cache[window]


def _order_alerts(windows: Sequence[WindowData], orders: pd.DataFrame, volumes: pd.DataFrame,
                  config: Config) -> list[_Candidate]:
    t = config.thresholds
    instrument_volume = volumes[volumes["level"] == "instrument"].set_index([WINDOW, "key"])
    oi_by_window = _OpenInterest(windows)
    alerts = []
    groups = []
    in_sweep = orders[orders["sweep_id"] >= 0]
    sweep_premium = in_sweep.groupby("sweep_id")["premium_usd"].sum()
    for sweep_id in sweep_premium.index[sweep_premium >= t.large_premium_usd]:
        groups.append(("sweep", in_sweep[in_sweep["sweep_id"] == sweep_id]))
    single = orders[(orders["sweep_id"] < 0) & (orders["package_id"] < 0) & (orders["premium_usd"] >= t.large_premium_usd)]
    for position in range(len(single)):
        groups.append(("large_order", single.iloc[[position]]))
    for kind, members in groups:
        index = int(members[WINDOW].iloc[0])
        window, oi = windows[index], oi_by_window[index]
        premium = float(members["premium_usd"].sum())
        ids = sorted(int(i) for i in members["instrument_id"].unique())
        first = members.sort_values("ts_event").iloc[0]
        volume = int(members["size"].sum())
        totals = side_totals(members)
        inst_rows = instrument_volume.loc[[(index, str(i)) for i in ids]]
        inst_volume = float(inst_rows["volume"].sum()) if len(inst_rows) else float(volume)
        known_oi = [int(oi[i]) for i in ids if i in oi.index]
        total_oi = sum(known_oi) if len(known_oi) == len(ids) else None
        p_value = float(inst_rows["p_value"].min()) if len(inst_rows) and (inst_rows["history_sessions"] > 0).any() else 1.0
        history = int(inst_rows["history_sessions"].max()) if len(inst_rows) else 0
        strikes = sorted(members["strike"].unique())
        components = {
            "surprise": surprise_component(p_value, config) if history else 0.0,
            "premium": premium_component(premium, config),
            "imbalance": abs(imbalance_of(totals["buy_premium_usd"], totals["sell_premium_usd"])),
            "concentration": volume / max(inst_volume, volume),
            "volume_oi": min(1.0, volume / total_oi) if total_oi else 0.0,
        }
        confidence, label = score(components, config)
        side = str(first["side"])
        direction = {"B": "BUY", "A": "SELL"}.get(side, "MIXED")
        sentiment = sentiment_of(totals["bullish_premium_usd"], totals["bearish_premium_usd"], t.direction_share)
        right = "calls" if first["put_call"] == "C" else "puts"
        verb = {"BUY": "bought", "SELL": "sold"}.get(direction, "traded")
        if kind == "sweep":
            what = (f"sweep of {len(strikes)} strikes {strikes[0]:g}-{strikes[-1]:g} {first['expiry']} {right}, "
                    f"{len(members)} orders within {(members['ts_event'].max() - members['ts_event'].min()).total_seconds() * 1000:.0f} ms")
            alert_id = stable_id("sweep", ",".join(map(str, ids)), first["ts_event"].value, side)
        else:
            what = f"one aggressor order, {int(first['fills'])} fill(s) at ts {first['ts_event'].isoformat()}"
            alert_id = stable_id("large_order", ids[0], first["ts_event"].value, side)
        reasons = [f"{_usd(premium)} premium >= {_usd(t.large_premium_usd)} threshold ({what})",
                   f"{volume:,} contracts {verb} by the aggressor: {right} {verb} reads {sentiment.lower()}"
                   if side in ("B", "A") else
                   f"{volume:,} {right} with no known aggressor (side {side}): direction and sentiment unknown"]
        if history:
            reasons.append(f"instrument window volume {inst_volume:,.0f} vs expected "
                           f"{float(inst_rows['baseline'].sum()):,.1f}; tail probability {p_value:.1e} "
                           f"over {history} sessions")
        else:
            reasons.append("no volume history for this instrument: surprise not scored")
        if total_oi:
            reasons.append(f"volume/open interest {volume / total_oi:.2f}" + (" (above OI: likely new positions)" if volume > total_oi else ""))
        else:
            reasons.append("open interest unknown")
        alerts.append(_candidate(
            window, index, [("instrument", str(i)) for i in ids], expiry_keys=set(expiry_level_key(members)),
            alert_id=alert_id, kind=kind, level="instrument" if kind == "large_order" else "expiry",
            event_time=first["ts_event"].isoformat(), symbol=str(first["symbol"]) if kind == "large_order" else
            f"{first['expiry']} {first['put_call']}{strikes[0]:g}-{strikes[-1]:g}",
            symbols=sorted(str(s) for s in members["symbol"].unique()), instrument_ids=ids, expiry=str(first["expiry"]),
            expiration=pd.Timestamp(first["expiration"]).isoformat(), strike=float(strikes[0]) if len(strikes) == 1 else None,
            put_call=str(first["put_call"]), direction=direction, sentiment=sentiment, volume=volume,
            buy_volume=totals["buy_volume"], sell_volume=totals["sell_volume"],
            baseline=float(inst_rows["baseline"].sum()) if len(inst_rows) else None,
            ratio=inst_volume / float(inst_rows["baseline"].sum()) if len(inst_rows) else None, tier=None,
            history_sessions=history, p_value=p_value, premium_usd=round(premium, 2),
            buy_premium_usd=totals["buy_premium_usd"], sell_premium_usd=totals["sell_premium_usd"],
            imbalance=round(imbalance_of(totals["buy_premium_usd"], totals["sell_premium_usd"]), 4),
            underlying_price=_underlying_at(window, first["ts_event"]), open_interest=total_oi,
            volume_oi=round(volume / total_oi, 4) if total_oi else None, confidence=confidence, label=label,
            reasons=reasons + _dte_reason(int(members["days_to_expiry"].min())),
            days_to_expiry=int(members["days_to_expiry"].min()), zero_dte=bool(members["days_to_expiry"].min() == 0)))
    return alerts


def _dte_reason(days: int | None) -> list[str]:
    if days is None or pd.isna(days):
        return []
    return ["0DTE: expires today" if days == 0 else f"{days} day(s) to expiry"]


def _strategy_alerts(windows: Sequence[WindowData], packages: pd.DataFrame, volumes: pd.DataFrame,
                     config: Config) -> list[_Candidate]:
    """A package whose gross premium reaches ``large_premium_usd`` is one alert of kind ``strategy``."""
    t = config.thresholds
    big = packages[packages["gross_premium_usd"] >= t.large_premium_usd] if len(packages) else packages
    if big.empty:
        return []
    instrument_volume = volumes[volumes["level"] == "instrument"].set_index([WINDOW, "key"])
    oi_by_window = _OpenInterest(windows)
    alerts = []
    for package in big.itertuples(index=False):
        index = int(package.window)
        window, oi = windows[index], oi_by_window[index]
        row = pd.Series(package._asdict())
        direction, sentiment, net_delta = read_package(row, t.delta_neutral_share)
        ids = package.option_leg_ids
        inst_rows = instrument_volume.loc[[k for k in ((index, str(i)) for i in ids) if k in instrument_volume.index]]
        history = int(inst_rows["history_sessions"].max()) if len(inst_rows) else 0
        p_value = float(inst_rows["p_value"].min()) if history else 1.0
        volume = int(sum(leg["size"] for leg in package.legs if leg["put_call"] != "F"))
        inst_volume = float(inst_rows["volume"].sum()) if len(inst_rows) else float(volume)
        known_oi = [int(oi[i]) for i in ids if i in oi.index]
        total_oi = sum(known_oi) if len(known_oi) == len(ids) else None
        premium = float(package.gross_premium_usd)
        components = {
            "surprise": surprise_component(p_value, config) if history else 0.0,
            "premium": premium_component(premium, config),
            "imbalance": 1.0 if package.side in ("B", "A") else 0.0,  # one aggressor took the whole package
            "concentration": volume / max(inst_volume, volume),
            "volume_oi": min(1.0, volume / total_oi) if total_oi else 0.0,
        }
        confidence, label = score(components, config)
        days = int(min(days_to_expiry(pd.Series(pd.to_datetime([package.ts_event] * len(ids), utc=True)),
                                      pd.Series(pd.to_datetime([leg["expiration"] for leg in package.legs
                                                                if leg["put_call"] != "F"], utc=True)))))
        event_time = pd.Timestamp(package.ts_event, tz="UTC")
        legs_text = ", ".join(f"{'+' if leg['sign'] > 0 else '-'}{leg['ratio']} {leg['symbol']}" for leg in package.legs)
        net = float(package.net_premium_usd)
        verb = {"BUY": "bought", "SELL": "sold"}.get(direction, "traded (aggressor unknown)")
        source = {"definition": "legs from the spread's definition",
                  "prints": "legs inferred from the prints at its ts_event (the definition lists none)",
                  "no spread instrument": "no spread instrument: legs printed together at one ts_event"}[package.source]
        reasons = [
            f"{package.strategy.replace('_', ' ')} package {verb}: {_usd(premium)} gross premium >= "
            f"{_usd(t.large_premium_usd)} threshold, net {_usd(abs(net))} {'debit' if net >= 0 else 'credit'} "
            f"per the buyer; {package.quantity:,} x ({legs_text})",
            f"net delta {net_delta:+,.0f} futures-equivalent for the aggressor: "
            + ("delta-neutral, a volatility trade" if sentiment == "VOLATILITY" else f"reads {sentiment.lower()}"),
            f"one trade, not {len(package.legs)} bets: {source}; its legs are not reported as orders or sweeps",
        ]
        reasons.append(f"volume/open interest {volume / total_oi:.2f}" if total_oi else "open interest unknown")
        alerts.append(_candidate(
            window, index, [("instrument", str(i)) for i in ids], expiry_keys=_package_expiry_keys(package),
            alert_id=stable_id("strategy", package.spread_id, ",".join(map(str, package.leg_instrument_ids)),
                                       package.ts_event, package.side),
            kind="strategy", level="package", event_time=event_time.isoformat(),
            symbol=f"{package.strategy} {package.expiry}" + (f" {package.spread_symbol}" if package.spread_symbol else ""),
            symbols=[leg["symbol"] for leg in package.legs], instrument_ids=list(package.leg_instrument_ids),
            expiry=str(package.expiry), expiration=pd.Timestamp(package.expiration, tz="UTC").isoformat(),
            strike=None, put_call=package.put_call, direction=direction, sentiment=sentiment, volume=volume,
            buy_volume=float(volume if package.side == "B" else 0), sell_volume=float(volume if package.side == "A" else 0),
            baseline=None, ratio=None, tier=None, history_sessions=history, p_value=p_value,
            premium_usd=round(premium, 2), buy_premium_usd=premium if package.side == "B" else 0.0,
            sell_premium_usd=premium if package.side == "A" else 0.0,
            imbalance=1.0 if package.side == "B" else -1.0 if package.side == "A" else 0.0,
            underlying_price=_underlying_at(window, event_time), open_interest=total_oi,
            volume_oi=round(volume / total_oi, 4) if total_oi else None, confidence=confidence, label=label,
            reasons=reasons + _dte_reason(days), days_to_expiry=days, zero_dte=days == 0, strategy=package.strategy,
            legs=[{k: leg[k] for k in ("instrument_id", "symbol", "put_call", "strike", "ratio", "sign", "size",
                                       "price", "delta")} for leg in package.legs],
            net_premium_usd=round(net, 2), net_delta=round(float(net_delta), 2)))
    return alerts


def _package_expiry_keys(package) -> set[str]:
    options = [leg for leg in package.legs if leg["put_call"] != "F"]
    frame = pd.DataFrame({"ts_event": pd.to_datetime([package.ts_event] * len(options), utc=True),
                          "expiration": pd.to_datetime([leg["expiration"] for leg in options], utc=True),
                          "symbol": [leg["symbol"] for leg in options]})
    return set(expiry_level_key(frame))


BELOW_FIRST_TIER = "below the first tier"
SHORT_DATED = "short-dated: judged at its days-to-expiry level"


def surge_gate(volumes: pd.DataFrame, config: Config) -> pd.Series:
    """Why each row of scored window volumes cannot be a surge alert, or "" when it can.

    The reasons, first that applies: "below the first tier", "thin" (under the level's
    minimum volume), "short history" (under ``min_history_sessions``), "one order" (its
    largest order holds more than ``surge_max_order_share``: one print is the large-order
    detector's business, not a surge), "short-dated: ..." (an option within
    `nqflow.baseline.SHORT_DATED_DAYS` of expiry: its own history grows toward expiry, so it is
    judged at its days-to-expiry level, e.g. 0DTE). Rows that pass may still be folded into another alert.
    """
    t = config.thresholds
    minimum = volumes["level"].map({"instrument": t.instrument_min_volume, "expiry": t.expiry_min_volume,
                                    "product": t.product_min_volume})
    dte = volumes["days_to_expiry"].astype(float) if "days_to_expiry" in volumes else pd.Series(np.nan, index=volumes.index)
    short_dated = (volumes["level"] == "instrument") & (dte <= SHORT_DATED_DAYS)
    return pd.Series(np.select(
        [volumes["ratio"] < t.surge_tiers[0], volumes["volume"] < minimum,
         volumes["history_sessions"] < t.min_history_sessions, volumes["top_order_share"] > t.surge_max_order_share,
         short_dated],
        [BELOW_FIRST_TIER, "thin", "short history", "one order", SHORT_DATED], default=""), index=volumes.index)


def _surge_alerts(windows: Sequence[WindowData], volumes: pd.DataFrame, config: Config) -> list[_Candidate]:
    t = config.thresholds
    surging = volumes[volumes["gate"] == ""]
    oi_by_window = _OpenInterest(windows)
    alerts = []
    for row in surging.itertuples(index=False):
        window, oi = windows[row.window], oi_by_window[row.window]
        tier = tier_of(row.ratio, t.surge_tiers)
        direction = direction_of(row.buy_premium_usd, row.sell_premium_usd, t.direction_share)
        sentiment = sentiment_of(row.bullish_premium_usd, row.bearish_premium_usd, t.direction_share)
        imbalance = imbalance_of(row.buy_premium_usd, row.sell_premium_usd)
        open_interest = None
        if row.level == "instrument" and int(row.key) in oi.index:
            open_interest = int(oi[int(row.key)])
        components = {"surprise": surprise_component(row.p_value, config),
                      "premium": premium_component(row.premium_usd, config), "imbalance": abs(imbalance),
                      "concentration": row.top_order_share,
                      "volume_oi": min(1.0, row.volume / open_interest) if open_interest else 0.0}
        confidence, label = score(components, config)
        short = " (fewer than the configured sessions)" if row.history_sessions < t.baseline_sessions else ""
        reasons = [
            f"{row.volume:,} contracts vs expected {row.baseline:,.1f} for this time of day: {row.ratio:,.1f}x "
            f"(tier {tier:g}x) over {row.history_sessions} sessions of history{short}",
            f"tail probability {row.p_value:.1e} under the slot's count model",
            f"aggressor premium {_usd(row.buy_premium_usd)} bought vs {_usd(row.sell_premium_usd)} sold: "
            f"{direction.lower()}, reads {sentiment.lower()}",
            f"largest single order is {row.top_order_share:.0%} of the volume",
        ]
        if open_interest:
            reasons.append(f"volume/open interest {row.volume / open_interest:.2f}")
        dte = None if pd.isna(row.days_to_expiry) else int(row.days_to_expiry)
        alerts.append(_candidate(
            window, int(row.window), [(row.level, str(row.key))], expiry_key=row.expiry_key,
            alert_id=stable_id("volume_surge", row.level, row.key, window.start.isoformat()),
            kind="volume_surge", level=row.level, event_time=row.first_ts.isoformat(), symbol=row.symbol,
            symbols=[row.symbol] if row.level == "instrument" else [], instrument_ids=row.instrument_ids,
            expiry=row.expiry or None, expiration=row.expiration.isoformat() if not pd.isna(row.expiration) else None,
            strike=None if math.isnan(row.strike) else row.strike, put_call=row.put_call or None,
            direction=direction, sentiment=sentiment, volume=int(row.volume), buy_volume=row.buy_volume,
            sell_volume=row.sell_volume, baseline=round(float(row.baseline), 3), ratio=round(float(row.ratio), 3),
            tier=tier, history_sessions=int(row.history_sessions), p_value=float(row.p_value),
            premium_usd=round(row.premium_usd, 2), buy_premium_usd=row.buy_premium_usd,
            sell_premium_usd=row.sell_premium_usd, imbalance=round(imbalance, 4),
            underlying_price=_underlying_at(window, window.end),
            open_interest=open_interest, volume_oi=round(row.volume / open_interest, 4) if open_interest else None,
            confidence=confidence, label=label, reasons=reasons + _dte_reason(dte), days_to_expiry=dte,
            zero_dte=dte == 0 if dte is not None else None))
    return alerts


def _fold(candidates: list[_Candidate], config: Config) -> list[Alert]:
    """One event, one alert: fold nested surges and order-driven instrument surges (see module doc)."""
    share = config.thresholds.dominance_share
    surges = {c.owns[0]: c.alert for c in candidates if c.alert.kind == Kind.VOLUME_SURGE}
    surge_expiry_key = {c.alert.alert_id: c.expiry_key for c in candidates if c.alert.kind == Kind.VOLUME_SURGE}
    dropped: set[str] = set()

    def fold(loser: Alert, owner: Alert, why: str) -> None:
        dropped.add(loser.alert_id)
        owner.reasons.append(f"also {why}")

    # instrument <-> expiry <-> product, fine to coarse
    for fine_level, coarse_level in ((Level.INSTRUMENT, Level.EXPIRY), (Level.EXPIRY, Level.PRODUCT)):
        for (level, key), fine in list(surges.items()):
            if level != fine_level or fine.alert_id in dropped:
                continue
            coarse_key = (coarse_level.value, surge_expiry_key[fine.alert_id] if coarse_level == Level.EXPIRY else PRODUCT_KEY)
            coarse = surges.get(coarse_key)
            if coarse is None or coarse.alert_id in dropped:
                continue
            if fine.volume >= share * coarse.volume:
                fold(coarse, fine, f"{coarse_level} {coarse.symbol} surged {coarse.ratio:.1f}x, "
                                   f"{fine.volume / coarse.volume:.0%} of it on {fine.symbol}")
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
                fold(surge, event, f"{surge.symbol} window volume {surge.volume:,} is "
                                   f"{surge.ratio:.1f}x its usual (tier {surge.tier:g}x)")
        # ... and expiry surges that are mostly this order, sweep or package
        for key in sorted(candidate.expiry_keys):
            surge = surges.get(("expiry", key))
            if surge is not None and surge.alert_id not in dropped and event.volume >= share * surge.volume:
                fold(surge, event, f"expiry {surge.symbol} window volume {surge.volume:,} is "
                                   f"{surge.ratio:.1f}x its usual (tier {surge.tier:g}x), "
                                   f"{event.volume / surge.volume:.0%} of it this {event.kind.replace('_', ' ')}")
    return [c.alert for c in candidates if c.alert.alert_id not in dropped]
