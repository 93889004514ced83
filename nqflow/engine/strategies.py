"""Strategy packages: a spread is one trade, not two bets.

On CME a spread or combination (vertical, straddle, risk reversal, calendar, covered = options
against futures, ...) is an instrument of its own (``instrument_class`` T or M). When it
trades there is one print on the spread instrument, carrying the aggressor, and one print on
every leg at the same ``ts_event`` in the leg ratios; leg prints often carry no aggressor.

`find_packages` turns a window's prints into packages:

1. every spread print (its fills at one ts_event and side summed) takes the leg prints at its
   ts_event: the legs its definition lists (``leg_side`` gives each leg's sign when the spread
   is bought), or, when the definition carries no legs, every unclaimed option and futures
   print at that instant, with ratios from the sizes and signs from the one assignment whose
   net price matches the spread's price;
2. option prints on two or more instruments at one ts_event that no spread claimed are judged
   as a package too (legs printed together with no spread instrument): the matching engine
   gives separate aggressor orders separate timestamps, so only a package fills several
   strikes in the same nanosecond. Their signs come from the leg sides.

Each package gets a strategy name (`name_strategy`), its gross premium (sum over option legs
of price x size x multiplier, what a large-order rule compares), its net premium (debit
positive, from the buyer's side), and its net delta: Black-76 with each leg's implied
volatility from its own price and the future's price (futures legs have delta 1). A package
whose |net delta| is at most ``delta_neutral_share`` of its legs' summed |delta| is
delta-neutral: a volatility trade, never bullish or bearish.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nqflow.alerts import Direction
from nqflow.market.pricing import black76_delta, implied_vol

STRATEGIES = (
    "vertical",
    "straddle",
    "strangle",
    "risk_reversal",
    "butterfly",
    "condor",
    "calendar",
    "diagonal",
    "ratio",
    "covered",
    "other",
)
PACKAGE_COLUMNS = [
    "window",
    "package_id",
    "ts_event",
    "spread_id",
    "spread_symbol",
    "side",
    "quantity",
    "spread_price",
    "strategy",
    "source",
    "legs",
    "leg_instrument_ids",
    "option_leg_ids",
    "gross_premium_usd",
    "net_premium_usd",
    "unit_delta",
    "unit_gross_delta",
    "expiration",
    "expiry",
    "put_call",
]


def name_strategy(legs: list[dict]) -> str:
    """Name a package from its legs: dicts with put_call ("C", "P" or "F" for a future), strike,
    expiration, ratio and sign (+1 bought, -1 sold when the package is bought)."""
    options = [leg for leg in legs if leg["put_call"] in ("C", "P")]
    if any(leg["put_call"] == "F" for leg in legs) and options:
        return "covered"
    if len(options) < 2 or len(options) != len(legs):
        return "other"
    expiries = {leg["expiration"] for leg in options}
    rights = {leg["put_call"] for leg in options}
    ratios = [leg["ratio"] for leg in options]
    legs = sorted(options, key=lambda leg: (leg["expiration"], leg["strike"], leg["put_call"]))
    if len(legs) == 2:
        a, b = legs
        same_sign = a["sign"] == b["sign"]
        if len(expiries) == 2:
            if a["put_call"] != b["put_call"] or same_sign:
                return "other"
            return "calendar" if a["strike"] == b["strike"] else "diagonal"
        if len(rights) == 1:
            if same_sign or a["strike"] == b["strike"]:
                return "other"
            return "vertical" if a["ratio"] == b["ratio"] else "ratio"
        if a["ratio"] != b["ratio"]:
            return "ratio"
        if same_sign:
            return "straddle" if a["strike"] == b["strike"] else "strangle"
        return "risk_reversal" if a["strike"] != b["strike"] else "other"
    if len(expiries) != 1:
        return "other"
    strikes = [leg["strike"] for leg in legs]
    signs = [leg["sign"] for leg in legs]
    if (
        len(legs) == 3
        and len(rights) == 1
        and ratios_in_order(legs) == [1, 2, 1]
        and signs[0] == signs[2] == -signs[1]
        and strikes[1] - strikes[0] == strikes[2] - strikes[1] > 0
    ):
        return "butterfly"
    if len(legs) == 4 and len(set(ratios)) == 1:
        by_strike = sorted(legs, key=lambda leg: leg["strike"])
        s = [leg["sign"] for leg in by_strike]
        if s[0] == s[3] == -s[1] == -s[2]:
            inner_same = by_strike[1]["strike"] == by_strike[2]["strike"]
            return "butterfly" if inner_same else "condor"
    return "other"


def ratios_in_order(legs: list[dict]) -> list[int]:
    return [leg["ratio"] for leg in sorted(legs, key=lambda leg: leg["strike"])]


def _reduced(sizes: list[int]) -> tuple[list[int], int]:
    """Leg ratios from leg sizes: divide by their greatest common divisor; returns (ratios, divisor)."""
    divisor = 0
    for size in sizes:
        divisor = math.gcd(divisor, int(size))
    divisor = max(divisor, 1)
    return [int(size) // divisor for size in sizes], divisor


def infer_signs(prices: list[float], ratios: list[int], is_option: list[bool], spread_price: float) -> list[int]:
    """Signs (+1 bought, -1 sold when the package is bought) whose net option price best matches
    the spread's price; ties go to the first leg bought, as CME lists spreads. No legs, no signs
    (a spread print whose leg prints all left with a product the universe does not watch)."""
    if not prices:
        return []
    best, best_gap = None, math.inf
    for signs in itertools.product((1, -1), repeat=len(prices)):
        net = sum(s * r * p for s, r, p, o in zip(signs, ratios, prices, is_option) if o)
        gap = abs(net - spread_price) + (0.0 if signs[0] == 1 else 1e-9)
        if gap < best_gap:
            best, best_gap = list(signs), gap
    return best or [1] * len(prices)


def _asof(times: np.ndarray, prices: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The last price at or before each ts (the first one when ts precedes them all)."""
    if len(times) == 0:
        return np.full(len(ts), np.nan)
    position = np.clip(np.searchsorted(times, ts, side="right") - 1, 0, len(times) - 1)
    return prices[position]


