"""A deterministic, realistic NQ options sample market written as real GLBX.MDP3 DBN files.

`generate_sample_market(folder)` writes, for each of `n_sessions` CME Globex sessions (by
default 26, 23 October to 27 November 2026: the end of daylight-saving time on 1 November
and the Thanksgiving half days fall inside):

- ``glbx-mdp3-YYYYMMDD.definition.dbn.zst``: the NQ futures, every option of the 26 NQ option
  products listed on CME's schedule (``NQ`` quarterly and serial, ``QNE`` end of month,
  ``QN1``-``QN4`` Friday and ``Q1A``-``Q5D`` Monday-to-Thursday weeklies; raw symbols like
  ``Q2DX6 C21750``, ``asset`` the product code) at 10-point strikes near the money and
  100-point strikes further out, and the day's user-defined spreads (``instrument_class`` T,
  or M for options against futures) with one definition record per leg (``leg_count``,
  ``leg_index``, ``leg_instrument_id``, ``leg_side``, ``leg_ratio_qty_numerator``,
  ``leg_price``, ``leg_delta``); a share of spreads carry no legs (``leg_count`` 0), as some
  feeds do;
- ``glbx-mdp3-YYYYMMDD.trades.dbn.zst``: option and front-future trades with U-shaped
  intraday intensity, 0DTE and 1DTE expiries carrying most of the volume, over-dispersed
  arrivals, heavy-tailed sizes, Black-76 prices on a volatility smile and aggressor sides
  B/A/N; every spread trade prints on the spread instrument with its aggressor and on each
  leg at the same ``ts_event`` in the leg ratios (leg prints mostly side N);
- ``glbx-mdp3-YYYYMMDD.statistics.dbn.zst``: open interest (stat 9) per option near the
  open, and the previous session's settlement prices (3) and cleared volume (6), as CME
  publishes them the next morning (``ts_ref`` names the session they belong to);

plus ``ground_truth.json`` listing every planted institutional event: blocks (some 0DTE),
multi-strike sweeps, strategy packages (a $3M+ vertical call spread, a delta-neutral covered
straddle, a risk reversal, a calendar), 10x/30x/50x surges on one strike, on the 0DTE
expiry and on the whole product, and the quiet sessions that have none. The same seed
always gives byte-identical files.

Surge ground truth is stated against the documented baseline (trimmed mean of the same
slot's volume over up to `baseline_sessions` previous sessions, see `nqflow.engine.baseline`),
computed here independently from the generator's own arrays; which key a fill counts under
comes from `nqflow.engine.baseline.level_keys`, the one definition of the keys.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import databento_dbn as dbn
import numpy as np
import pandas as pd
import zstandard

from nqflow.engine.levels import SHORT_DATED_DAYS, level_keys, slot_volumes
from nqflow.market import hours as cal
from nqflow.market.contracts import (
    CHICAGO,
    MONTH_CODES,
    NQ_POINT_VALUE_USD,
    OptionExpiry,
    listed_expiries,
    month_code,
    option_raw_symbol,
    option_tick,
    roll_date,
    round_to_tick,
    third_friday,
    years_between,
)
from nqflow.market.pricing import black76, black76_delta, smile_vol

DATASET = "GLBX.MDP3"
PUBLISHER_ID = 1  # GLBX.MDP3 on CME Globex
FIXED = 1_000_000_000  # DBN fixed-point prices: 1e-9 units
#: 2: strikes listed around the market session by session; 3: two-leg sweeps; 4: the real CME
#: product set and schedule, 0DTE-heavy volume, spreads with leg prints, planted strategies.
#: 6: ``UD:2V:`` spread names and credits at negative prices, CME's 25/50-point quarterly grid,
#: flags 0 on some days, worked orders and two-sided decoys, open interest that follows the
#: trades (positions opened and closed, with ground truth), repeated statistics messages.
#: 7: the front future rolls (NQZ6 to NQH7 on 10 December 2026, and on) and expired futures delist.
#: 8: open interest at a tenth of the scale (1.5M contracts at the first session and 4.2M by the
#: last, not 15M and 40M), and planted dealer walls: a call and a put concentration on the
#: quarterly options, with ground truth.
GENERATOR_VERSION = 8
#: Background orders stay below this premium so that only planted events cross $3M.
BACKGROUND_MAX_PREMIUM_USD = 1_200_000.0
#: Background spreads stay below this gross premium (sum over legs).
BACKGROUND_SPREAD_MAX_PREMIUM_USD = 900_000.0
#: Instrument surges are stated against the expected volume floored at this many contracts
#: (thresholds.instrument_baseline_floor's default), on slots that expect at least
#: INSTRUMENT_SURGE_MIN_EXPECTED: with 0DTE and 1DTE taking most volume, a longer-dated strike
#: trades only a few contracts a slot. The 0DTE surge needs a real baseline of its own.
SURGE_MIN_BASELINE_CONTRACTS = 8.0
INSTRUMENT_SURGE_MIN_EXPECTED = 2.0
EXPIRY_SURGE_MIN_BASELINE_CONTRACTS = 30.0
SURGE_MAX_PRICE_POINTS = 150.0
EXPIRY_FLOOR_CONTRACTS = 30.0  # thresholds.expiry_baseline_floor's default


class _Carry(dict):
    """Deferred quarterly futures trade at a small carry premium over NQZ6: 0.95% a quarter. The
    bundled sample needs the four listed; a long generated range (a year) reaches further ones."""

    def __missing__(self, root: str) -> float:
        year = 2020 + int(root[3])  # NQ + month code + year digit: this generator's 2026-2029
        quarters = ((year - 2026) * 12 + MONTH_CODES.index(root[2]) + 1 - 12) / 3
        return 1.0 + 0.0095 * quarters


CARRY = _Carry({"NQZ6": 1.0, "NQH7": 1.0095, "NQM7": 1.019, "NQU7": 1.0285})
TIER_RATIO_RANGES = {10: (15.0, 21.0), 30: (37.0, 43.0), 50: (65.0, 90.0)}
#: An expiry is listed (and traded) this many calendar days before it expires: four weeks of
#: Monday-Thursday weeklies, about five of Friday weeklies, a few months of the others.
HORIZON_DAYS = {"weekly": 30, "eom": 70, "monthly": 100, "quarterly": 200}
#: Strike bands: (step in index points, half-width as a share of the market), as CME lists them:
#: quarterly and serial options at 25 and 50 points near the money, 100 further out, and 100 to
#: 500 points on far expiries; weeklies and end-of-month options at multiples of 10 mixed with 25.
STRIKE_BANDS = {
    "quarterly": ((100.0, 0.10), (50.0, 0.05), (25.0, 0.02)),
    "monthly": ((100.0, 0.10), (50.0, 0.05), (25.0, 0.02)),
    "weekly": ((100.0, 0.08), (25.0, 0.04), (10.0, 0.02)),
    "eom": ((100.0, 0.08), (25.0, 0.04), (10.0, 0.02)),
}
FAR_BANDS = ((500.0, 0.25), (100.0, 0.08))
NEAR_DAYS = 70
#: Background spread mix: strategy -> relative frequency.
SPREAD_MIX = {
    "vertical": 0.34,
    "straddle": 0.14,
    "strangle": 0.1,
    "risk_reversal": 0.1,
    "butterfly": 0.08,
    "calendar": 0.1,
    "condor": 0.06,
    "covered": 0.08,
}
#: CME's user-defined spread type codes as NQ options show them (``UD:2V: VT 2500123``); the
#: rest print as GN (generic).
UDS_TYPE = {"vertical": "VT", "risk_reversal": "RR", "butterfly": "BO", "condor": "IC", "covered": "CO"}
#: Share of background spreads defined the short way round, so they print at negative prices
#: (credits); with the structures that are credits anyway, about a quarter of spreads.
CREDIT_DEFINITION_SHARE = 0.2
#: Sessions (by index) whose trade records carry flags = 0, as some real days' do.
NO_FLAGS_EVERY = 4
#: The gateway's ts_in_delta of trade records (ns): 12-15 µs, as on real records.
TS_IN_DELTA_NS = (12_000, 15_000)
#: Share of options whose open interest is published twice in a morning (a preliminary figure,
#: then the final one): the last message counts.
REPEATED_STATISTICS_SHARE = 0.1
#: Share of planted trades (not expiring that day) that close positions; the rest open them.
CLOSING_SHARE = 0.35
#: Worked orders are stated against the default thresholds (config/monitoring.toml): the alert
#: comes at the child where the running premium reaches $3M with at least 8 children.
WORKED_CROSSING_USD = 3_000_000.0
WORKED_MIN_ORDERS = 8
#: Children of a worked order keep each window's contracts on the option below this, under the
#: instrument surge's minimum volume (75): the order is seen as one worked order, not a surge.
WORKED_MAX_WINDOW_CONTRACTS = 70
#: Share of background spreads whose definition carries no legs (leg_count 0): the legs must be inferred.
NO_LEG_DEFINITION_SHARE = 0.2
SPREAD_ID_BASE = 900_000


@dataclass(frozen=True)
class SampleSpec:
    seed: int = 20261123
    first_trade_date: dt.date = dt.date(2026, 10, 23)
    n_sessions: int = 26
    start_forward: float = 21000.0
    option_trades_per_session: int = 30_000
    future_trades_per_session: int = 8_000
    spreads_per_session: int = 400
    baseline_sessions: int = 20
    quiet_sessions: tuple[int, ...] = (4, 12, 19)
    #: session index -> planted product-wide surge tier (overnight slot, where it is plausible)
    product_surges: dict[int, int] = field(default_factory=lambda: {9: 10, 15: 30, 21: 50})
    #: session index -> planted 0DTE expiry-wide surge tier (overnight)
    zero_dte_surges: dict[int, int] = field(default_factory=lambda: {8: 10, 17: 30, 24: 10})
    #: session index -> off-book trade planted in its next-day cleared volume: a "block" on one
    #: option, a "vertical" or "calendar" package, or a "small" block below the alert level.
    #: (The last session has no next day, so nothing is planted there.)
    #: planted open-interest concentrations on the quarterly options that outlive the sample
    #: (contracts on the call, on the put), at the 250-point strikes `wall_distance` (call, put)
    #: or more above and below the first session's price: the dealer walls a desk would see
    #: (ground truth ``dealer_walls``); carried and moved like any open interest once listed
    wall_contracts: tuple[int, int] = (24_000, 30_000)
    wall_distance: tuple[float, float] = (0.025, 0.005)
    off_book: dict[int, str] = field(
        default_factory=lambda: {
            6: "block",
            9: "vertical",
            11: "small",
            14: "calendar",
            17: "block",
            20: "vertical",
            23: "block",
        }
    )


@dataclass
class Instrument:
    instrument_id: int
    raw_symbol: str
    kind: str  # "F" future, "C" call, "P" put, "T" option spread, "M" mixed spread
    expiration_ns: int
    strike: float = float("nan")
    expiry: OptionExpiry | None = None
    underlying: str = ""
    underlying_id: int = 0
    product: str = "NQ"

    @property
    def listing(self) -> OptionExpiry:
        """The option's listed expiry (an option always has one; a future or spread has none)."""
        if self.expiry is None:
            raise ValueError(f"{self.raw_symbol} is not an option: it has no listed expiry")
        return self.expiry


@dataclass
class Leg:
    instrument: Instrument
    ratio: int
    sign: int  # +1 bought when the package is bought, -1 sold


@dataclass
class Spread:
    """A user-defined spread: its instrument and legs, and whether its definition lists them."""

    instrument: Instrument
    legs: list[Leg]
    strategy: str
    legs_in_definition: bool
    leg_prices: list[float] = field(default_factory=list)
    leg_deltas: list[float] = field(default_factory=list)


def _ns(ts: pd.Timestamp | dt.datetime) -> int:
    return int(pd.Timestamp(ts).value)


#: Records reach the gateway this long after their event (ns): 150 µs, like the real feed's ts_recv - ts_event.
RECV_DELAY_NS = 150_000


