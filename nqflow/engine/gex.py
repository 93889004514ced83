"""Dealer positioning: gamma exposure (GEX) by strike from CME open interest and settlement.

The convention (the common one; every page that shows GEX states it):

- per option, GEX = gamma x open interest x multiplier x F^2 x 0.01: dollars of the option's own
  underlying future F that dealers must trade per 1% move of F;
- calls count +, puts -: dealers are assumed long the calls customers write and short the puts
  customers buy. That is an assumption about who holds the open interest, not a fact CME
  publishes; it is the one assumption of the settled view;
- gamma is Black-76 at the implied volatility that reproduces the option's settlement price on
  its own underlying future, with time to expiry in real hours (a 0DTE option has hours left, not
  a day), measured from the session's open;
- call wall: the strike with the largest call GEX; put wall: the strike with the largest absolute
  put GEX; absolute-gamma strike: the largest |call| + |put| GEX;
- zero gamma (the flip): total GEX re-evaluated over a grid of hypothetical futures prices (every
  option repriced there, its volatility kept: sticky strike), the crossing nearest the current
  price; when there are several crossings, all are listed.

Inputs, for session D: the open interest CME published the morning of D (stat type 9) and the
settlement of the session before (stat type 3). An option whose settlement gives no implied
volatility (no settlement, or at or below intrinsic value) is left out of every sum and counted,
never a NaN. The underlying future's price is its last trade before D's open; a future that did
not trade takes the forward that put-call parity gives from the settlements of its own options.
"""

from __future__ import annotations

import datetime as dt
import time
import weakref
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nqflow.engine.levels import expiry_key
from nqflow.errors import DataNotYetAvailable
from nqflow.market import hours as cal
from nqflow.market.frames import (
    OPEN_INTEREST_STAT_TYPE,
    SETTLEMENT_STAT_TYPE,
    DataSource,
    final_settlements,
    future_fills,
    latest_positions,
    session_bounds,
)
from nqflow.market.pricing import implied_vol

YEAR_HOURS = 365.0 * 24.0
#: The grid of hypothetical futures prices for zero gamma, as moves from the current price.
FLIP_GRID = np.linspace(-0.10, 0.10, 401)

OPTION_COLUMNS = [
    "instrument_id",
    "symbol",
    "underlying",
    "expiry",
    "expiration",
    "strike",
    "put_call",
    "multiplier",
    "open_interest",
    "settlement",
    "future_price",
    "years",
    "implied_vol",
    "gamma",
    "gex_usd",
]

CONVENTION = (
    "GEX = gamma x open interest x $20 x F^2 x 1%, per 1% move of each option's own future; calls +, "
    "puts - (dealers assumed long the calls customers write and short the puts customers buy); gamma by "
    "Black-76 at the implied volatility of the previous settlement, time to expiry in hours."
)


def black76_gamma(forward, strike, years, vol) -> np.ndarray:
    """Black-76 gamma (undiscounted, r = 0 as nqflow's pricing): d2V/dF2, the same for calls and puts."""
    forward, strike, years, vol = (np.asarray(x, dtype=float) for x in (forward, strike, years, vol))
    sd = _total_sd(years, vol)
    return _density_at_d1(forward, strike, sd) / (forward * sd)


def _total_sd(years, vol) -> np.ndarray:
    """Black-76's total standard deviation of log F to expiry (a floor keeps an expiring option finite)."""
    return np.asarray(vol, dtype=float) * np.sqrt(np.maximum(np.asarray(years, dtype=float), 1e-9))


def _density_at_d1(forward, strike, sd) -> np.ndarray:
    """The standard normal density at Black-76's d1: gamma x F x sd."""
    d1 = (np.log(forward / strike) + 0.5 * sd * sd) / sd
    return np.exp(-0.5 * d1 * d1) / np.sqrt(2.0 * np.pi)


def option_gex(gamma, open_interest, multiplier, forward, put_call) -> np.ndarray:
    """Dollars per 1% move of the future: gamma x OI x multiplier x F^2 x 0.01, calls +, puts -."""
    sign = np.where(np.asarray(put_call) == "C", 1.0, -1.0)
    return (
        sign
        * np.asarray(gamma)
        * np.asarray(open_interest)
        * np.asarray(multiplier)
        * np.asarray(forward, dtype=float) ** 2
        * 0.01
    )