@dataclass(frozen=True)
class _OptionPrints:
    """A batch's option fills as arrays, read once for the package search."""

    window: np.ndarray
    ts: np.ndarray
    iid: np.ndarray
    size: np.ndarray
    price: np.ndarray
    side: np.ndarray
    put_call: np.ndarray
    strike: np.ndarray
    expiration: np.ndarray
    multiplier: np.ndarray
    symbol: np.ndarray

    @classmethod
    def of(cls, options: pd.DataFrame, window: pd.Series | None) -> _OptionPrints:
        n = len(options)
        return cls(
            (window.to_numpy() if window is not None else np.zeros(n, dtype=np.int64)).astype(np.int64),
            options["ts_event"].to_numpy(dtype="datetime64[ns]").astype(np.int64),
            options["instrument_id"].to_numpy(dtype=np.int64),
            options["size"].to_numpy(dtype=np.int64),
            options["price"].to_numpy(dtype=float),
            options["side"].astype(str).to_numpy(),
            options["put_call"].astype(str).to_numpy(),
            options["strike"].to_numpy(dtype=float),
            options["expiration"].to_numpy(dtype="datetime64[ns]").astype(np.int64),
            options["multiplier"].to_numpy(dtype=float),
            options["symbol"].astype(str).to_numpy(),
        )


@dataclass(frozen=True)
class _FuturePrints:
    """A batch's futures fills as arrays; `claimed` marks the ones a package took as its leg."""

    iid: np.ndarray
    price: np.ndarray
    size: np.ndarray
    symbol: np.ndarray
    claimed: np.ndarray

    @classmethod
    def of(cls, futures: pd.DataFrame) -> _FuturePrints:
        if not len(futures):
            empty_int = np.empty(0, np.int64)
            return cls(empty_int, np.empty(0), empty_int, np.empty(0, dtype=object), np.zeros(0, dtype=bool))
        return cls(
            futures["instrument_id"].to_numpy(dtype=np.int64),
            futures["price"].to_numpy(dtype=float),
            futures["size"].to_numpy(dtype=np.int64),
            futures["symbol"].astype(str).to_numpy(),
            np.zeros(len(futures), dtype=bool),
        )