def _stat(iid: int, ts_event: int, ts_ref: int, price: int, quantity: int, stat_type, **extra) -> dbn.StatMsg:
    """One statistics record as CME sends it (a new value, received `RECV_DELAY_NS` later)."""
    return dbn.StatMsg(
        PUBLISHER_ID,
        iid,
        ts_event,
        ts_event + RECV_DELAY_NS,
        ts_ref,
        price,
        quantity,
        stat_type,
        update_action=dbn.StatUpdateAction.NEW,
        **extra,
    )


def _chicago_date(ns: int) -> dt.date:
    return pd.Timestamp(ns, tz="UTC").tz_convert(CHICAGO).date()


# --------------------------------------------------------------------------- universe
@dataclass
class Universe:
    """Futures, option expiries, and the options listed so far (strikes are added as the market moves)."""

    expiries: list[OptionExpiry]
    futures: dict[str, Instrument]
    options: list[Instrument] = field(default_factory=list)
    next_id: int = 100_000
    bands: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)  # expiry root -> strike bands
    strikes: dict[str, set[float]] = field(default_factory=dict)


def build_universe(spec: SampleSpec, schedule: pd.DataFrame) -> Universe:
    """Futures and the option expiries of the sample; options are listed session by session."""
    first, last = schedule.index[0], schedule.index[-1]
    horizon = cal.sessions(first, last + dt.timedelta(days=220))
    closes = {day: row.market_close.to_pydatetime() for day, row in horizon.iterrows()}
    expiries = [
        e
        for e in listed_expiries(first, last + dt.timedelta(days=210), closes)
        if (e.expiry_date - last).days <= HORIZON_DAYS[e.style]
    ]
    futures: dict[str, Instrument] = {}
    quarters = [(2026, 12), (2027, 3), (2027, 6), (2027, 9)]
    needed = {e.underlying for e in expiries}
    while any(root not in {f"NQ{month_code(y, m)}" for y, m in quarters} for root in needed) and len(quarters) < 16:
        year, month = quarters[-1]  # a year-long range lists options on later quarterlies
        quarters.append((year + 1, 3) if month == 12 else (year, month + 3))
    for i, (year, month) in enumerate(quarters):
        root = f"NQ{month_code(year, month)}"
        expiry = dt.datetime.combine(third_friday(year, month), dt.time(8, 30), tzinfo=CHICAGO)
        futures[root] = Instrument(1000 + i, root, "F", _ns(expiry))
    return Universe(expiries, futures)


def list_strikes(universe: Universe, session_date: dt.date, level: float) -> list[Instrument]:
    """List the strikes each live expiry needs around `level` (the prior close), as CME does:
    a new expiry gets strikes centred on the market, and a live one gets new strikes when the
    market moves past its listed range. Listed strikes are never withdrawn. Returns the new options."""
    new: list[Instrument] = []
    for expiry in universe.expiries:
        days = (expiry.expiry_date - session_date).days
        if days < 0 or days > HORIZON_DAYS[expiry.style]:
            continue
        root = expiry.symbol_root
        near_bands = STRIKE_BANDS[expiry.style]
        bands = universe.bands.setdefault(root, near_bands if days <= NEAR_DAYS else FAR_BANDS)
        if days <= NEAR_DAYS and bands is FAR_BANDS:  # a far expiry comes near: its finer strikes are added
            bands = universe.bands[root] = near_bands
        listed = universe.strikes.setdefault(root, set())
        wanted: set[float] = set()
        for step, width in bands:
            low = math.floor(level * (1 - width) / step) * step
            high = math.ceil(level * (1 + width) / step) * step
            wanted.update(float(k) for k in np.arange(low, high + step / 2, step))
        underlying = universe.futures[expiry.underlying]
        for strike in sorted(wanted - listed):
            listed.add(strike)
            for put_call in ("C", "P"):
                new.append(
                    Instrument(
                        universe.next_id,
                        option_raw_symbol(root, put_call, strike),
                        put_call,
                        _ns(expiry.expiration),
                        strike,
                        expiry,
                        expiry.underlying,
                        underlying.instrument_id,
                        expiry.product,
                    )
                )
                universe.next_id += 1
    universe.options.extend(new)
    return new


def _listed(options: list[Instrument], session_open_ns: int, session_date: dt.date) -> list[Instrument]:
    return [
        o
        for o in options
        if o.expiration_ns > session_open_ns
        and (o.listing.expiry_date - session_date).days <= HORIZON_DAYS[o.listing.style]
    ]


# --------------------------------------------------------------------------- intraday shape
def intensity_profile(minutes_since_open: np.ndarray) -> np.ndarray:
    """Relative trading intensity by minute of a Globex session (17:00 CT open).

    Quiet overnight, a bump at the European open, a U across regular hours (08:30-15:00 CT)
    and a tail into the 16:00 close."""
    ct_hour = (17.0 + minutes_since_open / 60.0) % 24.0
    out = np.full(minutes_since_open.shape, 0.35)
    out[(ct_hour >= 2.0) & (ct_hour < 8.5)] = 0.9
    rth = (ct_hour >= 8.5) & (ct_hour < 15.0)
    x = (ct_hour[rth] - 8.5) / 6.5
    out[rth] = 2.5 + 10.0 * ((x - 0.5) / 0.5) ** 2
    out[(ct_hour >= 15.0) & (ct_hour < 16.0)] = 2.0
    return out


def expiry_share(days_left: np.ndarray) -> np.ndarray:
    """Relative share of the day's option volume by time left to expiry (days): the expiry
    of the day and the next carry most of it, as NQ options trade now."""
    return 1.0 / (np.maximum(days_left, 0.0) + 0.5) ** 1.3


# --------------------------------------------------------------------------- record writing
def _write_dbn(
    path: Path,
    schema: dbn.Schema,
    start_ns: int,
    end_ns: int,
    records: list,
    symbols: dict[str, int],
    mapping_dates: tuple[dt.date, dt.date],
) -> None:
    mappings = [
        SimpleNamespace(
            raw_symbol=sym,
            intervals=[SimpleNamespace(start_date=mapping_dates[0], end_date=mapping_dates[1], symbol=str(iid))],
        )
        for sym, iid in sorted(symbols.items())
    ]
    metadata = dbn.Metadata(
        dataset=DATASET,
        start=start_ns,
        end=end_ns,
        stype_in=dbn.SType.RAW_SYMBOL,
        stype_out=dbn.SType.INSTRUMENT_ID,
        schema=schema,
        symbols=sorted(symbols),
        partial=[],
        not_found=[],
        mappings=mappings,
        ts_out=False,
    )
    payload = bytes(metadata) + b"".join(bytes(r) for r in records)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(zstandard.ZstdCompressor(level=3).compress(payload))
    tmp.replace(path)


_CLASS = {
    "C": dbn.InstrumentClass.CALL,
    "P": dbn.InstrumentClass.PUT,
    "F": dbn.InstrumentClass.FUTURE,
    "T": dbn.InstrumentClass.OPTION_SPREAD,
    "M": dbn.InstrumentClass.MIXED_SPREAD,
}


def _definition(inst: Instrument, ts_ns: int, **legs) -> dbn.InstrumentDefMsg:
    is_option = inst.kind in ("C", "P")
    is_spread = inst.kind in ("T", "M")
    future = inst.kind == "F"
    return dbn.InstrumentDefMsg(
        publisher_id=PUBLISHER_ID,
        instrument_id=inst.instrument_id,
        ts_event=ts_ns,
        ts_recv=ts_ns,
        min_price_increment=int((0.25 if future else 0.05) * FIXED),
        display_factor=FIXED,
        raw_symbol=inst.raw_symbol,
        asset=inst.product,
        security_type="FUT" if future else "OOF",
        instrument_class=_CLASS[inst.kind],
        security_update_action=dbn.SecurityUpdateAction.ADD,
        expiration=inst.expiration_ns,
        # Like real GLBX.MDP3 definitions: contract_multiplier undefined, size in unit_of_measure_qty.
        unit_of_measure_qty=int(NQ_POINT_VALUE_USD * FIXED),
        unit_of_measure="IPNT",
        min_price_increment_amount=int((5.0 if future else 1.0) * FIXED),
        strike_price=int(round(inst.strike * FIXED)) if is_option else dbn.UNDEF_PRICE,
        underlying_id=inst.underlying_id,
        underlying=inst.underlying if (is_option or is_spread) else "",
        currency="USD",
        settl_currency="USD",
        exchange="XCME",
        group=inst.product,
        cfi=("OCEFPS" if inst.kind == "C" else "OPEFPS") if is_option else "FFIXSX" if future else "OMXXXX",
        strike_price_currency="USD" if is_option else "",
        min_lot_size_round_lot=1,
        min_trade_vol=1,
        max_trade_vol=10_000,
        match_algorithm=dbn.MatchAlgorithm.FIFO,
        user_defined_instrument=dbn.UserDefinedInstrument.YES if is_spread else dbn.UserDefinedInstrument.NO,
        **legs,
    )


def _spread_definitions(spread: Spread, ts_ns: int) -> list[dbn.InstrumentDefMsg]:
    """One record per leg (Databento's layout), or one record without legs for some feeds."""
    if not spread.legs_in_definition:
        return [_definition(spread.instrument, ts_ns)]
    records = []
    for index, (leg, price, delta) in enumerate(zip(spread.legs, spread.leg_prices, spread.leg_deltas)):
        records.append(
            _definition(
                spread.instrument,
                ts_ns,
                leg_count=len(spread.legs),
                leg_index=index,
                leg_instrument_id=leg.instrument.instrument_id,
                leg_raw_symbol=leg.instrument.raw_symbol,
                leg_instrument_class=_CLASS[leg.instrument.kind],
                leg_side=dbn.Side.BID if leg.sign > 0 else dbn.Side.ASK,
                leg_ratio_qty_numerator=leg.ratio,
                leg_ratio_qty_denominator=1,
                leg_ratio_price_numerator=leg.ratio,
                leg_ratio_price_denominator=1,
                leg_price=int(round(price * FIXED)),
                leg_delta=int(round(delta * FIXED)),
                leg_underlying_id=leg.instrument.underlying_id,
            )
        )
    return records


# --------------------------------------------------------------------------- generator state
@dataclass(frozen=True)
class _Listed:
    """A session's listed options as columns, in their listed order (what `_weights` reads)."""

    instrument_id: np.ndarray
    strike: np.ndarray
    expiration_ns: np.ndarray
    carry: np.ndarray
    is_put: np.ndarray
    root: np.ndarray

    @classmethod
    def of(cls, listed: list[Instrument]) -> _Listed:
        return cls(
            np.array([o.instrument_id for o in listed]),
            np.array([o.strike for o in listed]),
            np.array([o.expiration_ns for o in listed], dtype=np.int64),
            np.array([CARRY[o.underlying] for o in listed]),
            np.array([o.kind == "P" for o in listed]),
            np.array([o.listing.symbol_root for o in listed]),
        )