@dataclass
class DealerPositioning:
    """A session's dealer positioning (see the module doc)."""

    session: dt.date
    future: str
    future_price: float
    options: pd.DataFrame  # OPTION_COLUMNS, the options counted
    skipped: dict[str, int]  # why options were left out -> how many
    crossings: list[float] = field(default_factory=list)
    profile: pd.DataFrame = field(default_factory=pd.DataFrame)  # future_price, total_gex_usd

    @property
    def by_strike(self) -> pd.DataFrame:
        """Call, put and net GEX per strike (all expiries summed), strikes ascending."""
        o = self.options[["put_call", "strike", "gex_usd"]]  # the columns summed: a mask of all 15 copied each
        calls = o[o["put_call"] == "C"].groupby("strike")["gex_usd"].sum()
        puts = o[o["put_call"] == "P"].groupby("strike")["gex_usd"].sum()
        frame = pd.DataFrame({"call_gex_usd": calls, "put_gex_usd": puts}).fillna(0.0).sort_index()
        frame["net_gex_usd"] = frame["call_gex_usd"] + frame["put_gex_usd"]
        return frame.rename_axis("strike").reset_index()

    @property
    def by_expiry(self) -> pd.DataFrame:
        """Call, put and net GEX per expiry, nearest first."""
        o = self.options
        grouped = o.groupby(["expiration", "expiry", "put_call"])["gex_usd"].sum().unstack("put_call", fill_value=0.0)
        frame = pd.DataFrame({"call_gex_usd": grouped.get("C", 0.0), "put_gex_usd": grouped.get("P", 0.0)})
        frame["net_gex_usd"] = frame["call_gex_usd"] + frame["put_gex_usd"]
        return frame.reset_index().sort_values("expiration").drop(columns="expiration").reset_index(drop=True)

    @property
    def call_wall(self) -> float | None:
        return self._strikes()[0]

    @property
    def put_wall(self) -> float | None:
        return self._strikes()[1]

    @property
    def abs_gamma_strike(self) -> float | None:
        return self._strikes()[2]

    def _strikes(self) -> tuple[float | None, float | None, float | None]:
        """The call wall, put wall and absolute-gamma strike (`WALL_NAMES` order) from one
        `by_strike` table: the strike of the largest positive call GEX, of the largest |put GEX|,
        of the largest call plus put |GEX|, the first on a tie; None where all are zero."""
        table = self.by_strike
        strikes = table["strike"].to_numpy(dtype=float)
        calls, puts = table["call_gex_usd"].to_numpy(dtype=float), table["put_gex_usd"].to_numpy(dtype=float)

        def strike_of_max(values: np.ndarray) -> float | None:
            magnitude = np.abs(values)
            return float(strikes[int(np.argmax(magnitude))]) if (magnitude > 0).any() else None

        return (
            strike_of_max(np.clip(calls, 0.0, None)),
            strike_of_max(puts),
            strike_of_max(np.abs(calls) + np.abs(puts)),
        )

    @property
    def zero_gamma(self) -> float | None:
        """The crossing of total GEX nearest the current futures price (None: no crossing in the grid)."""
        if not self.crossings:
            return None
        return min(self.crossings, key=lambda price: abs(price - self.future_price))

    @property
    def total_gex_usd(self) -> float:
        return float(self.options["gex_usd"].sum())

    @property
    def walls(self) -> dict[str, float]:
        """The walls that exist, by name (`WALL_NAMES` order): what every window of the session
        carries for its alerts' reasons."""
        return {name: strike for name, strike in zip(WALL_NAMES, self._strikes()) if strike is not None}

    def nearest_wall(self, price: float) -> tuple[str, float] | None:
        """The wall (call, put or absolute-gamma) nearest `price`: its name and strike."""
        return nearest_wall(self.walls, price)

    @property
    def summary(self) -> dict:
        """The whole positioning (`to_json`) in the scraps' summary form, like every daily job's: the
        notebook glues it, and `scheduler.py gex --json` prints its `to_json` part."""
        opens, closes = session_bounds(self.session)
        figures = self.to_json()
        return {
            "window_start": opens.isoformat(),
            "window_end": closes.isoformat(),
            "option_trades": 0,
            "contracts": 0,
            "premium_usd": 0.0,
            "empty": self.options.empty,
            "notes": [f"{n:,} option(s) left out: {why}" for why, n in self.skipped.items()],
            "alerts": 0,
            "max_confidence": 0.0,
            **figures,
        }

    def to_json(self) -> dict:
        """`scheduler.py gex DATE --json`."""

        def number(value):
            return None if value is None else round(float(value), 2)

        return {
            "session": str(self.session),
            "future": self.future,
            "future_price": number(self.future_price),
            **{name: number(strike) for name, strike in zip(_WALL_FIELDS, self._strikes())},
            "zero_gamma": number(self.zero_gamma),
            "zero_gamma_crossings": [number(c) for c in self.crossings],
            "total_gex_usd": number(self.total_gex_usd),
            "by_strike": [{k: number(v) for k, v in row.items()} for row in self.by_strike.to_dict("records")],
            "by_expiry": [
                {"expiry": row["expiry"], **{k: number(row[k]) for k in ("call_gex_usd", "put_gex_usd", "net_gex_usd")}}
                for row in self.by_expiry.to_dict("records")
            ],
            "skipped": self.skipped,
            "options": len(self.options),
            "convention": CONVENTION,
        }