@dataclass(frozen=True)
class _PackageLegs:
    """Which prints one package is made of, each with its sign when the package is bought and its ratio."""

    option_rows: list[int]
    signs: list[int]
    ratios: list[int]
    future_rows: list[int] = field(default_factory=list)
    future_signs: list[int] = field(default_factory=list)
    future_ratios: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _PackageOrder:
    """What one package's order is: where and when it printed, its spread instrument (-1: none)
    and how it was read (``definition``, ``prints`` or ``no spread instrument``)."""

    key: tuple[int, int]  # (window, ts_event ns)
    spread_id: int
    spread_symbol: str
    side: str
    quantity: int
    spread_price: float
    source: str


class _Packages:
    """The packages found so far, and the package id of every option fill (-1: none)."""

    def __init__(self, options: _OptionPrints, futures: _FuturePrints):
        self.options, self.futures = options, futures
        self.rows: list[dict] = []
        self.package_of = np.full(len(options.iid), -1, dtype=np.int64)

    def add(self, order: _PackageOrder, legs: _PackageLegs) -> None:
        o, f = self.options, self.futures
        package_id = len(self.rows)
        self.package_of[legs.option_rows] = package_id
        leg_list: list[dict[str, Any]] = [
            {
                "instrument_id": int(o.iid[r]),
                "symbol": str(o.symbol[r]),
                "put_call": str(o.put_call[r]),
                "strike": float(o.strike[r]),
                "expiration": int(o.expiration[r]),
                "ratio": int(ratio),
                "sign": int(sign),
                "size": int(o.size[r]),
                "price": float(o.price[r]),
                "premium_usd": float(o.price[r] * o.size[r] * o.multiplier[r]),
            }
            for r, sign, ratio in zip(legs.option_rows, legs.signs, legs.ratios)
        ]
        leg_list += [
            {
                "instrument_id": int(f.iid[r]),
                "symbol": str(f.symbol[r]),
                "put_call": "F",
                "strike": float("nan"),
                "expiration": 0,
                "ratio": int(ratio),
                "sign": int(sign),
                "size": int(f.size[r]),
                "price": float(f.price[r]),
                "premium_usd": 0.0,
            }
            for r, sign, ratio in zip(legs.future_rows, legs.future_signs, legs.future_ratios)
        ]
        nearest = min(legs.option_rows, key=lambda r: o.expiration[r])
        self.rows.append(
            {
                "window": order.key[0],
                "package_id": package_id,
                "ts_event": order.key[1],
                "spread_id": order.spread_id,
                "spread_symbol": order.spread_symbol,
                "side": order.side,
                "quantity": int(order.quantity),
                "spread_price": order.spread_price,
                "strategy": name_strategy(leg_list),
                "source": order.source,
                "legs": leg_list,
                "leg_instrument_ids": [leg["instrument_id"] for leg in leg_list],
                "option_leg_ids": sorted({int(o.iid[r]) for r in legs.option_rows}),
                "gross_premium_usd": sum(leg["premium_usd"] for leg in leg_list),
                "net_premium_usd": sum(leg["sign"] * leg["premium_usd"] for leg in leg_list),
                "expiration": int(o.expiration[nearest]),
                "expiry": o.symbol[nearest].split(" ", 1)[0],
                "put_call": "".join(sorted({str(o.put_call[r]) for r in legs.option_rows})),
            }
        )


