"""The threshold lab: exact points and curves over stored features, and sliders that re-evaluate."""

from __future__ import annotations

import pandas.testing as pdt
import pytest

from nqflow.config import load_config
from nqflow.research.backtest import backtest
from nqflow.research.lab import Lab, config_at, current_values, lab_widget
from nqflow.research.quality import evaluate

# Slow (make test-fast leaves it out); one xdist worker runs the modules that share the Dask
# cluster, feature folder and baseline of conftest.feature_store.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("features")]

SETTING = {"large_premium_usd": 2e6, "first_surge_tier": 7.5, "instrument_min_volume": 50}


@pytest.fixture(scope="module")
def lab_and_cluster(sample_dir, source, truth, feature_store):
    days = source.sessions_available()
    client, features_dir, baseline = feature_store
    lab = Lab.load(
        load_config(),
        days[-4],
        days[-1],
        sample_dir,
        truth,
        client=client,
        features_dir=features_dir,
        baseline_path=baseline,
    )
    return lab, client, features_dir, baseline


def test_a_point_is_exactly_a_backtest_at_that_setting(lab_and_cluster, sample_dir, truth):
    lab, client, features_dir, baseline = lab_and_cluster
    for values in ({}, SETTING):
        config = config_at(lab.config, values)
        result = backtest(
            config,
            *map(_date, (lab.sessions[0], lab.sessions[-1])),
            sample_dir,
            client=client,
            progress=False,
            features_dir=features_dir,
            baseline_path=baseline,
        )
        pdt.assert_frame_equal(
            lab.alerts(**values).drop(columns="planted"), result.alerts, check_dtype=False, check_exact=True
        )
        point = lab.point(**values)
        assert point["alerts"] == len(result.alerts)
        assert point["recall"] == evaluate(result.alerts, truth, config, lab.sessions)["recall"]
    assert lab.point(**SETTING)["alerts"] > lab.point()["alerts"]  # looser thresholds raise more alerts


def test_knobs_set_what_they_name_and_a_bad_one_is_named(lab_and_cluster):
    lab = lab_and_cluster[0]
    config = config_at(lab.config, {**SETTING, "product_min_volume": 900})
    t = config.thresholds
    assert (t.large_premium_usd, t.surge_tiers[0], t.instrument_min_volume, t.product_min_volume) == (2e6, 7.5, 50, 900)
    assert t.surge_tiers[1:] == lab.config.thresholds.surge_tiers[1:]
    with pytest.raises(ValueError, match="unknown lab knob.*large_premium"):
        config_at(lab.config, {"large_premium": 1e6})


def test_the_confidence_cut_drops_exactly_the_alerts_below_it(lab_and_cluster):
    lab = lab_and_cluster[0]
    every = lab.alerts(**SETTING)
    cut = float(every["confidence"].median())
    kept = lab.alerts(**SETTING, confidence_cut=cut)
    assert 0 < len(kept) < len(every)
    assert list(kept["alert_id"]) == list(every.loc[every["confidence"] >= cut, "alert_id"])


def test_curve_points_are_the_points_at_those_values(lab_and_cluster):
    lab = lab_and_cluster[0]
    curve = lab.curve("large_premium_usd", [1e6, 3e6, 10e6])
    assert list(curve["alerts"]) == [lab.point(large_premium_usd=v)["alerts"] for v in (1e6, 3e6, 10e6)]
    assert curve["alerts"].is_monotonic_decreasing and curve["alerts"].iloc[0] > curve["alerts"].iloc[-1]
    at_default = curve[curve["value"] == 3e6].iloc[0]
    assert at_default["precision"] == lab.point()["precision"] and at_default["recall"] == lab.point()["recall"]


def test_sliders_re_evaluate_every_window_when_released(lab_and_cluster):
    """Setting a slider's value is what releasing it in JupyterLab does (continuous_update is off):
    the observer re-evaluates and redraws the figures, the counts and the curves."""
    lab = lab_and_cluster[0]
    drawn = []
    box = lab_widget(
        lab,
        {"large_premium_usd": [1e6, 3e6], "confidence": [0, 50]},
        draw_curves=lambda curves, values: drawn.append((curves, values)) or "curves",
    )
    assert box.last_point["alerts"] == lab.point()["alerts"]
    assert all(not s.continuous_update for s in box.sliders.values())
    assert box.sliders["large_premium_usd"].value == pytest.approx(current_values(lab.config)["large_premium_usd"])
    box.sliders["large_premium_usd"].value = 1e6
    assert box.last_point["alerts"] == lab.point(large_premium_usd=1e6)["alerts"] > lab.point()["alerts"]
    assert f"<b>{box.last_point['alerts']}</b> alerts" in box.children[-3].value
    assert drawn[-1][1]["large_premium_usd"] == pytest.approx(1e6)  # the curves redrawn at the new setting
    box.sliders["confidence_cut"].value = 100.0
    assert box.last_point["alerts"] == 0


def _date(text: str):
    import datetime as dt

    return dt.date.fromisoformat(text)
