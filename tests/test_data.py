"""The replay data source: real Databento files, the sample market, and bad input."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import databento_dbn as dbn
import numpy as np
import pandas as pd
import pytest

from nqflow.engine.monitor import load_session
from nqflow.errors import DataError, NqflowError
from nqflow.market import hours as cal
from nqflow.market.frames import (
    classify_fills,
    front_future,
    front_futures,
    future_fills,
    load_window,
    option_fills,
    stack_cut,
    tidy_trades,
    window_from,
)
from nqflow.sources.dbn import read_dbn
from nqflow.sources.replay import ReplaySource


def test_reads_real_databento_glbx_files(shared_samples, tmp_path):
    folder = tmp_path / "glbx"
    shutil.copytree(shared_samples / "GLBX.MDP3", folder)
    source = ReplaySource(folder)
    assert {f.schema for f in source.files} == {"trades", "definition", "statistics"}
    chain = source.chain(dt.date(2020, 12, 28))
    es = chain.set_index("symbol").loc["ESH1"]
    assert es["instrument_id"] == 5482 and es["instrument_class"] == "F"
    # contract_multiplier is undefined in the real file: the size comes from unit_of_measure_qty.
    assert es["multiplier"] == 50.0 and es["multiplier_source"] == "unit_of_measure_qty"
    assert es["expiration"] == pd.Timestamp("2021-03-19 13:30", tz="UTC")
    trades = source.trades("2020-12-27T00:00Z", "2020-12-29T00:00Z")
    assert len(trades) > 0 and set(trades["symbol"]) == {"ESH1"}
    first = trades.iloc[0]
    assert first["price"] == pytest.approx(3702.75) or first["price"] > 3000
    assert first["premium_usd"] == pytest.approx(first["price"] * first["size"] * 50.0)
    assert trades["ts_event"].dt.tz is not None
    assert source.option_trades("2020-12-27T00:00Z", "2020-12-29T00:00Z").empty  # a future, not an option


def test_real_statistics_file_has_no_open_interest_and_says_so_with_an_empty_frame(shared_samples):
    source = ReplaySource(shared_samples / "GLBX.MDP3")
    oi = source.open_interest(dt.date(2020, 12, 28))
    assert oi.empty and list(oi.columns) == ["instrument_id", "open_interest", "ts_event"]


def test_window_loads_typed_frames_from_the_sample(source, truth):
    event = next(e for e in truth["events"] if e["kind"] == "block")
    window = load_window(source, event["window_start"], event["window_end"])
    assert not window.empty and window.trade_date == dt.date.fromisoformat(event["session"])
    trades = window.trades
    assert str(trades["ts_event"].dtype) == "datetime64[ns, UTC]"
    assert trades["ts_event"].min() >= pd.Timestamp(event["window_start"])
    assert trades["ts_event"].max() < pd.Timestamp(event["window_end"])
    assert set(trades["put_call"]) <= {"C", "P"} and set(trades["side"]) <= {"B", "A", "N"}
    assert (trades["premium_usd"] == trades["price"] * trades["size"] * 20.0).all()
    assert event["instrument_ids"][0] in set(trades["instrument_id"])
    assert window.open_interest["open_interest"].gt(0).all() and len(window.underlying) > 0


def test_window_decodes_only_the_overlapping_files(sample_dir):
    source = ReplaySource(sample_dir)
    load_window(source, "2026-10-30T14:00:00Z", "2026-10-30T14:15:00Z")
    decoded = {p.name for p in source._cache}
    assert decoded and all("20261030" in name or "20261029" in name for name in decoded)
    assert len(decoded) <= 4


def test_empty_window_is_flagged_not_raised(source):
    window = load_window(source, "2026-10-03T14:00:00Z", "2026-10-03T14:15:00Z")  # a Saturday
    assert window.empty and "market closed" in window.notes[0]
    window = load_window(source, "2026-10-30T20:45:00Z", "2026-10-30T21:00:00Z")  # last slot before the halt
    assert not window.empty


def test_missing_folder_error_names_the_folder(tmp_path):
    with pytest.raises(DataError, match=r"replay folder .*nowhere does not exist"):
        ReplaySource(tmp_path / "nowhere")


def test_corrupt_and_truncated_files_are_named(sample_dir, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    good = sorted(sample_dir.glob("*.trades.dbn.zst"))[0]
    data = good.read_bytes()
    (folder / "truncated.trades.dbn.zst").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=r"truncated DBN file .*truncated\.trades\.dbn\.zst"):
        read_dbn(folder / "truncated.trades.dbn.zst")
    # a download is checked before it is renamed into place, by its bytes, not its name
    from nqflow.sources.dbn import check_complete_dbn

    (folder / ".pull.a1b2.part").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=r"truncated DBN file .*\.pull\.a1b2\.part"):
        check_complete_dbn(folder / ".pull.a1b2.part")
    (folder / "whole.part").write_bytes(data)
    check_complete_dbn(folder / "whole.part")
    (folder / "garbage.dbn").write_bytes(b"not a dbn file at all" * 10)
    with pytest.raises(DataError, match=r"garbage\.dbn"):
        ReplaySource(folder)


def _dbn_metadata(schema, **fields) -> dbn.Metadata:
    """A DBN stream's metadata for a minute of GLBX.MDP3 in `schema` (raw symbols in, instrument
    ids out, no symbols or mappings unless `fields` give them)."""
    base = dict(symbols=[], partial=[], not_found=[], mappings=[])
    return dbn.Metadata(
        dataset="GLBX.MDP3",
        start=0,
        end=60_000_000_000,
        stype_in=dbn.SType.RAW_SYMBOL,
        stype_out=dbn.SType.INSTRUMENT_ID,
        schema=schema,
        **{**base, **fields},
    )


def test_dbn_records_are_read_past_the_symbology_as_dbnstore_reads_them(sample_dir, tmp_path):
    """A DBN file's records are read after its fixed metadata fields, its symbology mappings never
    decoded (DBNStore makes Python objects of 3.9 MB of them a day, 11 ms a file): the same
    records as `DBNStore.to_ndarray`, byte for byte, for each schema the sample holds and each
    DBN version; a stream of records with their send times still reads through DBNStore."""
    import io

    import databento as db

    from nqflow.sources.dbn import _decompressed, _fixed_header, read_dbn_records

    def dbnstore(data: bytes):
        return db.DBNStore.from_bytes(io.BytesIO(data)).to_ndarray().reshape(-1)

    paths = sorted(sample_dir.glob("glbx-mdp3-20261030.*.dbn.zst"))
    assert len(paths) == 3  # trades, definitions, statistics
    for path in paths:
        records, schema = read_dbn_records(path)
        data = b"".join(_decompressed(path, [path.read_bytes()]))
        assert _fixed_header(data) is not None and schema in path.name
        assert records.dtype == dbnstore(data).dtype and records.tobytes() == dbnstore(data).tobytes()
    trades = [dbn.TradeMsg(1, 42 + i, 1_000 + i, 21_000_250_000_000, 3, dbn.Action.TRADE, dbn.Side.BID, 0, 1_001 + i)
              for i in range(3)]  # fmt: skip
    for version, ts_out in ((1, False), (2, False), (3, False), (3, True)):
        meta = _dbn_metadata(dbn.Schema.TRADES, symbols=["NQZ6"], ts_out=ts_out, version=version)
        data = bytes(meta) + b"".join(bytes(t) for t in trades)
        path = tmp_path / f"v{version}-{ts_out}.trades.dbn"
        path.write_bytes(data)
        assert (_fixed_header(data) is None) == ts_out  # DBNStore reads what this does not
        records, schema = read_dbn_records(path, "trades")
        assert schema == "trades" and records.tobytes() == dbnstore(data).tobytes() and len(records) == 3


def test_unexpected_schema_is_a_clear_error(tmp_path):
    meta = _dbn_metadata(dbn.Schema.OHLCV_1M)
    bar = dbn.OHLCVMsg(0x21, 1, 1, 0, 0, 0, 0, 0, 0)
    path = tmp_path / "bars.dbn"
    path.write_bytes(bytes(meta) + bytes(bar))
    with pytest.raises(DataError, match=r"bars\.dbn holds schema 'ohlcv-1m', expected 'trades'"):
        read_dbn(path, "trades")
    with pytest.raises(DataError, match="holds no .dbn"):  # the only file is of a schema replay ignores
        ReplaySource(tmp_path)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("2026-10-30 14:00", "has no timezone"),
        ("yesterday-ish", "cannot parse timestamp"),
    ],
)
def test_naive_or_malformed_timestamps(source, bad, message):
    with pytest.raises(NqflowError, match=message):
        load_window(source, bad, "2026-10-30T14:15:00Z")


def test_end_before_start_is_rejected(source):
    with pytest.raises(DataError, match="is not after start"):
        load_window(source, "2026-10-30T14:15:00Z", "2026-10-30T14:00:00Z")


def test_fills_without_a_definition_are_left_out_and_said(source):
    """An option with no definition has no multiplier, strike or class: its fills are neither
    options nor the underlying (they used to pass for futures), and the window says so."""
    day = dt.date(2026, 10, 30)
    start, end = pd.Timestamp("2026-10-30T15:00Z"), pd.Timestamp("2026-10-30T15:15Z")
    full = source.trades(start, end)
    busiest = int(option_fills(full)["size"].groupby(option_fills(full)["instrument_id"]).sum().idxmax())
    chain = source.chain(day)
    partial = chain[chain["instrument_id"] != busiest]
    fills = tidy_trades(full[["ts_event", "instrument_id", "price", "size", "side"]], partial)
    window = window_from(start, end, day, fills, partial, source.open_interest(day))
    dropped = int((full["instrument_id"] == busiest).sum())
    assert busiest not in set(window.trades["instrument_id"]) and busiest not in set(
        future_fills(fills)["instrument_id"]
    )
    assert len(window.trades) == len(option_fills(full)) - dropped
    assert window.underlying["instrument_id"].nunique() == 1 and window.underlying["symbol"].iloc[0].startswith("NQ")
    note = next(n for n in window.notes if "without a definition" in n)
    assert f"{dropped:,} fills on 1 instrument(s)" in note and str(busiest) in note and "2026-10-30" in note


def test_fills_come_out_in_time_then_instrument_order_whatever_order_they_arrive_in(source):
    """A DBN file's trades arrive in time order and are kept as they are; trades from elsewhere (a
    live batch, a merged range) in any order are put in the same order, ties kept as they came."""
    import pandas.testing as pdt

    start, end = pd.Timestamp("2026-10-30T15:00Z"), pd.Timestamp("2026-10-30T15:15Z")
    raw = source.trades(start, end)[["ts_event", "instrument_id", "price", "size", "side"]].reset_index(drop=True)
    chain = source.chain(dt.date(2026, 10, 30))
    in_order = tidy_trades(raw, chain)
    times = in_order["ts_event"]
    assert len(in_order) > 100 and times.is_monotonic_increasing
    assert in_order.duplicated(["ts_event", "instrument_id"]).any()  # ties, whose order must hold
    shuffled = raw.sample(frac=1.0, random_state=7)
    out_of_order = tidy_trades(shuffled, chain)
    expected = tidy_trades(shuffled.sort_values(["ts_event", "instrument_id"], kind="stable"), chain)
    pdt.assert_frame_equal(out_of_order, expected)
    pdt.assert_frame_equal(
        out_of_order.drop(columns=["price", "size", "side", "premium_usd"]),
        in_order.drop(columns=["price", "size", "side", "premium_usd"]),
    )


def test_a_days_instrument_table_is_built_once_and_rebuilt_when_its_files_change(sample_dir, tmp_path):
    """Every window's notebook is a new process: the chain and spread legs a process builds from a
    day's definitions are kept beside the data and read back equal, dtype for dtype; a changed
    definition file names a new table."""
    import os

    import pandas.testing as pdt

    from nqflow.sources.replay import INSTRUMENTS_DIR

    folder = tmp_path / "two-days"
    folder.mkdir()
    for path in sorted(sample_dir.glob("glbx-mdp3-2026102[67].*.dbn.zst")):
        shutil.copy(path, folder / path.name)
    day = dt.date(2026, 10, 27)
    first = ReplaySource(folder)
    built = first.chain(day), first.spread_legs(day)
    tables = sorted((folder / INSTRUMENTS_DIR).iterdir())
    assert len(tables) >= 1 and all((t / "chain.parquet").exists() for t in tables)
    assert len(built[0]) > 10_000 and len(built[1]) > 100
    again = ReplaySource(folder)
    again._decoded = None  # a kept table is read, not built: decoding the definitions would fail here
    pdt.assert_frame_equal(again.chain(day), built[0])
    pdt.assert_frame_equal(again.spread_legs(day), built[1])
    definition = folder / "glbx-mdp3-20261027.definition.dbn.zst"
    os.utime(definition, ns=(definition.stat().st_atime_ns, definition.stat().st_mtime_ns + 10**9))
    changed = ReplaySource(folder)
    pdt.assert_frame_equal(changed.chain(day), built[0])
    assert len(list((folder / INSTRUMENTS_DIR).iterdir())) == len(tables) + 1


def test_several_days_instrument_tables_combine_as_their_definitions_would(sample_dir):
    """A session's trades are joined with the chain of two days' definition files: built from each
    file's kept table, it equals the chain and legs built from both files' records at once, with
    an instrument redefined on the second day taking that day's fields (latest definition wins)."""
    import pandas.testing as pdt

    from nqflow.market.frames import chain_from_definitions, legs_from_definitions
    from nqflow.sources.dbn import read_dbn
    from nqflow.sources.replay import combine_instrument_tables, instrument_tables

    paths = sorted(sample_dir.glob("glbx-mdp3-2026102[67].definition.dbn.zst"))
    first, second = (read_dbn(p) for p in paths)
    # Redefine one option on the second day, later than any record of the first: its new strike wins.
    redefined = second[second["instrument_class"].astype(str) == "C"].head(1).copy()
    redefined["strike_price"] = 12_345.0
    redefined["ts_recv"] = first["ts_recv"].max() + pd.Timedelta(hours=30)
    second = pd.concat([second, redefined], ignore_index=True)
    records = pd.concat([first, second], ignore_index=True)
    chain, legs = combine_instrument_tables([instrument_tables(first), instrument_tables(second)])
    pdt.assert_frame_equal(chain, chain_from_definitions(records))
    pdt.assert_frame_equal(legs, legs_from_definitions(records))
    assert chain.loc[chain["instrument_id"] == redefined["instrument_id"].iloc[0], "strike"].item() == 12_345.0
    assert len(chain) > len(chain_from_definitions(first)) and len(legs) > 100
    one = combine_instrument_tables([instrument_tables(first)])
    pdt.assert_frame_equal(one[0], chain_from_definitions(first))
    pdt.assert_frame_equal(one[1], legs_from_definitions(first))


