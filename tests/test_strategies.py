"""Strategy packages on hand-made prints: a spread is one trade, named, priced and read by its delta."""

from __future__ import annotations

import pandas as pd
import pytest

from nqflow.config import Config
from nqflow.engine.detect import detect_window, surge_gate
from nqflow.engine.strategies import infer_signs, name_strategy
from nqflow.market.frames import LEG_COLUMNS, TRADE_COLUMNS, WindowData, empty_frame
from nqflow.market.pricing import black76

T0 = pd.Timestamp("2026-11-16T15:00:00Z")  # trade date 2026-11-16
EXPIRY = pd.Timestamp("2026-11-25T21:00:00Z")  # Q4C, 9 days out, 15:00 CT
FAR = pd.Timestamp("2026-12-02T21:00:00Z")
F = 21000.0


def option(
    ms: int,
    iid: int,
    put_call: str,
    strike: float,
    side: str,
    size: int,
    expiration=EXPIRY,
    root: str = "Q4CX6",
    price: float | None = None,
) -> dict:
    years = (expiration - T0).total_seconds() / (365.25 * 86400)
    price = price if price is not None else round(float(black76(F, strike, years, 0.2, put_call == "C")) * 4) / 4
    return {
        "ts_event": T0 + pd.Timedelta(milliseconds=ms),
        "instrument_id": iid,
        "symbol": f"{root} {put_call}{strike:g}",
        "product": root[:3],
        "instrument_class": put_call,
        "expiration": expiration,
        "strike": strike,
        "put_call": put_call,
        "price": price,
        "size": size,
        "side": side,
        "multiplier": 20.0,
        "premium_usd": price * size * 20.0,
    }


def spread_print(ms: int, iid: int, price: float, size: int, side: str, klass: str = "T") -> dict:
    return {
        "ts_event": T0 + pd.Timedelta(milliseconds=ms),
        "instrument_id": iid,
        "symbol": f"UD:1V: VT {iid}",
        "product": "Q4C",
        "instrument_class": klass,
        "expiration": EXPIRY,
        "strike": float("nan"),
        "put_call": pd.NA,
        "price": price,
        "size": size,
        "side": side,
        "multiplier": 20.0,
        "premium_usd": price * size * 20.0,
    }


def window(
    options: list[dict], spreads: list[dict] = (), legs: list[tuple] = (), futures: list[dict] = ()
) -> WindowData:
    trades = pd.DataFrame(options) if options else empty_frame(TRADE_COLUMNS)
    legs_frame = pd.DataFrame(list(legs), columns=list(LEG_COLUMNS)) if legs else empty_frame(LEG_COLUMNS)
    underlying = pd.DataFrame(
        {
            "ts_event": [T0 - pd.Timedelta(seconds=1)],
            "instrument_id": [1000],
            "symbol": ["NQZ6"],
            "price": [F],
            "size": [1],
            "side": ["B"],
        }
    )
    futures_frame = pd.DataFrame(list(futures)) if futures else underlying.iloc[:0]
    return WindowData(
        T0,
        T0 + pd.Timedelta(minutes=15),
        T0.date(),
        trades,
        pd.DataFrame(),
        pd.DataFrame({"instrument_id": [], "open_interest": []}),
        underlying,
        spreads=pd.DataFrame(list(spreads)) if spreads else empty_frame(TRADE_COLUMNS),
        legs=legs_frame,
        futures=futures_frame,
    )


