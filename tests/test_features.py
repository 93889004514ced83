"""The two detection stages: thresholds applied to stored features give exactly the live alerts.

The live path here is `nqflow.engine.detect.detect_windows` on each session's windows as the monitor
loads them (`nqflow.engine.monitor.load_session`, held equal to `run_window` window by window in
test_backtest); the stored path is a backtest that writes each session's features as Parquet
and evaluates the thresholds over them, and the lab's path: every session's stored features
joined into one batch and evaluated in one call.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from nqflow.alerts import ALERT_FIELDS, to_records
from nqflow.config import load_config
from nqflow.engine.baseline import ParquetBaseline, ensure_history
from nqflow.engine.detect import detect_windows, evaluate
from nqflow.engine.features import (
    EXPECTED_PART,
    read_features,
    session_folder,
    stable_argsort,
    stored_params,
    write_features,
)
from nqflow.engine.monitor import load_session
from nqflow.errors import DataError
from nqflow.research.backtest import backtest, load_features
from nqflow.research.lab import LOOSE

# Slow (make test-fast leaves it out); one xdist worker runs the modules that share the Dask
# cluster, feature folder and baseline of conftest.feature_store.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("features")]

SETTINGS = {"default": {}, "loose": LOOSE}


def _frame(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(records, columns=["trade_date", *ALERT_FIELDS]).sort_values(
        ["window_start", "alert_id"], ignore_index=True
    )


@pytest.fixture(scope="module")
def cluster(feature_store):
    """The session's Dask cluster and volume baseline: the history is built once."""
    client, _, baseline = feature_store
    return client, baseline


def _live_session(data_dir: str, baseline: str, day, available) -> tuple[int, dict[str, list[dict]]]:
    """One session's windows as the monitor loads them, detected at each setting (on a worker)."""
    from nqflow.sources.replay import ReplaySource

    source, store = ReplaySource(data_dir), ParquetBaseline(baseline)
    configs = {name: load_config(None, overrides) for name, overrides in SETTINGS.items()}
    n = configs["default"].thresholds.baseline_sessions
    session = load_session(configs["default"], day, source)
    ensure_history(store, source, day, n, available)  # recorded already: reads only
    expected = session.expected(store, n)
    return len(session.windows), {
        name: [
            {"trade_date": str(day), **a}
            for d in detect_windows(session.windows, expected, config)
            for a in to_records(d.alerts)
        ]
        for name, config in configs.items()
    }


@pytest.fixture(scope="module")
def every_window(sample_dir, source, cluster, feature_store):
    """Every window of every sample session through stored features (built by the first backtest,
    where earlier tests have not already, and re-read by the second) and through the live
    detection at both settings."""
    configs = {name: load_config(None, overrides) for name, overrides in SETTINGS.items()}
    available = source.sessions_available()
    features_dir = feature_store[1]  # what test_backtest stored is re-read, the rest built here
    client, baseline = cluster
    stored = {
        name: backtest(
            config,
            available[0],
            available[-1],
            sample_dir,
            client=client,
            progress=False,
            features_dir=features_dir,
            baseline_path=baseline,
        )
        for name, config in configs.items()
    }
    # The backtest recorded every session's history; the live runs only read it, in parallel.
    sessions = client.gather(
        client.map(
            _live_session,
            [str(sample_dir)] * len(available),
            [str(baseline)] * len(available),
            available,
            [available] * len(available),
            pure=False,
        )
    )
    windows = sum(n for n, _ in sessions)
    live = {name: [a for _, by_setting in sessions for a in by_setting[name]] for name in configs}
    return available, windows, live, stored, features_dir, configs


@pytest.mark.parametrize("setting", SETTINGS)
def test_stored_features_give_the_live_alerts_field_for_field(every_window, setting):
    available, windows, live, stored, _, _ = every_window
    result = stored[setting]
    assert len(result.windows) == windows > 2000  # every window of every session, none skipped
    expected = _frame(live[setting])
    assert len(expected) > (300 if setting == "loose" else 80)  # the planted events and more
    assert set(expected["kind"]) >= {"large_order", "sweep", "strategy", "volume_surge"}
    pdt.assert_frame_equal(result.alerts, expected, check_dtype=False, check_exact=True)