def test_a_days_instrument_tables_reuse_the_day_befores_rows_and_equal_tables_built_whole(sample_dir):
    """Each day's tables built from the day before's (#26: only new or changed definitions built)
    equal the tables built from all of the day's records, dtype for dtype, over consecutive days;
    a definition changed overnight is built again, and an instrument no longer sent is gone."""
    import pandas.testing as pdt

    from nqflow.sources.dbn import DECODED_FIELDS, frame_from_records, read_dbn, read_dbn_records
    from nqflow.sources.replay import instrument_tables, instrument_tables_from_records

    paths = sorted(sample_dir.glob("*.definition.dbn.zst"))[:5]
    previous, reused = None, []
    for path in paths:
        built = instrument_tables_from_records(read_dbn_records(path, "definition")[0], previous)
        chain, legs = instrument_tables(read_dbn(path))
        pdt.assert_frame_equal(built.chain, chain)
        pdt.assert_frame_equal(built.legs, legs)
        reused.append(built.reused / (len(chain) + len(legs)))
        previous = built
    assert reused[0] == 0 and min(reused[1:]) > 0.5, reused  # most of a day is the day before's

    # The next day with one option's strike changed and another option no longer sent.
    records = read_dbn_records(paths[-1], "definition")[0].copy()
    options = np.flatnonzero(records["instrument_class"] == b"C")
    changed, dropped = records["instrument_id"][options[0]], records["instrument_id"][options[1]]
    records["strike_price"][records["instrument_id"] == changed] = 12_345 * 10**9
    records = records[records["instrument_id"] != dropped]
    built = instrument_tables_from_records(records, previous)
    chain, legs = instrument_tables(frame_from_records(records, DECODED_FIELDS["definition"]))
    pdt.assert_frame_equal(built.chain, chain)
    pdt.assert_frame_equal(built.legs, legs)
    assert built.chain.loc[built.chain["instrument_id"] == changed, "strike"].item() == 12_345.0
    assert dropped not in set(built.chain["instrument_id"]) and dropped in set(previous.chain["instrument_id"])
    # A file of no records (a day with nothing defined yet) after it, and a day after that one.
    nothing = instrument_tables_from_records(records[:0], built)
    empty_chain, empty_legs = instrument_tables(frame_from_records(records[:0], DECODED_FIELDS["definition"]))
    pdt.assert_frame_equal(nothing.chain, empty_chain)
    pdt.assert_frame_equal(nothing.legs, empty_legs)
    pdt.assert_frame_equal(instrument_tables_from_records(records, nothing).chain, chain)


