"""The feature stage of detection: everything about a batch of windows that no tunable threshold changes.

Detection runs in two stages (`nqflow.engine.detect` is the second):

1. **features** (this module), computed once per session and stored as Parquet beside the data:
   aggressor orders with their strategy-package ids and sweep candidates, the strategy packages,
   per-level window volumes with the slot's expected volume and count-model moments and each
   instrument's open interest, the front future's price path, and each window's totals;
2. **thresholds** (`nqflow.engine.detect.evaluate`): a vectorised filter, score and fold over those frames.

The live window path runs both stages back to back (`nqflow.engine.detect.detect_windows`), so a
re-threshold over stored features returns exactly what the live monitor would have raised.

Two thresholds shape the features themselves, because they decide which orders are grouped
into a sweep candidate: ``sweep_span_ms`` and ``sweep_min_strikes`` (`FEATURE_THRESHOLDS`).
Stored features record them, and a store whose values differ from the config is recomputed.
Every other threshold (premium levels, surge tiers, floors, minimum volumes, the sweep
block share, confidence) is applied in the threshold stage.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nqflow.config import Config
from nqflow.engine.levels import (
    EXPECTED_COLUMNS,
    PRODUCT_KEY,
    days_to_expiry,
    expiry_key,
    expiry_level_key,
    instrument_key_text,
)
from nqflow.engine.strategies import PACKAGE_COLUMNS, find_packages
from nqflow.errors import DataError
from nqflow.market.frames import ClassifiedFills, WindowData, front_rows, stack_cut, window_notes
from nqflow.parquet import write_parquet

ORDER_KEYS = ["instrument_id", "ts_event", "side"]
WINDOW = "window"  # column naming a window's position in a batch
#: Thresholds that change the features (sweep grouping); all others apply in `nqflow.engine.detect`.
FEATURE_THRESHOLDS = ("sweep_span_ms", "sweep_min_strikes")
#: Bumped whenever what the feature stage computes changes: older stores are recomputed.
FEATURE_VERSION = 4
#: Per-window columns of `Features.windows` (what a window summary needs beside its alerts).
WINDOW_COLUMNS = [
    "window_start",
    "window_end",
    "trade_date",
    "empty",
    "notes",
    "underlying_last",
    "option_trades",
    "orders",
    "contracts",
    "premium_usd",
    "buy_premium_usd",
    "sell_premium_usd",
    "packages",
    "packages_by_strategy",
    "zero_dte_contract_share",
    "walls",
]


def aggregate_orders(trades: pd.DataFrame, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """Collapse fills into aggressor orders: same instrument, ts_event and side (and `by` columns,
    e.g. the window of a batch). Sorted by `by`, event time and instrument."""
    keys = [*by, *ORDER_KEYS]
    if trades.empty:
        return pd.DataFrame(
            columns=[
                *keys,
                "symbol",
                "expiry",
                "expiration",
                "strike",
                "put_call",
                "size",
                "premium_usd",
                "vwap",
                "fills",
                "package_id",
                "days_to_expiry",
            ]
        )
    # Grouped with NumPy on one integer per key tuple, in order of first appearance (pandas'
    # groupby with sort=False): its named aggregations cost more than the sums themselves. The
    # orders are put in their final order before the frame is built, so it is built once.
    group = _by_codes(trades, tuple(keys))
    first = _first_rows(group)
    n = len(first)
    ts = trades["ts_event"].to_numpy(dtype="datetime64[ns]").astype("int64")
    iid = trades["instrument_id"].to_numpy(dtype="int64")
    order = np.lexsort([iid[first], ts[first], *[_sort_codes(trades[b].to_numpy()[first]) for b in reversed(by)]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    group, first = rank[group], first[order]  # groups renumbered in the final order
    size = np.bincount(group, weights=trades["size"].to_numpy(dtype="int64"), minlength=n).astype("int64")
    premium = np.bincount(group, weights=trades["premium_usd"].to_numpy(dtype=float), minlength=n)
    package_max = np.full(n, -1 if "package_id" not in trades else np.iinfo("int64").min, dtype="int64")
    if "package_id" in trades:
        np.maximum.at(package_max, group, trades["package_id"].to_numpy(dtype="int64"))
    multiplier = trades["multiplier"].array.take(first)
    ts_event = pd.Series(trades["ts_event"].array.take(first))
    expiration = pd.Series(trades["expiration"].array.take(first))
    symbol = pd.Series(trades["symbol"].array.take(first))
    return pd.DataFrame(
        {
            **{k: ts_event if k == "ts_event" else trades[k].array.take(first) for k in keys},
            "symbol": symbol,
            "expiration": expiration,
            **{c: trades[c].array.take(first) for c in ("strike", "put_call")},
            "size": size,
            "premium_usd": premium,
            "fills": np.bincount(group, minlength=n).astype("int64"),
            "multiplier": multiplier,
            "package_id": package_max,
            "vwap": premium / (size * np.asarray(multiplier, dtype=float)),
            "expiry": expiry_key(symbol),
            "days_to_expiry": days_to_expiry(ts_event, expiration).to_numpy(dtype="int64"),
        }
    )


def _sort_codes(values: np.ndarray) -> np.ndarray:
    """Codes that order as `values` sort (missing last, as sort_values puts them)."""
    codes, distinct = pd.factorize(values, sort=True)
    return np.where(codes < 0, len(distinct), codes)


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
    keys = (*by, "expiry", "put_call", "side")
    candidates = orders[[*keys, "ts_event", "strike"]].iloc[aggressive]  # the columns read, not all 18
    group = _by_codes(candidates, keys)  # numbered as groupby(sort=False)
    in_groups = stable_argsort(group)  # each group contiguous, still in time order
    group, rows = group[in_groups], aggressive[in_groups]
    times = candidates["ts_event"].to_numpy(dtype="datetime64[ns]").astype("int64")[in_groups]
    strikes = candidates["strike"].to_numpy(dtype=float)[in_groups]
    span = int(span_ms) * 1_000_000
    # A sweep can only start where the order min_strikes - 1 places on is in the same group and
    # within the span; only those starts (few) are examined one by one.
    reach = min_strikes - 1
    starts = np.flatnonzero(
        (group[reach:] == group[: len(group) - reach]) & (times[reach:] - times[: len(group) - reach] <= span)
    )
    stops = _span_ends(group, times, starts, span)
    next_id, resume = 0, 0
    strike_list = strikes.tolist()  # a set of a few floats beats np.unique on a tiny slice
    for start, stop in zip(starts.tolist(), stops.tolist()):
        if start < resume:
            continue
        if len(set(strike_list[start:stop])) >= min_strikes:
            sweep[rows[start:stop]] = next_id
            next_id, resume = next_id + 1, stop
    return pd.Series(sweep, index=orders.index)


def _span_ends(group: np.ndarray, times: np.ndarray, starts: np.ndarray, span: int) -> np.ndarray:
    """For each start, the end of the run of rows in its group within `span` of it (rows sorted by
    group, then time): one search over a key that orders by group, then time's rank among the
    distinct times (ranks, not nanoseconds, so the key never overflows)."""
    distinct = np.unique(times)
    width = len(distinct) + 1
    key = group.astype(np.int64) * width + np.searchsorted(distinct, times)
    within = np.searchsorted(distinct, times[starts] + span, side="right")  # distinct times in reach
    return np.searchsorted(key, group[starts].astype(np.int64) * width + within, side="left").astype(np.int64)


def side_weights(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-row buyer/seller volume and premium, and bullish/bearish premium, as arrays to sum."""
    side = frame["side"].to_numpy(dtype=object)
    buy, sell = side == "B", side == "A"
    call = frame["put_call"].to_numpy(dtype=object) == "C"
    size = frame["size"].to_numpy(dtype=float)
    prem = frame["premium_usd"].to_numpy(dtype=float)
    return {
        "buy_volume": size * buy,
        "sell_volume": size * sell,
        "buy_premium_usd": prem * buy,
        "sell_premium_usd": prem * sell,
        "bullish_premium_usd": prem * ((buy & call) | (sell & ~call)),
        "bearish_premium_usd": prem * ((sell & call) | (buy & ~call)),
    }