#: The walls' names, in the order a tie between equally near walls is settled.
WALL_NAMES = ("call wall", "put wall", "absolute-gamma strike")
#: Their fields in `DealerPositioning.to_json`, in the same order.
_WALL_FIELDS = ("call_wall", "put_wall", "abs_gamma_strike")


def nearest_wall(walls: dict[str, float], price: float) -> tuple[str, float] | None:
    """The wall in `walls` (name -> strike) nearest `price`, ties to the first in `WALL_NAMES`
    order; None without walls."""
    known = [(name, walls[name]) for name in WALL_NAMES if name in walls]
    return min(known, key=lambda wall: abs(wall[1] - price)) if known else None


def wall_reason(walls: dict[str, float], strike: float | None, underlying_price: float | None) -> str | None:
    """An alert's reason naming the wall nearest its strike (its underlying's price when it has
    no strike: a product surge), with the distance in index points and as a share of the wall;
    None when the session's walls are not known or the alert has neither price."""
    price, what = (strike, "strike") if strike is not None else (underlying_price, "future")
    if price is None or not np.isfinite(price):
        return None
    nearest = nearest_wall(walls, price)
    if nearest is None:
        return None
    name, wall = nearest
    gap = price - wall
    strike_text = f"{wall:,.0f}" if float(wall).is_integer() else f"{wall:,.2f}"
    if gap == 0:
        return f"{what} {price:,.2f} is at the {name} {strike_text} (settled dealer positioning)"
    side = "above" if gap > 0 else "below"
    return (
        f"{what} {price:,.2f} is {abs(gap):,.2f} pts ({abs(gap) / wall:.2%}) {side} the nearest wall, "
        f"the {name} {strike_text} (settled dealer positioning)"
    )


#: How long a session whose walls could not be computed yet waits before they are asked again
#: (statistics are published the morning of the session; a long-running process keeps asking).
WALLS_RETRY_SECONDS = 300.0
_walls_memo: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_walls(source: DataSource, session: dt.date) -> dict[str, float]:
    """The session's walls (`DealerPositioning.walls`), or {} while its statistics are not
    published. Kept per source in this process: every window of a session reads the same walls,
    and a session without them yet is asked again after `WALLS_RETRY_SECONDS`, not at every
    window or print."""
    known: dict[dt.date, tuple[dict[str, float], float]] = _walls_memo.setdefault(source, {})
    walls, retry_at = known.get(session, ({}, 0.0))
    if walls or time.monotonic() < retry_at:
        return dict(walls)
    try:
        walls = dealer_positioning(source, session, profile=False).walls
    except DataNotYetAvailable:
        walls = {}
    known[session] = (walls, time.monotonic() + WALLS_RETRY_SECONDS)
    return dict(walls)


def futures_prices(source: DataSource, session: dt.date) -> dict[str, float]:
    """Each future's last trade price before `session` opens (the previous session's close)."""
    previous = cal.previous_trading_day(session)
    start, end = session_bounds(previous)
    fills = future_fills(source.trades(end - pd.Timedelta(hours=2), end))
    if fills.empty:
        return {}
    last = fills.sort_values("ts_event").groupby("symbol")["price"].last()
    return {str(symbol): float(price) for symbol, price in last.items()}


