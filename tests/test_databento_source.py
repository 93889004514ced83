"""The real `databento` client against a stand-in Historical gateway on 127.0.0.1 (HTTPS).

The gateway serves the sample market's own DBN records, so what the Databento source
returns can be compared with the replay source record for record; faults are injected
per request (401, 422, 429 with Retry-After, 500/503, slow answers, dropped connections).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd
import pandas.testing as pdt
import pytest
from helpers import KEY, make_config
from standin_gateway import Fault

from nqflow.config import Config, load_config
from nqflow.engine.baseline import BaselineStore, ensure_history
from nqflow.errors import BudgetExceeded, CredentialsError, DataError, DataNotYetAvailable
from nqflow.market.frames import load_window
from nqflow.ops.scheduling import Scheduler, SimulatedClock
from nqflow.products import MICRO_NQ_OPTION_PRODUCTS
from nqflow.sources.databento_historical import DatabentoSource
from nqflow.sources.replay import ReplaySource

# Slow: make test-fast leaves it out.
pytestmark = pytest.mark.slow

#: A window of the sample's last session, well inside regular trading hours.
WINDOW = (pd.Timestamp("2026-10-29T14:15Z"), pd.Timestamp("2026-10-29T14:30Z"))


def test_frames_match_the_replay_of_the_same_records(gw, source, tmp_path):
    live = load_window(DatabentoSource(make_config(gw), tmp_path), *WINDOW)
    replay = load_window(source, *WINDOW)
    assert len(live.trades) > 500
    pdt.assert_frame_equal(live.trades, replay.trades)
    pdt.assert_frame_equal(live.underlying, replay.underlying)
    pdt.assert_frame_equal(live.open_interest, replay.open_interest)
    chain_ids = set(live.chain["instrument_id"])
    assert set(live.trades["instrument_id"]) <= chain_ids
    # every data request asked for the configured parents by parent symbology; the day's one
    # universe check asked for exactly the NQ option products not watched (the micro ones)
    pulls = gw.requests("get_range")
    data = [r for r in pulls if "NQ.OPT" in r.params["symbols"].split(",")]
    assert {r.params["schema"] for r in data} == {"trades", "definition", "statistics"}
    assert all(r.params["stype_in"] == "parent" and "NQ.FUT" in r.params["symbols"].split(",") for r in data)
    (check,) = [r for r in pulls if r not in data]
    assert check.params["schema"] == "definition" and check.params["stype_in"] == "parent"
    assert sorted(check.params["symbols"].split(",")) == sorted(f"{p}.OPT" for p in MICRO_NQ_OPTION_PRODUCTS)


def test_second_run_is_served_from_the_cache_and_replay_reads_it(gw, source, tmp_path):
    first = load_window(DatabentoSource(make_config(gw), tmp_path), *WINDOW)
    pulls = len(gw.requests("get_range"))
    again = load_window(DatabentoSource(make_config(gw), tmp_path), *WINDOW)  # a new process, same cache
    assert len(gw.requests("get_range")) == pulls
    pdt.assert_frame_equal(first.trades, again.trades)
    offline = load_window(ReplaySource(tmp_path), *WINDOW)  # no key, no network: the cache is a replay folder
    pdt.assert_frame_equal(first.trades, offline.trades)


def test_transient_faults_are_retried_then_succeed(gw, source, tmp_path):
    databento = DatabentoSource(make_config(gw, max_retries=5), tmp_path)
    databento.chain(WINDOW[0].date())
    databento.open_interest(WINDOW[0].date())
    gw.log.clear()
    gw.inject(
        Fault("get_range", status=429, detail="rate limited", headers={"Retry-After": "0.4"}),
        Fault("get_range", status=500),
        Fault("get_range", status=503),
        Fault("get_range", delay=4.0),  # longer than timeout_seconds=3
        Fault("get_range", drop=True),
    )
    trades = databento.trades(*WINDOW)
    pulls = gw.requests("get_range", "trades")
    assert len(pulls) == 6
    assert pulls[1].at - pulls[0].at >= 0.4  # the server's Retry-After was honoured
    pdt.assert_frame_equal(trades, source.trades(*WINDOW))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".part")]


def test_a_persistent_outage_is_a_clear_error_and_caches_nothing(gw, tmp_path):
    databento = DatabentoSource(make_config(gw, max_retries=2), tmp_path)
    databento.chain(WINDOW[0].date())
    gw.inject(*[Fault("get_range", status=502, detail="bad gateway")] * 3)
    with pytest.raises(DataError, match=r"still failing after 3 tries \(HTTP 502 bad gateway\).*retried") as err:
        databento.trades(*WINDOW)
    assert "\n" not in str(err.value)
    assert not [p for p in (tmp_path / "GLBX.MDP3" / "trades").rglob("*") if p.is_file()]


def test_a_client_error_is_not_retried(gw, tmp_path):
    databento = DatabentoSource(make_config(gw), tmp_path)
    gw.inject(Fault("get_range", status=422, detail="symbology_invalid_symbol: bad symbol"))
    with pytest.raises(DataError, match="refused.*HTTP 422 symbology_invalid_symbol.*option_parents"):
        databento.chain(WINDOW[0].date())
    assert len(gw.requests("get_range")) == 1


def test_missing_or_rejected_key_says_how_to_set_it(gw, tmp_path, monkeypatch):
    monkeypatch.delenv("DATABENTO_API_KEY")
    with pytest.raises(CredentialsError, match="DATABENTO_API_KEY is not set; export DATABENTO_API_KEY="):
        DatabentoSource(make_config(gw), tmp_path)
    monkeypatch.setenv("DATABENTO_API_KEY", "db-wrong-key")
    with pytest.raises(CredentialsError, match="rejected the key in DATABENTO_API_KEY.*HTTP 401") as err:
        DatabentoSource(make_config(gw), tmp_path).chain(WINDOW[0].date())
    assert "db-wrong-key" not in str(err.value)
    assert len(gw.requests("get_dataset_range")) == 1  # a 401 is not retried


def test_a_window_past_the_available_end_is_not_yet_available(gw, tmp_path):
    gw.available_end = WINDOW[1] - pd.Timedelta(minutes=3)
    databento = DatabentoSource(make_config(gw), tmp_path)
    with pytest.raises(DataNotYetAvailable, match="published up to 2026-10-29 14:27:00Z.*tried again"):
        databento.trades(*WINDOW)
    assert not gw.requests("get_range", "trades")  # never requested, so never mistaken for an empty window
    gw.available_end = gw.market.end
    assert len(databento.trades(*WINDOW)) > 500


def test_an_over_budget_baseline_build_is_refused_before_any_pull(gw, tmp_path):
    gw.cost_multiplier = 1e4
    databento = DatabentoSource(make_config(gw, budget_usd=5.0), tmp_path)
    store = BaselineStore(tmp_path / "baseline.sqlite")
    with pytest.raises(BudgetExceeded, match=r"estimated at \$[\d,.]+, above databento.budget_usd=\$5.00"):
        ensure_history(store, databento, WINDOW[0].date(), 3)
    assert gw.requests("get_cost") and not gw.requests("get_range")
    assert store.complete_sessions() == set()


def test_a_baseline_build_within_budget_pulls_each_session_once(gw, tmp_path):
    databento = DatabentoSource(make_config(gw), tmp_path)
    store = BaselineStore(tmp_path / "baseline.sqlite")
    filled = ensure_history(store, databento, WINDOW[0].date(), 2)
    assert len(filled) == 2 and {str(d) for d in filled} <= store.complete_sessions()
    assert len(gw.requests("get_range", "trades")) == 2
    ensure_history(store, databento, WINDOW[0].date(), 2)
    assert len(gw.requests("get_range", "trades")) == 2


def test_no_option_records_while_the_market_is_open_is_a_data_problem(gw, tmp_path):
    config = make_config(gw)
    config = dataclasses.replace(config, universe=dataclasses.replace(config.universe, option_parents=("ZZ.OPT",)))
    with pytest.raises(DataError, match="no NQ option trades .* while CME Globex was open .* not a quiet market"):
        DatabentoSource(config, tmp_path).trades(*WINDOW)


def test_scheduler_waits_for_publication_then_runs_the_notebook_on_live_data(gw, tmp_path, truth):
    """End to end: scheduler -> papermill -> notebook -> DatabentoSource -> stand-in gateway."""
    block = next(
        e
        for e in truth["events"]
        if e["kind"] == "block" and e["premium_usd"] > 3e6 and e["session"] == truth["sessions"][-1]
    )
    start = pd.Timestamp(block["window_start"])
    end = start + pd.Timedelta(minutes=15)
    overrides = {
        "databento.gateway": gw.url,
        "databento.retry_base_seconds": 0.02,
        "databento.range_cache_seconds": 0.0,
        "thresholds.baseline_sessions": 3,
        "notify.log.path": str(tmp_path / "alerts.log"),
    }
    scheduler = Scheduler(
        load_config(overrides=overrides),
        clock=SimulatedClock(end + pd.Timedelta(minutes=3)),
        source="databento",
        data_dir=str(tmp_path / "cache"),
        overrides=overrides,
        outputs_dir=tmp_path / "out",
        state_db=tmp_path / "state.sqlite",
    )
    gw.available_end = end - pd.Timedelta(minutes=1)  # Databento is a minute behind
    assert scheduler.tick() == [] and scheduler.store.windows().empty
    assert not gw.requests("get_range")

    gw.available_end = gw.market.end
    runs = scheduler.tick()
    assert [r.ok for r in runs] == [True], runs[0].error if runs else "no run"
    large = [a for a in runs[0].alerts if a.kind == "large_order"]
    assert any(a.instrument_ids == block["instrument_ids"] for a in large)
    assert scheduler.store.windows()["status"].tolist() == ["ok"]
    # the window, the hour before it (a worked order's children count from there), three baseline sessions
    assert len(gw.requests("get_range", "trades")) == 1 + 1 + 3
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".ipynb", ".html", ".log", ".json", ".sqlite"):
            assert KEY.encode() not in path.read_bytes(), path


def test_overlapping_cached_pulls_count_every_fill_once(gw, source, tmp_path):
    databento = DatabentoSource(make_config(gw), tmp_path)
    databento.trades(*WINDOW)
    shifted = (WINDOW[0] + pd.Timedelta(minutes=5), WINDOW[1] + pd.Timedelta(minutes=15))  # overlaps the first pull
    pdt.assert_frame_equal(databento.trades(*shifted), source.trades(*shifted))
    hour = (WINDOW[0] - pd.Timedelta(minutes=15), WINDOW[1] + pd.Timedelta(minutes=30))
    pdt.assert_frame_equal(DatabentoSource(make_config(gw), tmp_path).trades(*hour), source.trades(*hour))


def test_off_book_reading_through_the_gateway_equals_the_replay(gw, source, truth, tmp_path):
    """Statistics take the same cache, cost guard and retries as trades: the same alerts as the replay."""
    from nqflow.engine.offbook import read_off_book

    day = dt.date.fromisoformat(
        next(e["session"] for e in truth["events"] if e["kind"] == "off_book" and e["premium_usd"] >= 3e6)
    )
    config = make_config(gw)
    live = read_off_book(DatabentoSource(config, tmp_path), day, config)
    replay = read_off_book(source, day, config)
    assert len(live.alerts) == 1
    pdt.assert_frame_equal(live.alerts, replay.alerts)
    assert (tmp_path / "GLBX.MDP3" / "statistics").is_dir()  # cached like every other pull


def test_products_listed_but_not_watched_are_named_once_a_day(gw, tmp_path, caplog):
    """Each day's first definitions pull also asks for the NQ option products the universe leaves
    out; one that lists options is named with the fix, once per day across processes."""
    watched = tuple(p for p in Config().universe.option_parents if p != "QN1.OPT")
    base = make_config(gw)
    config = dataclasses.replace(base, universe=dataclasses.replace(base.universe, option_parents=watched))
    day = WINDOW[0].date()
    with caplog.at_level("WARNING", logger="nqflow.sources.databento_historical"):
        chain = DatabentoSource(config, tmp_path).chain(day)
    assert "QN1" not in set(chain["product"])  # the check's definitions are not data
    (check,) = [r for r in gw.requests("get_range") if "NQ.OPT" not in r.params["symbols"].split(",")]
    assert set(check.params["symbols"].split(",")) == {
        "QN1.OPT",
        "MNQ.OPT",
        "MQE.OPT",
        "MQ1.OPT",
        "MQ2.OPT",
        "MQ3.OPT",
        "MQ4.OPT",
    }
    (line,) = [r.getMessage() for r in caplog.records if "not watched" in r.getMessage()]
    assert line.startswith(f"{day}: options of QN1 on NQ futures are listed") and '"QN1.OPT"' in line
    assert "universe.option_parents" in line and "micro" not in line
    pulls, caplog.records[:] = len(gw.requests("get_range")), []
    DatabentoSource(config, tmp_path).chain(day)  # a new process, same cache
    assert len(gw.requests("get_range")) == pulls and not caplog.records
    everything = DatabentoSource(make_config(gw), tmp_path / "all")
    assert everything.check_universe(day, *everything._day_pull("definition", day)[1:]) == []


def test_a_parent_that_resolves_to_nothing_is_logged_once_and_leaves_the_warnings_state_alone(gw, tmp_path, caplog):
    """The gateway warns of a parent that resolves to nothing: nqflow names it once in its log,
    read from the answer's own metadata, and drops the client's `BentoWarning` (even under an
    "always" filter). It never swaps the process's warning handlers: a per-call
    `catch_warnings` here, interleaved with another thread's (pandas enters them), left that
    thread's exit restoring this one's recorder, and every later warning went nowhere."""
    import threading
    import time
    import warnings

    from databento.common.error import BentoWarning

    base = make_config(gw)
    parents = (*base.universe.option_parents, "MNQ.OPT")  # the sample lists no micro options
    config = dataclasses.replace(base, universe=dataclasses.replace(base.universe, option_parents=parents))
    source = DatabentoSource(config, tmp_path)
    later = (WINDOW[1], WINDOW[1] + pd.Timedelta(minutes=15))
    done = threading.Event()

    def churn() -> None:  # another thread's own filters, entered and left for as long as the pull takes
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                time.sleep(0.0005)

    with (
        warnings.catch_warnings(record=True) as caught,
        caplog.at_level("WARNING", logger="nqflow.sources.databento_historical"),
    ):
        warnings.simplefilter("always")
        first = source.trades(*WINDOW)
        assert [str(w.message) for w in caught if issubclass(w.category, BentoWarning)] == []
        other = threading.Thread(target=churn)
        other.start()
        try:
            second = source.trades(*later)
        finally:
            done.set()
            other.join()
        warnings.warn("still heard", UserWarning, stacklevel=1)  # this thread's recorder is still the one in place
    assert len(first) and len(second)
    assert "still heard" in [str(w.message) for w in caught]
    lines = [r.getMessage() for r in caplog.records if "symbols not found" in r.getMessage()]
    assert len(lines) == 1 and "MNQ.OPT" in lines[0] and "universe.option_parents" in lines[0]
    assert any("MNQ.OPT" in r.params["symbols"] for r in gw.requests("get_range", "trades"))