def side_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """`side_weights` as the columns of a frame on `frame`'s index."""
    return pd.DataFrame(side_weights(frame), index=frame.index)


SIDE_COLUMNS = [
    "buy_volume",
    "sell_volume",
    "buy_premium_usd",
    "sell_premium_usd",
    "bullish_premium_usd",
    "bearish_premium_usd",
]


def _stacked_text(parts: list) -> pd.api.extensions.ExtensionArray:
    """Text arrays of one dtype, one after another."""
    return pd.concat([pd.Series(part) for part in parts], ignore_index=True).array


def _arrow_text(parts: list[pa.Array], order: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """Arrow text arrays one after another, rows taken in `order`, as the text a frame built from
    Python strings infers (``str``)."""
    return pd.array(pa.concat_arrays(parts).take(order), dtype="str")


def window_volumes(orders: pd.DataFrame, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per level and key (and `by` values): volume, premium, side totals and the largest order's
    share of the volume; ``instrument_id`` on instrument rows (-1 on the others). Rows come by
    `by`, then level (instrument, expiry, product), then first trade.

    Grouped with NumPy on integer group numbers (`_groups`), every column built once for all
    three levels and the frame constructed once: the live window path pays pandas' per-groupby
    and per-column overhead on a few hundred orders, which was most of its time. The keys are
    `nqflow.engine.levels.level_keys`' (the orders' ``expiry_key`` when they carry it)."""
    if orders.empty:
        return pd.DataFrame(columns=["level", *by, "key", "volume"])
    n_orders = len(orders)
    size = orders["size"].to_numpy(dtype="int64")
    premium = orders["premium_usd"].to_numpy(dtype=float)
    sides = side_weights(orders)
    ts_ns = orders["ts_event"].to_numpy(dtype="datetime64[ns]").astype("int64")
    iid = orders["instrument_id"].to_numpy(dtype="int64")
    dte = orders["days_to_expiry"].to_numpy().astype(float)
    expiry_keys = (orders["expiry_key"] if "expiry_key" in orders else expiry_level_key(orders)).to_numpy(dtype=object)
    by_codes = _by_codes(orders, by)
    levels = {
        "instrument": _groups(by_codes, iid),
        "expiry": _groups(by_codes, expiry_keys),
        "product": _groups(by_codes, np.zeros(n_orders, dtype="int64")),
    }
    columns: dict[str, list] = {}
    # Text is built as Arrow arrays (the instrument rows' symbol and right taken from the orders'
    # own): a frame made from 20,000 Python strings a column converts each of them, 2 ms a column.
    text: dict[str, list] = {"symbol": [], "put_call": []}
    arrow_text: dict[str, list[pa.Array]] = {"key": [], "expiry_key": []}

    def add(name: str, values) -> None:
        columns.setdefault(name, []).append(np.asarray(values))

    firsts, level_sizes = [], []
    for level, (group, first, key_values) in levels.items():
        n = len(first)
        firsts.append(first)
        level_sizes.append(n)
        volume = np.bincount(group, weights=size, minlength=n)
        top = np.zeros(n, dtype="int64")
        np.maximum.at(top, group, size)
        first_ns = np.full(n, np.iinfo("int64").max)
        np.minimum.at(first_ns, group, ts_ns)
        if level == "instrument":
            arrow_text["key"].append(instrument_key_text(iid[first]))
            instruments = np.ones(n, dtype="int64")
        else:
            keys = key_values if level == "expiry" else np.full(n, PRODUCT_KEY, dtype=object)
            arrow_text["key"].append(pa.array(keys, type=pa.string()))
            pairs, _ = pd.factorize(group * (int(iid.max()) + 1) + iid)  # one number per (group, instrument)
            instruments = np.bincount(group[_first_rows(pairs)], minlength=n)
        add("volume", volume.astype("int64"))
        add("premium_usd", np.bincount(group, weights=premium, minlength=n))
        for column, weights in sides.items():
            add(column, np.bincount(group, weights=weights, minlength=n))
        add("top_order_share", top / np.maximum(volume, 1))
        add("instruments", instruments.astype("int64"))
        add("first_ts", first_ns)
        if level == "instrument":
            text["symbol"].append(orders["symbol"].array.take(first))
            add("strike", orders["strike"].to_numpy(dtype=float)[first])
            text["put_call"].append(orders["put_call"].array.take(first))
            add("days_to_expiry", dte[first])
            arrow_text["expiry_key"].append(pa.array(expiry_keys[first], type=pa.string()))
            add("instrument_id", iid[first])
        else:
            text["symbol"].append(pd.array(keys, dtype=orders["symbol"].dtype))
            add("strike", np.full(n, np.nan))
            text["put_call"].append(pd.array(np.full(n, "", dtype=object), dtype=orders["put_call"].dtype))
            if level == "expiry":
                shortest = np.full(n, np.inf)
                np.minimum.at(shortest, group, dte)
                add("days_to_expiry", shortest)
            else:
                add("days_to_expiry", np.full(n, np.nan))
            arrow_text["expiry_key"].append(pa.array(keys if level == "expiry" else [""] * n, type=pa.string()))
            add("instrument_id", np.full(n, -1, dtype="int64"))
    # Where each row's by values, expiry and expiration come from: its group's first order
    # (none for expiry/expiration beyond the levels that have them).
    first_rows = np.concatenate(firsts)
    n_product = level_sizes[2]
    expiry_rows = np.concatenate([firsts[0], firsts[1], np.full(n_product, -1)])
    stacked = {name: np.concatenate(parts) for name, parts in columns.items()}
    order = np.arange(len(first_rows))
    if by:  # by `by` (stable), as the rows of each level come
        order = np.lexsort([_sort_codes(orders[b].to_numpy()[first_rows]) for b in reversed(by)])
    expiry_rows, first_rows = expiry_rows[order], first_rows[order]
    row_level = pa.array(list(levels)).take(np.repeat(np.arange(len(levels)), level_sizes)[order])
    expiry = orders["expiry"].to_numpy(dtype=object)[np.maximum(expiry_rows, 0)]
    expiry[expiry_rows < 0] = ""
    return pd.DataFrame(
        {
            "level": pd.array(row_level, dtype="str"),
            **{b: orders[b].array.take(first_rows) for b in by},
            "key": _arrow_text(arrow_text["key"], order),
            "volume": stacked["volume"][order],
            "premium_usd": stacked["premium_usd"][order],
            **{c: stacked[c][order] for c in SIDE_COLUMNS},
            "top_order_share": stacked["top_order_share"][order],
            "instruments": stacked["instruments"][order],
            "first_ts": pd.DatetimeIndex(stacked["first_ts"][order].view("datetime64[ns]"), tz="UTC"),
            "symbol": _stacked_text(text["symbol"]).take(order),
            "expiry": pd.Series(expiry, dtype=object),  # as the orders hold it
            "expiration": orders["expiration"].array.take(expiry_rows, allow_fill=True),
            "strike": stacked["strike"][order],
            "put_call": _stacked_text(text["put_call"]).take(order),
            "days_to_expiry": stacked["days_to_expiry"][order],
            "expiry_key": _arrow_text(arrow_text["expiry_key"], order),
            "instrument_id": stacked["instrument_id"][order],
        }
    )


def _by_codes(orders: pd.DataFrame, by: tuple[str, ...]) -> np.ndarray:
    """One integer per row for its `by` values (0 everywhere without `by`)."""
    codes = np.zeros(len(orders), dtype="int64")
    for column in by:
        column_codes, distinct = pd.factorize(orders[column].array)
        codes, _ = pd.factorize(codes * max(len(distinct), 1) + column_codes)  # kept dense: no overflow
    return codes.astype("int64")


def _groups(by_codes: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's group among its (by, key) pairs, numbered in order of first appearance (as a
    pandas groupby with ``sort=False``), each group's first row and its key."""
    key_codes, distinct = pd.factorize(keys)
    group, _ = pd.factorize(by_codes * max(len(distinct), 1) + key_codes)
    first = _first_rows(group)
    return group, first, distinct[key_codes[first]]


def _first_rows(group: np.ndarray) -> np.ndarray:
    """Each group's first row, for group numbers given in order of first appearance (factorize):
    a group starts where the running maximum rises."""
    if not len(group):
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, np.diff(np.maximum.accumulate(group)) > 0])