def parity_forwards(options: pd.DataFrame) -> pd.Series:
    """Per expiry, the forward put-call parity gives (F = K + C - P at the strike where |C - P| is
    least, the lowest such strike on a tie): the price of a future that did not trade, from its
    own options' settlements (each option's last settlement; strikes without both a call and a
    put are left out). Sorted by expiry; with arrays, a pivot table cost more than the rest."""
    return _parity_forwards(
        options["put_call"].to_numpy(dtype=object),
        options["settlement"].to_numpy(dtype=float),
        options["strike"].to_numpy(dtype=float),
        options["expiry"].to_numpy(dtype=object),
    )


def _parity_forwards(right: np.ndarray, price: np.ndarray, strike: np.ndarray, expiry_text: np.ndarray) -> pd.Series:
    """`parity_forwards` of arrays: each option's right, settlement, strike and expiry."""
    keep = np.isin(right, ["C", "P"]) & ~np.isnan(price) & ~np.isnan(strike) & ~pd.isna(expiry_text)
    if not keep.any():
        return pd.Series(dtype=float)
    # Numbered in text order by hashing (np.unique sorted 11,000 fixed-width texts)
    expiry, expiries = pd.factorize(np.asarray([str(e) for e in expiry_text[keep]], dtype=object), sort=True)
    strike, price, is_call = strike[keep], price[keep], right[keep] == "C"
    order = np.lexsort((np.arange(len(price)), is_call, strike, expiry))
    expiry, strike, is_call, price = expiry[order], strike[order], is_call[order], price[order]
    last = np.ones(len(price), dtype=bool)  # each (expiry, strike, right)'s last settlement
    last[:-1] = (expiry[1:] != expiry[:-1]) | (strike[1:] != strike[:-1]) | (is_call[1:] != is_call[:-1])
    expiry, strike, is_call, price = expiry[last], strike[last], is_call[last], price[last]
    # A strike's put then its call (puts sort first): a pair where a put is followed by its call.
    put = np.flatnonzero(~is_call[:-1] & is_call[1:] & (expiry[1:] == expiry[:-1]) & (strike[1:] == strike[:-1]))
    if not len(put):
        return pd.Series(dtype=float)
    gap = np.abs(price[put + 1] - price[put])
    best = np.lexsort((np.arange(len(put)), gap, expiry[put]))
    first = np.ones(len(best), dtype=bool)
    first[1:] = expiry[put][best][1:] != expiry[put][best][:-1]
    at = put[best[first]]
    return pd.Series(
        strike[at] + price[at + 1] - price[at], index=np.array([str(e) for e in expiries[expiry[at]]], dtype=object)
    )


def _latest_by_instrument(records: pd.DataFrame, column: str, ids: np.ndarray) -> np.ndarray:
    """Each of `ids`' last known `column` value in `records` (by ``ts_event``, the later record on
    a tie; a missing value skipped, as a groupby's ``last`` skips it), NaN for an id without one:
    with NumPy, where a sort, a groupby and a map of a 12,000-option chain cost more."""
    values = records[column].to_numpy(dtype=float)
    known = ~np.isnan(values)
    record_ids = records["instrument_id"].to_numpy(dtype="int64")[known]
    times = records["ts_event"].to_numpy(dtype="datetime64[ns]").view("int64")[known]
    latest = latest_positions(times, [record_ids])  # in id order, the later record on a tie
    record_ids, values = record_ids[latest], values[known][latest]
    at = np.minimum(np.searchsorted(record_ids, ids), max(len(record_ids) - 1, 0))
    found = (record_ids[at] == ids) if len(record_ids) else np.zeros(len(ids), dtype=bool)
    return np.where(found, values[at] if len(values) else np.nan, np.nan)


def _mapped(codes: np.ndarray, distinct, values: dict) -> np.ndarray:
    """What ``Series.map(values)`` gives for factorized values (code -1: missing), as floats."""
    looked_up = np.array([values.get(key, np.nan) for key in distinct] + [np.nan], dtype=float)
    return looked_up[codes]  # code -1 reads the NaN at the end


def _hours_from(times: pd.Series, start: pd.Timestamp) -> np.ndarray:
    """Hours from `start` to each of `times` (NaN where a time is missing)."""
    return ((times - start).dt.total_seconds() / 3600.0).to_numpy(dtype=float)


def _most_common(names: np.ndarray, counts: np.ndarray) -> str:
    """The name counted most, the first in text order on a tie (what ``Series.mode().iloc[0]`` gives)."""
    most = counts.max()
    return str(min(name for name, count in zip(names, counts) if count == most))