def find_packages(
    options: pd.DataFrame,
    futures: pd.DataFrame,
    spreads: pd.DataFrame,
    legs: pd.DataFrame,
    underlying: pd.DataFrame,
    window: pd.Series | None = None,
    spread_window: pd.Series | None = None,
    futures_window: pd.Series | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Packages of a window's (or a batch's) prints, and the package id of every option fill (-1: none).

    `options`, `futures`, `spreads`: tidy fills (options with their multiplier); `legs`: spread
    leg definitions (`nqflow.market.frames.legs_from_definitions`); `underlying`: the front future's
    fills, for implied volatilities. In a batch, `window`, `spread_window` and
    `futures_window` give each fill's window: packages never cross windows.

    In two steps: 1. each print on a spread instrument is one package, its legs the option (and
    futures) prints of its instant, signed by the spread's definition or, without one, read from
    the prints (`_from_spread_prints`); 2. several option instruments printing at one instant
    with no spread print are a package without a spread instrument (`_from_coincident_prints`).
    """
    if len(options) == 0:
        return pd.DataFrame(columns=PACKAGE_COLUMNS), np.full(0, -1, dtype=np.int64)
    opts, futs = _OptionPrints.of(options, window), _FuturePrints.of(futures)
    spread_ts = _spread_instants(spreads, spread_window)
    found = _Packages(opts, futs)
    claimed = np.zeros(len(options), dtype=bool)
    by_instant = _option_instants(opts, spread_ts)
    if len(spreads):
        _from_spread_prints(
            found, spreads, spread_window, _legs_by_spread(legs, spreads), by_instant,
            _futures_by_instant(futures, futures_window, spread_ts), claimed,
        )  # fmt: skip
    _from_coincident_prints(found, by_instant, claimed)
    if not found.rows:
        return pd.DataFrame(columns=PACKAGE_COLUMNS), found.package_of
    packages = pd.DataFrame(found.rows)
    _deltas(packages, underlying, window is not None)
    return packages[PACKAGE_COLUMNS], found.package_of


def _spread_instants(spreads: pd.DataFrame, spread_window: pd.Series | None) -> set[tuple[int, int]]:
    """(window, ts_event) of every spread print."""
    if not len(spreads):
        return set()
    sw = spread_window.to_numpy() if spread_window is not None else np.zeros(len(spreads), dtype=np.int64)
    return set(
        zip(
            sw.astype(np.int64).tolist(),
            spreads["ts_event"].to_numpy(dtype="datetime64[ns]").astype(np.int64).tolist(),
        )
    )


def _option_instants(opts: _OptionPrints, spread_ts: set[tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
    """The option rows of each instant that can hold a package: a spread printed there, or two
    option instruments did."""
    by_instant: dict[tuple[int, int], list[int]] = {}
    order = np.lexsort((opts.iid, opts.ts, opts.window))
    w_s, t_s, i_s = opts.window[order], opts.ts[order], opts.iid[order]
    boundaries = np.flatnonzero((np.diff(w_s) != 0) | (np.diff(t_s) != 0)) + 1
    starts = np.concatenate(([0], boundaries)).astype(np.int64)
    ends = np.concatenate((boundaries, [len(order)])).astype(np.int64)
    # Most instants hold one instrument and no spread: found with arrays, so only the few that
    # can hold a package are visited one by one (a spread's time first, then its window).
    keep = i_s[starts] != i_s[ends - 1]  # two instruments at one instant
    if spread_ts:
        spread_times = np.fromiter((t for _, t in spread_ts), dtype=np.int64, count=len(spread_ts))
        maybe = np.flatnonzero(~keep & np.isin(t_s[starts], spread_times))
        keep[maybe] = [(int(w), int(t)) in spread_ts for w, t in zip(w_s[starts[maybe]], t_s[starts[maybe]])]
    for a, b in zip(starts[keep].tolist(), ends[keep].tolist()):
        by_instant[(int(w_s[a]), int(t_s[a]))] = order[a:b].tolist()
    return by_instant


def _futures_by_instant(
    futures: pd.DataFrame, futures_window: pd.Series | None, spread_ts: set[tuple[int, int]]
) -> dict[tuple[int, int], list[int]]:
    """The futures rows printed at each spread print's instant (a covered package's future leg)."""
    by_instant: dict[tuple[int, int], list[int]] = {}
    if not len(futures):
        return by_instant
    fw = (futures_window.to_numpy() if futures_window is not None else np.zeros(len(futures))).astype(np.int64)
    fts = futures["ts_event"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    for row, key in enumerate(zip(fw.tolist(), fts.tolist())):
        if key in spread_ts:
            by_instant.setdefault(key, []).append(row)
    return by_instant


def _legs_by_spread(legs: pd.DataFrame, spreads: pd.DataFrame) -> dict[int, dict[int, tuple[int, int]]]:
    """Each traded spread's legs as {leg instrument: (sign, ratio)}, for the spreads that printed only."""
    legs_by_spread: dict[int, dict[int, tuple[int, int]]] = {}
    if not len(legs) or not len(spreads):
        return legs_by_spread
    traded = legs[legs["spread_id"].isin(spreads["instrument_id"].unique())]
    for sid, leg_id, sign, ratio in zip(
        traded["spread_id"].tolist(),
        traded["leg_instrument_id"].tolist(),
        traded["leg_sign"].tolist(),
        traded["leg_ratio"].tolist(),
    ):
        legs_by_spread.setdefault(int(sid), {})[int(leg_id)] = (int(sign), int(ratio))
    return legs_by_spread