@pytest.mark.parametrize(
    "legs, name",
    [
        ([("C", 21000, 0, 1, 1), ("C", 21200, 0, 1, -1)], "vertical"),
        ([("C", 21000, 0, 1, 1), ("C", 21200, 0, 2, -1)], "ratio"),
        ([("C", 21000, 0, 1, 1), ("P", 21000, 0, 1, 1)], "straddle"),
        ([("C", 21200, 0, 1, -1), ("P", 20800, 0, 1, -1)], "strangle"),
        ([("C", 21200, 0, 1, 1), ("P", 20800, 0, 1, -1)], "risk_reversal"),
        ([("C", 20900, 0, 1, 1), ("C", 21000, 0, 2, -1), ("C", 21100, 0, 1, 1)], "butterfly"),
        ([("P", 20600, 0, 1, 1), ("P", 20800, 0, 1, -1), ("C", 21200, 0, 1, -1), ("C", 21400, 0, 1, 1)], "condor"),
        ([("C", 21000, 0, 1, -1), ("C", 21000, 1, 1, 1)], "calendar"),
        ([("C", 21000, 0, 1, -1), ("C", 21200, 1, 1, 1)], "diagonal"),
        ([("C", 21000, 0, 3, 1), ("F", float("nan"), 0, 1, -1)], "covered"),
        ([("C", 21000, 0, 1, 1), ("P", 21000, 1, 1, -1)], "other"),
    ],
)
def test_strategy_names(legs, name):
    assert (
        name_strategy(
            [{"put_call": pc, "strike": k, "expiration": e, "ratio": r, "sign": s} for pc, k, e, r, s in legs]
        )
        == name
    )


def test_signs_are_inferred_from_the_spread_price():
    # 21000/21200 call spread worth 250 - 130 = 120 when the lower strike is bought
    assert infer_signs([250.0, 130.0], [1, 1], [True, True], 120.0) == [1, -1]
    assert infer_signs([250.0, 130.0], [1, 1], [True, True], -120.0) == [-1, 1]
    assert infer_signs([250.0, 240.0], [1, 1], [True, True], 490.0) == [1, 1]


def test_a_vertical_spread_is_one_strategy_alert_and_its_legs_are_not_orders_or_a_sweep():
    low, high = option(0, 11, "C", 20900, "N", 600), option(0, 12, "C", 21300, "B", 600)
    net = low["price"] - high["price"]
    w = window(
        [low, high],
        [spread_print(0, 900, net, 600, "B")],
        [(900, 0, 11, 1, 1, low["price"], 0.6), (900, 1, 12, -1, 1, high["price"], 0.3)],
    )
    detection = detect_window(w, None, Config())
    alerts = detection.alerts
    assert list(alerts["kind"]) == ["strategy"]  # the $3M+ long leg is not a large order, the pair no sweep
    alert = alerts.iloc[0]
    assert alert["strategy"] == "vertical" and alert["direction"] == "BUY" and alert["sentiment"] == "BULLISH"
    assert alert["premium_usd"] == pytest.approx(low["premium_usd"] + high["premium_usd"])
    assert alert["net_premium_usd"] == pytest.approx(net * 600 * 20)
    assert alert["net_delta"] > 0 and alert["days_to_expiry"] == 9 and not alert["zero_dte"]
    assert [(leg["instrument_id"], leg["sign"]) for leg in alert["legs"]] == [(11, 1), (12, -1)]
    assert (detection.orders["package_id"] >= 0).all()


def test_a_spread_without_leg_definitions_is_read_from_its_prints():
    call, put = option(0, 21, "C", 21300, "N", 900), option(0, 22, "P", 20700, "N", 900)
    w = window([call, put], [spread_print(0, 901, call["price"] - put["price"], 900, "A")])
    alert = detect_window(w, None, Config()).alerts.iloc[0]
    # sold risk reversal: calls sold, puts bought: bearish
    assert alert["strategy"] == "risk_reversal" and alert["direction"] == "SELL" and alert["sentiment"] == "BEARISH"
    assert any("inferred from the prints" in r for r in alert["reasons"])


def test_a_delta_neutral_package_is_a_volatility_trade_never_bullish_or_bearish():
    call, put = option(0, 31, "C", 21000, "N", 700), option(0, 32, "P", 21000, "N", 700)
    w = window(
        [call, put],
        [spread_print(0, 902, call["price"] + put["price"], 700, "B")],
        [(902, 0, 31, 1, 1, call["price"], 0.5), (902, 1, 32, 1, 1, put["price"], -0.5)],
    )
    alert = detect_window(w, None, Config()).alerts.iloc[0]
    assert alert["strategy"] == "straddle" and alert["sentiment"] == "VOLATILITY" and alert["direction"] == "BUY"
    assert abs(alert["net_delta"]) < 0.15 * 700