def dealer_positioning(source: DataSource, session: dt.date, profile: bool = True) -> DealerPositioning:
    """Session `session`'s dealer positioning from the morning's open interest and the previous
    settlement (see the module doc). Raises DataNotYetAvailable while either is missing.
    `profile=False` leaves out the flip profile (most of the time): the walls need only GEX."""
    opens, _ = session_bounds(session)
    statistics = source.statistics(session)
    oi = statistics[statistics["stat_type"] == OPEN_INTEREST_STAT_TYPE]
    settlements = statistics[statistics["stat_type"] == SETTLEMENT_STAT_TYPE]
    settle = final_settlements(statistics)
    if oi.empty or settle.empty:
        missing = (
            "open interest"
            if oi.empty
            else "the previous session's final settlement prices"
            + (" (only preliminary so far)" if len(settlements) else "")
        )
        raise DataNotYetAvailable(
            f"dealer positioning for session {session} waits for {missing} (CME publishes "
            f"them the morning of the session): try again after its open"
        )
    chain = source.chain(session)
    rows = np.flatnonzero(chain["put_call"].isin(["C", "P"]).to_numpy(dtype=bool))
    ids = chain["instrument_id"].to_numpy(dtype="int64")[rows]
    open_interest = _latest_by_instrument(oi, "quantity", ids)
    settlement = _latest_by_instrument(settle, "price", ids)
    expiry = expiry_key(chain["symbol"].take(rows)).to_numpy(dtype=object)
    strike = chain["strike"].to_numpy(dtype=float)[rows]
    right = chain["put_call"].to_numpy(dtype=object)[rows]
    is_call = right == "C"
    traded = futures_prices(source, session)
    parity = _parity_forwards(right, settlement, strike, expiry)
    underlying_codes, underlyings = pd.factorize(chain["underlying"].to_numpy(dtype=object)[rows])
    forward = _mapped(underlying_codes, [str(u) for u in underlyings], traded)
    unpriced = np.isnan(forward)
    if unpriced.any():  # a future that did not trade: its options' parity forward
        expiry_codes, expiries = pd.factorize(expiry[unpriced])
        forward[unpriced] = _mapped(expiry_codes, expiries, parity.to_dict())
    settled_at = session_bounds(cal.previous_trading_day(session))[1]
    expiration = chain["expiration"].take(rows)
    expiration_hours = _hours_from(expiration, settled_at)
    years = np.maximum(_hours_from(expiration, opens) / YEAR_HOURS, 0.0)  # NaN stays NaN, as clip keeps it

    intrinsic = np.where(is_call, np.maximum(forward - strike, 0.0), np.maximum(strike - forward, 0.0))
    reasons = np.select(
        [
            np.isnan(open_interest),
            np.isnan(settlement),
            np.isnan(forward),
            (years <= 0) | (expiration_hours <= 0),
            settlement <= intrinsic + 1e-9,
        ],
        [
            "no open interest published",
            "no settlement",
            "no price for its future",
            "expired",
            "settlement at or below intrinsic value",
        ],
        default="",
    )
    keep = reasons == ""
    implied = implied_vol(
        settlement[keep], forward[keep], strike[keep], expiration_hours[keep] / YEAR_HOURS, is_call[keep]
    )
    gamma = black76_gamma(forward[keep], strike[keep], years[keep], implied)
    multiplier = chain["multiplier"].to_numpy(dtype=float)[rows][keep]
    described = [c for c in OPTION_COLUMNS[:8] if c != "expiry"]  # as the chain holds them
    kept = chain[described].take(rows[keep]).reset_index(drop=True)
    kept.insert(OPTION_COLUMNS.index("expiry"), "expiry", pd.Series(expiry[keep], dtype=object))
    kept["open_interest"] = open_interest[keep]
    kept["settlement"] = settlement[keep]
    kept["future_price"] = forward[keep]
    kept["years"] = years[keep]
    kept["implied_vol"] = implied
    kept["gamma"] = gamma
    kept["gex_usd"] = option_gex(gamma, open_interest[keep], multiplier, forward[keep], right[keep])
    skipped = {str(k): int(v) for k, v in pd.Series(reasons[~keep]).value_counts().items()}
    counts = np.bincount(underlying_codes[underlying_codes >= 0], minlength=len(underlyings))
    options_of = dict(zip(underlyings, counts.tolist()))
    front = max(traded, key=lambda s: options_of.get(s, 0)) if traded else _most_common(underlyings, counts)
    front_price = traded.get(front, float(kept.loc[kept["underlying"] == front, "future_price"].median()))
    positioning = DealerPositioning(session, front, float(front_price), kept, skipped)
    if profile:
        positioning.profile, positioning.crossings = gex_profile(positioning.options, positioning.future_price)
    return positioning