def test_one_batch_of_every_session_gives_the_same_alerts(every_window, sample_dir, cluster):
    """The lab's path: all sessions' stored features joined, each setting evaluated in one call."""
    available, _, live, _, features_dir, configs = every_window
    sessions, features = load_features(
        configs["default"], available[0], available[-1], sample_dir, features_dir=features_dir, client=cluster[0]
    )
    assert sessions == available
    for name, config in configs.items():
        alerts = evaluate(features, config).alerts
        dates = features.windows["trade_date"].to_numpy()[alerts["window"].to_numpy()]
        records = [{"trade_date": d, **a} for d, a in zip(dates, alerts.drop(columns="window").to_dict("records"))]
        pdt.assert_frame_equal(_frame(records), _frame(live[name]), check_dtype=False, check_exact=True)


def test_stored_features_record_what_they_depend_on(every_window):
    available, _, _, _, features_dir, configs = every_window
    params = stored_params(features_dir, available[-1])
    config = configs["default"]
    assert params["sweep_span_ms"] == config.thresholds.sweep_span_ms
    assert params["products"] == sorted(config.universe.products)
    assert len(params["data"]) == 16 and len(params["history"]) == 16
    features = read_features(features_dir, available[-1])
    assert features.volumes["history_sessions"].max() == config.thresholds.baseline_sessions
    assert features.volumes.loc[features.volumes["level"] == "instrument", "open_interest"].notna().mean() > 0.9


def test_the_expected_columns_file_joins_its_volume_rows_and_older_layouts_still_read(every_window, tmp_path):
    """The expected volumes are stored beside the volumes (`EXPECTED_PART`), row for row: read
    back the same frame; a session stored with them inside volumes.parquet reads the same; new
    volumes without them drop the stale file; a file of other rows is a one-line error."""
    available, _, _, _, features_dir, _ = every_window
    day = available[-1]
    features = read_features(features_dir, day)
    folder = session_folder(features_dir, day)
    assert (folder / f"{EXPECTED_PART}.parquet").exists()
    assert "expected" not in pd.read_parquet(folder / "volumes.parquet")
    assert features.volumes["expected"].notna().any()

    older = session_folder(tmp_path, day)
    write_features(features, tmp_path, day)
    (older / f"{EXPECTED_PART}.parquet").unlink()
    features.volumes.to_parquet(older / "volumes.parquet", index=False)  # the layout before the split
    pdt.assert_frame_equal(read_features(tmp_path, day).volumes, features.volumes)
    write_features(features, tmp_path, day, frames=(EXPECTED_PART,))  # an older session given new expected volumes
    pdt.assert_frame_equal(read_features(tmp_path, day).volumes, features.volumes)

    market_only = dataclasses.replace(
        features, volumes=features.volumes.drop(columns=["history_sessions", "expected", "mean", "variance"])
    )
    write_features(market_only, tmp_path, day, frames=("volumes",))
    assert not (older / f"{EXPECTED_PART}.parquet").exists()
    assert "expected" not in read_features(tmp_path, day).volumes

    write_features(features, tmp_path, day)
    features.volumes.iloc[:-1][["history_sessions", "expected", "mean", "variance"]].to_parquet(
        older / f"{EXPECTED_PART}.parquet", index=False
    )
    with pytest.raises(DataError, match="delete") as error:
        read_features(tmp_path, day)
    assert "\n" not in str(error.value) and f"{EXPECTED_PART}.parquet" in str(error.value)


def _legs_text(packages: pd.DataFrame) -> list[str]:
    """Each package's legs as JSON text: a NaN and a float's type show (26200.0, not 26200)."""
    return [json.dumps(legs) for legs in packages["legs"]]