def test_covered_package_with_a_futures_leg_is_delta_neutral():
    call = option(0, 41, "C", 21000, "N", 2000)
    future = {"ts_event": T0, "instrument_id": 1000, "symbol": "NQZ6", "price": F, "size": 1000, "side": "N"}
    w = window(
        [call],
        [spread_print(0, 903, call["price"], 1000, "B", "M")],
        [(903, 0, 41, 1, 2, call["price"], 0.5), (903, 1, 1000, -1, 1, F, 1.0)],
        [future],
    )
    alert = detect_window(w, None, Config()).alerts.iloc[0]
    assert alert["strategy"] == "covered" and alert["sentiment"] == "VOLATILITY"
    assert [leg["put_call"] for leg in alert["legs"]] == ["C", "F"]


def test_prints_on_several_strikes_at_one_instant_are_a_package_before_they_can_be_a_sweep():
    rows = [option(0, 51, "P", 20800, "A", 900), option(0, 52, "P", 20900, "A", 900)]
    alerts = detect_window(window(rows), None, Config()).alerts
    assert list(alerts["kind"]) == ["strategy"] and alerts.iloc[0]["strategy"] == "other"  # two puts sold together
    assert any("no spread instrument" in r for r in alerts.iloc[0]["reasons"])
    apart = [option(0, 51, "P", 20800, "A", 900), option(40, 52, "P", 20900, "A", 900)]  # 40 ms apart: a sweep
    assert list(detect_window(window(apart), None, Config()).alerts["kind"]) == ["sweep"]


def test_zero_dte_orders_say_so_and_short_dated_strikes_are_judged_at_their_dte_level():
    today = pd.Timestamp("2026-11-16T21:00:00Z")
    big = option(0, 61, "C", 21000, "B", 5000, expiration=today, root="Q3AX6")
    alert = detect_window(window([big]), None, Config()).alerts.iloc[0]
    assert alert["kind"] == "large_order" and alert["zero_dte"] and alert["days_to_expiry"] == 0
    assert "0DTE: expires today" in alert["reasons"]
    volumes = pd.DataFrame(
        {
            "level": ["instrument", "instrument", "expiry"],
            "days_to_expiry": [0, 9, 0],
            "ratio": [40.0, 40.0, 40.0],
            "volume": [900, 900, 900],
            "history_sessions": [20] * 3,
            "top_order_share": [0.1] * 3,
        }
    )
    assert list(surge_gate(volumes, Config())) == ["short-dated: judged at its days-to-expiry level", "", ""]


def test_options_of_an_unwatched_product_are_left_out_and_named_once(caplog):
    from nqflow.market import frames as data
    from nqflow.market.frames import window_from

    rows = [option(0, 71, "C", 21000, "B", 5), option(1, 72, "C", 21000, "B", 5, root="Q3BX6")]
    fills = pd.DataFrame(rows)
    data._reported_unwatched.discard("Q3B")
    with caplog.at_level("WARNING", logger="nqflow.market.frames"):
        w = window_from(
            T0,
            T0 + pd.Timedelta(minutes=15),
            T0.date(),
            fills,
            pd.DataFrame(),
            pd.DataFrame({"instrument_id": [], "open_interest": []}),
            watched=frozenset({"Q4C"}),
        )
        window_from(
            T0,
            T0 + pd.Timedelta(minutes=15),
            T0.date(),
            fills,
            pd.DataFrame(),
            pd.DataFrame({"instrument_id": [], "open_interest": []}),
            watched=frozenset({"Q4C"}),
        )
    assert set(w.trades["instrument_id"]) == {71}
    warnings = [r.getMessage() for r in caplog.records if "not watched" in r.getMessage()]
    assert len(warnings) == 1 and '"Q3B.OPT"' in warnings[0] and "universe.option_parents" in warnings[0]
