"""The generated sample market, read back through databento.DBNStore: values, not just shapes."""

from __future__ import annotations

import datetime as dt
import hashlib
import warnings

import databento as db
import numpy as np
import pandas as pd
import pytest

from nqflow.market.contracts import NQ_POINT_VALUE_USD, years_between
from nqflow.market.pricing import black76, smile_vol
from nqflow.products import NQ_OPTION_PRODUCTS
from nqflow.research.sample.generator import SampleSpec, generate_sample_market

warnings.filterwarnings("ignore")


def _df(path, symbols: bool = False) -> pd.DataFrame:
    """A DBN file read by databento's own `to_df`, as an oracle independent of nqflow's decoder;
    with `symbols`, its symbol column mapped from the file's metadata (nine tenths of the read, a
    second a definition file: only where a test reads that column)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return db.DBNStore.from_file(path).to_df(map_symbols=symbols).reset_index()


def test_same_seed_gives_identical_files(tmp_path):
    spec = SampleSpec(
        n_sessions=2, option_trades_per_session=2_000, future_trades_per_session=300, spreads_per_session=30
    )
    first = generate_sample_market(tmp_path / "a", spec)
    second = generate_sample_market(tmp_path / "b", spec)

    def digests(folder):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.dbn.zst")}

    assert digests(first) == digests(second)
    assert len(digests(first)) == 6
    other = generate_sample_market(
        tmp_path / "c",
        SampleSpec(
            seed=7, n_sessions=2, option_trades_per_session=2_000, future_trades_per_session=300, spreads_per_session=30
        ),
    )
    assert digests(other) != digests(first)


def test_market_has_enough_sessions_and_realistic_size(truth):
    assert len(truth["sessions"]) >= 21
    stats = pd.DataFrame(truth["session_stats"])
    assert (stats["option_trades"] > 15_000).all() and stats["option_trades"].mean() > 25_000  # tens of thousands a day
    assert (stats["listed_options"] > 1_000).all()


def test_planted_block_premium_matches_the_fills_in_the_file(sample_dir, truth):
    block = next(e for e in truth["events"] if e["kind"] == "block" and e["premium_usd"] > 3e6)
    day = block["session"].replace("-", "")
    trades = _df(sample_dir / f"glbx-mdp3-{day}.trades.dbn.zst", symbols=True)
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
    defs = _df(sample_dir / f"glbx-mdp3-{day}.definition.dbn.zst", symbols=True)
    options = defs[defs["instrument_class"].isin(["C", "P"])]
    row = options[options["raw_symbol"] == "NQZ6 C21000"].iloc[0]
    assert row["strike_price"] == 21000.0 and row["instrument_class"] == "C" and row["underlying"] == "NQZ6"
    # NQZ6 options: AM-settled quarterly, third Friday of December 2026 at 08:30 Chicago.
    assert row["expiration"] == pd.Timestamp("2026-12-18 14:30", tz="UTC")
    assert row["unit_of_measure_qty"] == 20.0
    # CME's grids: quarterly and serial NQ options at 25 and 50 points near the money, 100-500 points
    # on far expiries; weeklies and end-of-month at multiples of 10 mixed with 25.
    strike, asset = options["strike_price"], options["asset"]
    quarterly = asset == "NQ"
    assert (strike[quarterly] % 25 == 0).all() and (strike[quarterly] % 50 != 0).any()
    far = quarterly & (options["expiration"] > pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=75))
    assert far.any() and (strike[far] % 100 == 0).all()
    weekly = ~quarterly
    assert (strike[weekly] % 5 == 0).all()
    assert ((strike[weekly] % 10 == 0) & (strike[weekly] % 25 != 0)).any()  # the 10s ...
    assert ((strike[weekly] % 25 == 0) & (strike[weekly] % 10 != 0)).any()  # ... mixed with the 25s
    assert (options["symbol"] == options["raw_symbol"]).all()  # metadata mappings give to_df symbols
    # Real CME format: <product><month><year> <C|P><strike>, the product in `asset`.
    assert options["raw_symbol"].str.fullmatch(r"(NQ|QNE|QN[1-4]|Q[1-5][A-D])[FGHJKMNQUVXZ]\d [CP]\d+").all()
    assert (options["raw_symbol"].str.split(" ").str[0].str[:-2] == options["asset"]).all()


@pytest.mark.slow
def test_every_product_family_is_listed_on_its_real_schedule(sample_dir, truth):
    products, expiries = set(), {}
    for day in truth["sessions"]:
        defs = _df(sample_dir / f"glbx-mdp3-{day.replace('-', '')}.definition.dbn.zst")
        options = defs[defs["instrument_class"].isin(["C", "P"])]
        products |= set(options["asset"])
        for asset, expiration in options.groupby("asset")["expiration"].unique().items():
            expiries.setdefault(asset, set()).update(pd.Timestamp(e) for e in expiration)
    assert products <= set(NQ_OPTION_PRODUCTS) and len(products) >= 22
    assert {"NQ", "QNE", "QN1", "QN2", "QN4", "Q1A", "Q2B", "Q3C", "Q4D", "Q5D"} <= products
    chicago = "America/Chicago"
    for code, weekday in (("Q", None), ("A", 0), ("B", 1), ("C", 2), ("D", 3)):
        for asset in [p for p in products if len(p) == 3 and p[0] == "Q" and p[2] == code and p[1].isdigit()]:
            days = {e.tz_convert(chicago) for e in expiries[asset]}
            assert {d.weekday() for d in days} == {weekday}, asset
            assert all(d.day // 7 + (d.day % 7 > 0) == int(asset[1]) for d in days), asset  # n-th weekday of the month
    assert {e.tz_convert(chicago).weekday() for p in ("QN1", "QN2", "QN4") for e in expiries[p]} == {4}
    # End of month: the last business day, 15:00 CT (October 30 and November 30, 2026).
    assert {e.tz_convert(chicago).strftime("%m-%d %H:%M") for e in expiries["QNE"]} >= {"10-30 15:00", "11-30 15:00"}
    # A weekly that would expire on the end-of-month day is not listed (QNE covers it).
    assert not any(
        e.tz_convert(chicago).date() == dt.date(2026, 10, 30) for p in products if p != "QNE" for e in expiries[p]
    )


def test_zero_and_one_dte_carry_most_of_the_volume(truth):
    stats = pd.DataFrame(truth["session_stats"])
    assert stats["zero_dte_contract_share"].median() > 0.3
    assert stats["one_dte_or_less_contract_share"].median() > 0.5


def test_sessions_span_the_dst_change_and_the_thanksgiving_half_days(truth):
    from nqflow.market import hours as cal

    sessions = [dt.date.fromisoformat(d) for d in truth["sessions"]]
    assert sessions[0] <= dt.date(2026, 10, 30) and sessions[-1] == dt.date(2026, 11, 27)
    opens = {
        d: cal.sessions(d, d).iloc[0] for d in (dt.date(2026, 10, 30), dt.date(2026, 11, 2), dt.date(2026, 11, 27))
    }
    assert opens[dt.date(2026, 10, 30)].market_open.hour == 22 and opens[dt.date(2026, 11, 2)].market_open.hour == 23
    assert opens[dt.date(2026, 11, 27)].market_close == pd.Timestamp("2026-11-27 18:00", tz="UTC")  # 12:00 CT


def test_spreads_have_leg_definitions_and_print_with_their_legs(sample_dir, truth):
    day = truth["sessions"][-1].replace("-", "")
    defs = _df(sample_dir / f"glbx-mdp3-{day}.definition.dbn.zst")
    spreads = defs[defs["instrument_class"].isin(["T", "M"])]
    with_legs = spreads[spreads["leg_count"] > 0]
    assert len(with_legs) and (spreads["leg_count"] == 0).any()  # some feeds carry no legs
    assert (with_legs.groupby("instrument_id").size() == with_legs.groupby("instrument_id")["leg_count"].first()).all()
    assert set(with_legs["leg_side"]) == {"B", "A"}
    assert spreads["raw_symbol"].str.fullmatch(r"UD:2V: (VT|GN|RR|BO|IC|CO) \d+").all()  # CME's names
    assert (spreads["instrument_class"] == "M").any()  # covered: options against futures
    trades = _df(sample_dir / f"glbx-mdp3-{day}.trades.dbn.zst")
    prints = trades[trades["instrument_id"].isin(with_legs["instrument_id"])]
    assert len(prints) and set(prints["side"]) <= {"B", "A"}
    every_print = trades[trades["instrument_id"].isin(spreads["instrument_id"])]
    assert 0.15 < (every_print["price"] < 0).mean() < 0.4  # about a quarter are credits, printed negative
    for spread in prints.head(50).itertuples():
        legs = with_legs[with_legs["instrument_id"] == spread.instrument_id]
        at = trades[(trades["ts_event"] == spread.ts_event) & trades["instrument_id"].isin(legs["leg_instrument_id"])]
        sizes = at.groupby("instrument_id")["size"].sum()
        ratios = legs.set_index("leg_instrument_id")["leg_ratio_qty_numerator"]
        assert (sizes.reindex(ratios.index) == ratios * spread.size).all()


def test_next_day_statistics_carry_settlement_and_cleared_volume(sample_dir, truth):
    first, second = (d.replace("-", "") for d in truth["sessions"][-3:-1])
    stats = _df(sample_dir / f"glbx-mdp3-{second}.statistics.dbn.zst")
    assert {3, 6, 9} <= set(stats["stat_type"])
    cleared = stats[stats["stat_type"] == 6]
    assert (cleared["ts_ref"] == pd.Timestamp(truth["sessions"][-3], tz="UTC")).all()
    trades = _df(sample_dir / f"glbx-mdp3-{first}.trades.dbn.zst")
    defs = _df(sample_dir / f"glbx-mdp3-{first}.definition.dbn.zst")
    options = trades[trades["instrument_id"].isin(defs.loc[defs["instrument_class"].isin(["C", "P"]), "instrument_id"])]
    screen = options.groupby("instrument_id")["size"].sum()
    # cleared = screen volume, plus the contracts of any off-book trade planted that session
    planted = {
        i: size
        for e in truth["events"]
        if e["kind"] == "off_book" and e["session"] == truth["sessions"][-3]
        for i, size in zip(e["instrument_ids"], e["sizes"])
    }
    expected = screen.add(pd.Series(planted, dtype="int64"), fill_value=0)
    assert cleared.set_index("instrument_id")["quantity"].reindex(expected.index).eq(expected).all()


def test_open_interest_statistics(sample_dir, truth, source):
    day = truth["sessions"][-1].replace("-", "")
    stats = _df(sample_dir / f"glbx-mdp3-{day}.statistics.dbn.zst")
    oi = stats[stats["stat_type"] == 9]
    defs = _df(sample_dir / f"glbx-mdp3-{day}.definition.dbn.zst")
    assert set(oi["instrument_id"]) == set(defs.loc[defs["instrument_class"].isin(["C", "P"]), "instrument_id"])
    assert (oi["quantity"] >= 0).all() and oi["quantity"].max() > 1_000
    # Some options' open interest comes twice in a morning (a preliminary figure, then the final):
    # the last one counts, and the source gives only that one.
    repeated = oi.groupby("instrument_id").size()
    assert (repeated == 2).any() and repeated.max() == 2
    twice = repeated.index[repeated == 2][0]
    final = oi[oi["instrument_id"] == twice].sort_values("ts_recv")["quantity"].iloc[-1]
    read = source.open_interest(dt.date.fromisoformat(truth["sessions"][-1]))
    assert read.set_index("instrument_id").loc[twice, "open_interest"] == final and read["instrument_id"].is_unique


def test_open_interest_follows_the_planted_positions(source, truth):
    """A planted trade that opened positions raises its options' next-morning open interest by
    about its size, one that closed them lowers it: the ground truth of the confirmations."""
    sessions = [dt.date.fromisoformat(d) for d in truth["sessions"]]
    checked = 0
    for event in truth["events"]:
        if event.get("position") not in ("opening", "closing") or event["kind"] == "strategy":
            continue
        day = dt.date.fromisoformat(event["session"])
        if day == sessions[-1]:
            continue
        after = source.open_interest(sessions[sessions.index(day) + 1]).set_index("instrument_id")["open_interest"]
        before = source.open_interest(day).set_index("instrument_id")["open_interest"]
        change = float((after.reindex(event["instrument_ids"]) - before.reindex(event["instrument_ids"])).sum())
        sign = 1 if event["position"] == "opening" else -1
        assert sign * change >= 0.5 * event["size"], event["event_id"]
        checked += 1
    assert checked >= 20


def test_trade_records_look_like_the_real_feed(sample_dir, truth):
    """flags 0 on some days (as on real records), F_LAST on the others; ts_in_delta 12-15 µs."""
    flags = {}
    for day in truth["sessions"][:8]:
        trades = db.DBNStore.from_file(sample_dir / f"glbx-mdp3-{day.replace('-', '')}.trades.dbn.zst").to_ndarray()
        flags[day] = set(np.unique(trades["flags"]).tolist())
        assert 12_000 <= trades["ts_in_delta"].min() and trades["ts_in_delta"].max() <= 15_000
    assert {frozenset(f) for f in flags.values()} == {frozenset({0}), frozenset({128})}


def test_known_strike_volume_matches_trades_file(sample_dir, truth, source):
    day = dt.date.fromisoformat(truth["sessions"][-1])
    raw = _df(sample_dir / f"glbx-mdp3-{day:%Y%m%d}.trades.dbn.zst", symbols=True)
    symbol = raw["symbol"].value_counts().index[1]  # a busy option (index 0 is the future)
    expected = int(raw.loc[raw["symbol"] == symbol, "size"].sum())
    from nqflow.market import hours as cal

    row = cal.sessions(day, day).iloc[0]
    tidy = source.trades(row.market_open, row.market_close)
    assert int(tidy.loc[tidy["symbol"] == symbol, "size"].sum()) == expected


def test_intraday_u_shape_heavy_tails_sides_and_black76_prices(source, truth):
    day = dt.date.fromisoformat(truth["sessions"][-4])  # a whole day (the last two are half days)
    from nqflow.market import hours as cal

    row = cal.sessions(day, day).iloc[0]
    trades = source.option_trades(row.market_open, row.market_close)
    ct_hour = trades["ts_event"].dt.tz_convert("America/Chicago").dt.hour
    per_hour = trades.groupby(ct_hour)["size"].sum()
    assert per_hour[8] > 1.5 * per_hour[11] and per_hour[14] > 1.5 * per_hour[11]  # U across regular hours
    assert per_hour[11] > 2 * per_hour[22]  # overnight is quiet
    sizes = trades["size"]
    assert sizes.median() <= 2 and sizes.quantile(0.999) >= 30  # heavy tail
    shares = trades["side"].value_counts(normalize=True)
    assert 0.35 < shares["B"] < 0.55 and 0.35 < shares["A"] < 0.55 and 0.03 < shares["N"] < 0.15
    # Prices sit within a few percent of Black-76 on the smile at the futures price of the moment.
    future = source.underlying(row.market_open, row.market_close).set_index("ts_event")["price"]
    sample = trades[(trades["price"] > 20) & (trades["symbol"].str.startswith("NQZ6"))].head(300)
    fwd = future.reindex(sample["ts_event"], method="ffill").to_numpy()
    years = years_between(
        sample["ts_event"].astype("int64").to_numpy(), sample["expiration"].astype("int64").to_numpy()
    )
    strike = sample["strike"].to_numpy()
    model = black76(fwd, strike, years, smile_vol(fwd, strike, years), sample["put_call"].to_numpy() == "C", 0.04)
    assert np.median(np.abs(sample["price"].to_numpy() / model - 1)) < 0.03


def test_ground_truth_lists_every_kind_and_quiet_sessions(truth):
    kinds = {e["kind"] for e in truth["events"]}
    assert kinds == {
        "block",
        "sweep",
        "strategy",
        "worked",
        "two_sided",
        "surge_instrument",
        "surge_expiry",
        "surge_product",
        "off_book",
    }
    worked = [e for e in truth["events"] if e["kind"] == "worked"]
    assert {e["side"] for e in worked} == {"B", "A"} and len(worked) >= 8
    for e in worked:  # worked across a window edge: the alert's window is a later one than the first child's
        assert (
            pd.Timestamp(e["first_time"]).floor("15min")
            < pd.Timestamp(e["window_start"])
            <= pd.Timestamp(e["last_time"])
        )
        assert e["children"] >= 12 and e["premium_usd"] >= 3e6 > e["premium_usd"] / e["children"]
    decoys = [e for e in truth["events"] if e["kind"] == "two_sided"]
    assert len(decoys) >= 4 and all(
        0.3 < e["bought_premium_usd"] / e["premium_usd"] < 0.6 and e["premium_usd"] > 3e6 for e in decoys
    )
    positions = {e.get("position") for e in truth["events"] if e["kind"] in ("block", "sweep", "strategy", "worked")}
    assert positions == {"opening", "closing", "unknown"}  # unknown: a 0DTE trade expires before the next morning
    off_book = [e for e in truth["events"] if e["kind"] == "off_book"]
    assert {e["strategy"] for e in off_book if e["package"]} == {"vertical", "calendar"}
    assert min(e["premium_usd"] for e in off_book) < 3e6 < max(e["premium_usd"] for e in off_book)
    assert all(sum(e["sizes"]) == e["size"] and e["opening"] for e in off_book)
    strategies = [e for e in truth["events"] if e["kind"] == "strategy"]
    assert {e["strategy"] for e in strategies} == {"vertical", "covered", "risk_reversal", "calendar"}
    assert any(not e["legs_in_definition"] for e in strategies)
    assert all(abs(e["net_delta_share"]) < 0.05 for e in strategies if e["sentiment"] == "VOLATILITY")
    assert any(e["kind"] == "block" and e["zero_dte"] and e["premium_usd"] > 3e6 for e in truth["events"])
    assert any(e["kind"] == "surge_expiry" and e["expiry"] == "0DTE" for e in truth["events"])
    tiers = {e["tier"] for e in truth["events"] if e["kind"].startswith("surge")}
    assert tiers == {10, 30, 50}
    assert truth["quiet_sessions"] and not [e for e in truth["events"] if e["session"] in truth["quiet_sessions"]]
    premiums = [e["premium_usd"] for e in truth["events"] if e["kind"] == "block"]
    assert min(premiums) < 3e6 < max(premiums) and max(premiums) <= 2.1e7


@pytest.mark.slow
def test_any_number_of_sessions_is_generated_deterministically(tmp_path):
    """`scheduler.py sample --sessions N --out DIR`: the same bytes every time, N sessions of files."""
    import json
    import subprocess
    import sys

    from nqflow.paths import REPO_ROOT

    digests = []
    for name in ("a", "b"):
        done = subprocess.run(
            [sys.executable, "scheduler.py", "sample", "--sessions", "3", "--out", str(tmp_path / name)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        files = sorted((tmp_path / name).glob("*.dbn.zst"))
        digests.append({f.name: hashlib.sha1(f.read_bytes()).hexdigest() for f in files})
    assert digests[0] == digests[1] and len(digests[0]) == 3 * 3  # trades, definitions, statistics per session
    assert len(json.loads((tmp_path / "a" / "ground_truth.json").read_text())["sessions"]) == 3
    bad = subprocess.run(
        [sys.executable, "scheduler.py", "sample", "--sessions", "1", "--out", str(tmp_path / "c")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--sessions must be at least 2" in bad.stderr


@pytest.mark.slow
def test_another_session_count_never_replaces_the_replay_folder(tmp_path):
    """`scheduler.py sample --sessions N` without --out writes beside the replay folder
    (``<replay_dir>-N``): the bundled sample the demo and the tests read is left as it was."""
    import subprocess
    import sys

    from nqflow.paths import REPO_ROOT

    replay = tmp_path / "sample"
    replay.mkdir()
    (replay / "keep.txt").write_text("the bundled sample")
    done = subprocess.run(
        [sys.executable, "scheduler.py", "--data-dir", str(replay), "sample", "--sessions", "2"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"sample market ready in {tmp_path / 'sample-2'}"
    assert sorted(p.name for p in replay.iterdir()) == ["keep.txt"]
    assert len(list((tmp_path / "sample-2").glob("*.dbn.zst"))) == 2 * 3


@pytest.mark.slow
def test_the_front_future_rolls_and_options_list_on_their_own_quarterly(tmp_path):
    """A range across the December 2026 roll: NQZ6 is the front until its roll date (10 December),
    NQH7 from then, at its carry over NQZ6; NQZ6 delists after its 18 December expiry; every option
    exercises into the quarterly CME names for its expiry; the engine's window future follows."""
    from nqflow.market import hours as cal
    from nqflow.market.contracts import roll_date, underlying_future
    from nqflow.market.frames import future_fills, load_window
    from nqflow.research.sample.generator import CARRY
    from nqflow.sources.replay import ReplaySource

    spec = SampleSpec(
        first_trade_date=dt.date(2026, 12, 9),
        n_sessions=9,
        option_trades_per_session=4_000,
        future_trades_per_session=2_000,
        spreads_per_session=40,
        quiet_sessions=(),
        product_surges={},
        zero_dte_surges={},
        off_book={},
        baseline_sessions=2,
    )
    source = ReplaySource(generate_sample_market(tmp_path / "roll", spec))
    assert roll_date(dt.date(2026, 12, 18)) == dt.date(2026, 12, 10)
    fronts, ratios = {}, []
    for day in source.sessions_available():
        row = cal.sessions(day, day).iloc[0]
        futures = future_fills(source.trades(row.market_open, row.market_close))
        by_volume = futures.groupby("symbol")["size"].sum()
        fronts[day] = by_volume.idxmax()
        assert by_volume.max() > 0.95 * by_volume.sum()  # one front; others only as package legs
        # NQZ6 legs of covered packages beside NQH7 prints of the same minute: the carry apart
        z, h = (futures[futures["symbol"] == s].set_index("ts_event")["price"] for s in ("NQZ6", "NQH7"))
        if len(z) and len(h):
            near = h.reindex(z.index, method="nearest")
            close_in_time = np.abs(h.index[h.index.get_indexer(z.index, method="nearest")] - z.index) < pd.Timedelta(
                "1min"
            )
            ratios += list((near / z)[close_in_time])
        chain = source.chain(day)
        listed = set(chain.loc[chain["instrument_class"] == "F", "symbol"])
        assert ("NQZ6" in listed) == (day <= dt.date(2026, 12, 18)), day
        options = chain[chain["put_call"].isin(["C", "P"])]
        quarterly_am = options["symbol"].str.startswith("NQ")  # AM quarterlies exercise into their own quarter
        want = [
            underlying_future(expiry.tz_convert("America/Chicago").date(), bool(am))
            for expiry, am in zip(options["expiration"], quarterly_am)
        ]
        assert (options["underlying"].to_numpy() == np.array(want)).all(), day
    days = sorted(fronts)
    assert [fronts[d] for d in days] == ["NQZ6"] + ["NQH7"] * (len(days) - 1)
    assert len(ratios) >= 5 and abs(np.median(ratios) / CARRY["NQH7"] - 1) < 0.001
    roll_day = cal.sessions(days[1], days[1]).iloc[0]
    start = roll_day.market_open + pd.Timedelta(hours=15)
    window = load_window(source, start, start + pd.Timedelta(minutes=15))
    assert set(window.underlying["symbol"]) == {"NQH7"}