def test_session_of_and_window_is_open_agree_with_the_exchange_calendar_at_every_instant():
    from nqflow.market import hours as cal

    # The definition: a frame of the CME_Equity sessions around New Year 2026 and Thanksgiving.
    schedule = cal.sessions(dt.date(2025, 12, 15), dt.date(2027, 1, 15))
    opens = schedule["market_open"].to_numpy(dtype="datetime64[ns]")
    closes = schedule["market_close"].to_numpy(dtype="datetime64[ns]")
    instants = [
        *pd.date_range("2025-12-22", "2026-01-06", freq="7min", tz="UTC"),
        *pd.date_range("2026-11-24", "2026-11-30", freq="7min", tz="UTC"),
        *pd.date_range("2026-12-28", "2027-01-05", freq="7min", tz="UTC"),
        *[t + pd.Timedelta(ns) for t in (*schedule["market_open"], *schedule["market_close"]) for ns in (-1, 0)],
    ]
    assert len(instants) > 7000
    for ts in instants:
        inside = (opens <= ts.tz_convert(None).to_datetime64()) & (ts.tz_convert(None).to_datetime64() < closes)
        found = cal.session_of(ts)
        if inside.any():
            day = schedule.index[inside.argmax()]
            assert found == (day, schedule.loc[day, "market_open"], schedule.loc[day, "market_close"]), ts
        else:
            assert found is None, ts
        end = ts + pd.Timedelta(minutes=15)
        overlaps = (opens < end.tz_convert(None).to_datetime64()) & (closes > ts.tz_convert(None).to_datetime64())
        assert cal.window_is_open(ts, end) == bool(overlaps.any()), ts