FLOW_ASSUMPTION = (
    "An estimate: the morning's open interest moved by the session's screen flow, every aggressor "
    "order read as a customer trading with a dealer (a customer buy takes the contracts from dealers, "
    "a customer sell gives them to dealers). Dealer-to-dealer trades, blocks off the book and the legs "
    "of packages are not told apart; gamma stays at the morning's."
)


def flow_adjusted(positioning: DealerPositioning, prints: pd.DataFrame) -> DealerPositioning:
    """The settled positioning with each option's dealer position moved by the session's screen
    flow (`FLOW_ASSUMPTION`, the one assumption beyond the settled view's): under the convention
    dealers hold +OI of each call and -OI of each put, and a customer buy of n contracts (the
    exchange aggressor B) takes n from them, a sell (A) gives n. `prints` are option fills with
    ``instrument_id``, ``size`` and ``side``. Options without a settled gamma are left out, and
    their flow counted in ``skipped``. GEX, walls and the flip follow from the moved positions."""
    options = positioning.options.copy()
    aggressive = prints[prints["side"].isin(["B", "A"])]
    customer_buys = (
        (aggressive["size"] * np.where(aggressive["side"] == "B", 1, -1)).groupby(aggressive["instrument_id"]).sum()
    )
    bought = options["instrument_id"].map(customer_buys).fillna(0.0).to_numpy(dtype=float)
    is_call = (options["put_call"] == "C").to_numpy()
    # `option_gex` signs by right: a call's dealer position enters as is, a put's as its negative
    dealer = np.where(is_call, 1.0, -1.0) * options["open_interest"].to_numpy(dtype=float) - bought
    options["open_interest"] = np.where(is_call, dealer, -dealer)
    options["gex_usd"] = option_gex(
        options["gamma"], options["open_interest"], options["multiplier"], options["future_price"], options["put_call"]
    )
    unseen = int(aggressive.loc[~aggressive["instrument_id"].isin(options["instrument_id"]), "size"].sum())
    skipped = dict(positioning.skipped)
    if unseen:
        skipped["flow on options without a settled gamma (contracts)"] = unseen
    adjusted = DealerPositioning(positioning.session, positioning.future, positioning.future_price, options, skipped)
    adjusted.profile, adjusted.crossings = gex_profile(options, positioning.future_price)
    return adjusted


def gex_profile(options: pd.DataFrame, price: float, grid: np.ndarray = FLIP_GRID) -> tuple[pd.DataFrame, list[float]]:
    """Total GEX with every future moved by the same share (sticky-strike volatility), over
    `grid`, and the prices where it changes sign (interpolated, ascending)."""
    if options.empty:
        return pd.DataFrame({"future_price": price * (1 + grid), "total_gex_usd": 0.0}), []
    # gamma x F^2 = phi(d1) x F / sd: each grid row's total is phi(d1) x F times per-option
    # weights (sign x OI x multiplier x 1% / sd), with no grid-sized temporaries for the
    # multiplier, the sign or F^2 (the 401 x 12,000 grid is most of the cost)
    strike = options["strike"].to_numpy(dtype=float)
    sd = _total_sd(options["years"].to_numpy(dtype=float), options["implied_vol"].to_numpy(dtype=float))
    sign = np.where(options["put_call"].to_numpy() == "C", 1.0, -1.0)
    weight = (
        sign * options["open_interest"].to_numpy(dtype=float) * options["multiplier"].to_numpy(dtype=float) * 0.01 / sd
    )
    forward = options["future_price"].to_numpy(dtype=float)[None, :] * (1.0 + grid[:, None])
    total = (_density_at_d1(forward, strike[None, :], sd[None, :]) * forward) @ weight
    prices = price * (1.0 + grid)
    crossings = []
    for i in np.flatnonzero(np.sign(total[:-1]) * np.sign(total[1:]) < 0):
        share = total[i] / (total[i] - total[i + 1])
        crossings.append(float(prices[i] + share * (prices[i + 1] - prices[i])))
    return pd.DataFrame({"future_price": prices, "total_gex_usd": total}), crossings
