"""Detection math on small hand-made frames: aggregation, premium, sweeps, tiers, baselines."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from nqflow.config import Config
from nqflow.engine.baseline import expected_volume
from nqflow.engine.detect import (
    aggregate_orders,
    assign_sweeps,
    detect_window,
    surge_gate,
    tail_probability,
    tier_of,
    watch_list,
)
from nqflow.market.frames import TRADE_COLUMNS, WindowData, empty_frame

T0 = pd.Timestamp("2026-10-30T15:00:00Z")


def fill(
    ms: int, iid: int, strike: float, side: str, price: float, size: int, put_call: str = "C", root: str = "NQZ6"
) -> dict:
    return {
        "ts_event": T0 + pd.Timedelta(milliseconds=ms),
        "instrument_id": iid,
        "symbol": f"{root} {put_call}{strike:g}",
        "product": "NQ",
        "expiration": pd.Timestamp("2026-12-18T14:30Z"),
        "strike": strike,
        "put_call": put_call,
        "price": price,
        "size": size,
        "side": side,
        "multiplier": 20.0,
        "premium_usd": price * size * 20.0,
    }


def window_of(rows: list[dict], oi: dict[int, int] | None = None) -> WindowData:
    trades = pd.DataFrame(rows) if rows else empty_frame(TRADE_COLUMNS)
    oi_frame = pd.DataFrame({"instrument_id": list((oi or {}).keys()), "open_interest": list((oi or {}).values())})
    underlying = pd.DataFrame({"ts_event": [T0], "price": [21000.0]})
    return WindowData(T0, T0 + pd.Timedelta(minutes=15), T0.date(), trades, pd.DataFrame(), oi_frame, underlying)


def history(level: str, key: str, volumes: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "level": level,
            "key": key,
            "session": [f"2026-10-{i + 1:02d}" for i in range(len(volumes))],
            "volume": volumes,
        }
    )


def expected(level: str, key: str, volumes: list[int]) -> pd.DataFrame:
    """The expected volume a slot with this history gives (what the baseline store hands detection)."""
    return expected_volume(history(level, key, volumes), 20)


def test_fills_of_one_aggressor_order_are_one_order_with_usd_premium():
    rows = [
        fill(0, 1, 21000, "B", 500.0, 100),
        fill(0, 1, 21000, "B", 500.25, 150),
        fill(0, 1, 21000, "A", 499.0, 5),
        fill(1, 1, 21000, "B", 500.0, 7),
    ]
    orders = aggregate_orders(pd.DataFrame(rows))
    assert len(orders) == 3
    big = orders[(orders["side"] == "B") & (orders["size"] == 250)].iloc[0]
    assert big["fills"] == 2
    assert big["premium_usd"] == pytest.approx((500.0 * 100 + 500.25 * 150) * 20)
    assert big["vwap"] == pytest.approx((500.0 * 100 + 500.25 * 150) / 250)


def test_large_order_at_the_threshold_alerts_and_just_below_does_not():
    config = Config()
    at = window_of([fill(0, 1, 21000, "B", 500.0, 300)])  # 500 * 300 * 20 = $3.0M exactly
    below = window_of([fill(0, 1, 21000, "B", 499.75, 300)])  # $2.9985M
    alerts = detect_window(at, None, config).alerts
    assert list(alerts["kind"]) == ["large_order"] and alerts.iloc[0]["premium_usd"] == 3_000_000
    assert alerts.iloc[0]["direction"] == "BUY" and alerts.iloc[0]["sentiment"] == "BULLISH"
    assert any("no volume history" in r for r in alerts.iloc[0]["reasons"])
    assert detect_window(below, None, config).alerts.empty


def test_sweep_groups_strikes_of_one_expiry_within_the_span_only():
    rows = [
        fill(0, 1, 21000, "A", 200.0, 300, "P"),
        fill(40, 2, 21025, "A", 210.0, 300, "P"),
        fill(90, 3, 21050, "A", 220.0, 300, "P"),
        fill(5_000, 4, 21075, "A", 230.0, 300, "P"),  # too late for the span
        fill(20, 5, 21100, "B", 240.0, 300, "P"),
    ]  # other side
    orders = aggregate_orders(pd.DataFrame(rows))
    sweep = assign_sweeps(orders, span_ms=500, min_strikes=2)
    members = set(orders.loc[sweep == sweep[orders["instrument_id"] == 1].iloc[0], "instrument_id"])
    assert members == {1, 2, 3}
    alerts = detect_window(window_of(rows), None, Config()).alerts
    sweeps = alerts[alerts["kind"] == "sweep"]
    assert len(sweeps) == 1 and sweeps.iloc[0]["premium_usd"] == pytest.approx((200 + 210 + 220) * 300 * 20)
    assert sweeps.iloc[0]["direction"] == "SELL" and sweeps.iloc[0]["sentiment"] == "BULLISH"  # puts sold


@pytest.mark.parametrize(
    "ratio, tier", [(9.99, 0), (10.0, 10), (29.9, 10), (30.0, 30), (49.99, 30), (50.0, 50), (500, 50)]
)
def test_tier_edges(ratio, tier):
    assert tier_of(ratio, (10.0, 30.0, 50.0)) == tier


def _surge_rows(volume: int, orders: int, iid: int = 7, side: str = "B") -> list[dict]:
    sizes = np.full(orders, volume // orders)
    sizes[: volume - sizes.sum()] += 1
    return [fill(i * 1000, iid, 21000, side, 100.0, int(s)) for i, s in enumerate(sizes)]


def test_surge_tiers_use_the_floor_so_one_to_ten_is_not_ten_x():
    config = Config()
    hist = expected("instrument", "7", [1] * 20)  # expected 1 contract, floor 8
    alerts = detect_window(window_of(_surge_rows(10, 10)), hist, config).alerts
    assert alerts.empty
    alerts = detect_window(window_of(_surge_rows(400, 40)), hist, config).alerts  # 400 / 8 = 50x
    surge = alerts[alerts["kind"] == "volume_surge"].iloc[0]
    assert surge["level"] == "instrument" and surge["tier"] == 50 and surge["baseline"] == 8.0
    assert surge["ratio"] == pytest.approx(50.0) and surge["direction"] == "BUY"


def test_one_big_print_is_not_a_surge():
    hist = expected("instrument", "7", [10] * 20)
    alerts = detect_window(window_of([fill(0, 7, 21000, "B", 100.0, 400)]), hist, Config()).alerts
    assert (alerts["kind"] != "volume_surge").all()


def test_short_history_is_said_and_too_short_history_is_silent():
    config = Config()
    rows = _surge_rows(600, 60)
    alerts = detect_window(window_of(rows), expected("instrument", "7", [10, 12, 9, 11]), config).alerts
    surge = alerts.iloc[0]
    assert surge["history_sessions"] == 4 and "fewer than the configured sessions" in surge["reasons"][0]
    silent = detect_window(window_of(rows), expected("instrument", "7", [10, 12]), config).alerts
    assert silent.empty  # below min_history_sessions (3)


def test_baseline_drops_the_busiest_session_and_keeps_zeros():
    hist = history("instrument", "1", [0, 0, 10, 0, 200, 10])
    row = expected_volume(hist, 20).iloc[0]
    assert row["history_sessions"] == 6 and row["expected"] == pytest.approx(20 / 5)
    assert expected_volume(history("instrument", "1", [3, 5]), 20).iloc[0]["expected"] == 4.0


def test_overdispersed_history_gives_a_fatter_tail_than_poisson():
    poisson = tail_probability([60], [10.0], [10.0])[0]
    clustered = tail_probability([60], [10.0], [200.0])[0]
    assert clustered > 1000 * poisson
    assert tail_probability([0], [10.0], [10.0])[0] == 1.0


def test_the_tail_is_scipy_stats_survival_function_of_the_count_models():
    """The engine's tails are built from `scipy.special` (it never imports `scipy.stats`); they are
    the negative binomial's and Poisson's survival functions at volume - 1."""
    from scipy import stats

    rng = np.random.default_rng(7)
    mean = np.exp(rng.uniform(-4, 8, 5000))
    variance = mean * np.exp(rng.uniform(0, 4, 5000)) * (rng.uniform(size=5000) < 0.8) + mean * 0.5
    volume = np.floor(np.exp(rng.uniform(0, 10, 5000)))
    over = variance > mean * 1.0001
    r = np.where(over, mean * mean / np.where(over, variance - mean, 1.0), 1.0)
    reference = np.where(over, stats.nbinom.sf(volume - 1, r, r / (r + mean)), stats.poisson.sf(volume - 1, mean))
    assert over.any() and (~over).any()
    np.testing.assert_allclose(tail_probability(volume, mean, variance), reference, rtol=1e-10, atol=1e-300)


def test_empty_window_gives_no_alerts_and_an_empty_summary():
    detection = detect_window(window_of([]), None, Config())
    assert detection.alerts.empty and detection.summary["option_trades"] == 0 and detection.summary["empty"]


def test_window_next_to_the_daily_halt(source):
    from nqflow.market.frames import load_window

    last = load_window(source, "2026-10-30T20:45:00Z", "2026-10-30T21:00:00Z")  # 15:45-16:00 CT
    halted = load_window(source, "2026-10-30T21:00:00Z", "2026-10-30T21:15:00Z")  # the halt
    assert not last.empty and last.trade_date.isoformat() == "2026-10-30"
    assert halted.empty and halted.trade_date is None and "market closed" in halted.notes[0]
    detection = detect_window(halted, None, Config())
    assert detection.alerts.empty


def test_alert_ids_are_stable_and_confidence_is_bounded():
    rows = [fill(0, 1, 21000, "B", 500.0, 400)]
    first = detect_window(window_of(rows), None, Config()).alerts
    again = detect_window(window_of(rows), None, Config()).alerts
    assert list(first["alert_id"]) == list(again["alert_id"])
    assert ((first["confidence"] >= 0) & (first["confidence"] <= 100)).all()
    raised = dataclasses.replace(Config(), thresholds=dataclasses.replace(Config().thresholds, large_premium_usd=5e6))
    assert detect_window(window_of(rows), None, raised).alerts.empty


def test_volume_above_open_interest_raises_confidence():
    rows = [fill(0, 1, 21000, "B", 500.0, 400)]
    none = detect_window(window_of(rows), None, Config()).alerts
    small_oi = detect_window(window_of(rows, {1: 100}), None, Config()).alerts
    assert small_oi.iloc[0]["confidence"] > none.iloc[0]["confidence"]
    assert small_oi.iloc[0]["volume_oi"] == 4.0 and any("above OI" in r for r in small_oi.iloc[0]["reasons"])


def test_watch_list_holds_orders_and_sweeps_between_the_watch_and_alert_levels():
    config = Config()
    rows = [
        fill(0, 1, 21000, "B", 200.0, 300),  # $1.2M order: watched
        fill(10_000, 2, 21000, "B", 100.0, 300),  # $0.6M: below the watch level
        fill(20_000, 3, 21000, "A", 600.0, 300),  # $3.6M: an alert, not watched
        fill(30_000, 4, 21100, "B", 150.0, 300, "P"),
        fill(30_100, 5, 21200, "B", 160.0, 300, "P"),
    ]  # $1.86M sweep
    detection = detect_window(window_of(rows), None, config)
    assert list(detection.alerts["kind"]) == ["large_order"]
    watch = watch_list(detection.orders, config)
    assert list(watch["kind"]) == ["sweep", "order"]
    assert watch["premium_usd"].tolist() == pytest.approx([(150 + 160) * 300 * 20, 200 * 300 * 20])
    assert watch.iloc[0]["orders"] == 2 and watch.iloc[0]["symbol"] == "NQZ6 P x2 strikes"
    off = dataclasses.replace(config, thresholds=dataclasses.replace(config.thresholds, watch_premium_usd=0.0))
    assert watch_list(detection.orders, off).empty


def test_surge_gate_names_why_a_ratio_past_a_tier_cannot_alert():
    config = Config()
    t = config.thresholds
    volumes = pd.DataFrame(
        {
            "level": ["instrument", "instrument", "instrument", "instrument", "expiry"],
            "ratio": [12.0, 12.0, 12.0, 9.0, 40.0],
            "volume": [t.instrument_min_volume, t.instrument_min_volume - 1, 500, 500, t.expiry_min_volume],
            "history_sessions": [20, 20, 20, 20, t.min_history_sessions - 1],
            "top_order_share": [t.surge_max_order_share, 0.1, t.surge_max_order_share + 0.01, 0.1, 0.1],
        }
    )
    assert surge_gate(volumes, config).tolist() == ["", "thin", "one order", "below the first tier", "short history"]


def test_an_order_without_a_known_aggressor_scores_no_imbalance_and_says_so():
    config = Config()
    bought = detect_window(window_of([fill(0, 1, 21000, "B", 500.0, 400)]), None, config).alerts.iloc[0]
    sold = detect_window(window_of([fill(0, 1, 21000, "A", 500.0, 400)]), None, config).alerts.iloc[0]
    unknown = detect_window(window_of([fill(0, 1, 21000, "N", 500.0, 400)]), None, config).alerts.iloc[0]
    assert (bought["imbalance"], sold["imbalance"], unknown["imbalance"]) == (1.0, -1.0, 0.0)
    assert unknown["direction"] == "UNKNOWN" and "no known aggressor" in unknown["reasons"][1]
    weight = config.confidence.weight_imbalance / sum(
        getattr(config.confidence, f"weight_{k}")
        for k in ("surprise", "premium", "imbalance", "concentration", "volume_oi")
    )
    assert bought["confidence"] - unknown["confidence"] == pytest.approx(100 * weight, abs=0.11)


def test_surge_imbalance_is_signed_by_the_aggressor_side():
    hist = expected("instrument", "7", [8] * 20)
    sold = detect_window(window_of(_surge_rows(400, 40, side="A")), hist, Config()).alerts
    surge = sold[sold["kind"] == "volume_surge"].iloc[0]
    assert surge["imbalance"] == -1.0 and surge["direction"] == "SELL"