def test_a_sessions_windows_stack_from_their_stretch_as_concatenation_gives(source, config):
    """The feature stage stacks a session's windows with one take from the stretch they were cut
    from (`stack_cut`); it must give what pd.concat of the windows' own frames gives, and refuse
    (None) windows cut from another stretch or whose frame no longer holds its rows."""
    day = source.sessions_available()[-1]
    windows = [w for w in load_session(config, day, source).windows if len(w.trades)]
    for name, part in (("trades", "options"), ("spreads", "spreads"), ("futures", "futures")):
        frames = [(w.origin, getattr(w, name)) for w in windows if len(getattr(w, name))]
        stacked = stack_cut(frames, part)
        assert stacked is not None and len(stacked) == sum(len(f) for _, f in frames) > 0
        pd.testing.assert_frame_equal(stacked, pd.concat([f for _, f in frames], ignore_index=True))
    first, second = windows[0], windows[1]
    assert stack_cut([(first.origin, first.trades), (second.origin, second.trades.iloc[:1])], "options") is None
    assert stack_cut([(first.origin, first.trades), (None, second.trades)], "options") is None
    # the front future: the most traded, the lowest id on a tie (what groupby's idxmax gave)
    futures = pd.DataFrame({"instrument_id": [7, 3, 7, 3], "size": [2, 1, 1, 2], "price": [1.0, 2.0, 3.0, 4.0]})
    assert front_future(futures)["instrument_id"].tolist() == [3, 3]