def _from_spread_prints(
    found: _Packages,
    spreads: pd.DataFrame,
    spread_window: pd.Series | None,
    legs_by_spread: dict[int, dict[int, tuple[int, int]]],
    by_instant: dict[tuple[int, int], list[int]],
    futures_by_instant: dict[tuple[int, int], list[int]],
    claimed: np.ndarray,
) -> None:
    """Step 1: prints on spread instruments, one order per spread, instant and side."""
    opts, futs = found.options, found.futures
    sw = (spread_window.to_numpy() if spread_window is not None else np.zeros(len(spreads))).astype(np.int64)
    for w, ts, sid, side, quantity, spread_price, spread_symbol in zip(*_spread_orders(spreads, sw)):
        key = (int(w), int(ts))
        here = [r for r in by_instant.get(key, []) if not claimed[r]]
        futures_here = [r for r in futures_by_instant.get(key, []) if not futs.claimed[r]]
        definition = legs_by_spread.get(int(sid))
        if definition is not None:
            option_rows = [r for r in here if int(opts.iid[r]) in definition]
            future_rows = [r for r in futures_here if int(futs.iid[r]) in definition]
            package = _PackageLegs(
                option_rows,
                [definition[int(opts.iid[r])][0] for r in option_rows],
                [definition[int(opts.iid[r])][1] for r in option_rows],
                future_rows,
                [definition[int(futs.iid[r])][0] for r in future_rows],
                [definition[int(futs.iid[r])][1] for r in future_rows],
            )
            source = "definition"
        else:
            package = _legs_from_prints(opts, futs, here, futures_here, float(spread_price))
            source = "prints"
        if not package.option_rows:
            continue
        claimed[package.option_rows] = True
        futs.claimed[package.future_rows] = True
        order = _PackageOrder(
            key, int(sid), str(spread_symbol), str(side), int(quantity), float(spread_price), source
        )  # fmt: skip
        found.add(order, package)