def stable_argsort(keys: np.ndarray) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` of integer keys: each key and its position packed
    in one 64-bit integer and sorted as plain numbers (distinct, so any sort is stable), which
    is several times faster than NumPy's stable sort (a year's 600,000 orders: 8 against 60 ms).
    Keys whose range leaves no room for the positions take the stable sort itself."""
    n = len(keys)
    if n < 2:
        return np.arange(n, dtype=np.int64)
    low = int(keys.min())
    position_bits = (n - 1).bit_length()
    if (int(keys.max()) - low).bit_length() + position_bits > 63:
        return np.argsort(keys, kind="stable")
    packed = ((keys.astype(np.int64) - low) << position_bits) | np.arange(n, dtype=np.int64)
    return np.sort(packed) & ((1 << position_bits) - 1)


def _cumcount(group: np.ndarray) -> np.ndarray:
    """Each row's position among the earlier rows of its group (pandas' ``groupby().cumcount()``)."""
    order = stable_argsort(group)
    sorted_group = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    rank = np.arange(len(group)) - np.repeat(starts, np.diff(np.r_[starts, len(group)]))
    out = np.empty(len(group), dtype=np.int64)
    out[order] = rank
    return out


def instrument_ids(volumes: pd.DataFrame | np.ndarray) -> list[list[int]]:
    """Each volume row's instruments as a list (an alert's ``instrument_ids``): [id] or []; of a
    volumes frame or of its ``instrument_id`` column as an array."""
    ids = volumes["instrument_id"].to_numpy() if isinstance(volumes, pd.DataFrame) else volumes
    return [[int(i)] if i >= 0 else [] for i in ids]


def side_totals(frame: pd.DataFrame) -> dict[str, float]:
    """Buyer/seller-initiated volume and premium, and bullish/bearish premium, of some fills or orders."""
    return {k: float(v) for k, v in side_columns(frame).sum().items()}


#: A part with no prints in any busy window: what the package finder is given instead.
_NO_PRINTS = ["ts_event", "instrument_id", "price", "size", "side", "symbol"]


@dataclass
class WindowBatch:
    """A batch of windows as the feature stage reads them: each window's own scalars in lists,
    each kind of print stacked in window order (and time order within a window), its windows in
    an array beside it. Built from loaded windows (`batch_of_windows`) or, with no frame per
    window at all, from a session's fills and its windows' bounds (`batch_of_session`).

    `options`, `spreads` and `futures` hold the `busy` windows' prints only (those with option
    fills: packages and orders come from them); the front future's prints (`front_*`) are every
    window's, for its price path and last price; `package_underlying` is the busy windows' front
    future as a frame, for the packages' implied volatilities."""

    starts: list[pd.Timestamp]
    ends: list[pd.Timestamp]
    trade_dates: list[dt.date | None]
    notes: list[list[str]]
    walls: list[dict[str, float]]
    busy: list[int]
    options: pd.DataFrame
    spreads: pd.DataFrame
    spread_window: pd.Series
    futures: pd.DataFrame
    futures_window: pd.Series
    front_window: np.ndarray
    front_ts: np.ndarray
    front_price: np.ndarray
    package_underlying: pd.DataFrame
    legs: pd.DataFrame
    #: each distinct open-interest frame and the busy windows that read it
    open_interest: list[tuple[pd.DataFrame, list[int]]]

    def __len__(self) -> int:
        return len(self.starts)


def batch_of_windows(windows: Sequence[WindowData]) -> WindowBatch:
    """The batch of loaded windows: frames cut from one stretch are stacked with one take
    (`stack_cut`), others concatenated."""
    busy = [i for i, w in enumerate(windows) if not w.trades.empty]

    def stacked(name: str, part: str | None) -> tuple[pd.DataFrame, pd.Series]:
        frames = [(i, getattr(windows[i], name)) for i in busy]
        frames = [(i, f) for i, f in frames if len(f)]
        if not frames:
            return pd.DataFrame(columns=_NO_PRINTS), pd.Series(dtype="int64")
        cut = stack_cut([(windows[i].origin, f) for i, f in frames], part) if part is not None else None
        return (
            cut if cut is not None else pd.concat([f for _, f in frames], ignore_index=True),
            pd.Series(np.repeat([i for i, _ in frames], [len(f) for _, f in frames])),
        )

    options, _ = stacked("trades", "options") if busy else (pd.DataFrame(), None)
    if busy:
        options[WINDOW] = np.repeat(busy, [len(windows[i].trades) for i in busy])
    spreads, spread_window = stacked("spreads", "spreads")
    futures, futures_window = stacked("futures", "futures")
    underlying = None
    if all(windows[i].origin is not None for i in busy):  # cut by window_from: front_future of its futures
        underlying = _front_futures(futures, futures_window.to_numpy(dtype="int64"))
        counts = np.bincount(underlying[WINDOW].to_numpy(), minlength=len(windows)) if len(underlying) else None
        if counts is None or any(counts[i] != len(windows[i].underlying) for i in busy):
            underlying = None
    if underlying is None:
        underlying, _ = stacked("underlying", None)  # not a part of the stretch: concatenated
    else:
        underlying = underlying.drop(columns=WINDOW)
    fronts = [(i, w.underlying) for i, w in enumerate(windows) if len(w.underlying)]
    oi: dict[int, tuple[pd.DataFrame, list[int]]] = {}
    for i in busy:  # indexed once per distinct frame, not once per window
        if not windows[i].open_interest.empty:
            oi.setdefault(id(windows[i].open_interest), (windows[i].open_interest, []))[1].append(i)
    return WindowBatch(
        [w.start for w in windows],
        [w.end for w in windows],
        [w.trade_date for w in windows],
        [list(w.notes) for w in windows],
        [w.walls for w in windows],
        busy,
        options,
        spreads,
        spread_window,
        futures,
        futures_window,
        np.repeat([i for i, _ in fronts], [len(u) for _, u in fronts]).astype("int64"),
        _concatenated([u["ts_event"].to_numpy(dtype="datetime64[ns]") for _, u in fronts], "datetime64[ns]"),
        _concatenated([u["price"].to_numpy(dtype=float) for _, u in fronts], float),
        underlying,
        _session_legs({id(windows[i].legs): windows[i].legs for i in busy if len(windows[i].legs)}.values()),
        list(oi.values()),
    )


def batch_of_session(
    fills: ClassifiedFills,
    bounds: Sequence[tuple[pd.Timestamp, pd.Timestamp]],
    trade_date: dt.date,
    chain: pd.DataFrame,
    open_interest: pd.DataFrame,
    legs: pd.DataFrame,
    walls: dict[str, float],
) -> WindowBatch:
    """The batch of a session's windows straight from its classified fills: what `batch_of_windows`
    gives for the windows `window_from` would cut (`ClassifiedFills.split`), field for field,
    with row ranges and one take per kind of print instead of a frame per window and part."""
    rows = fills.ranges(bounds)
    n = len(bounds)
    counts = {name: (at[:, 1] - at[:, 0]).astype("int64") for name, at in rows.items()}
    busy = np.flatnonzero(counts["options"] > 0)

    def taken(name: str, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of part `name` in `windows` (in order), and the window of each."""
        at, sizes = rows[name][windows], counts[name][windows]
        if not sizes.sum():
            return np.empty(0, dtype="int64"), np.empty(0, dtype="int64")
        starts = np.repeat(at[:, 0] - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
        return starts + np.arange(sizes.sum()), np.repeat(windows, sizes)

    def stacked(name: str) -> tuple[pd.DataFrame, pd.Series]:
        taken_rows, window = taken(name, busy)
        if not len(taken_rows):
            return pd.DataFrame(columns=_NO_PRINTS), pd.Series(dtype="int64")
        return _rows_of(getattr(fills, name), taken_rows), pd.Series(window)

    option_rows, option_window = taken("options", busy)
    options = _rows_of(fills.options, option_rows) if len(busy) else pd.DataFrame()
    if len(busy):
        options[WINDOW] = option_window
    spreads, spread_window = stacked("spreads")
    futures, futures_window = stacked("futures")
    # The front future of every window (the most traded in it, `front_rows`), and of the busy ones
    # as a frame: what `front_futures` keeps of each window's futures.
    future_rows, future_window = taken("futures", np.arange(n))
    if len(future_rows):
        every = pd.DataFrame({c: fills.futures[c].to_numpy()[future_rows] for c in ("instrument_id", "size")})
        front = front_rows(every, future_window)
        front_rows_taken, front_window = future_rows[front], future_window[front]
    else:
        front_rows_taken, front_window = future_rows, future_window
    in_busy = np.isin(front_window, busy)
    package_underlying = (
        fills.futures.take(front_rows_taken[in_busy]).reset_index(drop=True)
        if in_busy.any()
        else pd.DataFrame(columns=_NO_PRINTS)
    )
    undefined = counts["undefined"]
    none_undefined = fills.undefined.iloc[:0]  # one empty frame for the windows without (most)
    notes = [
        window_notes(
            start,
            end,
            trade_date,
            fills.undefined.iloc[rows["undefined"][i, 0] : rows["undefined"][i, 1]] if undefined[i] else none_undefined,
            not counts["options"][i],
            chain.empty,
        )
        for i, (start, end) in enumerate(bounds)
    ]
    busy_list = busy.tolist()
    return WindowBatch(
        [start for start, _ in bounds],
        [end for _, end in bounds],
        [trade_date] * n,
        notes,
        [walls] * n,  # one session's walls, read only (each window's row dumps them)
        busy_list,
        options,
        spreads,
        spread_window,
        futures,
        futures_window,
        front_window.astype("int64"),
        fills.futures["ts_event"].to_numpy(dtype="datetime64[ns]")[front_rows_taken],
        fills.futures["price"].to_numpy(dtype=float)[front_rows_taken],
        package_underlying,
        _session_legs([legs] if busy_list and len(legs) else []),
        [(open_interest, busy_list)] if busy_list and not open_interest.empty else [],
    )


def _rows_of(frame: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """`rows` of `frame`, numbered from 0: the frame itself (a shallow copy) when they are all of
    its rows in order, as a session's windows usually cover its fills (a take copied them all)."""
    whole = len(rows) == len(frame) and frame.index.equals(pd.RangeIndex(len(frame)))
    if whole and (not len(rows) or (rows[0] == 0 and (np.diff(rows) == 1).all())):
        return frame.copy(deep=False)
    return frame.take(rows).reset_index(drop=True)


def _concatenated(arrays: list[np.ndarray], dtype: str | type) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.empty(0, dtype=dtype)


def _session_legs(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """The spread legs of a batch's windows (each distinct frame once), each (spread, leg) once."""
    legs = list(frames)
    if not legs:
        return pd.DataFrame(columns=["spread_id"])
    return pd.concat(legs, ignore_index=True).drop_duplicates(["spread_id", "leg_index"])


def batch_packages(batch: WindowBatch, trades: pd.DataFrame) -> pd.DataFrame:
    """Strategy packages of a batch of windows (`nqflow.engine.strategies.find_packages`); the package id of
    every option fill rides along in ``attrs["package_of"]``."""
    packages, package_of = find_packages(
        trades,
        batch.futures,
        batch.spreads,
        batch.legs,
        batch.package_underlying,
        trades[WINDOW],
        batch.spread_window,
        batch.futures_window,
    )
    # Numbered from 0 in each window, as if the window were detected alone.
    local = _cumcount(packages[WINDOW].to_numpy(dtype="int64")) if len(packages) else np.empty(0, dtype=np.int64)
    package_of = np.where(package_of >= 0, local[np.maximum(package_of, 0)] if len(local) else -1, -1)
    packages = packages.assign(package_id=local)
    packages.attrs["package_of"] = package_of
    return packages


def _front_futures(futures: pd.DataFrame, window: np.ndarray) -> pd.DataFrame:
    """Each window's front-future fills from a batch's futures fills, with their ``window``: what
    `nqflow.market.frames.front_future` keeps of each window's, stacked (`front_rows`)."""
    if not len(futures):
        return futures
    mine = front_rows(futures, window)
    return futures[mine].assign(**{WINDOW: window[mine]}).reset_index(drop=True)


# --------------------------------------------------------------------------- the feature stage
@dataclass
class Features:
    """The threshold-free features of a batch of windows; every frame carries ``window``, the
    window's position in `windows` (0, 1, ...), and is sorted by it.

    - ``windows``: one row per window (`WINDOW_COLUMNS`), empty windows included;
    - ``orders``: aggressor orders (`aggregate_orders`) with ``package_id`` (-1: not a package
      leg, else the package's number in its window), ``sweep_id`` (a sweep *candidate*, numbered
      across the batch, -1 for none: the block-share rule is a threshold) and ``expiry_key``;
    - ``packages``: strategy packages (`nqflow.engine.strategies.PACKAGE_COLUMNS`);
    - ``volumes``: `window_volumes` (``instrument_id`` -1 on expiry and product rows) with the
      slot's ``history_sessions``, ``expected``, ``mean`` and ``variance`` (NaN without history)
      and each instrument row's ``open_interest``;
    - ``underlying``: the front future's price path per window (only the prints that change it).
    """

    windows: pd.DataFrame
    orders: pd.DataFrame
    packages: pd.DataFrame
    volumes: pd.DataFrame
    underlying: pd.DataFrame
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.windows)


def feature_params(config: Config) -> dict:
    """What a feature set depends on besides the data: its version, the sweep grouping, the
    watched products and the window length."""
    t = config.thresholds
    return {
        "version": FEATURE_VERSION,
        **{name: getattr(t, name) for name in FEATURE_THRESHOLDS},
        "products": sorted(config.universe.products),
        "interval_minutes": config.schedule.interval_minutes,
    }


def compute_features(
    windows: Sequence[WindowData] | WindowBatch,
    expected: Sequence[pd.DataFrame | None] | pd.DataFrame,
    config: Config,
) -> Features:
    """The feature stage for a batch of windows (a whole session in a backtest, one window live).

    Windows are independent: orders, sweeps, packages and volumes never cross windows (every
    grouping is also by window). `expected[i]` is window i's expected volume per (level, key)
    (`nqflow.engine.baseline.BaselineStore.expected`), None or empty without history; or
    `expected` is one frame of all windows with ``window`` (`BaselineStore.expected_by_window`).
    """
    return with_expected(market_features(windows, config), expected)


def market_features(windows: Sequence[WindowData] | WindowBatch, config: Config) -> Features:
    """The features that come from the windows' own data: everything but the expected volumes
    (`with_expected` adds those), so a backtest can compute them while the history is still built.
    `windows` are loaded windows or a batch of them (`batch_of_session`: a session, no frame per window)."""
    t = config.thresholds
    by = (WINDOW,)
    batch = windows if isinstance(windows, WindowBatch) else batch_of_windows(windows)
    if not batch.busy:
        return _no_trades(batch, config)
    trades = batch.options
    packages = batch_packages(batch, trades)
    trades["package_id"] = packages.attrs.pop("package_of")
    orders = aggregate_orders(trades, by)
    orders["sweep_id"] = assign_sweeps(orders, t.sweep_span_ms, t.sweep_min_strikes, by)
    orders["expiry_key"] = expiry_level_key(orders)
    volumes = _with_open_interest(window_volumes(orders, by), batch)
    return Features(
        _window_table(batch, trades, orders, packages),
        orders,
        packages,
        volumes,
        _price_path(batch),
        feature_params(config),
    )


def with_expected(features: Features, expected: Sequence[pd.DataFrame | None] | pd.DataFrame) -> Features:
    """`features` with each window's expected volume and count-model moments on its volume rows
    (``history_sessions`` 0 and NaN moments where the slot has no history for a key). `expected`
    holds one frame per window, or is one frame of all windows with a ``window`` column.

    Looked up on one integer per (window, level, key), not merged on text: a session's 92
    per-window frames are stacked as arrays, never as frames."""
    if isinstance(expected, pd.DataFrame):
        known_window = expected[WINDOW].to_numpy(dtype="int64")
        known = {c: expected[c].to_numpy() for c in EXPECTED_COLUMNS}
    else:
        if len(expected) != len(features):
            raise ValueError(f"{len(features)} windows but {len(expected)} expected-volume frames")
        parts = [(i, e) for i, e in enumerate(expected) if e is not None and len(e)]
        known_window = np.repeat([i for i, _ in parts], [len(e) for _, e in parts]).astype("int64")
        known = {
            c: np.concatenate([e[c].to_numpy() for _, e in parts]) if parts else np.empty(0, dtype=object)
            for c in EXPECTED_COLUMNS
        }
    volumes = features.volumes  # its window, level and key; `with_expected_rows` replaces the rest
    n = len(volumes)
    history, moments = np.zeros(n, dtype="int64"), {c: np.full(n, np.nan) for c in ("expected", "mean", "variance")}
    if n and len(known_window):
        level_codes, levels = pd.factorize(np.concatenate([volumes["level"].to_numpy(dtype=object), known["level"]]))
        key_codes, keys = pd.factorize(np.concatenate([volumes["key"].to_numpy(dtype=object), known["key"]]))
        window = np.concatenate([volumes[WINDOW].to_numpy(dtype="int64"), known_window])
        joint = (window * max(len(levels), 1) + level_codes) * max(len(keys), 1) + key_codes
        index = pd.Index(joint[n:])
        if not index.is_unique:
            raise ValueError("expected volumes hold a (window, level, key) twice; the baseline store repeats a key")
        position = index.get_indexer(joint[:n])
        hit = np.flatnonzero(position >= 0)
        found = pd.Series(known["history_sessions"][position[hit]]).fillna(0)
        history[hit] = found.to_numpy(dtype="int64")
        for column in moments:
            moments[column][hit] = known[column][position[hit]].astype(float)
    return with_expected_rows(features, {"history_sessions": history, **moments})


def with_expected_rows(features: Features, expected: dict[str, np.ndarray]) -> Features:
    """`features` with its volume rows' ``history_sessions``, ``expected``, ``mean`` and
    ``variance`` given row for row (`nqflow.engine.baseline.ParquetBaseline.expected_of_rows`;
    `with_expected` looks them up first)."""
    volumes = features.volumes.drop(columns=[c for c in EXPECTED_COLUMNS[2:] if c in features.volumes])
    return dataclasses.replace(
        features,
        volumes=volumes.assign(**{c: np.asarray(expected[c]) for c in EXPECTED_COLUMNS[2:]}),
    )


def _no_trades(batch: WindowBatch, config: Config) -> Features:
    orders = aggregate_orders(pd.DataFrame(), (WINDOW,)).assign(
        sweep_id=pd.Series(dtype="int64"), expiry_key=pd.Series(dtype=object)
    )
    volumes = pd.DataFrame(
        {
            WINDOW: pd.Series(dtype="int64"),
            "level": pd.Series(dtype=object),
            "key": pd.Series(dtype=object),
            "volume": pd.Series(dtype="int64"),
            "instrument_id": pd.Series(dtype="int64"),
            "open_interest": pd.Series(dtype=float),
        }
    )
    packages = pd.DataFrame(columns=PACKAGE_COLUMNS)
    return Features(
        _window_table(
            batch,
            pd.DataFrame({WINDOW: pd.Series(dtype="int64"), "size": [], "premium_usd": [], "side": [], "put_call": []}),
            orders,
            packages,
        ),
        orders,
        packages,
        volumes,
        _price_path(batch),
        feature_params(config),
    )


def _with_open_interest(volumes: pd.DataFrame, batch: WindowBatch) -> pd.DataFrame:
    """Each instrument row's open interest (NaN when unknown); a session's windows share one frame,
    so each distinct frame is indexed once."""
    column = np.full(len(volumes), np.nan)
    if volumes.empty:
        return volumes.assign(open_interest=column)
    instrument = np.flatnonzero(volumes["instrument_id"].to_numpy() >= 0)
    ids = volumes["instrument_id"].to_numpy()[instrument]
    window = volumes[WINDOW].to_numpy()[instrument]
    for oi, members in batch.open_interest:
        series = oi.drop_duplicates("instrument_id").set_index("instrument_id")["open_interest"].astype(float)
        rows = np.isin(window, members)
        column[instrument[rows]] = series.reindex(ids[rows]).to_numpy(dtype=float)
    return volumes.assign(open_interest=column)


def _window_table(
    batch: WindowBatch, trades: pd.DataFrame, orders: pd.DataFrame, packages: pd.DataFrame
) -> pd.DataFrame:
    n = len(batch)
    # Per-window sums with np.bincount: pandas' groupby/reindex per total cost more than the sums.
    fill_window = trades[WINDOW].to_numpy(dtype="int64")
    premium = trades["premium_usd"].to_numpy(dtype=float)
    sides = side_weights(trades)

    def per_window(group: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(group, weights=weights, minlength=n)[:n]

    order_window = orders[WINDOW].to_numpy(dtype="int64")
    size = orders["size"].to_numpy(dtype=float)
    zero = per_window(order_window, size * (orders["days_to_expiry"].to_numpy() == 0))
    all_size = per_window(order_window, size)
    by_strategy: dict[int, dict[str, int]] = {}
    if len(packages):  # counted in order of appearance (a few hundred a session: no groupby)
        for w, strategy in zip(packages[WINDOW].tolist(), packages["strategy"].tolist()):
            counts = by_strategy.setdefault(int(w), {})
            counts[strategy] = counts.get(strategy, 0) + 1
    # Most frequent first, ties in order of appearance: what value_counts gives.
    strategies_json = {
        w: json.dumps(dict(sorted(c.items(), key=lambda item: -item[1]))) for w, c in by_strategy.items()
    }
    package_window = packages[WINDOW].to_numpy(dtype="int64") if len(packages) else np.empty(0, dtype="int64")
    # Each window's last front-future price: its prints come in window order, then as they printed.
    underlying_last = np.full(n, np.nan)
    if len(batch.front_window):
        last = np.r_[batch.front_window[1:] != batch.front_window[:-1], True]
        underlying_last[batch.front_window[last]] = batch.front_price[last]
    empty = np.ones(n, dtype=bool)
    empty[batch.busy] = False
    return pd.DataFrame(
        {
            WINDOW: np.arange(n, dtype="int64"),
            "window_start": pd.to_datetime(batch.starts, utc=True),
            "window_end": pd.to_datetime(batch.ends, utc=True),
            "trade_date": [str(d) if d else None for d in batch.trade_dates],
            "empty": empty.tolist(),
            "notes": [json.dumps(notes) for notes in batch.notes],
            "underlying_last": underlying_last.tolist(),
            "option_trades": per_window(fill_window).astype("int64"),
            "orders": per_window(order_window).astype("int64"),
            "contracts": per_window(fill_window, trades["size"].to_numpy(dtype=float)).astype("int64"),
            "premium_usd": per_window(fill_window, premium),
            "buy_premium_usd": per_window(fill_window, sides["buy_premium_usd"]),
            "sell_premium_usd": per_window(fill_window, sides["sell_premium_usd"]),
            "packages": per_window(package_window).astype("int64"),
            "packages_by_strategy": [strategies_json.get(i, "{}") for i in range(n)],
            "zero_dte_contract_share": [round(float(z / max(a, 1)), 4) for z, a in zip(zero, all_size)],
            "walls": [json.dumps(w) for w in batch.walls],  # the session's dealer walls, name -> strike
        }
    )[[WINDOW, *WINDOW_COLUMNS]]


def _price_path(batch: WindowBatch) -> pd.DataFrame:
    """The front future's prints per window, keeping only those that change the price: the last
    price at or before any instant is unchanged."""
    if not len(batch.front_window):
        return pd.DataFrame(
            {
                WINDOW: pd.Series(dtype="int64"),
                "ts_event": pd.Series(dtype="datetime64[ns, UTC]"),
                "price": pd.Series(dtype=float),
            }
        )
    window, ts, price = batch.front_window, batch.front_ts, batch.front_price
    order = np.lexsort((ts, window))  # stable: by window, then time
    window, ts, price = window[order], ts[order], price[order]
    keep = np.ones(len(price), dtype=bool)
    keep[1:] = (price[1:] != price[:-1]) | (window[1:] != window[:-1])
    return pd.DataFrame(
        {WINDOW: window[keep], "ts_event": pd.to_datetime(ts[keep]).tz_localize("UTC"), "price": price[keep]}
    )


def concat_features(parts: Sequence[Features]) -> Features:
    """Many batches (sessions) as one: windows renumbered in order, sweep candidates kept apart."""
    if not parts:
        raise ValueError("no features to join")
    offsets = np.cumsum([0, *[len(p) for p in parts[:-1]]])
    sweep_offsets = np.cumsum(
        [
            0,
            *[
                int(p.orders["sweep_id"].max()) + 1 if len(p.orders) and p.orders["sweep_id"].max() >= 0 else 0
                for p in parts[:-1]
            ],
        ]
    )

    def shifted(frames: list[pd.DataFrame]) -> pd.DataFrame:
        frames = [f.assign(**{WINDOW: f[WINDOW].astype("int64") + int(o)}) for f, o in zip(frames, offsets)]
        frames = [f for f in frames if len(f)] or frames[:1]
        return _one_chunk(pd.concat(frames, ignore_index=True))

    orders = [
        p.orders.assign(sweep_id=np.where(p.orders["sweep_id"] >= 0, p.orders["sweep_id"] + int(s), -1))
        for p, s in zip(parts, sweep_offsets)
    ]

    def shape(params: dict) -> dict:  # what the features mean; the data digests differ by session
        return {k: v for k, v in params.items() if k not in ("data", "history")}

    params = shape(parts[0].params)
    if any(shape(p.params) != params for p in parts):
        raise ValueError("features computed with different sweep settings or products cannot be joined; recompute them")
    return Features(
        shifted([p.windows for p in parts]),
        shifted(orders),
        shifted([p.packages for p in parts]),
        shifted([p.volumes for p in parts]),
        shifted([p.underlying for p in parts]),
        params,
    )


def _one_chunk(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with each Arrow-backed column in one piece. A concatenation leaves one chunk per
    part, and each later take of a few rows (a candidate's orders, in every threshold pass of
    the lab) then walks all of them: 0.9 ms against 0.3 ms on 20 sessions' orders."""
    whole = {}
    for name in frame.columns:
        values = frame[name].array
        if isinstance(values, pd.arrays.ArrowExtensionArray):  # text: NumPy-backed columns are whole
            arrow = pa.array(values)  # the column's own chunks, not a copy
            if isinstance(arrow, pa.ChunkedArray) and arrow.num_chunks > 1:
                whole[name] = pd.array(arrow.combine_chunks(), dtype=frame[name].dtype)
    return frame.assign(**whole) if whole else frame


# --------------------------------------------------------------------------- storage
FRAMES = ("windows", "orders", "packages", "volumes", "underlying")
#: The columns of Python lists of dicts (a package's legs): stored as Arrow lists of structs
#: (`write_parquet`'s ``python_columns``: their values as Python holds them, a NaN strike or delta
#: no missing value), read back as lists; features stored before hold them as JSON text, still
#: read. A session's 350 packages' legs took 13 ms to write and read as JSON text, 2 ms as lists.
_NESTED_COLUMNS = {"packages": ("legs",)}
#: The volume rows' expected-volume columns (`with_expected`), kept in a file of their own beside
#: ``volumes.parquet``, row for row: a backtest adds them once the history is in, and rewriting a
#: session's 20,000 volume rows for four numeric columns cost more than computing them.
EXPECTED_PART = "expected"
_MOMENTS = EXPECTED_COLUMNS[2:]


def features_root(data_dir: str | Path) -> Path:
    """Where a data folder's features live: ``<data_dir>/features/session=YYYY-MM-DD/``."""
    return Path(data_dir) / "features"


def session_folder(root: str | Path, trade_date) -> Path:
    return Path(root) / f"session={trade_date}"


def write_features(features: Features, root: str | Path, trade_date, frames: Sequence[str] = FRAMES) -> Path:
    """Store one session's features as Parquet (one file per frame; only `frames` when the others
    are stored already: `EXPECTED_PART` names the volumes' expected columns alone) in its
    partition folder.

    Files are written beside and renamed into place, ``params.json`` last, so a reader never
    sees a half-written session: without a matching params.json the session is recomputed.
    Volumes written without expected columns remove the expected file: it described other rows."""
    folder = session_folder(root, trade_date)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").unlink(missing_ok=True)
    volumes = features.volumes
    moments = [c for c in _MOMENTS if c in volumes]
    parts = {name: getattr(features, name) for name in frames if name in FRAMES}
    if "volumes" in parts:
        parts["volumes"] = volumes.drop(columns=moments)
        if not moments:
            (folder / f"{EXPECTED_PART}.parquet").unlink(missing_ok=True)
    if moments and ("volumes" in frames or EXPECTED_PART in frames):
        parts[EXPECTED_PART] = volumes[moments]
    for name, frame in parts.items():
        _write_part(frame, folder / f"{name}.parquet", [c for c in _NESTED_COLUMNS.get(name, ()) if c in frame])
    part = folder / "params.json.part"
    part.write_text(json.dumps(features.params, sort_keys=True))
    part.replace(folder / "params.json")
    return folder


def _write_part(frame: pd.DataFrame, path: Path, python_columns: Sequence[str] = ()) -> None:
    write_parquet(frame, path, python_columns)


def stored_params(root: str | Path, trade_date) -> dict | None:
    """The params of a stored session's features, None when none are stored (or half written)."""
    path = session_folder(root, trade_date) / "params.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):  # never written, or cut short
        return None


def read_features(root: str | Path, trade_date, config: Config | None = None) -> Features:
    """One stored session's features. With `config`, features stored under other sweep settings
    (or an older version) are refused with the fix."""
    folder = session_folder(root, trade_date)
    params = stored_params(root, trade_date)
    if params is None:
        raise DataError(
            f"no features stored for session {trade_date} in {root}; compute them with "
            f"nqflow.research.backtest.build_features (or scheduler.py backtest)"
        )
    wanted = feature_params(config) if config is not None else {}
    if {k: params.get(k) for k in wanted} != wanted:
        raise DataError(
            f"features of session {trade_date} in {root} were computed with "
            f"{ {k: params.get(k) for k in wanted} }, not {wanted}; "
            f"recompute them (scheduler.py backtest ... --refresh-features)"
        )
    frames = {name: _read_part(folder, name) for name in FRAMES}
    if (folder / f"{EXPECTED_PART}.parquet").exists():
        expected = _read_part(folder, EXPECTED_PART)
        volumes = frames["volumes"]
        if len(expected) != len(volumes):
            raise DataError(
                f"features file {folder / (EXPECTED_PART + '.parquet')} holds {len(expected)} rows for "
                f"{len(volumes)} volume rows; delete {folder} to have it recomputed"
            )
        # (features stored before the expected columns had a file of their own held them in volumes)
        volumes = volumes.drop(columns=[c for c in expected if c in volumes])
        frames["volumes"] = pd.concat([volumes, expected.set_axis(volumes.index)], axis=1)
    return Features(**frames, params=params)


def _read_part(folder: Path, name: str) -> pd.DataFrame:
    path = folder / f"{name}.parquet"
    try:
        schema = pq.read_schema(path)
        lists = [f.name for f in schema if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)]
        frame = pd.read_parquet(path, columns=[n for n in schema.names if n not in lists])
        # Lists come back as Python lists (of dicts, of ints), as computed: pandas would make
        # NumPy arrays of them, and a list of each costs more than Arrow's own conversion.
        if lists:
            table = pq.read_table(path, columns=lists)
            for column in lists:
                values = np.empty(len(frame), dtype=object)
                values[:] = table.column(column).to_pylist()
                frame.insert(schema.names.index(column), column, values)
    except (OSError, ValueError, pa.ArrowException) as error:
        raise DataError(
            f"features file {path} is unreadable ({error}); delete {folder} to have it recomputed"
        ) from error
    for column in _NESTED_COLUMNS.get(name, ()):
        if column in frame and not frame.empty and isinstance(frame[column].iloc[0], str):
            frame[column] = [json.loads(text) for text in frame[column]]  # stored as JSON text
    return frame