def test_a_session_cut_into_windows_at_once_gives_each_window_as_cut_alone(source, config):
    """`ClassifiedFills.split` (one search per part for all windows) and `front_futures` (one
    count for all windows) give each window what a mask on its own bounds and `front_future` give."""
    day = source.sessions_available()[-1]
    row = cal.sessions(day, day).iloc[0]
    fills = classify_fills(source.trades(row.market_open, row.market_close), config.universe.products)
    bounds = cal.session_windows(day)
    cut = fills.split(bounds)
    fronts = front_futures(cut)
    assert len(cut) == len(fronts) == len(bounds)
    mixed = 0
    for (start, end), part, front in zip(bounds, cut, fronts):
        for name in ("options", "spreads", "futures", "undefined"):
            whole = getattr(fills, name)
            alone = whole[(whole["ts_event"] >= start) & (whole["ts_event"] < end)].reset_index(drop=True)
            pd.testing.assert_frame_equal(getattr(part, name), alone)
        pd.testing.assert_frame_equal(front, front_future(part.futures))
        mixed += front["instrument_id"].nunique() < part.futures["instrument_id"].nunique()
    assert mixed > 0  # some windows trade more than one future, so the front one is chosen


def test_nqflows_parquet_files_read_back_as_pandas_wrote_them(tmp_path):
    """`write_parquet` (one thread, no statistics, renamed into place) reads back frame for frame
    and dtype for dtype as `DataFrame.to_parquet` wrote it, and leaves no part file behind."""
    from nqflow.parquet import write_parquet

    frame = pd.DataFrame(
        {
            "window": pd.Series([0, 0, 3], dtype="int64"),
            "ts_event": pd.to_datetime([1, 2, 3], unit="s", utc=True),
            "symbol": pd.array(["NQZ6 C21000", None, "QN4V6 P20500"], dtype="string"),
            "key": pd.Series(["100192", "NQZ6", "0DTE"], dtype="str"),
            "expiry": pd.Series(["NQZ6", "", None], dtype=object),
            "premium_usd": [1.5e6, float("nan"), -2.0e5],
            "ids": [[1, 2], [], [3]],
        }
    )
    frame.to_parquet(tmp_path / "pandas.parquet", index=False)
    assert write_parquet(frame, tmp_path / "nqflow.parquet") == tmp_path / "nqflow.parquet"
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "nqflow.parquet"), pd.read_parquet(tmp_path / "pandas.parquet")
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nqflow.parquet", "pandas.parquet"]
    import pyarrow.parquet as pq

    assert not pq.ParquetFile(tmp_path / "nqflow.parquet").metadata.row_group(0).column(0).is_stats_set


