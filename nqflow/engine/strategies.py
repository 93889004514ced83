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
    the spread's price; ties go to the first leg bought, as CME lists spreads."""
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
    """
    n = len(options)
    package_of = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return pd.DataFrame(columns=PACKAGE_COLUMNS), package_of
    opt_window = (window.to_numpy() if window is not None else np.zeros(n, dtype=np.int64)).astype(np.int64)
    opt_ts = options["ts_event"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    opt_iid = options["instrument_id"].to_numpy(dtype=np.int64)
    opt_size = options["size"].to_numpy(dtype=np.int64)
    opt_price = options["price"].to_numpy(dtype=float)
    opt_side = options["side"].astype(str).to_numpy()
    opt_pc = options["put_call"].astype(str).to_numpy()
    opt_strike = options["strike"].to_numpy(dtype=float)
    opt_exp = options["expiration"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    opt_mult = options["multiplier"].to_numpy(dtype=float)
    opt_symbol = options["symbol"].astype(str).to_numpy()

    # Instants that can hold a package: a spread printed there, or two option instruments did.
    by_instant: dict[tuple[int, int], list[int]] = {}
    order = np.lexsort((opt_iid, opt_ts, opt_window))
    w_s, t_s, i_s = opt_window[order], opt_ts[order], opt_iid[order]
    boundaries = np.flatnonzero((np.diff(w_s) != 0) | (np.diff(t_s) != 0)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(order)]))
    multi = i_s[starts] != i_s[ends - 1]  # two instruments at one instant
    spread_ts = set()
    if len(spreads):
        sw = spread_window.to_numpy() if spread_window is not None else np.zeros(len(spreads), dtype=np.int64)
        spread_ts = set(
            zip(
                sw.astype(np.int64).tolist(),
                spreads["ts_event"].to_numpy(dtype="datetime64[ns]").astype(np.int64).tolist(),
            )
        )
    for a, b, is_multi in zip(starts, ends, multi):
        key = (int(w_s[a]), int(t_s[a]))
        if is_multi or key in spread_ts:
            by_instant[key] = order[a:b].tolist()

    fut_by_instant: dict[tuple[int, int], list[int]] = {}
    if len(futures):
        fw = (futures_window.to_numpy() if futures_window is not None else np.zeros(len(futures))).astype(np.int64)
        fts = futures["ts_event"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
        for row, key in enumerate(zip(fw.tolist(), fts.tolist())):
            if key in spread_ts:
                fut_by_instant.setdefault(key, []).append(row)
    fut_iid = futures["instrument_id"].to_numpy(dtype=np.int64) if len(futures) else np.empty(0, np.int64)
    fut_price = futures["price"].to_numpy(dtype=float) if len(futures) else np.empty(0)
    fut_size = futures["size"].to_numpy(dtype=np.int64) if len(futures) else np.empty(0, np.int64)
    fut_symbol = futures["symbol"].astype(str).to_numpy() if len(futures) else np.empty(0, dtype=object)
    fut_claimed = np.zeros(len(futures), dtype=bool)

    # Each traded spread's legs as {leg instrument: (sign, ratio)}, built for the spreads that printed only.
    legs_by_spread: dict[int, dict[int, tuple[int, int]]] = {}
    if len(legs) and len(spreads):
        traded = legs[legs["spread_id"].isin(spreads["instrument_id"].unique())]
        for sid, leg_id, sign, ratio in zip(
            traded["spread_id"].tolist(),
            traded["leg_instrument_id"].tolist(),
            traded["leg_sign"].tolist(),
            traded["leg_ratio"].tolist(),
        ):
            legs_by_spread.setdefault(int(sid), {})[int(leg_id)] = (int(sign), int(ratio))
    rows: list[dict] = []

    def add(
        key,
        spread_id,
        spread_symbol,
        side,
        quantity,
        spread_price,
        option_rows,
        signs,
        ratios,
        future_rows,
        future_signs,
        future_ratios,
        source,
    ):
        package_id = len(rows)
        package_of[option_rows] = package_id
        leg_list = [
            {
                "instrument_id": int(opt_iid[r]),
                "symbol": str(opt_symbol[r]),
                "put_call": str(opt_pc[r]),
                "strike": float(opt_strike[r]),
                "expiration": int(opt_exp[r]),
                "ratio": int(ratio),
                "sign": int(sign),
                "size": int(opt_size[r]),
                "price": float(opt_price[r]),
                "premium_usd": float(opt_price[r] * opt_size[r] * opt_mult[r]),
            }
            for r, sign, ratio in zip(option_rows, signs, ratios)
        ]
        leg_list += [
            {
                "instrument_id": int(fut_iid[r]),
                "symbol": str(fut_symbol[r]),
                "put_call": "F",
                "strike": float("nan"),
                "expiration": 0,
                "ratio": int(ratio),
                "sign": int(sign),
                "size": int(fut_size[r]),
                "price": float(fut_price[r]),
                "premium_usd": 0.0,
            }
            for r, sign, ratio in zip(future_rows, future_signs, future_ratios)
        ]
        nearest = min(option_rows, key=lambda r: opt_exp[r])
        rows.append(
            {
                "window": key[0],
                "package_id": package_id,
                "ts_event": key[1],
                "spread_id": spread_id,
                "spread_symbol": spread_symbol,
                "side": side,
                "quantity": int(quantity),
                "spread_price": spread_price,
                "strategy": name_strategy(leg_list),
                "source": source,
                "legs": leg_list,
                "leg_instrument_ids": [leg["instrument_id"] for leg in leg_list],
                "option_leg_ids": sorted({int(opt_iid[r]) for r in option_rows}),
                "gross_premium_usd": sum(leg["premium_usd"] for leg in leg_list),
                "net_premium_usd": sum(leg["sign"] * leg["premium_usd"] for leg in leg_list),
                "expiration": int(opt_exp[nearest]),
                "expiry": opt_symbol[nearest].split(" ", 1)[0],
                "put_call": "".join(sorted({str(opt_pc[r]) for r in option_rows})),
            }
        )

    claimed = np.zeros(n, dtype=bool)
    # 1. Prints on spread instruments: one order per spread, instant and side.
    if len(spreads):
        sw = (spread_window.to_numpy() if spread_window is not None else np.zeros(len(spreads))).astype(np.int64)
        frame = spreads.assign(_window=sw, _ts=spreads["ts_event"].to_numpy(dtype="datetime64[ns]").astype(np.int64))
        grouped = frame.groupby(["_window", "_ts", "instrument_id", "side"], sort=True).agg(
            quantity=("size", "sum"), price=("price", "first"), symbol=("symbol", "first")
        )
        grouped = grouped.reset_index()
        for w, ts, sid, side, quantity, spread_price, spread_symbol in zip(
            grouped["_window"].tolist(),
            grouped["_ts"].tolist(),
            grouped["instrument_id"].tolist(),
            grouped["side"].tolist(),
            grouped["quantity"].tolist(),
            grouped["price"].tolist(),
            grouped["symbol"].tolist(),
        ):
            key = (int(w), int(ts))
            here = [r for r in by_instant.get(key, []) if not claimed[r]]
            futures_here = [r for r in fut_by_instant.get(key, []) if not fut_claimed[r]]
            quantity = int(quantity)
            definition = legs_by_spread.get(int(sid))
            if definition is not None:
                option_rows = [r for r in here if int(opt_iid[r]) in definition]
                future_rows = [r for r in futures_here if int(fut_iid[r]) in definition]
                signs = [definition[int(opt_iid[r])][0] for r in option_rows]
                ratios = [definition[int(opt_iid[r])][1] for r in option_rows]
                future_signs = [definition[int(fut_iid[r])][0] for r in future_rows]
                future_ratios = [definition[int(fut_iid[r])][1] for r in future_rows]
                source = "definition"
            else:
                option_rows, future_rows = here, futures_here
                sizes = [int(opt_size[r]) for r in option_rows] + [int(fut_size[r]) for r in future_rows]
                all_ratios, _ = _reduced(sizes)
                prices = [float(opt_price[r]) for r in option_rows] + [float(fut_price[r]) for r in future_rows]
                is_option = [True] * len(option_rows) + [False] * len(future_rows)
                all_signs = infer_signs(prices, all_ratios, is_option, float(spread_price))
                k = len(option_rows)
                signs, ratios = all_signs[:k], all_ratios[:k]
                future_signs, future_ratios = all_signs[k:], all_ratios[k:]
                source = "prints"
            if not option_rows:
                continue
            claimed[option_rows] = True
            fut_claimed[future_rows] = True
            add(
                key,
                int(sid),
                str(spread_symbol),
                str(side),
                quantity,
                float(spread_price),
                option_rows,
                signs,
                ratios,
                future_rows,
                future_signs,
                future_ratios,
                source,
            )
    # 2. Several option instruments at one instant with no spread print: a package without a spread instrument.
    for key, members in by_instant.items():
        members = [r for r in members if not claimed[r]]
        if len({int(opt_iid[r]) for r in members}) < 2:
            continue
        sides = [str(opt_side[r]) for r in members]
        known = [(opt_price[r] * opt_size[r], s) for r, s in zip(members, sides) if s in ("B", "A")]
        side = max(known)[1] if known else "N"  # the package's side: its largest leg with a known aggressor
        signs = [1 if s in (side, "N") or side == "N" else -1 for s in sides]
        ratios, divisor = _reduced([int(opt_size[r]) for r in members])
        claimed[members] = True
        add(key, -1, "", side, divisor, float("nan"), members, signs, ratios, [], [], [], "no spread instrument")
    if not rows:
        return pd.DataFrame(columns=PACKAGE_COLUMNS), package_of
    packages = pd.DataFrame(rows)
    _deltas(packages, underlying, window is not None)
    return packages[PACKAGE_COLUMNS], package_of


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
        option_delta = float(
            np.nansum([leg["sign"] * leg["ratio"] * leg["delta"] for leg in legs if leg["put_call"] != "F"])
        )
        for leg in legs:
            if leg["put_call"] == "F":
                leg["delta"] = 1.0
                if source == "prints":  # no definition: a futures leg hedges the options, so it takes the other side
                    leg["sign"] = -1 if option_delta > 0 else 1
        unit.append(float(np.nansum([leg["sign"] * leg["ratio"] * leg["delta"] for leg in legs])))
        gross.append(float(np.nansum([leg["ratio"] * abs(leg["delta"]) for leg in legs])))
    packages["unit_delta"] = unit
    packages["unit_gross_delta"] = gross


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