@dataclass
class _Session:
    index: int
    trade_date: dt.date
    open_ns: int
    close_ns: int
    minute_forward: np.ndarray  # front-future level per minute of the session
    listed: list[Instrument]
    # trade columns (option, spread and future fills), appended by background and planted events
    ts: list[np.ndarray] = field(default_factory=list)
    iid: list[np.ndarray] = field(default_factory=list)
    price: list[np.ndarray] = field(default_factory=list)
    size: list[np.ndarray] = field(default_factory=list)
    side: list[np.ndarray] = field(default_factory=list)
    spreads: list[Spread] = field(default_factory=list)

    def add(self, ts, iid, price, size, side) -> None:
        self.ts.append(np.asarray(ts, dtype=np.int64))
        self.iid.append(np.asarray(iid, dtype=np.int64))
        self.price.append(np.asarray(price, dtype=np.float64))
        self.size.append(np.asarray(size, dtype=np.int64))
        self.side.append(np.asarray(side, dtype="<U1"))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "ts": np.concatenate(self.ts),
                "iid": np.concatenate(self.iid),
                "price": np.concatenate(self.price),
                "size": np.concatenate(self.size),
                "side": np.concatenate(self.side),
            }
        )

    def forward_at(self, ts_ns: np.ndarray) -> np.ndarray:
        minute = np.clip((np.asarray(ts_ns) - self.open_ns) // 60_000_000_000, 0, len(self.minute_forward) - 1)
        return self.minute_forward[minute]


def _is_option_id(iid) -> np.ndarray:
    iid = np.asarray(iid)
    return (iid >= 100_000) & (iid < SPREAD_ID_BASE)


class _Generator:
    def __init__(self, spec: SampleSpec):
        self.spec = spec
        self.rng = np.random.default_rng(spec.seed)
        schedule = cal.sessions(spec.first_trade_date, spec.first_trade_date + dt.timedelta(days=3 * spec.n_sessions))
        self.schedule = schedule.iloc[: spec.n_sessions]
        if len(self.schedule) < spec.n_sessions:
            raise ValueError("calendar returned fewer sessions than requested")
        self.universe = build_universe(spec, self.schedule)
        self.options, self.futures = self.universe.options, self.universe.futures
        self.by_id: dict[int, Instrument] = {f.instrument_id: f for f in self.futures.values()}
        self.level = spec.start_forward
        self.events: list[dict] = []
        self.next_spread_id = SPREAD_ID_BASE
        #: per session: slot volumes (level, key, slot, volume) of option fills, and first session of each key
        self.slot_volume: list[pd.DataFrame] = []
        self.first_seen: dict[tuple[str, str], int] = {}
        self.previous: _Session | None = None
        #: open interest written for the previous session, so a planted block's OI change is real
        self.previous_oi: dict[int, int] = {}
        #: per session index: instrument -> contracts that planted positions opened (+) or closed (-)
        self.position_change: dict[int, dict[int, int]] = {}
        #: per session index: instrument -> open interest it must hold at the open (a position closed that day)
        self.oi_floor: dict[int, dict[int, int]] = {}
        #: the planted dealer walls (`SampleSpec.wall_contracts`), chosen at the first session
        self.dealer_walls: dict | None = None
        self._chains: dict[tuple, dict[str, list[Instrument]]] = {}
        self._expirations: dict[int, np.ndarray] = {}  # each session's options' expirations, sorted

    # ------------------------------------------------------------------ prices
    def option_prices(self, iids: np.ndarray, ts_ns: np.ndarray, sess: _Session) -> np.ndarray:
        insts = [self.by_id[i] for i in iids]
        strike = np.array([o.strike for o in insts])
        is_call = np.array([o.kind == "C" for o in insts])
        expiry = np.array([o.expiration_ns for o in insts], dtype=np.int64)
        carry = np.array([CARRY[o.underlying] for o in insts])
        fwd = sess.forward_at(ts_ns) * carry
        years = years_between(ts_ns, expiry)
        return black76(fwd, strike, years, smile_vol(fwd, strike, years), is_call, rate=0.04)

    def option_deltas(self, iids: np.ndarray, ts_ns: np.ndarray, sess: _Session) -> np.ndarray:
        insts = [self.by_id[i] for i in iids]
        strike = np.array([o.strike for o in insts])
        is_call = np.array([o.kind == "C" for o in insts])
        expiry = np.array([o.expiration_ns for o in insts], dtype=np.int64)
        fwd = sess.forward_at(ts_ns) * np.array([CARRY[o.underlying] for o in insts])
        years = years_between(ts_ns, expiry)
        return black76_delta(fwd, strike, years, smile_vol(fwd, strike, years), is_call)

    # ------------------------------------------------------------------ sessions
    def new_session(self, index: int) -> _Session:
        trade_date = self.schedule.index[index]
        row = self.schedule.iloc[index]
        open_ns, close_ns = _ns(row.market_open), _ns(row.market_close)
        minutes = int((close_ns - open_ns) // 60_000_000_000)
        profile = intensity_profile(np.arange(minutes, dtype=float))
        minute_sigma = 0.22 / math.sqrt(252 * 1380) * np.sqrt(profile / profile.mean())
        self.by_id.update({o.instrument_id: o for o in list_strikes(self.universe, trade_date, self.level)})
        gap = self.rng.normal(0.0, 0.004) if index and (trade_date - self.schedule.index[index - 1]).days > 1 else 0.0
        path = self.level * np.exp(gap + np.cumsum(self.rng.normal(0.0, minute_sigma)))
        self.level = float(path[-1])
        return _Session(index, trade_date, open_ns, close_ns, path, _listed(self.options, open_ns, trade_date))

    def front_on(self, trade_date: dt.date) -> Instrument:
        """The front (most traded) future of a session: the nearest quarterly not yet past its
        roll date (`nqflow.market.contracts.roll_date`): NQZ6 until 10 December 2026, then NQH7."""
        live = [f for f in self.futures.values() if roll_date(_chicago_date(f.expiration_ns)) > trade_date]
        return min(live, key=lambda f: f.expiration_ns)

    def _weights(self, sess: _Session, t_ns: int, listed: _Listed) -> np.ndarray:
        """Where volume goes at instant t: by expiry (0DTE and 1DTE most), then by moneyness
        within the expiry (near the money, puts a little more, round strikes a little more)."""
        strikes, exp_ns, carry, is_put, roots = (
            listed.strike,
            listed.expiration_ns,
            listed.carry,
            listed.is_put,
            listed.root,
        )
        alive = exp_ns > t_ns + 30 * 60_000_000_000
        fwd = sess.forward_at(np.array([t_ns]))[0] * carry
        years = years_between(t_ns, exp_ns)
        width = 0.20 * np.sqrt(np.maximum(years, 1 / 365)) + 0.002
        moneyness = np.log(strikes / fwd) / width
        round_bonus = 1.0 + 1.0 * (strikes % 100 == 0) + 2.0 * (strikes % 500 == 0)
        within = np.where(alive, np.where(is_put, 1.25, 1.0) * np.exp(-0.5 * moneyness**2) * round_bonus, 0.0)
        totals = pd.Series(within).groupby(roots).transform("sum").to_numpy()
        share = expiry_share(years * 365.25)
        weight = np.where(totals > 0, within / np.where(totals > 0, totals, 1.0) * share, 0.0)
        return weight / weight.sum()

    def background(self, sess: _Session) -> None:
        rng, spec = self.rng, self.spec
        minutes = len(sess.minute_forward)
        profile = intensity_profile(np.arange(minutes, dtype=float))
        activity = rng.gamma(25.0, 1.0 / 25.0)  # session-to-session activity varies ~20%
        expected = profile / profile.sum() * spec.option_trades_per_session * activity * minutes / 1380.0
        # Gamma-mixed Poisson per minute: order arrivals cluster (over-dispersed counts).
        counts = rng.poisson(expected * rng.gamma(3.0, 1.0 / 3.0, size=minutes))
        minute_of = np.repeat(np.arange(minutes), counts)
        ts = sess.open_ns + minute_of * 60_000_000_000 + rng.integers(0, 60_000_000_000, size=minute_of.size)
        ts.sort()
        minute_of = (ts - sess.open_ns) // 60_000_000_000

        listed = _Listed.of(sess.listed)  # the session's options as columns, once (not per half hour)
        iids = np.empty(ts.size, dtype=np.int64)
        listed_ids = listed.instrument_id
        for hour_start in range(0, minutes, 30):
            mask = (minute_of >= hour_start) & (minute_of < hour_start + 30)
            if not mask.any():
                continue
            weight = self._weights(sess, sess.open_ns + hour_start * 60_000_000_000, listed)
            iids[mask] = rng.choice(listed_ids, size=int(mask.sum()), p=weight)

        price_model = self.option_prices(iids, ts, sess)
        side = rng.choice(np.array(["B", "A", "N"]), size=ts.size, p=[0.46, 0.46, 0.08])
        half_spread = np.maximum(0.01 * price_model, 0.05)
        price = round_to_tick(
            price_model + np.where(side == "B", half_spread, np.where(side == "A", -half_spread, 0.0))
        )
        # Heavy-tailed order sizes (Pareto, tail index 1.5), capped so background premium stays modest.
        size = np.floor(rng.pareto(1.5, size=ts.size) + 1.0).astype(np.int64)
        cap = np.maximum(np.floor(BACKGROUND_MAX_PREMIUM_USD / (price * NQ_POINT_VALUE_USD)), 1).astype(np.int64)
        size = np.minimum(np.minimum(size, 300), cap)
        self._add_orders(sess, ts, iids, price, size, side, multi_fill_share=0.15)

        # Front-month future: same intraday shape, small sizes.
        fut_minutes = np.repeat(
            np.arange(minutes), rng.poisson(profile / profile.sum() * spec.future_trades_per_session)
        )
        fut_ts = np.sort(
            sess.open_ns + fut_minutes * 60_000_000_000 + rng.integers(0, 60_000_000_000, fut_minutes.size)
        )
        fut_side = rng.choice(np.array(["B", "A"]), size=fut_ts.size)
        front = self.front_on(sess.trade_date)
        fut_px = (
            np.round(sess.forward_at(fut_ts) * CARRY[front.raw_symbol] * 4 + np.where(fut_side == "B", 1, -1) * 0.5) / 4
        )
        sess.add(
            fut_ts,
            np.full(fut_ts.size, front.instrument_id),
            fut_px,
            np.minimum(np.floor(rng.pareto(2.0, fut_ts.size) + 1), 50),
            fut_side,
        )

        # Ordinary small spreads through the session, on the same intraday shape.
        n_spreads = int(spec.spreads_per_session * activity * minutes / 1380.0)
        spread_minutes = np.sort(rng.choice(minutes, size=n_spreads, p=profile / profile.sum()))
        for minute in spread_minutes:
            t = int(sess.open_ns + minute * 60_000_000_000 + rng.integers(0, 60_000_000_000))
            strategy = str(
                rng.choice(list(SPREAD_MIX), p=np.array(list(SPREAD_MIX.values())) / sum(SPREAD_MIX.values()))
            )
            spread = self.make_spread(sess, t, strategy)
            if spread is None:
                continue
            gross = sum(
                abs(p) * leg.ratio for leg, p in zip(spread.legs, spread.leg_prices) if leg.instrument.kind != "F"
            )
            cap = max(int(BACKGROUND_SPREAD_MAX_PREMIUM_USD / max(float(gross) * NQ_POINT_VALUE_USD, 1.0)), 1)
            quantity = int(min(np.floor(rng.pareto(1.3) + 1.0), 40, cap))
            self.print_spread(sess, spread, t, quantity, str(rng.choice(["B", "A"])))

    # ------------------------------------------------------------------ spreads
    def _chain(self, sess: _Session, t_ns: int, min_hours: float = 1.0) -> dict[str, list[Instrument]]:
        """Live options by expiry root at t (at least `min_hours` before expiry); looked up per
        quarter hour, since only an expiry reaching its last hour changes it."""
        quarter = (t_ns - sess.open_ns) // (15 * 60_000_000_000)
        cutoff = sess.open_ns + (quarter + 1) * 15 * 60_000_000_000 + min_hours * 3600e9
        # Kept by how many options have expired by the cutoff (which decides the set): rebuilt when
        # an expiry passes, not every quarter hour (12,000 options a session, 92 quarter hours).
        expirations = self._expirations.get(sess.index)
        if expirations is None:
            expirations = self._expirations[sess.index] = np.sort([o.expiration_ns for o in sess.listed])
        key = (sess.index, int(np.searchsorted(expirations, cutoff, side="left")))
        if key not in self._chains:
            chains: dict[str, list[Instrument]] = {}
            for o in sess.listed:
                if o.expiration_ns >= cutoff:
                    chains.setdefault(o.listing.symbol_root, []).append(o)
            self._chains[key] = chains
        return self._chains[key]

    def _pick_root(self, chains: dict[str, list[Instrument]], t_ns: int, near: bool = True) -> str:
        roots = sorted(chains)
        days = np.array([(chains[r][0].expiration_ns - t_ns) / 86400e9 for r in roots])
        weight = expiry_share(days) if near else np.ones(len(roots))
        return roots[int(self.rng.choice(len(roots), p=weight / weight.sum()))]

    def _option(self, chain: list[Instrument], put_call: str, strike: float) -> Instrument:
        same = [o for o in chain if o.kind == put_call]
        return min(same, key=lambda o: (abs(o.strike - strike), o.strike))

    def make_spread(
        self,
        sess: _Session,
        t_ns: int,
        strategy: str,
        root: str | None = None,
        width_points: float | None = None,
        legs_in_definition: bool | None = None,
    ) -> Spread | None:
        """A spread instrument of the given strategy near the money at t, with its leg prices and deltas."""
        rng = self.rng
        chains = self._chain(sess, t_ns)
        if not chains:
            return None
        root = root or self._pick_root(chains, t_ns)
        chain = chains[root]
        fwd = float(sess.forward_at(np.array([t_ns]))[0] * CARRY[chain[0].underlying])
        days = (chain[0].expiration_ns - t_ns) / 86400e9
        step = min(np.diff(sorted({o.strike for o in chain}))) if len(chain) > 2 else 100.0
        step = max(float(step), 10.0)
        wing = width_points or max(step, round(fwd * 0.004 * math.sqrt(max(days, 0.3)) / step) * step)
        right = str(rng.choice(["C", "P"]))
        atm = round(fwd / step) * step

        def pick(pc, k):
            return self._option(chain, pc, k)

        if strategy == "vertical":
            low = atm + (0 if right == "C" else -wing)
            legs = [Leg(pick(right, low), 1, 1), Leg(pick(right, low + wing), 1, -1)]
            if right == "P":
                legs = [Leg(pick("P", low + wing), 1, 1), Leg(pick("P", low), 1, -1)]
        elif strategy == "straddle":
            legs = [Leg(pick("C", atm), 1, 1), Leg(pick("P", atm), 1, 1)]
        elif strategy == "strangle":
            legs = [Leg(pick("C", atm + wing), 1, 1), Leg(pick("P", atm - wing), 1, 1)]
        elif strategy == "risk_reversal":
            legs = [Leg(pick("C", atm + wing), 1, 1), Leg(pick("P", atm - wing), 1, -1)]
        elif strategy == "butterfly":
            legs = [
                Leg(pick(right, atm - wing), 1, 1),
                Leg(pick(right, atm), 2, -1),
                Leg(pick(right, atm + wing), 1, 1),
            ]
        elif strategy == "condor":
            legs = [
                Leg(pick("P", atm - 2 * wing), 1, 1),
                Leg(pick("P", atm - wing), 1, -1),
                Leg(pick("C", atm + wing), 1, -1),
                Leg(pick("C", atm + 2 * wing), 1, 1),
            ]
        elif strategy == "calendar":
            later = [
                r
                for r in chains
                if chains[r][0].expiration_ns > chain[0].expiration_ns
                and chains[r][0].listing.underlying == chain[0].listing.underlying
            ]
            if not later:
                return None
            far = chains[min(later, key=lambda r: chains[r][0].expiration_ns)]
            near_leg = pick(right, atm)
            legs = [Leg(near_leg, 1, -1), Leg(self._option(far, right, near_leg.strike), 1, 1)]
        elif strategy == "covered":
            option = pick(right, atm + (wing if right == "C" else -wing))
            delta = float(self.option_deltas(np.array([option.instrument_id]), np.array([t_ns]), sess)[0])
            per_future = max(int(round(1.0 / max(abs(delta), 0.05))), 1)  # options per future for delta-neutral
            legs = [Leg(option, per_future, 1), Leg(self.futures[option.underlying], 1, -1 if delta > 0 else 1)]
        else:
            raise ValueError(f"unknown strategy {strategy}")
        if len({leg.instrument.instrument_id for leg in legs}) < len(legs):
            return None  # strikes ran off the listed range
        if strategy != "covered" and rng.random() < CREDIT_DEFINITION_SHARE:
            legs = [Leg(leg.instrument, leg.ratio, -leg.sign) for leg in legs]  # defined the short way: a credit
        return self._spread(sess, t_ns, legs, strategy, legs_in_definition)

    def _spread(
        self, sess: _Session, t_ns: int, legs: list[Leg], strategy: str, legs_in_definition: bool | None
    ) -> Spread:
        options = [leg for leg in legs if leg.instrument.kind in ("C", "P")]
        kind = "M" if any(leg.instrument.kind == "F" for leg in legs) else "T"
        near = min(options, key=lambda leg: leg.instrument.expiration_ns).instrument
        spread_id = self.next_spread_id
        self.next_spread_id += 1
        instrument = Instrument(
            spread_id,
            f"UD:2V: {UDS_TYPE.get(strategy, 'GN')} {2_500_000 + spread_id}",
            kind,
            near.expiration_ns,
            expiry=near.expiry,
            underlying=near.underlying,
            underlying_id=near.underlying_id,
            product=near.product,
        )
        if legs_in_definition is None:
            legs_in_definition = bool(self.rng.random() >= NO_LEG_DEFINITION_SHARE)
        spread = Spread(instrument, legs, strategy, legs_in_definition)
        for leg in legs:
            if leg.instrument.kind == "F":
                spread.leg_prices.append(
                    float(np.round(sess.forward_at(np.array([t_ns]))[0] * CARRY[leg.instrument.raw_symbol] * 4) / 4)
                )
                spread.leg_deltas.append(1.0)
            else:
                ids, ts = np.array([leg.instrument.instrument_id]), np.array([t_ns])
                spread.leg_prices.append(float(round_to_tick(self.option_prices(ids, ts, sess))[0]))
                spread.leg_deltas.append(float(self.option_deltas(ids, ts, sess)[0]))
        self.by_id[spread_id] = instrument
        sess.spreads.append(spread)
        return spread

    def print_spread(self, sess: _Session, spread: Spread, t_ns: int, quantity: int, side: str) -> pd.DataFrame:
        """The spread's print (aggressor side, net price, possibly negative) and its leg prints at
        the same ts_event in the leg ratios; leg prints mostly carry no aggressor (side N)."""
        net = sum(
            leg.sign * leg.ratio * price
            for leg, price in zip(spread.legs, spread.leg_prices)
            if leg.instrument.kind != "F"
        )
        ids = [spread.instrument.instrument_id] + [leg.instrument.instrument_id for leg in spread.legs]
        prices = [round(net, 2)] + spread.leg_prices
        sizes = [quantity] + [quantity * leg.ratio for leg in spread.legs]
        leg_sides = []
        for leg in spread.legs:
            if self.rng.random() < 0.7:
                leg_sides.append("N")
            else:  # the leg's own side: bought legs of a bought package are buyer-initiated
                leg_sides.append("B" if (leg.sign > 0) == (side == "B") else "A")
        sess.add(np.full(len(ids), t_ns), ids, prices, sizes, [side] + leg_sides)
        return pd.DataFrame({"ts": t_ns, "iid": ids, "price": prices, "size": sizes, "side": [side] + leg_sides})

    # ------------------------------------------------------------------ planted events
    def _add_orders(
        self, sess: _Session, ts, iids, price, size, side, multi_fill_share: float, pieces: np.ndarray | None = None
    ) -> None:
        """Add aggressor orders; some are filled in several pieces at the same ts_event."""
        rng = self.rng
        n = len(ts)
        if pieces is None:
            pieces = np.where(rng.random(n) < multi_fill_share, rng.integers(2, 5, n), 1)
        pieces = np.minimum(pieces, np.maximum(size, 1))
        rep = np.repeat(np.arange(n), pieces)
        # Split each order's size into `pieces` positive parts (deterministic via rng).
        fill_size = np.empty(rep.size, dtype=np.int64)
        for i in np.flatnonzero(pieces > 1):
            start = int(np.searchsorted(rep, i))
            cuts = np.sort(rng.choice(np.arange(1, size[i]), size=pieces[i] - 1, replace=False))
            fill_size[start : start + pieces[i]] = np.diff(np.concatenate(([0], cuts, [size[i]])))
        single = pieces[rep] == 1
        fill_size[single] = np.asarray(size)[rep[single]]
        # Later pieces of a buy walk up the book one tick, of a sell down.
        level = np.arange(rep.size) - np.searchsorted(rep, rep)
        tick = option_tick(np.asarray(price)[rep])
        direction = np.where(np.asarray(side)[rep] == "B", 1.0, np.where(np.asarray(side)[rep] == "A", -1.0, 0.0))
        fill_price = np.maximum(np.asarray(price)[rep] + direction * np.minimum(level, 2) * tick, 0.05)
        sess.add(np.asarray(ts)[rep], np.asarray(iids)[rep], np.round(fill_price, 2), fill_size, np.asarray(side)[rep])

    def _slot_window(self, sess: _Session, slot: int) -> tuple[int, int]:
        start = sess.open_ns + slot * cal.SLOT_MINUTES * 60_000_000_000
        return start, min(start + cal.SLOT_MINUTES * 60_000_000_000, sess.close_ns)

    def _event(self, sess: _Session, kind: str, window: tuple[int, int], **fields) -> dict:
        event = {
            "event_id": f"{sess.trade_date:%Y%m%d}-"
            f"{len([e for e in self.events if e['session'] == str(sess.trade_date)]) + 1:02d}",
            "session": str(sess.trade_date),
            "kind": kind,
            "window_start": pd.Timestamp(window[0], tz="UTC").isoformat(),
            "window_end": pd.Timestamp(window[1], tz="UTC").isoformat(),
            **fields,
        }
        self.events.append(event)
        return event

    def _days_to_expiry(self, sess: _Session, inst: Instrument) -> int:
        return (inst.listing.expiry_date - sess.trade_date).days

    def _liquid_options(
        self, sess: _Session, ts_ns: int, max_abs_log_moneyness: float, min_days: float, max_days: float = 1e9
    ) -> list[Instrument]:
        fwd = sess.forward_at(np.array([ts_ns]))[0]
        return [
            o
            for o in sess.listed
            if min_days <= (o.expiration_ns - ts_ns) / 86400e9 <= max_days
            and abs(math.log(o.strike / (fwd * CARRY[o.underlying]))) <= max_abs_log_moneyness
        ]

    def _rth_slots(self, sess: _Session, last_ct_hour: float = 14.5) -> np.ndarray:
        n_slots = int(math.ceil((sess.close_ns - sess.open_ns) / (cal.SLOT_MINUTES * 60e9)))
        slots = np.arange(n_slots)
        ct_hour = (17.0 + slots * cal.SLOT_MINUTES / 60.0) % 24.0
        ends = sess.open_ns + (slots + 1) * cal.SLOT_MINUTES * 60_000_000_000
        return slots[(ct_hour >= 8.75) & (ct_hour < last_ct_hour) & (ends <= sess.close_ns)]

    def _free_slot(self, sess: _Session, slots: np.ndarray) -> int:
        """An RTH slot that holds no planted event yet: one event per window keeps ground truth clear.
        A session that closes before the regular hours (an early close such as Good Friday's in a
        long generated range) offers its whole slots instead."""
        if not len(slots):
            n_slots = int((sess.close_ns - sess.open_ns) // (cal.SLOT_MINUTES * 60_000_000_000))
            slots = np.arange(max(n_slots, 1))
        taken = {e["window_start"] for e in self.events if e["session"] == str(sess.trade_date)}
        free = [s for s in slots if pd.Timestamp(self._slot_window(sess, int(s))[0], tz="UTC").isoformat() not in taken]
        return int(self.rng.choice(free if free else slots))

    def _position(self, sess: _Session, sizes: dict[int, int], days_to_expiry: int) -> str:
        """Whether a planted trade opened or closed positions; the next morning's open interest of
        its instruments moves by its size accordingly. An option that expires that day has no
        next-morning open interest: "unknown"."""
        if days_to_expiry == 0:
            return "unknown"
        position = "closing" if self.rng.random() < CLOSING_SHARE else "opening"
        change = self.position_change.setdefault(sess.index, {})
        floor = self.oi_floor.setdefault(sess.index, {})
        for iid, size in sizes.items():
            change[iid] = change.get(iid, 0) + (size if position == "opening" else -size)
            if position == "closing":  # what is closed was open: the open interest holds it
                floor[iid] = max(floor.get(iid, 0), int(size * 1.3) + 100)
        return position

    def plant_block(self, sess: _Session, premium_usd: float, zero_dte: bool = False) -> None:
        rng = self.rng
        slot = self._free_slot(sess, self._rth_slots(sess, 13.5 if zero_dte else 14.5))
        window = self._slot_window(sess, slot)
        ts = int(rng.integers(window[0] + 1_000_000_000, window[1] - 1_000_000_000))
        if zero_dte:
            pool = [o for o in self._liquid_options(sess, ts, 0.006, 1 / 24) if self._days_to_expiry(sess, o) == 0]
            floor = 15.0
        else:
            pool = self._liquid_options(sess, ts, 0.03, 2.0)
            pool = [o for o in pool if self._days_to_expiry(sess, o) > SHORT_DATED_DAYS]
            floor = 40.0
        prices = self.option_prices(np.array([o.instrument_id for o in pool]), np.full(len(pool), ts), sess)
        candidates = [o for o, p in zip(pool, prices) if p >= floor]
        if not candidates:
            return
        inst = candidates[int(rng.integers(len(candidates)))]
        side = str(rng.choice(["B", "A"]))
        model = self.option_prices(np.array([inst.instrument_id]), np.array([ts]), sess)[0]
        price = float(round_to_tick(np.array([model * (1.004 if side == "B" else 0.996)]))[0])
        size = max(int(round(premium_usd / (price * NQ_POINT_VALUE_USD))), 1)
        pieces = int(rng.integers(1, 13))
        before = sum(len(x) for x in sess.ts)
        self._add_orders(
            sess,
            np.array([ts]),
            np.array([inst.instrument_id]),
            np.array([price]),
            np.array([size]),
            np.array([side]),
            0.0,
            pieces=np.array([pieces]),
        )
        fills = sess.frame().iloc[before:]
        days = self._days_to_expiry(sess, inst)
        self._event(
            sess,
            "block",
            window,
            position=self._position(sess, {inst.instrument_id: int(fills["size"].sum())}, days),
            ts_event=pd.Timestamp(ts, tz="UTC").isoformat(),
            instrument_ids=[inst.instrument_id],
            symbols=[inst.raw_symbol],
            side=side,
            size=int(fills["size"].sum()),
            fills=len(fills),
            zero_dte=zero_dte,
            days_to_expiry=self._days_to_expiry(sess, inst),
            premium_usd=round(float((fills["price"] * fills["size"]).sum() * NQ_POINT_VALUE_USD), 2),
        )

    def plant_sweep(self, sess: _Session, premium_usd: float) -> None:
        rng = self.rng
        slot = self._free_slot(sess, self._rth_slots(sess))
        window = self._slot_window(sess, slot)
        ts0 = int(rng.integers(window[0] + 1_000_000_000, window[1] - 2_000_000_000))
        put_call = str(rng.choice(["C", "P"]))
        pool = [
            o
            for o in self._liquid_options(sess, ts0, 0.025, 1.0)
            if o.kind == put_call and self._days_to_expiry(sess, o) > SHORT_DATED_DAYS
        ]
        by_expiry: dict[str, list[Instrument]] = {}
        for o in pool:
            by_expiry.setdefault(o.listing.symbol_root, []).append(o)
        roots = sorted(k for k, v in by_expiry.items() if len(v) >= 6)
        root = roots[int(rng.integers(0, min(2, len(roots))))]
        chain = sorted(by_expiry[root], key=lambda o: o.strike)
        legs_n = max(2, int(math.ceil(premium_usd / 2_400_000.0)))  # two legs below $4.8M
        # Sweeps take strikes a few steps apart (25-50 points), as a desk lifts offers up the chain.
        spacing = max(1, int(round(30.0 / max(chain[1].strike - chain[0].strike, 1.0))))
        first = int(rng.integers(0, max(len(chain) - legs_n * spacing, 1)))
        legs = chain[first : first + legs_n * spacing : spacing][:legs_n]
        legs_n = len(legs)
        side = str(rng.choice(["B", "A"]))
        ts = ts0 + np.cumsum(rng.integers(2_000_000, 60_000_000, size=legs_n))  # a few ms apart
        ids = np.array([o.instrument_id for o in legs])
        model = self.option_prices(ids, ts, sess)
        price = round_to_tick(model * (1.004 if side == "B" else 0.996))
        size = np.maximum(np.round(premium_usd / legs_n / (price * NQ_POINT_VALUE_USD)), 1).astype(np.int64)
        before = sum(len(x) for x in sess.ts)
        self._add_orders(sess, ts, ids, price, size, np.full(legs_n, side), 0.0, pieces=rng.integers(1, 4, size=legs_n))
        fills = sess.frame().iloc[before:]
        self._event(
            sess,
            "sweep",
            window,
            position=self._position(
                sess,
                {int(i): int(v) for i, v in fills.groupby("iid")["size"].sum().items()},
                min(self._days_to_expiry(sess, o) for o in legs),
            ),
            ts_event=pd.Timestamp(int(ts[0]), tz="UTC").isoformat(),
            instrument_ids=[int(i) for i in ids],
            symbols=[o.raw_symbol for o in legs],
            side=side,
            size=int(fills["size"].sum()),
            fills=len(fills),
            expiry=root,
            put_call=put_call,
            premium_usd=round(float((fills["price"] * fills["size"]).sum() * NQ_POINT_VALUE_USD), 2),
        )

    #: Planted strategy -> (sentiment when bought, expected strategy name, whether the definition lists the legs)
    STRATEGIES = {
        "vertical": ("BULLISH", True),
        "covered_straddle": ("VOLATILITY", True),
        "risk_reversal": ("BULLISH", False),
        "calendar": ("VOLATILITY", True),
    }

    def plant_strategy(self, sess: _Session, strategy: str, premium_usd: float) -> None:
        """A $3M+ (gross premium) package of the given strategy, printed as one spread trade."""
        rng = self.rng
        slot = self._free_slot(sess, self._rth_slots(sess))
        window = self._slot_window(sess, slot)
        t = int(rng.integers(window[0] + 1_000_000_000, window[1] - 1_000_000_000))
        chains = self._chain(sess, t, min_hours=24 * (SHORT_DATED_DAYS + 1))
        roots = sorted(chains, key=lambda r: chains[r][0].expiration_ns)[:4]
        root = roots[int(rng.integers(len(roots)))]
        _, in_definition = self.STRATEGIES[strategy]
        fwd = float(sess.forward_at(np.array([t]))[0] * CARRY[chains[root][0].underlying])
        atm = round(fwd / 10.0) * 10.0
        chain = chains[root]
        if strategy == "vertical":  # a wide call spread bought: net debit alone is $3M+
            legs = [Leg(self._option(chain, "C", atm - 100), 1, 1), Leg(self._option(chain, "C", atm + 300), 1, -1)]
            spread = self._spread(sess, t, legs, "vertical", in_definition)
        elif strategy == "covered_straddle":  # straddle bought slightly in the money, hedged with futures
            call, put = self._option(chain, "C", atm - 60), self._option(chain, "P", atm - 60)
            deltas = self.option_deltas(np.array([call.instrument_id, put.instrument_id]), np.array([t, t]), sess)
            per_future = max(int(round(1.0 / max(abs(float(deltas.sum())), 0.02))), 1)
            legs = [
                Leg(call, per_future, 1),
                Leg(put, per_future, 1),
                Leg(self.futures[call.underlying], 1, -1 if deltas.sum() > 0 else 1),
            ]
            spread = self._spread(sess, t, legs, "straddle", in_definition)
        elif strategy == "risk_reversal":
            legs = [Leg(self._option(chain, "C", atm + 150), 1, 1), Leg(self._option(chain, "P", atm - 150), 1, -1)]
            spread = self._spread(sess, t, legs, "risk_reversal", in_definition)
        else:  # calendar: sell the nearer, buy the later expiry at the same strike
            later = [
                r
                for r in chains
                if chains[r][0].expiration_ns > chain[0].expiration_ns
                and chains[r][0].listing.underlying == chain[0].listing.underlying
            ]
            far = chains[min(later, key=lambda r: chains[r][0].expiration_ns)]
            # A calendar is one strike in two expiries: one both list (a weekly's 10-point grid
            # and a monthly's 25-point grid share the 50s).
            common = sorted({o.strike for o in chain} & {o.strike for o in far}, key=lambda k: abs(k - fwd))
            near_leg = self._option(chain, "C", common[0] if common else atm)
            legs = [Leg(near_leg, 1, -1), Leg(self._option(far, "C", near_leg.strike), 1, 1)]
            spread = self._spread(sess, t, legs, "calendar", in_definition)
        gross_unit = sum(p * leg.ratio for leg, p in zip(spread.legs, spread.leg_prices) if leg.instrument.kind != "F")
        net_unit = sum(
            leg.sign * leg.ratio * p for leg, p in zip(spread.legs, spread.leg_prices) if leg.instrument.kind != "F"
        )
        basis = abs(net_unit) if strategy == "vertical" else gross_unit
        quantity = max(int(math.ceil(premium_usd / (basis * NQ_POINT_VALUE_USD))), 1)
        side = "B"
        fills = self.print_spread(sess, spread, t, quantity, side)
        legs_fills = fills.iloc[1:]
        option_legs = legs_fills[_is_option_id(legs_fills["iid"].to_numpy())]
        net_delta = sum(leg.sign * leg.ratio * d for leg, d in zip(spread.legs, spread.leg_deltas))
        gross_delta = sum(leg.ratio * abs(d) for leg, d in zip(spread.legs, spread.leg_deltas))
        expected_name = {"covered_straddle": "covered"}.get(strategy, strategy)
        option_sizes = {int(i): int(v) for i, v in option_legs.groupby("iid")["size"].sum().items()}
        self._event(
            sess,
            "strategy",
            window,
            position=self._position(sess, option_sizes, self._days_to_expiry(sess, spread.instrument)),
            ts_event=pd.Timestamp(t, tz="UTC").isoformat(),
            strategy=expected_name,
            planted_as=strategy,
            spread_instrument_id=spread.instrument.instrument_id,
            spread_symbol=spread.instrument.raw_symbol,
            instrument_ids=[leg.instrument.instrument_id for leg in spread.legs],
            symbols=[leg.instrument.raw_symbol for leg in spread.legs],
            ratios=[leg.ratio for leg in spread.legs],
            signs=[leg.sign for leg in spread.legs],
            legs_in_definition=spread.legs_in_definition,
            side=side,
            size=quantity,
            premium_usd=round(float((option_legs["price"] * option_legs["size"]).sum() * NQ_POINT_VALUE_USD), 2),
            net_premium_usd=round(net_unit * quantity * NQ_POINT_VALUE_USD, 2),
            net_delta_share=round(net_delta / gross_delta, 4),
            sentiment=self.STRATEGIES[strategy][0],
            days_to_expiry=self._days_to_expiry(sess, spread.instrument),
        )

    def _worked_pool(self, sess: _Session, ts: int) -> list[Instrument]:
        """Far-dated options near the money worth 1,100 points or more: a worked $3M+ order on one
        of them is a couple of hundred contracts, a few dozen a window."""
        pool = [o for o in self._liquid_options(sess, ts, 0.06, 30.0) if o.strike % 25 == 0]
        prices = self.option_prices(np.array([o.instrument_id for o in pool]), np.full(len(pool), ts), sess)
        return [o for o, p in zip(pool, prices) if p >= 1100.0]

    def _worked_times(self, edge: int, n: int, gap_s: tuple[int, int] = (40, 100)) -> np.ndarray:
        """Child order times: starting 5-11 minutes before a window edge, `gap_s` seconds apart."""
        start = edge - int(self.rng.integers(5 * 60, 11 * 60)) * 1_000_000_000
        gaps = self.rng.integers(gap_s[0] * 1000, gap_s[1] * 1000, size=n - 1) * 1_000_000
        return start + np.concatenate([[0], np.cumsum(gaps)]) + self.rng.integers(0, 1_000_000, size=n)

    def _window_contracts_ok(self, sess: _Session, ts: np.ndarray, sizes: np.ndarray) -> bool:
        slots = (ts - sess.open_ns) // (cal.SLOT_MINUTES * 60_000_000_000)
        return bool(np.bincount(slots, weights=sizes).max() <= WORKED_MAX_WINDOW_CONTRACTS)

    def plant_worked(self, sess: _Session, side: str) -> None:
        """One party works a $3.3M-4.6M order in 12-18 child orders on one option, 40-100 s
        apart, across a window edge; each child far below any threshold. Its alert comes in
        the window where the running premium crosses WORKED_CROSSING_USD."""
        rng = self.rng
        for _ in range(30):
            slot = self._free_slot(sess, self._rth_slots(sess, 14.0)[1:])
            edge = self._slot_window(sess, slot)[0]
            pool = self._worked_pool(sess, edge)
            if not pool:
                return
            inst = pool[int(rng.integers(len(pool)))]
            n = int(rng.integers(12, 19))
            ts = self._worked_times(edge, n)
            model = self.option_prices(np.full(n, inst.instrument_id), ts, sess)
            # Working a buy pays up a little over time, a sell gives a little: the price drifts.
            walk = 1.0 + (0.0006 if side == "B" else -0.0006) * np.arange(n)
            price = round_to_tick(model * walk * (1.002 if side == "B" else 0.998))
            target = float(rng.uniform(3.3e6, 4.6e6))
            contracts = int(math.ceil(target / (float(np.mean(price)) * NQ_POINT_VALUE_USD)))
            sizes = rng.multinomial(contracts - n, np.full(n, 1.0 / n)) + 1
            cum = np.cumsum(price * sizes * NQ_POINT_VALUE_USD)
            crossing = int(np.flatnonzero((cum >= WORKED_CROSSING_USD) & (np.arange(n) + 1 >= WORKED_MIN_ORDERS))[0])
            crossing_slot = int((ts[crossing] - sess.open_ns) // (cal.SLOT_MINUTES * 60_000_000_000))
            first_slot = int((ts[0] - sess.open_ns) // (cal.SLOT_MINUTES * 60_000_000_000))
            window = self._slot_window(sess, crossing_slot)
            taken = {e["window_start"] for e in self.events if e["session"] == str(sess.trade_date)}
            if (
                crossing_slot > first_slot
                and ts[-1] < sess.close_ns
                and self._window_contracts_ok(sess, ts, sizes)
                and pd.Timestamp(window[0], tz="UTC").isoformat() not in taken
            ):
                break
        else:
            return
        self._add_orders(sess, ts, np.full(n, inst.instrument_id), price, sizes.astype(np.int64), np.full(n, side), 0.0)
        premium = float((price * sizes).sum() * NQ_POINT_VALUE_USD)
        self._event(
            sess,
            "worked",
            window,
            position=self._position(sess, {inst.instrument_id: int(sizes.sum())}, self._days_to_expiry(sess, inst)),
            ts_event=pd.Timestamp(int(ts[crossing]), tz="UTC").isoformat(),
            first_time=pd.Timestamp(int(ts[0]), tz="UTC").isoformat(),
            last_time=pd.Timestamp(int(ts[-1]), tz="UTC").isoformat(),
            instrument_ids=[inst.instrument_id],
            symbols=[inst.raw_symbol],
            side=side,
            children=n,
            children_at_crossing=crossing + 1,
            size=int(sizes.sum()),
            premium_usd=round(premium, 2),
            premium_at_crossing_usd=round(float(cum[crossing]), 2),
            price_drift=_drift(price[: crossing + 1], sizes[: crossing + 1]),  # as the alert sees it
            days_to_expiry=self._days_to_expiry(sess, inst),
        )

    def plant_two_sided(self, sess: _Session) -> None:
        """A decoy: a market maker trading both sides of one option, 18-26 orders 50-100 s apart
        worth $3.6M-5M in all, about half bought and half sold. No worked order: it must not alert."""
        rng = self.rng
        slot = self._free_slot(sess, self._rth_slots(sess, 14.0)[1:])
        edge = self._slot_window(sess, slot)[0]
        pool = self._worked_pool(sess, edge)
        if not pool:
            return
        for _ in range(30):
            inst = pool[int(rng.integers(len(pool)))]
            n = int(rng.integers(18, 27))
            ts = self._worked_times(edge, n, (50, 100))
            sides = np.where(rng.permutation(n) % 2 == 0, "B", "A")
            model = self.option_prices(np.full(n, inst.instrument_id), ts, sess)
            price = round_to_tick(model * np.where(sides == "B", 1.002, 0.998))
            contracts = int(math.ceil(float(rng.uniform(3.6e6, 5e6)) / (float(np.mean(price)) * NQ_POINT_VALUE_USD)))
            sizes = rng.multinomial(contracts - n, np.full(n, 1.0 / n)) + 1
            if self._window_contracts_ok(sess, ts, sizes) and ts[-1] < sess.close_ns:
                break
        else:
            return
        self._add_orders(sess, ts, np.full(n, inst.instrument_id), price, sizes.astype(np.int64), sides, 0.0)
        bought = float((price * sizes * (sides == "B")).sum() * NQ_POINT_VALUE_USD)
        sold = float((price * sizes * (sides == "A")).sum() * NQ_POINT_VALUE_USD)
        self._event(
            sess,
            "two_sided",
            self._slot_window(sess, slot),
            first_time=pd.Timestamp(int(ts[0]), tz="UTC").isoformat(),
            last_time=pd.Timestamp(int(ts[-1]), tz="UTC").isoformat(),
            instrument_ids=[inst.instrument_id],
            symbols=[inst.raw_symbol],
            children=n,
            size=int(sizes.sum()),
            premium_usd=round(bought + sold, 2),
            bought_premium_usd=round(bought, 2),
            sold_premium_usd=round(sold, 2),
        )

    # ------------------------------------------------------------------ surges
    def _current_keys(self, sess: _Session) -> pd.DataFrame:
        """This session's option fills so far with their baseline (level, key) at each level, by slot."""
        return slot_volumes(self._tidy(sess, sess.frame()), pd.Timestamp(sess.open_ns, tz="UTC"))

    def _tidy(self, sess: _Session, frame: pd.DataFrame) -> pd.DataFrame:
        """Option fills in the columns `nqflow.engine.baseline.level_keys` reads."""
        frame = frame[_is_option_id(frame["iid"].to_numpy())]
        insts = [self.by_id[i] for i in frame["iid"].to_numpy()]
        return pd.DataFrame(
            {
                "ts_event": pd.to_datetime(frame["ts"].to_numpy(), utc=True),
                "instrument_id": frame["iid"].to_numpy(),
                "symbol": [o.raw_symbol for o in insts],
                "expiration": pd.to_datetime(np.array([o.expiration_ns for o in insts], dtype=np.int64), utc=True),
                "size": frame["size"].to_numpy(),
            }
        )

    def _history_baseline(self, level: str, key: str, slot: int, session_index: int) -> tuple[float, int]:
        """Trimmed mean of one slot's volume over the previous sessions (see nqflow.engine.baseline)."""
        first = self.first_seen.get((level, key), session_index)
        history = []
        for past in range(max(first, session_index - self.spec.baseline_sessions), session_index):
            volumes, slots = self.slot_volume[past]
            if slot >= slots:
                continue  # a half day's missing slot is not part of that slot's history
            history.append(float(volumes.get((level, key, slot), 0)))
        if not history:
            return 0.0, 0
        values = np.sort(np.asarray(history))
        if values.size >= 5:
            values = values[:-1]  # drop the single busiest session: one outlier must not lift the baseline
        return float(values.mean()), len(history)

    def plant_instrument_surge(self, sess: _Session, tier: int) -> None:
        rng = self.rng
        current = self._current_keys(sess)
        current = current[current["level"] == "instrument"].set_index(["key", "slot"])["volume"]
        choices = []
        near = self._liquid_options(sess, sess.open_ns, 0.02, 0.0)
        # A surge is many parties' small orders: on options cheap enough that its buyers' premium
        # stays well under $3M (a $3M+ run of one side's orders is a worked order, planted apart).
        near_prices = self.option_prices(
            np.array([o.instrument_id for o in near]), np.full(len(near), sess.open_ns), sess
        )
        near = [o for o, p in zip(near, near_prices) if p <= SURGE_MAX_PRICE_POINTS]
        for slot in self._rth_slots(sess):
            for o in near:
                if self.first_seen.get(("instrument", str(o.instrument_id)), sess.index) > sess.index - 5:
                    continue
                if self._days_to_expiry(sess, o) <= SHORT_DATED_DAYS + 1 or o.strike % 50:
                    continue
                choices.append((o.instrument_id, int(slot)))
        rng.shuffle(choices)
        ratio = float(rng.uniform(*TIER_RATIO_RANGES[tier]))
        everything = self._current_keys(sess).set_index(["level", "key", "slot"])["volume"]
        taken = {e["window_start"] for e in self.events if e["session"] == str(sess.trade_date)}
        best = (0.0, 0, 0, 0)
        for iid, slot in choices[:3000]:
            if pd.Timestamp(self._slot_window(sess, slot)[0], tz="UTC").isoformat() in taken:
                continue  # one planted event per window keeps ground truth clear
            baseline, n_hist = self._history_baseline("instrument", str(iid), slot, sess.index)
            if baseline <= 0:
                continue
            # The strike's surge must not make its whole expiry surge with the strike a minority of
            # it: then the expiry owns the alert, and the planted strike is not what a desk sees.
            key = self._expiry_key(sess, self.by_id[iid])
            expiry_expected = max(self._history_baseline("expiry", key, slot, sess.index)[0], EXPIRY_FLOOR_CONTRACTS)
            extra = int(math.ceil(ratio * max(baseline, SURGE_MIN_BASELINE_CONTRACTS))) - int(
                current.get((str(iid), slot), 0)
            )
            expiry_after = int(everything.get(("expiry", key, slot), 0)) + extra
            if expiry_after / expiry_expected >= 8.0 and extra < 0.6 * expiry_after:
                continue
            best = max(best, (baseline, n_hist, iid, slot))
            if baseline >= INSTRUMENT_SURGE_MIN_EXPECTED:
                best = (baseline, n_hist, iid, slot)
                break
        baseline, n_hist, iid, slot = best
        if baseline <= 0:
            return
        # Options past their last days trade a few contracts a slot: the ratio is stated against
        # the floored baseline, as the engine measures it.
        floored = max(baseline, SURGE_MIN_BASELINE_CONTRACTS)
        existing = int(current.get((str(iid), slot), 0))
        target = int(math.ceil(ratio * floored))
        extra = target - existing
        window = self._slot_window(sess, slot)
        side = str(rng.choice(["B", "A"]))
        n_orders = int(rng.integers(25, 60))
        sizes = rng.multinomial(extra - n_orders, np.full(n_orders, 1.0 / n_orders)) + 1
        ts = np.sort(rng.integers(window[0], window[1], size=n_orders))
        sides = np.where(rng.random(n_orders) < 0.85, side, "A" if side == "B" else "B")
        ids = np.full(n_orders, iid)
        model = self.option_prices(ids, ts, sess)
        price = round_to_tick(model * np.where(sides == "B", 1.004, 0.996))
        self._add_orders(sess, ts, ids, price, sizes.astype(np.int64), sides, 0.2)
        inst = self.by_id[iid]
        self._event(
            sess,
            "surge_instrument",
            window,
            instrument_ids=[iid],
            symbols=[inst.raw_symbol],
            side=side,
            size=int(target),
            planted_contracts=int(extra),
            baseline=round(floored, 4),
            expected=round(baseline, 4),
            history_sessions=n_hist,
            ratio=round(target / floored, 3),
            tier=tier,
            days_to_expiry=self._days_to_expiry(sess, inst),
        )

    def _expiry_key(self, sess: _Session, inst: Instrument) -> str:
        """The expiry-level baseline key an option counts under (`nqflow.engine.baseline.level_keys`)."""
        frame = pd.DataFrame({"ts": [sess.open_ns + 3_600_000_000_000], "iid": [inst.instrument_id], "size": [1]})
        return str(level_keys(self._tidy(sess, frame))["expiry"].iloc[0])

    def _spread_over(
        self,
        sess: _Session,
        window: tuple[int, int],
        pool: list[Instrument],
        extra: int,
        side: str,
        n_orders: int,
        same_side: float,
    ) -> np.ndarray:
        """`extra` contracts in `n_orders` orders over `pool`, so no strike dominates."""
        rng = self.rng
        iids = rng.choice(np.array([o.instrument_id for o in pool]), size=n_orders)
        sizes = rng.multinomial(extra - n_orders, np.full(n_orders, 1.0 / n_orders)) + 1
        ts = np.sort(rng.integers(window[0], window[1], size=n_orders))
        model = self.option_prices(iids, ts, sess)
        for _ in range(20):  # the planted side holds a clear majority of the premium, not only of the orders
            sides = np.where(rng.random(n_orders) < same_side, side, "A" if side == "B" else "B")
            price = round_to_tick(model * np.where(sides == "B", 1.004, 0.996))
            if float((price * sizes)[sides == side].sum()) >= 0.75 * float((price * sizes).sum()):
                break
        self._add_orders(sess, ts, iids, price, sizes.astype(np.int64), sides, 0.1)
        return iids

    def plant_product_surge(self, sess: _Session, tier: int) -> None:
        rng = self.rng
        # An overnight slot (01:00-02:00 CT), where product volume is thin and a surge is plausible.
        slot = int(rng.integers(32, 36))
        baseline, n_hist = self._history_baseline("product", "NQ", slot, sess.index)
        current = self._current_keys(sess)
        existing = int(current[(current["level"] == "product") & (current["slot"] == slot)]["volume"].sum())
        ratio = float(rng.uniform(*TIER_RATIO_RANGES[tier]))
        target = int(math.ceil(ratio * baseline))
        extra = target - existing
        window = self._slot_window(sess, slot)
        side = str(rng.choice(["B", "A"]))
        # Spread across many strikes of expiries past the short-dated ones, so no single strike,
        # expiry or days-to-expiry bucket dominates.
        pool = [
            o
            for o in self._liquid_options(sess, window[0], 0.03, 1.0)
            if self._days_to_expiry(sess, o) > SHORT_DATED_DAYS
        ]
        self._spread_over(sess, window, pool, extra, side, int(min(max(extra // 12, 200), 1200)), 0.8)
        self._event(
            sess,
            "surge_product",
            window,
            instrument_ids=[],
            symbols=[],
            side=side,
            size=int(target),
            planted_contracts=int(extra),
            baseline=round(baseline, 4),
            history_sessions=n_hist,
            ratio=round(target / baseline, 3),
            tier=tier,
        )

    def plant_zero_dte_surge(self, sess: _Session, tier: int) -> None:
        """The day's expiring options (0DTE) trade `tier` times their usual volume for the slot,
        across several strikes: a 0DTE surge at the days-to-expiry level."""
        rng = self.rng
        slots = [
            s
            for s in range(28, 40)  # 00:00-03:00 CT: thin 0DTE volume overnight
            if self._history_baseline("expiry", "0DTE", s, sess.index)[0] >= EXPIRY_SURGE_MIN_BASELINE_CONTRACTS
        ]
        if not slots:
            return
        slot = int(rng.choice(slots))
        baseline, n_hist = self._history_baseline("expiry", "0DTE", slot, sess.index)
        window = self._slot_window(sess, slot)
        pool = [o for o in self._liquid_options(sess, window[0], 0.006, 0.0, 1.0) if self._days_to_expiry(sess, o) == 0]
        if len(pool) < 8:
            return
        current = self._current_keys(sess)
        existing = int(
            current[(current["level"] == "expiry") & (current["key"] == "0DTE") & (current["slot"] == slot)][
                "volume"
            ].sum()
        )
        ratio = float(rng.uniform(*TIER_RATIO_RANGES[tier]))
        target = int(math.ceil(ratio * baseline))
        side = str(rng.choice(["B", "A"]))
        iids = self._spread_over(sess, window, pool, target - existing, side, 60, 0.85)
        self._event(
            sess,
            "surge_expiry",
            window,
            instrument_ids=sorted({int(i) for i in iids}),
            symbols=[],
            expiry="0DTE",
            side=side,
            size=int(target),
            planted_contracts=int(target - existing),
            baseline=round(baseline, 4),
            history_sessions=n_hist,
            ratio=round(target / baseline, 3),
            tier=tier,
            zero_dte=True,
            days_to_expiry=0,
        )

    def plant(self, sess: _Session) -> None:
        rng, spec = self.rng, self.spec
        if sess.index in spec.quiet_sessions:
            return
        last = sess.index >= spec.n_sessions - 2
        for _ in range(int(rng.integers(1, 3))):
            premium = float(np.exp(rng.uniform(np.log(1.0e6), np.log(2.0e7))))
            if 2.6e6 < premium < 3.4e6:  # keep ground truth clear of the default $3M line
                premium = 3.8e6 if premium > 3.0e6 else 2.2e6
            self.plant_block(sess, premium)
        if sess.index == spec.n_sessions - 1:
            self.plant_block(sess, float(rng.uniform(4e6, 9e6)))  # the last session always holds a $3M+ block
        if rng.random() < 0.6:
            self.plant_sweep(sess, float(rng.uniform(3.6e6, 1.1e7)))
        if sess.index >= 5 and (last or rng.random() < 0.5):
            self.plant_block(sess, float(rng.uniform(3.6e6, 8e6)), zero_dte=True)
        if sess.index >= 2:
            strategies = list(self.STRATEGIES)
            for strategy in (
                [strategies[sess.index % 4], strategies[(sess.index + 1) % 4]] if last else [strategies[sess.index % 4]]
            ):
                self.plant_strategy(sess, strategy, float(rng.uniform(3.6e6, 9e6)))
        if sess.index >= 5 and rng.random() < 0.75:
            self.plant_instrument_surge(sess, int(rng.choice([10, 30, 50])))
        if sess.index in spec.product_surges:
            self.plant_product_surge(sess, spec.product_surges[sess.index])
        if sess.index in spec.zero_dte_surges:
            self.plant_zero_dte_surge(sess, spec.zero_dte_surges[sess.index])
        if sess.index >= 2 and (last or rng.random() < 0.55):
            self.plant_worked(sess, "B" if rng.random() < 0.55 else "A")
        if sess.index % 5 == 1:
            self.plant_two_sided(sess)

    # ------------------------------------------------------------------ output
    def record_volumes(self, sess: _Session) -> None:
        volumes = self._current_keys(sess)
        lookup = dict(
            zip(zip(volumes["level"], volumes["key"], volumes["slot"].astype(int)), volumes["volume"].astype(int))
        )
        self.slot_volume.append((lookup, len(cal.session_windows(sess.trade_date))))
        for key in dict.fromkeys(zip(volumes["level"], volumes["key"])):
            self.first_seen.setdefault(key, sess.index)

    def _statistics(self, sess: _Session) -> list:
        """Open interest near the open; the previous session's settlement and cleared volume, which
        CME publishes the next morning (ts_ref names the session they belong to)."""
        ts_stats = sess.open_ns + 30 * 60_000_000_000
        off_book = self.plant_off_book(self.previous, sess) if self.previous is not None else {}
        # Open interest follows the trades: yesterday's, moved by what yesterday's volume opened or
        # closed (planted positions by their size, off-book blocks opened); a new listing starts fresh.
        oi_rng = np.random.default_rng(self.spec.seed + 104_729 * (sess.index + 1))
        change = self._overnight_change(self.previous, off_book, oi_rng) if self.previous is not None else {}
        stats, written_oi = self._open_interest_stats(sess, change, oi_rng, ts_stats)
        if self.previous is not None:
            stats += self._settlement_stats(self.previous, off_book, ts_stats)
        self.previous_oi = written_oi
        return stats

    def _open_interest_stats(
        self, sess: _Session, change: dict[int, int], oi_rng: np.random.Generator, ts_stats: int
    ) -> tuple[list, dict[int, int]]:
        """Each listed option's open interest at the open (a preliminary figure first for some),
        and the figures written, for the next session to move."""
        fwd = sess.minute_forward[0]
        floor = self.oi_floor.get(sess.index, {})
        walls = self._plant_dealer_walls(sess)
        ts_ref_today = _ns(pd.Timestamp(sess.trade_date, tz="UTC"))
        stats, written_oi = [], {}
        for o in sess.listed:
            iid = o.instrument_id
            if iid in self.previous_oi:
                oi = max(self.previous_oi[iid] + change.get(iid, 0), 0)
            else:
                years = max((o.expiration_ns - sess.open_ns) / (365.25 * 86400e9), 1 / 365)
                z = math.log(o.strike / fwd) / (0.2 * math.sqrt(years) + 0.01)
                oi = int(oi_rng.lognormal(math.log(4 + 300 * math.exp(-0.5 * z * z) * min(years * 12, 1.5)), 0.5))
                side = "call" if o.kind == "C" else "put"
                if o.listing.symbol_root == walls["expiry"] and o.strike == walls[f"{side}_wall"]:
                    oi += walls[f"{side}_contracts"]  # on the books before the sample begins
            oi = max(oi, floor.get(iid, 0))
            written_oi[iid] = oi
            if oi_rng.random() < REPEATED_STATISTICS_SHARE:  # a preliminary figure first: the last one counts
                early = ts_stats - 20 * 60_000_000_000
                preliminary = int(oi * oi_rng.uniform(0.8, 1.2)) + 1
                stats.append(_stat(iid, early, ts_ref_today, dbn.UNDEF_PRICE, preliminary, dbn.StatType.OPEN_INTEREST))
            stats.append(_stat(iid, ts_stats, ts_ref_today, dbn.UNDEF_PRICE, oi, dbn.StatType.OPEN_INTEREST))
        return stats, written_oi

    def _plant_dealer_walls(self, sess: _Session) -> dict:
        """The planted walls, chosen once: on the first quarterly options expiring at least a week
        after the sample's last session, the 250-point strikes nearest `wall_distance` above (the
        call) and below (the put) the first session's opening price; in ground truth's shape."""
        if self.dealer_walls is None:
            spec = self.spec
            after = self.schedule.index[-1] + dt.timedelta(days=7)
            quarterly = min(
                (e for e in self.universe.expiries if e.style == "quarterly" and e.expiry_date > after),
                key=lambda e: e.expiration,
            )
            fwd = float(sess.minute_forward[0]) * CARRY[quarterly.underlying]
            self.dealer_walls = {
                "expiry": quarterly.symbol_root,
                "call_wall": float(math.ceil(fwd * (1 + spec.wall_distance[0]) / 250) * 250),
                "put_wall": float(math.floor(fwd * (1 - spec.wall_distance[1]) / 250) * 250),
                "call_contracts": spec.wall_contracts[0],
                "put_contracts": spec.wall_contracts[1],
            }
        return self.dealer_walls

    def _settlement_stats(self, previous: _Session, off_book: dict[int, int], ts_stats: int) -> list:
        """The previous session's final settlement of every option still alive and its cleared
        volume (screen prints plus the blocks that never printed on the screen)."""
        ts_ref = _ns(pd.Timestamp(previous.trade_date, tz="UTC"))
        frame = previous.frame()
        options = frame[_is_option_id(frame["iid"].to_numpy())]
        cleared = options.groupby("iid")["size"].sum()
        for iid, size in off_book.items():
            cleared[iid] = int(cleared.get(iid, 0)) + size
        alive = [o for o in previous.listed if o.expiration_ns > previous.close_ns]
        settle: list[float] | np.ndarray = (
            self.option_prices(
                np.array([o.instrument_id for o in alive], dtype=np.int64),
                np.full(len(alive), previous.close_ns - 60_000_000_000),
                previous,
            )
            if alive
            else []
        )
        stats = [
            _stat(
                o.instrument_id,
                ts_stats,
                ts_ref,
                int(round(float(round_to_tick(np.array([price]))[0]) * FIXED)),
                dbn.UNDEF_STAT_QUANTITY,
                dbn.StatType.SETTLEMENT_PRICE,
                stat_flags=1,  # final settlement
            )
            for o, price in zip(alive, settle)
        ]
        stats += [
            _stat(int(iid), ts_stats, ts_ref, dbn.UNDEF_PRICE, int(volume), dbn.StatType.CLEARED_VOLUME)
            for iid, volume in cleared.items()
        ]
        return stats

    def _overnight_change(self, traded: _Session, off_book: dict[int, int], rng: np.random.Generator) -> dict[int, int]:
        """Open interest change per option from session `traded` to the next morning: a planted
        position moves it by its size (give or take 5% of the option's volume), an off-book block
        opens its size, the rest of the volume opens or closes a random share (-40% to +60%)."""
        frame = traded.frame()
        options = frame[_is_option_id(frame["iid"].to_numpy())]
        volume = options.groupby("iid")["size"].sum()
        planted = self.position_change.get(traded.index, {})
        change: dict[int, int] = {}
        for iid, size in volume.items():
            iid = int(iid)
            if iid in planted:
                change[iid] = planted[iid] + int(round(rng.uniform(-0.05, 0.05) * size))
            else:
                change[iid] = int(round(rng.uniform(-0.4, 0.6) * size))
        for iid, size in off_book.items():
            change[iid] = change.get(iid, 0) + size
        return change

    def plant_off_book(self, traded: _Session, published: _Session) -> dict[int, int]:
        """Off-book contracts (instrument -> size) of session `traded`, which clear and show in the
        next-day statistics that `published` carries, and never in the trades. Drawn from a random
        stream of their own, so the on-screen market stays the same draw for draw."""
        kind = self.spec.off_book.get(traded.index)
        if kind is None:
            return {}
        rng = np.random.default_rng(self.spec.seed + 7919 * (traded.index + 1))
        ts = traded.close_ns - 60_000_000_000
        pool = [o for o in self._liquid_options(traded, ts, 0.03, 6.0) if o.expiration_ns > published.close_ns]
        prices = dict(
            zip(
                [o.instrument_id for o in pool],
                self.option_prices(
                    np.array([o.instrument_id for o in pool], dtype=np.int64), np.full(len(pool), ts), traded
                ),
            )
        )
        pool = [o for o in pool if prices[o.instrument_id] >= 40.0]
        first = pool[int(rng.integers(len(pool)))]
        members, ratios, strategy = [first], [1], None
        if kind == "vertical":  # same expiry and right, the next strike 50-150 points away, 1:1
            others = [
                o
                for o in pool
                if o.listing.symbol_root == first.listing.symbol_root
                and o.kind == first.kind
                and 50 <= abs(o.strike - first.strike) <= 150
            ]
            if others:
                members, ratios, strategy = [first, others[int(rng.integers(len(others)))]], [1, 1], "vertical"
        elif kind == "calendar":  # same strike and right, a later expiry, 1:1
            others = [
                o
                for o in pool
                if o.strike == first.strike and o.kind == first.kind and o.expiration_ns > first.expiration_ns
            ]
            if others:
                members, ratios, strategy = [first, others[int(rng.integers(len(others)))]], [1, 1], "calendar"
        target = float(rng.uniform(1.0e6, 1.8e6)) if kind == "small" else float(rng.uniform(4e6, 9e6))
        unit = sum(prices[o.instrument_id] * r for o, r in zip(members, ratios)) * NQ_POINT_VALUE_USD
        quantity = max(int(round(target / unit)), 1)
        sizes = {o.instrument_id: quantity * r for o, r in zip(members, ratios)}
        settle = {o.instrument_id: float(round_to_tick(np.array([prices[o.instrument_id]]))[0]) for o in members}
        self._event(
            traded,
            "off_book",
            (traded.open_ns, traded.close_ns),
            instrument_ids=[o.instrument_id for o in members],
            symbols=[o.raw_symbol for o in members],
            sizes=[sizes[o.instrument_id] for o in members],
            size=int(sum(sizes.values())),
            strategy=strategy,
            package=len(members) > 1,
            opening=True,
            premium_usd=round(sum(sizes[i] * settle[i] for i in sizes) * NQ_POINT_VALUE_USD, 2),
            published=pd.Timestamp(published.open_ns + 30 * 60_000_000_000, tz="UTC").isoformat(),
        )
        return sizes

    def write_session(self, sess: _Session, folder: Path) -> dict:
        """Write a session's three DBN files (trades, definitions, statistics) and return its summary."""
        frame = sess.frame().sort_values(["ts", "iid"], kind="stable").reset_index(drop=True)
        tag = f"glbx-mdp3-{sess.trade_date:%Y%m%d}"
        dates = (
            pd.Timestamp(sess.open_ns, tz="UTC").date(),
            pd.Timestamp(sess.close_ns, tz="UTC").date() + dt.timedelta(days=1),
        )
        listed = sess.listed + list(self.futures.values()) + [s.instrument for s in sess.spreads]
        symbols = {o.raw_symbol: o.instrument_id for o in listed}
        listed_futures = [f for f in self.futures.values() if f.expiration_ns > sess.open_ns]  # expired ones delist
        definitions = [_definition(o, sess.open_ns) for o in sess.listed + listed_futures]
        definitions += [record for s in sess.spreads for record in _spread_definitions(s, sess.open_ns)]
        option_symbols = {o.raw_symbol: o.instrument_id for o in sess.listed}
        for name, schema, records, mapped in (
            ("trades", dbn.Schema.TRADES, self._trade_records(sess, frame), symbols),
            ("definition", dbn.Schema.DEFINITION, definitions, symbols),
            ("statistics", dbn.Schema.STATISTICS, self._statistics(sess), option_symbols),
        ):
            _write_dbn(folder / f"{tag}.{name}.dbn.zst", schema, sess.open_ns, sess.close_ns, records, mapped, dates)
        self.previous = sess
        return self._summary(sess, frame)

    def _trade_records(self, sess: _Session, frame: pd.DataFrame) -> list:
        """The session's fills as trade records, in time order, with the real feed's timing fields."""
        side_map = {"B": dbn.Side.BID, "A": dbn.Side.ASK, "N": dbn.Side.NONE}
        flags = 0 if sess.index % NO_FLAGS_EVERY == NO_FLAGS_EVERY - 1 else 0x80  # F_LAST, or none at all
        in_delta = np.random.default_rng(self.spec.seed + sess.index).integers(*TS_IN_DELTA_NS, size=len(frame))
        return [
            dbn.TradeMsg(
                PUBLISHER_ID,
                int(i),
                int(t),
                int(round(p * FIXED)),
                int(s),
                dbn.Action.TRADE,
                side_map[d],
                0,
                int(t) + RECV_DELAY_NS,
                ts_in_delta=int(delta),
                flags=flags,
                sequence=k + 1,
            )
            for k, (t, i, p, s, d, delta) in enumerate(
                zip(
                    frame.ts.to_numpy(),
                    frame.iid.to_numpy(),
                    frame.price.to_numpy(),
                    frame["size"].to_numpy(),
                    frame.side.to_numpy(),
                    in_delta,
                )
            )
        ]

    def _summary(self, sess: _Session, frame: pd.DataFrame) -> dict:
        """What `ground_truth.json` says of a session's size and shape."""
        options = frame[_is_option_id(frame["iid"].to_numpy())]
        zero_dte = np.array([self._days_to_expiry(sess, self.by_id[i]) == 0 for i in options["iid"].to_numpy()])
        one_dte = np.array([self._days_to_expiry(sess, self.by_id[i]) <= 1 for i in options["iid"].to_numpy()])
        return {
            "trade_date": str(sess.trade_date),
            "option_trades": len(options),
            "option_contracts": int(options["size"].sum()),
            "future_trades": int((frame.iid < 100_000).sum()),
            "listed_options": len(sess.listed),
            "products": len({o.product for o in sess.listed}),
            "spreads": len(sess.spreads),
            "spreads_without_legs": sum(not s.legs_in_definition for s in sess.spreads),
            "zero_dte_contract_share": round(float(options["size"][zero_dte].sum() / options["size"].sum()), 4),
            "one_dte_or_less_contract_share": round(float(options["size"][one_dte].sum() / options["size"].sum()), 4),
        }


def _drift(prices: np.ndarray, sizes: np.ndarray, flat_share: float = 0.002) -> str:
    """How a worked order's child prices moved, by the rule the engine states (second half's
    VWAP against the first half's; 0.2% is thresholds.worked_flat_drift_share's default)."""
    half = len(prices) // 2
    first, last = np.average(prices[:half], weights=sizes[:half]), np.average(prices[half:], weights=sizes[half:])
    change = (last - first) / np.average(prices, weights=sizes)
    return "ascending" if change > flat_share else "descending" if change < -flat_share else "flat"


def sample_folder(replay_dir: str | Path, spec: SampleSpec) -> Path:
    """Where a market of `spec` goes by default: the replay folder itself for the bundled
    session count, ``<replay_dir>-N`` beside it for any other N (``data/sample-250``), so a
    generated year never replaces the sample the demo and the tests read."""
    replay_dir = Path(replay_dir)
    if spec.n_sessions == SampleSpec().n_sessions:
        return replay_dir
    return replay_dir.with_name(f"{replay_dir.name}-{spec.n_sessions}")


def generate_sample_market(folder: str | Path, spec: SampleSpec | None = None) -> Path:
    """Write the sample market into `folder` (created if needed) and return the folder.

    Idempotent: if `folder` already holds a complete market for the same spec, nothing is rewritten.
    """
    spec = spec or SampleSpec()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    truth_path = folder / "ground_truth.json"
    fingerprint = _fingerprint(spec)
    if truth_path.exists():
        try:
            if json.loads(truth_path.read_text()).get("spec_fingerprint") == fingerprint:
                return folder
        except (json.JSONDecodeError, OSError):
            pass  # a half-written market: regenerate it
    for stale in folder.glob("glbx-mdp3-*.dbn.zst"):
        stale.unlink()  # an older market's sessions must not mix with this one's
    gen = _Generator(spec)
    session_stats = []
    for index in range(spec.n_sessions):
        sess = gen.new_session(index)
        gen.background(sess)
        gen.plant(sess)
        gen.record_volumes(sess)
        session_stats.append(gen.write_session(sess, folder))
    truth = {
        "spec_fingerprint": fingerprint,
        "generator_version": GENERATOR_VERSION,
        "dataset": DATASET,
        "seed": spec.seed,
        "sessions": [str(d) for d in gen.schedule.index],
        "quiet_sessions": [str(gen.schedule.index[i]) for i in spec.quiet_sessions if i < spec.n_sessions],
        "baseline_definition": f"trimmed mean (busiest session dropped when >= 5) of the slot's contracts over up to "
        f"{spec.baseline_sessions} previous sessions since the key first traded; options "
        f"within {SHORT_DATED_DAYS} days of expiry counted by days to expiry",
        "session_stats": session_stats,
        "dealer_walls": gen.dealer_walls,
        "events": gen.events,
    }
    tmp = truth_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(truth, indent=2))
    tmp.replace(truth_path)  # written last: its presence marks a complete market
    return folder


def _fingerprint(spec: SampleSpec) -> str:
    payload = asdict(spec)
    payload["first_trade_date"] = str(spec.first_trade_date)
    payload["generator_version"] = GENERATOR_VERSION
    return json.dumps(payload, sort_keys=True, default=str)


def load_ground_truth(folder: str | Path) -> dict:
    path = Path(folder) / "ground_truth.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found; generate the sample with `python scheduler.py demo` or "
            f"nqflow.research.sample.generator.generate_sample_market('{folder}')"
        )
    return json.loads(path.read_text())