def _spread_orders(spreads: pd.DataFrame, window: np.ndarray) -> tuple[list, ...]:
    """Spread prints as orders, sorted by (window, ts_event, instrument_id, side): each one's
    summed size and its first print's price and symbol, as columns of lists.

    What ``groupby(sort=True).agg(sum, first, first)`` gives, with NumPy on the sort keys: the
    named aggregations cost more than the search itself. Prints with a missing key, price or
    symbol (which pandas' grouping drops or skips) take the pandas path."""
    ts = spreads["ts_event"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    columns = ("instrument_id", "side", "size", "price", "symbol")
    if len(spreads) == 0 or any(spreads[c].isna().any() for c in columns):
        grouped = (
            spreads.assign(_window=window, _ts=ts)
            .groupby(["_window", "_ts", "instrument_id", "side"], sort=True)
            .agg(quantity=("size", "sum"), price=("price", "first"), symbol=("symbol", "first"))
            .reset_index()
        )
        names = ("_window", "_ts", "instrument_id", "side", "quantity", "price", "symbol")
        return tuple(grouped[c].tolist() for c in names)
    iid = spreads["instrument_id"].to_numpy(dtype=np.int64)
    side_code, sides = pd.factorize(spreads["side"].to_numpy(dtype=object), sort=True)
    order = np.lexsort((side_code, iid, ts, window))
    w_o, t_o, i_o, s_o = window[order], ts[order], iid[order], side_code[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (np.diff(w_o) != 0) | (np.diff(t_o) != 0) | (np.diff(i_o) != 0) | (np.diff(s_o) != 0)
    starts = np.flatnonzero(new)
    first = order[starts]
    quantity = np.add.reduceat(spreads["size"].to_numpy(dtype=np.int64)[order], starts)
    return (
        w_o[starts].tolist(),
        t_o[starts].tolist(),
        i_o[starts].tolist(),
        np.asarray(sides, dtype=object)[s_o[starts]].tolist(),
        quantity.tolist(),
        spreads["price"].to_numpy(dtype=float)[first].tolist(),
        spreads["symbol"].to_numpy(dtype=object)[first].tolist(),
    )


def _legs_from_prints(
    opts: _OptionPrints, futs: _FuturePrints, option_rows: list[int], future_rows: list[int], spread_price: float
) -> _PackageLegs:
    """A spread print without a leg definition: its legs are the prints of its instant, ratios
    reduced from their sizes and signs inferred so the legs' prices net to the spread's."""
    sizes = [int(opts.size[r]) for r in option_rows] + [int(futs.size[r]) for r in future_rows]
    all_ratios, _ = _reduced(sizes)
    prices = [float(opts.price[r]) for r in option_rows] + [float(futs.price[r]) for r in future_rows]
    is_option = [True] * len(option_rows) + [False] * len(future_rows)
    all_signs = infer_signs(prices, all_ratios, is_option, spread_price)
    k = len(option_rows)
    return _PackageLegs(option_rows, all_signs[:k], all_ratios[:k], future_rows, all_signs[k:], all_ratios[k:])


def _from_coincident_prints(
    found: _Packages, by_instant: dict[tuple[int, int], list[int]], claimed: np.ndarray
) -> None:
    """Step 2: several option instruments at one instant with no spread print: a package without
    a spread instrument, on the side of its largest leg with a known aggressor."""
    opts = found.options
    for key, members in by_instant.items():
        members = [r for r in members if not claimed[r]]
        if len({int(opts.iid[r]) for r in members}) < 2:
            continue
        sides = [str(opts.side[r]) for r in members]
        known = [(opts.price[r] * opts.size[r], s) for r, s in zip(members, sides) if s in ("B", "A")]
        side = max(known)[1] if known else "N"
        signs = [1 if s in (side, "N") or side == "N" else -1 for s in sides]
        ratios, divisor = _reduced([int(opts.size[r]) for r in members])
        claimed[members] = True
        found.add(
            _PackageOrder(key, -1, "", side, divisor, float("nan"), "no spread instrument"),
            _PackageLegs(members, signs, ratios),
        )


def _deltas(packages: pd.DataFrame, underlying: pd.DataFrame, batched: bool) -> None:
    """Per package unit: net delta (buyer's side) and summed |delta|, Black-76 at each leg's implied vol."""
    times = underlying["ts_event"].to_numpy(dtype="datetime64[ns]").astype(np.int64) if len(underlying) else np.empty(0)
    prices = underlying["price"].to_numpy(dtype=float) if len(underlying) else np.empty(0)
    flat = [
        (p, leg) for p, legs in zip(packages.index, packages["legs"]) for leg in legs if leg["put_call"] in ("C", "P")
    ]
    package_ts = dict(zip(packages.index, packages["ts_event"].tolist()))
    ts = np.array([package_ts[p] for p, _ in flat], dtype=np.int64)
    forward = _asof(times, prices, ts)
    futures_price = {
        p: leg["price"] for p, legs in zip(packages.index, packages["legs"]) for leg in legs if leg["put_call"] == "F"
    }
    forward = np.array([futures_price.get(p, f) for (p, _), f in zip(flat, forward)], dtype=float)
    strike = np.array([leg["strike"] for _, leg in flat])
    years = np.maximum((np.array([leg["expiration"] for _, leg in flat], dtype=float) - ts) / (365.25 * 86400e9), 1e-6)
    is_call = np.array([leg["put_call"] == "C" for _, leg in flat])
    price = np.array([leg["price"] for _, leg in flat])
    known = np.isfinite(forward)
    delta = np.full(len(flat), np.nan)
    if known.any():
        vol = implied_vol(price[known], forward[known], strike[known], years[known], is_call[known])
        delta[known] = black76_delta(forward[known], strike[known], years[known], vol, is_call[known])
    for (_package, leg), d in zip(flat, delta):
        leg["delta"] = float(d)
    unit, gross = [], []
    for legs, source in zip(packages["legs"], packages["source"]):
        option_delta = _nansum([leg["sign"] * leg["ratio"] * leg["delta"] for leg in legs if leg["put_call"] != "F"])
        for leg in legs:
            if leg["put_call"] == "F":
                leg["delta"] = 1.0
                if source == "prints":  # no definition: a futures leg hedges the options, so it takes the other side
                    leg["sign"] = -1 if option_delta > 0 else 1
        unit.append(_nansum([leg["sign"] * leg["ratio"] * leg["delta"] for leg in legs]))
        gross.append(_nansum([leg["ratio"] * abs(leg["delta"]) for leg in legs]))
    packages["unit_delta"] = unit
    packages["unit_gross_delta"] = gross


def _nansum(values: list[float]) -> float:
    """``np.nansum`` of a package's few legs without its per-call cost: below eight values NumPy
    adds in order, as this does; longer lists go to NumPy's pairwise sum."""
    if len(values) >= 8:
        return float(np.nansum(values))
    total = 0.0
    for value in values:
        if value == value:  # not NaN
            total += value
    return total


def package_headline(strategy: str, legs: list[dict]) -> str:
    """A package as a desk names it, from its legs: ``NQZ6 C21500 / C21800 call vertical``,
    ``QNEX6 C22090 / Q1BZ6 C22090 call calendar``, ``NQZ6 C21500 / 2x C21800 call ratio``,
    ``NQZ6 C21500 + NQZ6 covered``. A leg repeats its expiry only when it differs from the leg
    before; a future leg is named by its symbol. The exchange's ``UD:`` code is a detail."""
    options = sorted(
        (leg for leg in legs if leg["put_call"] in ("C", "P")),
        key=lambda leg: (leg["expiration"], leg["strike"], leg["put_call"]),
    )
    futures = [leg for leg in legs if leg["put_call"] == "F"]
    unequal = len({leg["ratio"] for leg in options}) > 1
    parts, previous_root = [], None
    for leg in options:
        root, _, strike = str(leg["symbol"]).partition(" ")
        text = strike if root == previous_root and strike else str(leg["symbol"])
        parts.append(f"{leg['ratio']}x {text}" if unequal else text)
        previous_root = root
    rights = {leg["put_call"] for leg in options}
    right = {"C": "call ", "P": "put "}.get(next(iter(rights)), "") if len(rights) == 1 else ""
    name = " / ".join(parts) + "".join(f" + {leg['symbol']}" for leg in futures)
    return f"{name} {right}{strategy.replace('_', ' ')}"


def covered_reading(legs: list[dict]) -> tuple[float, float] | None:
    """(agreed, model) delta per option contract of a covered package: the futures legs' ratio
    over the option legs' (10 calls against 6 futures: 0.60), and the options' own net delta
    from the model. None without both kinds of leg."""
    options = [leg for leg in legs if leg["put_call"] in ("C", "P")]
    futures = [leg for leg in legs if leg["put_call"] == "F"]
    option_ratio = sum(leg["ratio"] for leg in options)
    if not options or not futures or option_ratio <= 0:
        return None
    agreed = sum(leg["ratio"] for leg in futures) / option_ratio
    model = abs(float(np.nansum([leg["sign"] * leg["ratio"] * leg.get("delta", np.nan) for leg in options])))
    return agreed, model / option_ratio


def read_package(package: pd.Series, neutral_share: float) -> tuple[str, str, float]:
    """(direction, sentiment, the aggressor's net delta in futures-equivalent contracts).

    Direction is what the aggressor did to the package (BUY / SELL; UNKNOWN when no aggressor).
    Sentiment comes from the net delta: VOLATILITY when delta-neutral, else BULLISH / BEARISH
    by the sign of the aggressor's delta (NEUTRAL when the aggressor is unknown). A covered
    package is VOLATILITY whatever the model's delta: its futures ratio is the delta the two
    sides agreed (`covered_reading`), and the model disagreeing makes it no bet on direction."""
    direction = Direction.of_side(package["side"])
    sign = {"B": 1, "A": -1}.get(package["side"], 0)
    unit, gross = package["unit_delta"], package["unit_gross_delta"]
    net = unit * package["quantity"] * (sign or 1)
    if package.get("strategy") == "covered":  # hedged at the delta both sides agreed: never directional
        return direction, "VOLATILITY", net
    if gross > 0 and abs(unit) <= neutral_share * gross:
        return direction, "VOLATILITY", net
    if sign == 0:
        return direction, "NEUTRAL", net
    return direction, "BULLISH" if unit * sign > 0 else "BEARISH", net