def test_package_legs_read_back_as_computed_from_arrow_lists_and_older_json_text(source, tmp_path):
    """A package's legs (dicts) and leg ids (lists) are stored as Arrow lists and read back as the
    Python values the feature stage made: a futures leg's NaN strike stays NaN, an integer stays
    an integer. Features stored before, with the legs as JSON text, read the same."""
    from nqflow.engine.features import market_features

    config = load_config()
    day = source.sessions_available()[-1]
    computed = market_features(load_session(config, day, source).batch(), config)
    packages = computed.packages
    assert any(leg["put_call"] == "F" for legs in packages["legs"] for leg in legs)  # a covered package
    write_features(computed, tmp_path, day)
    back = read_features(tmp_path, day).packages
    flat = [c for c in packages if c not in ("legs", "leg_instrument_ids", "option_leg_ids")]
    pdt.assert_frame_equal(back[flat], packages[flat])
    assert list(back.columns) == list(packages.columns)
    assert _legs_text(back) == _legs_text(packages)
    for column in ("leg_instrument_ids", "option_leg_ids"):
        assert back[column].tolist() == packages[column].tolist()
        assert all(type(i) is int for ids in back[column] for i in ids)

    older = packages.assign(legs=packages["legs"].map(json.dumps))  # the layout before Arrow lists
    older.to_parquet(session_folder(tmp_path, day) / "packages.parquet", index=False)
    assert _legs_text(read_features(tmp_path, day).packages) == _legs_text(packages)


def test_changed_sweep_settings_or_a_half_written_session_are_recomputed(sample_dir, source, cluster, tmp_path):
    """Features depend on the sweep grouping: other settings recompute them (and may give other
    sweeps), while a session without params.json (a write cut short) is recomputed, not read."""
    days = source.sessions_available()[-2:]
    config = load_config()
    client, baseline = cluster
    run = dict(client=client, progress=False, features_dir=tmp_path, baseline_path=baseline)
    first = backtest(config, days[0], days[-1], sample_dir, **run)
    written = (session_folder(tmp_path, days[0]) / "orders.parquet").stat().st_mtime_ns
    (session_folder(tmp_path, days[-1]) / "params.json").unlink()
    again = backtest(config, days[0], days[-1], sample_dir, **run)
    pdt.assert_frame_equal(again.alerts, first.alerts)
    assert (session_folder(tmp_path, days[0]) / "orders.parquet").stat().st_mtime_ns == written  # read, not rebuilt
    assert stored_params(tmp_path, days[-1]) is not None
    wider = dataclasses.replace(config, thresholds=dataclasses.replace(config.thresholds, sweep_span_ms=5_000))
    backtest(wider, days[0], days[-1], sample_dir, **run)
    assert stored_params(tmp_path, days[-1])["sweep_span_ms"] == 5_000
    assert len(read_features(tmp_path, days[-1], wider).windows) > 0
    with pytest.raises(DataError, match="recompute them") as error:
        read_features(tmp_path, days[-1], config)
    assert "\n" not in str(error.value) and "5000" in str(error.value)


def test_a_corrupt_features_file_is_a_one_line_error_naming_it(sample_dir, source, cluster, tmp_path):
    day = source.sessions_available()[-1]
    client, baseline = cluster
    backtest(
        load_config(),
        day,
        day,
        sample_dir,
        client=client,
        progress=False,
        features_dir=tmp_path,
        baseline_path=baseline,
    )
    path = session_folder(tmp_path, day) / "orders.parquet"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError) as error:
        read_features(tmp_path, day)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "delete" in message
    assert json.loads((session_folder(tmp_path, day) / "params.json").read_text())["version"] >= 1


@pytest.mark.parametrize(
    "low, high, n",
    [
        (0, 3, 100_000),  # few keys, many ties: the rows' own order must hold within each key
        (-7, 7, 1_000),  # negative keys
        (0, 1 << 40, 5_000),  # window * 2**32 + instrument id, as the engine packs them
        (-(1 << 62), 1 << 62, 500),  # no room for the positions: NumPy's stable sort itself
        (5, 6, 1),
        (0, 1, 0),
    ],
)
def test_stable_argsort_is_numpys_stable_argsort(low, high, n):
    keys = np.random.default_rng(n).integers(low, high, n)
    np.testing.assert_array_equal(stable_argsort(keys), np.argsort(keys, kind="stable"))