def test_a_sessions_batch_gives_the_features_of_its_windows_cut_one_by_one(source, config):
    """The feature stage reads a session straight from its fills and window bounds
    (`SessionWindows.batch`, no frame per window): every feature frame equals, value for value
    and dtype for dtype, what the session's windows cut one by one give; for a session whose
    busiest option has lost its definition too (its fills left out and named in the notes), and
    for a session whose windows hold some with no option trades at all."""
    from nqflow.engine.features import market_features
    from nqflow.engine.monitor import SessionWindows

    days = source.sessions_available()
    sessions = [load_session(config, day, source) for day in (days[0], days[12], days[-1])]
    last = sessions[-1]
    busiest = int(last.options["instrument_id"].value_counts().idxmax())
    chain = last.chain[last.chain["instrument_id"] != busiest]
    trades = tidy_trades(last.trades[["ts_event", "instrument_id", "price", "size", "side"]], chain)
    undefined = classify_fills(trades, config.universe.products)
    sessions.append(
        SessionWindows(
            last.trade_date, last.bounds, last.slots, undefined, chain, last.open_interest, last.legs, last.walls
        )
    )
    quiet = classify_fills(last.trades[last.trades["ts_event"].dt.hour.between(14, 15)], config.universe.products)
    sessions.append(
        SessionWindows(last.trade_date, last.bounds, last.slots, quiet, last.chain, last.open_interest, last.legs)
    )
    for session in sessions:
        batched, one_by_one = market_features(session.batch(), config), market_features(session.windows, config)
        for name in ("windows", "orders", "packages", "volumes", "underlying"):
            pd.testing.assert_frame_equal(getattr(batched, name), getattr(one_by_one, name), obj=name)
        assert batched.params == one_by_one.params
    notes = [json.loads(n) for n in market_features(sessions[3].batch(), config).windows["notes"]]
    assert any("without a definition" in note and str(busiest) in note for window in notes for note in window)
    table = market_features(sessions[4].batch(), config).windows
    assert table["empty"].any() and not table["empty"].all()
