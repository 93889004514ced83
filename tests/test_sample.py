"""The generated sample market, read back through databento.DBNStore: values, not just shapes."""

from __future__ import annotations

import datetime as dt
import hashlib
import warnings

import databento as db
import numpy as np
import pandas as pd
import pytest

from nqflow.contracts import NQ_POINT_VALUE_USD, black76, smile_vol, years_between
from nqflow.sample import SampleSpec, generate_sample_market

warnings.filterwarnings("ignore")


def _df(path) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return db.DBNStore.from_file(path).to_df().reset_index()


def test_same_seed_gives_identical_files(tmp_path):
    spec = SampleSpec(n_sessions=2, option_trades_per_session=2_000, future_trades_per_session=300)
    first = generate_sample_market(tmp_path / "a", spec)
    second = generate_sample_market(tmp_path / "b", spec)
    digests = lambda folder: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.dbn.zst")}
    assert digests(first) == digests(second)
    assert len(digests(first)) == 6
    other = generate_sample_market(tmp_path / "c", SampleSpec(seed=7, n_sessions=2, option_trades_per_session=2_000,
                                                              future_trades_per_session=300))
    assert digests(other) != digests(first)


def test_market_has_enough_sessions_and_realistic_size(truth):
    assert len(truth["sessions"]) >= 21
    stats = pd.DataFrame(truth["session_stats"])
    assert (stats["option_trades"] > 15_000).all() and stats["option_trades"].mean() > 25_000  # tens of thousands a day
    assert (stats["listed_options"] > 1_000).all()


def test_planted_block_premium_matches_the_fills_in_the_file(sample_dir, truth):
    block = next(e for e in truth["events"] if e["kind"] == "block" and e["premium_usd"] > 3e6)
    day = block["session"].replace("-", "")
    trades = _df(sample_dir / f"glbx-mdp3-{day}.trades.dbn.zst")
    ts = pd.Timestamp(block["ts_event"])
    fills = trades[(trades["ts_event"] == ts) & (trades["instrument_id"] == block["instrument_ids"][0])]
    assert len(fills) == block["fills"]
    assert set(fills["side"]) == {block["side"]}
    assert set(fills["symbol"]) == set(block["symbols"])
    premium = float((fills["price"] * fills["size"]).sum() * NQ_POINT_VALUE_USD)
    assert premium == pytest.approx(block["premium_usd"], rel=1e-9)
    assert int(fills["size"].sum()) == block["size"]


def test_symbols_expiries_strikes_and_multiplier_in_definitions(sample_dir, truth):
    day = truth["sessions"][-1].replace("-", "")
    defs = _df(sample_dir / f"glbx-mdp3-{day}.definition.dbn.zst")
    options = defs[defs["instrument_class"].isin(["C", "P"])]
    assert set(options["asset"]) >= {"NQ", "QNE"} and any(a.startswith("Q") and a.endswith("N") for a in options["asset"])
    row = options[options["raw_symbol"] == "NQZ6 C21000"].iloc[0]
    assert row["strike_price"] == 21000.0 and row["instrument_class"] == "C" and row["underlying"] == "NQZ6"
    # NQZ6 options: AM-settled quarterly, third Friday of December 2026 at 08:30 Chicago.
    assert row["expiration"] == pd.Timestamp("2026-12-18 14:30", tz="UTC")
    assert row["unit_of_measure_qty"] == 20.0
    assert (options["strike_price"] % 25 == 0).all()
    assert (options["symbol"] == options["raw_symbol"]).all()   # metadata mappings give to_df symbols
    kinds = {"weekly": options["asset"].str.match(r"Q\dN").any(), "eom": (options["asset"] == "QNE").any()}
    assert all(kinds.values())


def test_open_interest_statistics(sample_dir, truth):
    day = truth["sessions"][-1].replace("-", "")
    stats = _df(sample_dir / f"glbx-mdp3-{day}.statistics.dbn.zst")
    oi = stats[stats["stat_type"] == 9]
    defs = _df(sample_dir / f"glbx-mdp3-{day}.definition.dbn.zst")
    assert set(oi["instrument_id"]) == set(defs.loc[defs["instrument_class"].isin(["C", "P"]), "instrument_id"])
    assert (oi["quantity"] > 0).all() and oi["quantity"].max() > 1_000


def test_known_strike_volume_matches_trades_file(sample_dir, truth, source):
    day = dt.date.fromisoformat(truth["sessions"][-1])
    raw = _df(sample_dir / f"glbx-mdp3-{day:%Y%m%d}.trades.dbn.zst")
    symbol = raw["symbol"].value_counts().index[1]  # a busy option (index 0 is the future)
    expected = int(raw.loc[raw["symbol"] == symbol, "size"].sum())
    from nqflow import calendar as cal
    row = cal.sessions(day, day).iloc[0]
    tidy = source.trades(row.market_open, row.market_close)
    assert int(tidy.loc[tidy["symbol"] == symbol, "size"].sum()) == expected


def test_intraday_u_shape_heavy_tails_sides_and_black76_prices(source, truth):
    day = dt.date.fromisoformat(truth["sessions"][-2])
    from nqflow import calendar as cal
    row = cal.sessions(day, day).iloc[0]
    trades = source.option_trades(row.market_open, row.market_close)
    ct_hour = trades["ts_event"].dt.tz_convert("America/Chicago").dt.hour
    per_hour = trades.groupby(ct_hour)["size"].sum()
    assert per_hour[8] > 1.5 * per_hour[11] and per_hour[14] > 1.5 * per_hour[11]  # U across regular hours
    assert per_hour[11] > 2 * per_hour[22]                                          # overnight is quiet
    sizes = trades["size"]
    assert sizes.median() <= 2 and sizes.quantile(0.999) >= 30                      # heavy tail
    shares = trades["side"].value_counts(normalize=True)
    assert 0.35 < shares["B"] < 0.55 and 0.35 < shares["A"] < 0.55 and 0.03 < shares["N"] < 0.15
    # Prices sit within a few percent of Black-76 on the smile at the futures price of the moment.
    future = source.underlying(row.market_open, row.market_close).set_index("ts_event")["price"]
    sample = trades[(trades["price"] > 20) & (trades["symbol"].str.startswith("NQZ6"))].head(300)
    fwd = future.reindex(sample["ts_event"], method="ffill").to_numpy()
    years = years_between(sample["ts_event"].astype("int64").to_numpy(), sample["expiration"].astype("int64").to_numpy())
    strike = sample["strike"].to_numpy()
    model = black76(fwd, strike, years, smile_vol(fwd, strike, years), sample["put_call"].to_numpy() == "C", 0.04)
    assert np.median(np.abs(sample["price"].to_numpy() / model - 1)) < 0.03


def test_ground_truth_lists_every_kind_and_quiet_sessions(truth):
    kinds = {e["kind"] for e in truth["events"]}
    assert kinds == {"block", "sweep", "surge_instrument", "surge_product"}
    tiers = {e["tier"] for e in truth["events"] if e["kind"].startswith("surge")}
    assert tiers == {10, 30, 50}
    assert truth["quiet_sessions"] and not [e for e in truth["events"] if e["session"] in truth["quiet_sessions"]]
    premiums = [e["premium_usd"] for e in truth["events"] if e["kind"] == "block"]
    assert min(premiums) < 3e6 < max(premiums) and max(premiums) <= 2.1e7
