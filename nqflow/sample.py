"""A deterministic, realistic NQ options sample market written as real GLBX.MDP3 DBN files.

`generate_sample_market(folder)` writes, for each of `n_sessions` CME Globex sessions:

- ``glbx-mdp3-YYYYMMDD.definition.dbn.zst``: every listed NQ future and option (quarterly,
  serial monthly, end-of-month and Friday weekly expiries; calls and puts at CME strike
  increments) as ``InstrumentDefMsg`` records at the session open;
- ``glbx-mdp3-YYYYMMDD.trades.dbn.zst``: option and front-future trades over the whole
  session with U-shaped intraday intensity, over-dispersed (clustered) arrival counts,
  heavy-tailed sizes, Black-76 prices on a volatility smile, and aggressor sides B/A/N;
- ``glbx-mdp3-YYYYMMDD.statistics.dbn.zst``: each option's open interest (``StatType.OPEN_INTEREST``);

plus ``ground_truth.json`` listing every planted institutional event (blocks filled in many
pieces, multi-strike sweeps, 10x/30x/50x surges on one strike and on the whole product) and
the quiet sessions that have none. The same seed always gives byte-identical files.

Surge ground truth is stated against the documented baseline (trimmed mean of the same
slot's volume over up to `baseline_sessions` previous sessions, see `nqflow.baseline`),
computed here independently from the generator's own arrays.
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

from nqflow import calendar as cal
from nqflow.contracts import (
    CHICAGO,
    NQ_POINT_VALUE_USD,
    OptionExpiry,
    black76,
    listed_expiries,
    month_code,
    option_raw_symbol,
    option_tick,
    round_to_tick,
    smile_vol,
    third_friday,
    years_between,
)

DATASET = "GLBX.MDP3"
PUBLISHER_ID = 1  # GLBX.MDP3 on CME Globex
FIXED = 1_000_000_000  # DBN fixed-point prices: 1e-9 units
GENERATOR_VERSION = 3  # 2: strikes listed around the market session by session; 3: two-leg sweeps
#: Background orders stay below this premium so that only planted events cross $3M.
BACKGROUND_MAX_PREMIUM_USD = 1_200_000.0
#: Surges are planted only on instrument slots with at least this baseline, so that any
#: configured baseline floor up to this many contracts leaves the planted ratio unchanged.
SURGE_MIN_BASELINE_CONTRACTS = 8.0
#: Deferred quarterly futures trade at a small carry premium over the front (NQZ6).
CARRY = {"NQZ6": 1.0, "NQH7": 1.0095, "NQM7": 1.019}
TIER_RATIO_RANGES = {10: (15.0, 21.0), 30: (37.0, 43.0), 50: (65.0, 90.0)}


@dataclass(frozen=True)
class SampleSpec:
    seed: int = 20261030
    first_trade_date: dt.date = dt.date(2026, 10, 1)
    n_sessions: int = 22
    start_forward: float = 21000.0
    option_trades_per_session: int = 30_000
    future_trades_per_session: int = 8_000
    baseline_sessions: int = 20
    quiet_sessions: tuple[int, ...] = (4, 11, 17)
    #: session index -> planted product-wide surge tier (overnight slot, where it is plausible)
    product_surges: dict[int, int] = field(default_factory=lambda: {9: 10, 15: 30, 20: 50})


@dataclass
class Instrument:
    instrument_id: int
    raw_symbol: str
    kind: str  # "F" future, "C" call, "P" put
    expiration_ns: int
    strike: float = float("nan")
    expiry: OptionExpiry | None = None
    underlying: str = ""
    underlying_id: int = 0


def _ns(ts: pd.Timestamp | dt.datetime) -> int:
    return int(pd.Timestamp(ts).value)


# --------------------------------------------------------------------------- universe
#: An expiry is listed (and traded) this many calendar days before it expires.
HORIZON_DAYS = {"weekly": 36, "eom": 70, "monthly": 100, "quarterly": 200}


@dataclass
class Universe:
    """Futures, option expiries, and the options listed so far (strikes are added as the market moves)."""

    expiries: list[OptionExpiry]
    futures: dict[str, Instrument]
    options: list[Instrument] = field(default_factory=list)
    next_id: int = 100_000
    grids: dict[str, tuple[float, float]] = field(default_factory=dict)  # expiry root -> (step, width)
    strikes: dict[str, set[float]] = field(default_factory=dict)


def build_universe(spec: SampleSpec, session_dates: list[dt.date]) -> Universe:
    """Futures and the option expiries of the sample; options are listed session by session."""
    first, last = session_dates[0], session_dates[-1]
    all_days = set(cal.trading_days(first, last + dt.timedelta(days=220)))
    expiries = [e for e in listed_expiries(first, last + dt.timedelta(days=200), all_days)
                if (e.expiry_date - last).days <= HORIZON_DAYS[e.style]]
    futures: dict[str, Instrument] = {}
    for i, (year, month) in enumerate([(2026, 12), (2027, 3), (2027, 6)]):
        root = f"NQ{month_code(year, month)}"
        expiry = dt.datetime.combine(third_friday(year, month), dt.time(8, 30), tzinfo=CHICAGO)
        futures[root] = Instrument(1000 + i, root, "F", _ns(expiry))
    return Universe(expiries, futures)


def list_strikes(universe: Universe, session_date: dt.date, level: float) -> list[Instrument]:
    """List the strikes each live expiry needs around `level` (the prior close), as CME does:
    a new expiry gets a grid centred on the market, and a live one gets new strikes when the
    market moves past its listed range. Listed strikes are never withdrawn. Returns the new options."""
    new: list[Instrument] = []
    for expiry in universe.expiries:
        days = (expiry.expiry_date - session_date).days
        if days < 0 or days > HORIZON_DAYS[expiry.style]:
            continue
        root = expiry.symbol_root
        step, width = universe.grids.setdefault(root, (25.0, 0.07) if days <= 45 else (100.0, 0.14))
        listed = universe.strikes.setdefault(root, set())
        low = math.floor(level * (1 - width) / step) * step
        high = math.ceil(level * (1 + width) / step) * step
        for strike in np.arange(low, high + step / 2, step):
            if float(strike) in listed:
                continue
            listed.add(float(strike))
            for put_call in ("C", "P"):
                new.append(Instrument(
                    universe.next_id, option_raw_symbol(root, put_call, float(strike)), put_call,
                    _ns(expiry.expiration), float(strike), expiry, expiry.underlying,
                    universe.futures[expiry.underlying].instrument_id))
                universe.next_id += 1
    universe.options.extend(new)
    return new


def _listed(options: list[Instrument], session_open_ns: int, session_date: dt.date) -> list[Instrument]:
    return [o for o in options if o.expiration_ns > session_open_ns
            and (o.expiry.expiry_date - session_date).days <= HORIZON_DAYS[o.expiry.style]]


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


# --------------------------------------------------------------------------- record writing
def _write_dbn(path: Path, schema: dbn.Schema, start_ns: int, end_ns: int, records: list,
               symbols: dict[str, int], mapping_dates: tuple[dt.date, dt.date]) -> None:
    mappings = [
        SimpleNamespace(raw_symbol=sym, intervals=[SimpleNamespace(start_date=mapping_dates[0],
                                                                   end_date=mapping_dates[1], symbol=str(iid))])
        for sym, iid in sorted(symbols.items())
    ]
    metadata = dbn.Metadata(dataset=DATASET, start=start_ns, end=end_ns, stype_in=dbn.SType.RAW_SYMBOL,
                            stype_out=dbn.SType.INSTRUMENT_ID, schema=schema, symbols=sorted(symbols),
                            partial=[], not_found=[], mappings=mappings, ts_out=False)
    payload = bytes(metadata) + b"".join(bytes(r) for r in records)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(zstandard.ZstdCompressor(level=3).compress(payload))
    tmp.replace(path)


def _definition(inst: Instrument, ts_ns: int) -> dbn.InstrumentDefMsg:
    is_option = inst.kind in ("C", "P")
    klass = {"C": dbn.InstrumentClass.CALL, "P": dbn.InstrumentClass.PUT, "F": dbn.InstrumentClass.FUTURE}[inst.kind]
    return dbn.InstrumentDefMsg(
        publisher_id=PUBLISHER_ID, instrument_id=inst.instrument_id, ts_event=ts_ns, ts_recv=ts_ns,
        min_price_increment=int(0.05 * FIXED) if is_option else int(0.25 * FIXED), display_factor=FIXED,
        raw_symbol=inst.raw_symbol, asset=inst.expiry.product if is_option else "NQ",
        security_type="OOF" if is_option else "FUT", instrument_class=klass,
        security_update_action=dbn.SecurityUpdateAction.ADD, expiration=inst.expiration_ns,
        # Like real GLBX.MDP3 definitions: contract_multiplier undefined, size in unit_of_measure_qty.
        unit_of_measure_qty=int(NQ_POINT_VALUE_USD * FIXED), unit_of_measure="IPNT",
        min_price_increment_amount=int((1.0 if is_option else 5.0) * FIXED),
        strike_price=int(round(inst.strike * FIXED)) if is_option else dbn.UNDEF_PRICE,
        underlying_id=inst.underlying_id, underlying=inst.underlying if is_option else "",
        currency="USD", settl_currency="USD", exchange="XCME", group="NQ" if not is_option else inst.expiry.product,
        cfi=("OCAFPS" if inst.kind == "C" else "OPAFPS") if is_option else "FFIXSX",
        strike_price_currency="USD" if is_option else "",
        min_lot_size_round_lot=1, min_trade_vol=1, max_trade_vol=10_000,
        match_algorithm=dbn.MatchAlgorithm.FIFO,
    )


# --------------------------------------------------------------------------- generator state
@dataclass
class _Session:
    index: int
    trade_date: dt.date
    open_ns: int
    close_ns: int
    minute_forward: np.ndarray  # front-future level per minute of the session
    listed: list[Instrument]
    # trade columns (option and future fills), appended by background and planted events
    ts: list[np.ndarray] = field(default_factory=list)
    iid: list[np.ndarray] = field(default_factory=list)
    price: list[np.ndarray] = field(default_factory=list)
    size: list[np.ndarray] = field(default_factory=list)
    side: list[np.ndarray] = field(default_factory=list)

    def add(self, ts, iid, price, size, side) -> None:
        self.ts.append(np.asarray(ts, dtype=np.int64))
        self.iid.append(np.asarray(iid, dtype=np.int64))
        self.price.append(np.asarray(price, dtype=np.float64))
        self.size.append(np.asarray(size, dtype=np.int64))
        self.side.append(np.asarray(side, dtype="<U1"))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"ts": np.concatenate(self.ts), "iid": np.concatenate(self.iid),
                             "price": np.concatenate(self.price), "size": np.concatenate(self.size),
                             "side": np.concatenate(self.side)})

    def forward_at(self, ts_ns: np.ndarray) -> np.ndarray:
        minute = np.clip((np.asarray(ts_ns) - self.open_ns) // 60_000_000_000, 0, len(self.minute_forward) - 1)
        return self.minute_forward[minute]


class _Generator:
    def __init__(self, spec: SampleSpec):
        self.spec = spec
        self.rng = np.random.default_rng(spec.seed)
        schedule = cal.sessions(spec.first_trade_date, spec.first_trade_date + dt.timedelta(days=3 * spec.n_sessions))
        self.schedule = schedule.iloc[: spec.n_sessions]
        if len(self.schedule) < spec.n_sessions:
            raise ValueError("calendar returned fewer sessions than requested")
        dates = list(self.schedule.index)
        self.universe = build_universe(spec, dates)
        self.options, self.futures = self.universe.options, self.universe.futures
        self.by_id: dict[int, Instrument] = {f.instrument_id: f for f in self.futures.values()}
        self.front = self.futures["NQZ6"]
        self.level = spec.start_forward
        self.events: list[dict] = []
        #: per session: Series of contracts indexed by (instrument_id, slot); and product totals by slot
        self.slot_volume: list[pd.Series] = []
        self.first_traded: dict[int, int] = {}

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

    def background(self, sess: _Session) -> None:
        rng, spec = self.rng, self.spec
        minutes = len(sess.minute_forward)
        profile = intensity_profile(np.arange(minutes, dtype=float))
        activity = rng.gamma(25.0, 1.0 / 25.0)  # session-to-session activity varies ~20%
        expected = profile / profile.sum() * spec.option_trades_per_session * activity
        # Gamma-mixed Poisson per minute: order arrivals cluster (over-dispersed counts).
        counts = rng.poisson(expected * rng.gamma(3.0, 1.0 / 3.0, size=minutes))
        minute_of = np.repeat(np.arange(minutes), counts)
        ts = sess.open_ns + minute_of * 60_000_000_000 + rng.integers(0, 60_000_000_000, size=minute_of.size)
        ts.sort()
        minute_of = (ts - sess.open_ns) // 60_000_000_000

        # Instrument choice: by hour, weight by moneyness, time to expiry and round strikes.
        listed = sess.listed
        strikes = np.array([o.strike for o in listed])
        exp_ns = np.array([o.expiration_ns for o in listed], dtype=np.int64)
        carry = np.array([CARRY[o.underlying] for o in listed])
        is_put = np.array([o.kind == "P" for o in listed])
        round_bonus = 1.0 + 1.0 * (strikes % 100 == 0) + 2.0 * (strikes % 500 == 0)
        iids = np.empty(ts.size, dtype=np.int64)
        listed_ids = np.array([o.instrument_id for o in listed])
        for hour_start in range(0, minutes, 60):
            mask = (minute_of >= hour_start) & (minute_of < hour_start + 60)
            if not mask.any():
                continue
            t_ns = sess.open_ns + hour_start * 60_000_000_000
            alive = exp_ns > t_ns + 30 * 60_000_000_000
            fwd = sess.minute_forward[hour_start] * carry
            years = years_between(t_ns, exp_ns)
            width = 0.20 * np.sqrt(np.maximum(years, 1 / 365)) + 0.004
            moneyness = np.log(strikes / fwd) / width
            otm_skew = np.where(is_put, 1.25, 1.0) * np.exp(-0.5 * moneyness ** 2)
            expiry_weight = 1.0 / (years * 365.0 + 1.5) ** 0.8
            weight = np.where(alive, otm_skew * expiry_weight * round_bonus, 0.0)
            iids[mask] = rng.choice(listed_ids, size=int(mask.sum()), p=weight / weight.sum())

        price_model = self.option_prices(iids, ts, sess)
        side = rng.choice(np.array(["B", "A", "N"]), size=ts.size, p=[0.46, 0.46, 0.08])
        half_spread = np.maximum(0.01 * price_model, 0.05)
        price = round_to_tick(price_model + np.where(side == "B", half_spread, np.where(side == "A", -half_spread, 0.0)))
        # Heavy-tailed order sizes (Pareto, tail index 1.5), capped so background premium stays modest.
        size = np.floor(rng.pareto(1.5, size=ts.size) + 1.0).astype(np.int64)
        cap = np.maximum(np.floor(BACKGROUND_MAX_PREMIUM_USD / (price * NQ_POINT_VALUE_USD)), 1).astype(np.int64)
        size = np.minimum(np.minimum(size, 300), cap)
        self._add_orders(sess, ts, iids, price, size, side, multi_fill_share=0.15)

        # Front-month future: same intraday shape, small sizes.
        fut_minutes = np.repeat(np.arange(minutes), rng.poisson(profile / profile.sum() * spec.future_trades_per_session))
        fut_ts = np.sort(sess.open_ns + fut_minutes * 60_000_000_000 + rng.integers(0, 60_000_000_000, fut_minutes.size))
        fut_side = rng.choice(np.array(["B", "A"]), size=fut_ts.size)
        fut_px = np.round(sess.forward_at(fut_ts) * 4 + np.where(fut_side == "B", 1, -1) * 0.5) / 4
        sess.add(fut_ts, np.full(fut_ts.size, self.front.instrument_id), fut_px,
                 np.minimum(np.floor(rng.pareto(2.0, fut_ts.size) + 1), 50), fut_side)

    def _add_orders(self, sess: _Session, ts, iids, price, size, side, multi_fill_share: float,
                    pieces: np.ndarray | None = None) -> None:
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
            fill_size[start:start + pieces[i]] = np.diff(np.concatenate(([0], cuts, [size[i]])))
        single = pieces[rep] == 1
        fill_size[single] = np.asarray(size)[rep[single]]
        # Later pieces of a buy walk up the book one tick, of a sell down.
        level = np.arange(rep.size) - np.searchsorted(rep, rep)
        tick = option_tick(np.asarray(price)[rep])
        direction = np.where(np.asarray(side)[rep] == "B", 1.0, np.where(np.asarray(side)[rep] == "A", -1.0, 0.0))
        fill_price = np.maximum(np.asarray(price)[rep] + direction * np.minimum(level, 2) * tick, 0.05)
        sess.add(np.asarray(ts)[rep], np.asarray(iids)[rep], np.round(fill_price, 2), fill_size, np.asarray(side)[rep])

    # ------------------------------------------------------------------ planted events
    def _slot_window(self, sess: _Session, slot: int) -> tuple[int, int]:
        start = sess.open_ns + slot * cal.SLOT_MINUTES * 60_000_000_000
        return start, min(start + cal.SLOT_MINUTES * 60_000_000_000, sess.close_ns)

    def _event(self, sess: _Session, kind: str, window: tuple[int, int], **fields) -> dict:
        event = {"event_id": f"{sess.trade_date:%Y%m%d}-{len([e for e in self.events if e['session'] == str(sess.trade_date)]) + 1:02d}",
                 "session": str(sess.trade_date), "kind": kind,
                 "window_start": pd.Timestamp(window[0], tz="UTC").isoformat(),
                 "window_end": pd.Timestamp(window[1], tz="UTC").isoformat(), **fields}
        self.events.append(event)
        return event

    def _liquid_options(self, sess: _Session, ts_ns: int, max_abs_log_moneyness: float, min_days: float) -> list[Instrument]:
        fwd = sess.forward_at(np.array([ts_ns]))[0]
        return [o for o in sess.listed
                if (o.expiration_ns - ts_ns) / 86400e9 >= min_days
                and abs(math.log(o.strike / (fwd * CARRY[o.underlying])))
                <= max_abs_log_moneyness]

    def _rth_slots(self, sess: _Session) -> np.ndarray:
        n_slots = int(math.ceil((sess.close_ns - sess.open_ns) / (cal.SLOT_MINUTES * 60e9)))
        slots = np.arange(n_slots)
        ct_hour = (17.0 + slots * cal.SLOT_MINUTES / 60.0) % 24.0
        return slots[(ct_hour >= 8.75) & (ct_hour < 14.5)]

    def plant_block(self, sess: _Session, premium_usd: float) -> None:
        rng = self.rng
        slot = int(rng.choice(self._rth_slots(sess)))
        window = self._slot_window(sess, slot)
        ts = int(rng.integers(window[0] + 1_000_000_000, window[1] - 1_000_000_000))
        candidates = [o for o in self._liquid_options(sess, ts, 0.03, 2.0)
                      if self.option_prices(np.array([o.instrument_id]), np.array([ts]), sess)[0] >= 40.0]
        inst = candidates[int(rng.integers(len(candidates)))]
        side = str(rng.choice(["B", "A"]))
        model = self.option_prices(np.array([inst.instrument_id]), np.array([ts]), sess)[0]
        price = float(round_to_tick(np.array([model * (1.004 if side == "B" else 0.996)]))[0])
        size = max(int(round(premium_usd / (price * NQ_POINT_VALUE_USD))), 1)
        pieces = int(rng.integers(1, 13))
        before = sum(len(x) for x in sess.ts)
        self._add_orders(sess, np.array([ts]), np.array([inst.instrument_id]), np.array([price]),
                         np.array([size]), np.array([side]), 0.0, pieces=np.array([pieces]))
        fills = self._fills_since(sess, before)
        self._event(sess, "block", window, ts_event=pd.Timestamp(ts, tz="UTC").isoformat(),
                    instrument_ids=[inst.instrument_id], symbols=[inst.raw_symbol], side=side,
                    size=int(fills["size"].sum()), fills=int(len(fills)),
                    premium_usd=round(float((fills["price"] * fills["size"]).sum() * NQ_POINT_VALUE_USD), 2))

    def plant_sweep(self, sess: _Session, premium_usd: float) -> None:
        rng = self.rng
        slot = int(rng.choice(self._rth_slots(sess)))
        window = self._slot_window(sess, slot)
        ts0 = int(rng.integers(window[0] + 1_000_000_000, window[1] - 2_000_000_000))
        put_call = str(rng.choice(["C", "P"]))
        pool = [o for o in self._liquid_options(sess, ts0, 0.025, 1.0) if o.kind == put_call]
        by_expiry: dict[str, list[Instrument]] = {}
        for o in pool:
            by_expiry.setdefault(o.expiry.symbol_root, []).append(o)
        root = sorted(k for k, v in by_expiry.items() if len(v) >= 6)[int(rng.integers(0, 2))]
        chain = sorted(by_expiry[root], key=lambda o: o.strike)
        legs_n = max(2, int(math.ceil(premium_usd / 2_400_000.0)))  # two legs below $4.8M
        first = int(rng.integers(0, len(chain) - legs_n + 1))
        legs = chain[first:first + legs_n]
        side = str(rng.choice(["B", "A"]))
        ts = ts0 + np.cumsum(rng.integers(2_000_000, 60_000_000, size=legs_n))  # a few ms apart
        ids = np.array([o.instrument_id for o in legs])
        model = self.option_prices(ids, ts, sess)
        price = round_to_tick(model * (1.004 if side == "B" else 0.996))
        size = np.maximum(np.round(premium_usd / legs_n / (price * NQ_POINT_VALUE_USD)), 1).astype(np.int64)
        before = sum(len(x) for x in sess.ts)
        self._add_orders(sess, ts, ids, price, size, np.full(legs_n, side), 0.0,
                         pieces=rng.integers(1, 4, size=legs_n))
        fills = self._fills_since(sess, before)
        self._event(sess, "sweep", window, ts_event=pd.Timestamp(int(ts[0]), tz="UTC").isoformat(),
                    instrument_ids=[int(i) for i in ids], symbols=[o.raw_symbol for o in legs], side=side,
                    size=int(fills["size"].sum()), fills=int(len(fills)), expiry=root, put_call=put_call,
                    premium_usd=round(float((fills["price"] * fills["size"]).sum() * NQ_POINT_VALUE_USD), 2))

    def _fills_since(self, sess: _Session, before: int) -> pd.DataFrame:
        frame = sess.frame()
        return frame.iloc[before:]

    def _history_baseline(self, key, slot: int, session_index: int, level: str) -> tuple[float, int]:
        """Trimmed mean of one slot's volume over the previous sessions (see nqflow.baseline)."""
        first = 0 if level == "product" else self.first_traded.get(key, session_index)
        history = []
        for past in range(max(first, session_index - self.spec.baseline_sessions), session_index):
            volumes = self.slot_volume[past]
            if level == "product":
                history.append(float(volumes.xs(slot, level="slot").sum()) if slot in volumes.index.get_level_values("slot") else 0.0)
            else:
                history.append(float(volumes.get((key, slot), 0.0)))
        if not history:
            return 0.0, 0
        values = np.sort(np.asarray(history))
        if values.size >= 5:
            values = values[:-1]  # drop the single busiest session: one outlier must not lift the baseline
        return float(values.mean()), len(history)

    def plant_instrument_surge(self, sess: _Session, tier: int) -> None:
        rng = self.rng
        current = sess.frame()
        current = current[current.iid >= 100_000]
        current_slot = (current.ts - sess.open_ns) // (cal.SLOT_MINUTES * 60_000_000_000)
        current_volume = current.groupby([current.iid, current_slot])["size"].sum()
        choices = []
        for slot in self._rth_slots(sess):
            for o in sess.listed:
                if o.instrument_id not in self.first_traded or self.first_traded[o.instrument_id] > sess.index - 5:
                    continue
                if (o.expiration_ns - sess.open_ns) / 86400e9 < 3:
                    continue
                choices.append((o.instrument_id, int(slot)))
        rng.shuffle(choices)
        for iid, slot in choices[:4000]:
            baseline, n_hist = self._history_baseline(iid, slot, sess.index, "instrument")
            if baseline >= SURGE_MIN_BASELINE_CONTRACTS:
                break
        else:
            return
        ratio = float(rng.uniform(*TIER_RATIO_RANGES[tier]))
        existing = int(current_volume.get((iid, slot), 0))
        target = int(math.ceil(ratio * baseline))
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
        self._event(sess, "surge_instrument", window, instrument_ids=[iid], symbols=[inst.raw_symbol],
                    side=side, size=int(target), planted_contracts=int(extra), baseline=round(baseline, 4),
                    history_sessions=n_hist, ratio=round(target / baseline, 3), tier=tier)

    def plant_product_surge(self, sess: _Session, tier: int) -> None:
        rng = self.rng
        # An overnight slot (01:00-02:00 CT), where product volume is thin and a surge is plausible.
        slot = int(rng.integers(32, 36))
        baseline, n_hist = self._history_baseline(None, slot, sess.index, "product")
        current = sess.frame()
        current = current[current.iid >= 100_000]
        existing = int(current[(current.ts - sess.open_ns) // (cal.SLOT_MINUTES * 60_000_000_000) == slot]["size"].sum())
        ratio = float(rng.uniform(*TIER_RATIO_RANGES[tier]))
        target = int(math.ceil(ratio * baseline))
        extra = target - existing
        window = self._slot_window(sess, slot)
        side = str(rng.choice(["B", "A"]))
        pool = self._liquid_options(sess, window[0], 0.03, 1.0)
        # Spread across many strikes and expiries so no single strike or expiry dominates.
        n_orders = int(min(max(extra // 12, 200), 1200))
        iids = rng.choice(np.array([o.instrument_id for o in pool]), size=n_orders)
        sizes = rng.multinomial(extra - n_orders, np.full(n_orders, 1.0 / n_orders)) + 1
        ts = np.sort(rng.integers(window[0], window[1], size=n_orders))
        sides = np.where(rng.random(n_orders) < 0.8, side, "A" if side == "B" else "B")
        model = self.option_prices(iids, ts, sess)
        price = round_to_tick(model * np.where(sides == "B", 1.004, 0.996))
        self._add_orders(sess, ts, iids, price, sizes.astype(np.int64), sides, 0.1)
        self._event(sess, "surge_product", window, instrument_ids=[], symbols=[], side=side, size=int(target),
                    planted_contracts=int(extra), baseline=round(baseline, 4), history_sessions=n_hist,
                    ratio=round(target / baseline, 3), tier=tier)

    def plant(self, sess: _Session) -> None:
        rng, spec = self.rng, self.spec
        if sess.index in spec.quiet_sessions:
            return
        for _ in range(int(rng.integers(1, 3))):
            premium = float(np.exp(rng.uniform(np.log(1.0e6), np.log(2.0e7))))
            if 2.6e6 < premium < 3.4e6:  # keep ground truth clear of the default $3M line
                premium = 3.8e6 if premium > 3.0e6 else 2.2e6
            self.plant_block(sess, premium)
        if rng.random() < 0.6:
            self.plant_sweep(sess, float(rng.uniform(3.6e6, 1.1e7)))
        if sess.index >= 5 and rng.random() < 0.75:
            self.plant_instrument_surge(sess, int(rng.choice([10, 30, 50])))
        if sess.index in spec.product_surges:
            self.plant_product_surge(sess, spec.product_surges[sess.index])

    # ------------------------------------------------------------------ output
    def record_volumes(self, sess: _Session) -> None:
        frame = sess.frame()
        frame = frame[frame.iid >= 100_000]
        slot = (frame.ts - sess.open_ns) // (cal.SLOT_MINUTES * 60_000_000_000)
        volume = frame.groupby([frame.iid.rename("instrument_id"), slot.rename("slot")])["size"].sum()
        self.slot_volume.append(volume)
        for iid in frame.iid.unique():
            self.first_traded.setdefault(int(iid), sess.index)

    def write_session(self, sess: _Session, folder: Path) -> dict:
        frame = sess.frame().sort_values(["ts", "iid"], kind="stable").reset_index(drop=True)
        tag = f"glbx-mdp3-{sess.trade_date:%Y%m%d}"
        open_date = pd.Timestamp(sess.open_ns, tz="UTC").date()
        close_date = pd.Timestamp(sess.close_ns, tz="UTC").date() + dt.timedelta(days=1)
        side_map = {"B": dbn.Side.BID, "A": dbn.Side.ASK, "N": dbn.Side.NONE}
        recv_delay = 150_000  # 150 µs from match to receipt, like the real feed's ts_recv - ts_event
        trades = [
            dbn.TradeMsg(PUBLISHER_ID, int(i), int(t), int(round(p * FIXED)), int(s), dbn.Action.TRADE,
                         side_map[d], 0, int(t) + recv_delay, flags=0x80, sequence=k + 1)
            for k, (t, i, p, s, d) in enumerate(zip(frame.ts.to_numpy(), frame.iid.to_numpy(), frame.price.to_numpy(),
                                                   frame["size"].to_numpy(), frame.side.to_numpy()))
        ]
        listed = sess.listed + list(self.futures.values())
        symbols = {o.raw_symbol: o.instrument_id for o in listed}
        _write_dbn(folder / f"{tag}.trades.dbn.zst", dbn.Schema.TRADES, sess.open_ns, sess.close_ns, trades,
                   symbols, (open_date, close_date))
        definitions = [_definition(o, sess.open_ns) for o in listed]
        _write_dbn(folder / f"{tag}.definition.dbn.zst", dbn.Schema.DEFINITION, sess.open_ns, sess.close_ns,
                   definitions, symbols, (open_date, close_date))
        # Open interest: published near the open; larger near the money and on longer-dated expiries.
        rng = self.rng
        fwd = sess.minute_forward[0]
        ts_oi = sess.open_ns + 30 * 60_000_000_000
        stats = []
        for o in sess.listed:
            years = max((o.expiration_ns - sess.open_ns) / (365.25 * 86400e9), 1 / 365)
            z = math.log(o.strike / fwd) / (0.2 * math.sqrt(years) + 0.01)
            oi = int(rng.lognormal(math.log(40 + 3000 * math.exp(-0.5 * z * z) * min(years * 12, 1.5)), 0.5))
            stats.append(dbn.StatMsg(PUBLISHER_ID, o.instrument_id, ts_oi, ts_oi + recv_delay,
                                     _ns(pd.Timestamp(sess.trade_date, tz="UTC")), dbn.UNDEF_PRICE, oi,
                                     dbn.StatType.OPEN_INTEREST, update_action=dbn.StatUpdateAction.NEW))
        _write_dbn(folder / f"{tag}.statistics.dbn.zst", dbn.Schema.STATISTICS, sess.open_ns, sess.close_ns,
                   stats, {o.raw_symbol: o.instrument_id for o in sess.listed}, (open_date, close_date))
        options = frame[frame.iid >= 100_000]
        return {"trade_date": str(sess.trade_date), "option_trades": int(len(options)),
                "option_contracts": int(options["size"].sum()), "future_trades": int(len(frame) - len(options)),
                "listed_options": len(sess.listed)}


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
                               f"{spec.baseline_sessions} previous sessions since the instrument first traded",
        "session_stats": session_stats,
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
        raise FileNotFoundError(f"{path} not found; generate the sample with `python scheduler.py demo` or "
                                f"nqflow.sample.generate_sample_market('{folder}')")
    return json.loads(path.read_text())
