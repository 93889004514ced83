"""Dealer positioning (#25): GEX right by hand-checked numbers, the flip on a chain with a known
crossing, walls where the open interest is, and a session of the sample market read whole."""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq

from nqflow.engine.baseline import BaselineStore
from nqflow.engine.gex import (
    FLOW_ASSUMPTION,
    DealerPositioning,
    black76_gamma,
    dealer_positioning,
    flow_adjusted,
    gex_profile,
    option_gex,
    session_walls,
    wall_reason,
)
from nqflow.engine.monitor import run_window
from nqflow.errors import DataNotYetAvailable
from nqflow.paths import REPO_ROOT


def test_gex_of_three_options_by_hand():
    # F = 20,000, sigma = 20%, T = 0.25 years: sigma sqrt(T) = 0.1, d1 = (ln(F/K) + 0.005) / 0.1.
    # At K = 20,000: d1 = 0.05, n(d1) = exp(-0.00125) / sqrt(2 pi) = 0.398444, gamma = 0.398444 / (20,000 x 0.1)
    # = 1.99222e-4; GEX = gamma x 100 OI x $20 x 20,000^2 x 1% = 1.99222e-4 x 8e9 = $1,593,776 (a call: +).
    # At K = 19,500 (a put, 200 OI): d1 = (0.025318 + 0.005) / 0.1 = 0.30318, n = 0.381023, gamma = 1.90512e-4,
    # GEX = -1.90512e-4 x 1.6e10 = -$3,048,184 (a put: -).
    # At K = 20,500 (a call, 50 OI): d1 = -0.196926, n = 0.391281, gamma = 1.95641e-4, GEX = +$782,562.
    forward, years, vol = 20_000.0, 0.25, 0.20
    strikes = np.array([20_000.0, 19_500.0, 20_500.0])
    gamma = black76_gamma(forward, strikes, years, vol)
    assert gamma == pytest.approx([1.99222e-4, 1.90512e-4, 1.95641e-4], rel=2e-5)
    gex = option_gex(gamma, [100, 200, 50], 20.0, forward, ["C", "P", "C"])
    assert gex == pytest.approx([1_593_776, -3_048_184, 782_562], abs=60)
    assert math.isclose(gex.sum(), 1_593_776 - 3_048_184 + 782_562, abs_tol=150)


def chain(rows: list[tuple[str, float, float]], forward: float = 20_000.0, years: float = 30 / 365) -> pd.DataFrame:
    """Options of one expiry as `dealer_positioning` keeps them: (put_call, strike, open interest)."""
    frame = pd.DataFrame(rows, columns=["put_call", "strike", "open_interest"])
    return frame.assign(
        instrument_id=range(len(frame)),
        symbol=[f"NQZ6 {p}{k:.0f}" for p, k, _ in rows],
        underlying="NQZ6",
        expiry="NQZ6",
        expiration=pd.Timestamp("2026-12-18T14:30Z"),
        multiplier=20.0,
        settlement=np.nan,
        future_price=forward,
        years=years,
        implied_vol=0.2,
    )


def test_zero_gamma_is_the_crossing_nearest_the_price_on_a_chain_with_a_known_one():
    # Heavy puts below and calls above: short gamma as the future falls, long as it rises. The
    # crossing, solved independently with brentq on the same formula, is what the grid finds.
    options = chain([("P", 19_000.0, 6_000), ("P", 19_500.0, 4_000), ("C", 20_500.0, 3_000), ("C", 21_000.0, 5_000)])

    def total(price: float) -> float:
        forward = options["future_price"] * price / 20_000.0
        gamma = black76_gamma(forward, options["strike"], options["years"], options["implied_vol"])
        return float(option_gex(gamma, options["open_interest"], 20.0, forward, options["put_call"]).sum())

    known = brentq(total, 19_000.0, 21_000.0)
    profile, crossings = gex_profile(options, 20_000.0)
    assert len(crossings) == 1 and crossings[0] == pytest.approx(known, abs=1.0)
    positioning = DealerPositioning(
        dt.date(2026, 11, 25),
        "NQZ6",
        20_000.0,
        options.assign(
            gex_usd=option_gex(
                black76_gamma(20_000.0, options["strike"], options["years"], 0.2),
                options["open_interest"],
                20.0,
                20_000.0,
                options["put_call"],
            )
        ),
        {},
        crossings,
        profile,
    )
    assert positioning.zero_gamma == pytest.approx(known, abs=1.0)
    gex = positioning.options.set_index("strike")["gex_usd"]
    assert positioning.put_wall == gex[gex < 0].abs().idxmax() and positioning.call_wall == gex[gex > 0].idxmax()
    assert positioning.nearest_wall(positioning.call_wall + 10) == ("call wall", positioning.call_wall)


def test_walls_sit_on_a_concentration_of_open_interest():
    options = chain([("C", 20_000.0, 100), ("C", 20_100.0, 9_000), ("P", 19_900.0, 100), ("P", 19_800.0, 7_000)])
    gamma = black76_gamma(options["future_price"], options["strike"], options["years"], options["implied_vol"])
    options["gex_usd"] = option_gex(gamma, options["open_interest"], 20.0, options["future_price"], options["put_call"])
    positioning = DealerPositioning(dt.date(2026, 11, 25), "NQZ6", 20_000.0, options, {})
    assert (positioning.call_wall, positioning.put_wall) == (20_100.0, 19_800.0)
    assert positioning.abs_gamma_strike == 20_100.0


def test_an_alerts_wall_reason_names_the_nearest_wall_and_its_distance():
    walls = {"call wall": 21_000.0, "put wall": 20_500.0, "absolute-gamma strike": 21_000.0}
    assert wall_reason(walls, 20_600.0, 20_900.0) == (
        "strike 20,600.00 is 100.00 pts (0.49%) above the nearest wall, the put wall 20,500 "
        "(settled dealer positioning)"
    )
    # a tie between the call wall and the absolute-gamma strike goes to the call wall; no strike: the future
    assert wall_reason(walls, None, 21_042.5) == (
        "future 21,042.50 is 42.50 pts (0.20%) above the nearest wall, the call wall 21,000 "
        "(settled dealer positioning)"
    )
    assert (
        wall_reason(walls, 21_000.0, None) == "strike 21,000.00 is at the call wall 21,000 (settled dealer positioning)"
    )
    assert wall_reason(walls, 20_740.0, None).startswith(
        "strike 20,740.00 is 240.00 pts (1.17%) above the nearest wall, the put"
    )
    assert wall_reason(walls, 20_760.0, None).startswith(
        "strike 20,760.00 is 240.00 pts (1.14%) below the nearest wall, the call"
    )
    assert wall_reason({}, 20_600.0, 20_900.0) is None and wall_reason(walls, None, None) is None


def test_every_alert_of_a_sample_window_names_its_sessions_nearest_wall(source, truth, config, tmp_path):
    baseline = BaselineStore(tmp_path / "baseline.sqlite")  # never the checkout's state database
    sessions = truth["sessions"]
    event = next(e for e in truth["events"] if e["session"] == sessions[2] and e["kind"] == "strategy")
    day = dt.date.fromisoformat(event["session"])
    walls = dealer_positioning(source, day).walls
    assert session_walls(source, day) == walls and set(walls) == {"call wall", "put wall", "absolute-gamma strike"}
    alerts = run_window(config, event["window_start"], event["window_end"], source, baseline, False).alerts
    assert len(alerts)
    for alert in alerts.to_dict("records"):
        assert alert["reasons"][-1] == wall_reason(walls, alert["strike"], alert["underlying_price"])
        assert "nearest wall" in alert["reasons"][-1] or " is at the " in alert["reasons"][-1]
    # the first session has no previous settlement: no walls, and no alert claims one
    first = next(e for e in truth["events"] if e["session"] == sessions[0])
    assert session_walls(source, dt.date.fromisoformat(first["session"])) == {}
    alerts = run_window(config, first["window_start"], first["window_end"], source, baseline, False).alerts
    assert len(alerts) and not any("wall" in reason for reasons in alerts["reasons"] for reason in reasons)


def test_the_walls_are_the_concentrations_planted_in_the_sample_market(source, truth):
    planted = truth["dealer_walls"]
    assert planted["expiry"] == "NQZ6" and planted["put_wall"] < planted["call_wall"]
    read = 0
    for day in truth["sessions"][1:]:  # the first session has no previous settlement
        positioning = dealer_positioning(source, dt.date.fromisoformat(day), profile=False)
        walls = positioning.walls
        assert (walls["call wall"], walls["put wall"]) == (planted["call_wall"], planted["put_wall"]), day
        assert walls["absolute-gamma strike"] in (planted["call_wall"], planted["put_wall"]), day
        # the concentration is on the planted expiry: its strike's GEX is mostly that expiry's
        at_wall = positioning.options[positioning.options["strike"] == planted["call_wall"]]
        calls = at_wall[at_wall["put_call"] == "C"]
        assert calls.loc[calls["expiry"] == planted["expiry"], "gex_usd"].sum() > 0.5 * calls["gex_usd"].sum()
        read += 1
    assert read == len(truth["sessions"]) - 1


def test_a_session_of_the_sample_market_is_read_whole_with_no_nan(source, truth):
    day = dt.date.fromisoformat(truth["sessions"][-2])
    positioning = dealer_positioning(source, day)
    as_json = positioning.to_json()
    assert positioning.options["gex_usd"].notna().all() and math.isfinite(as_json["total_gex_usd"])
    assert len(positioning.options) > 10_000 and sum(as_json["skipped"].values()) > 0  # counted, not NaN
    strikes = set(positioning.options["strike"])
    assert {as_json["call_wall"], as_json["put_wall"], as_json["abs_gamma_strike"]} <= strikes
    assert as_json["zero_gamma"] in as_json["zero_gamma_crossings"]
    assert {row["strike"] for row in as_json["by_strike"]} == strikes
    by_expiry = sum(row["net_gex_usd"] for row in as_json["by_expiry"])
    assert by_expiry == pytest.approx(as_json["total_gex_usd"], rel=1e-6)
    assert as_json["future"].startswith("NQ") and 15_000 < as_json["future_price"] < 30_000


def test_a_session_without_its_statistics_waits(source, truth):
    after = dt.date.fromisoformat(truth["sessions"][-1]) + dt.timedelta(days=3)  # past the sample's last file
    with pytest.raises(DataNotYetAvailable, match="waits for open interest"):
        dealer_positioning(source, after)


class _PreliminaryOnly:
    """The sample's source with every settlement as CME first sends it: preliminary."""

    def __init__(self, source):
        self._source = source

    def __getattr__(self, name):
        return getattr(self._source, name)

    def statistics(self, session):
        return self._source.statistics(session).assign(stat_flags=0)


def test_a_session_with_only_preliminary_settlements_waits(source, truth):
    day = dt.date.fromisoformat(truth["sessions"][-2])
    with pytest.raises(DataNotYetAvailable, match=r"final settlement prices \(only preliminary so far\)"):
        dealer_positioning(_PreliminaryOnly(source), day)


def test_gex_command_prints_one_json_object(sample_dir, truth, tmp_path):
    day = truth["sessions"][-2]
    done = subprocess.run(
        [
            sys.executable,
            "scheduler.py",
            "--data-dir",
            str(sample_dir),
            "--state-db",
            str(tmp_path / "state.sqlite"),
            "--outputs",
            str(tmp_path / "out"),
            "gex",
            day,
            "--json",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) >= {
        "session",
        "future",
        "future_price",
        "call_wall",
        "put_wall",
        "abs_gamma_strike",
        "zero_gamma",
        "total_gex_usd",
        "by_strike",
        "by_expiry",
        "skipped",
    }
    assert report["session"] == day and report["by_strike"][0].keys() == {
        "strike",
        "call_gex_usd",
        "put_gex_usd",
        "net_gex_usd",
    }
    assert (tmp_path / "out" / day / "gex.html").exists() and "call wall" in done.stderr


def test_the_flow_adjusted_view_moves_dealer_positions_by_the_aggressor():
    # The three options of the by-hand test: call 20,000 (100 OI, +$1,593,776), put 19,500 (200 OI,
    # -$3,048,184), call 20,500 (50 OI, +$782,562), so $15,937.76, $15,240.92 and $15,651.24 a contract.
    # Customers buy 40 of the 20,000 call (dealers now long 60) and sell 50 of the 19,500 put to
    # dealers (dealers short 150); a print on an option without a settled gamma is counted, not summed.
    options = chain([("C", 20_000.0, 100), ("P", 19_500.0, 200), ("C", 20_500.0, 50)], years=0.25)
    options["gamma"] = black76_gamma(20_000.0, options["strike"], 0.25, 0.2)
    options["gex_usd"] = option_gex(options["gamma"], options["open_interest"], 20.0, 20_000.0, options["put_call"])
    settled = DealerPositioning(dt.date(2026, 11, 25), "NQZ6", 20_000.0, options, {})
    prints = pd.DataFrame(
        {
            "instrument_id": [0, 0, 1, 1, 2, 99],
            "size": [30, 10, 50, 7, 5, 11],
            "side": ["B", "B", "A", "N", "B", "B"],  # side N: no aggressor, no customer known
        }
    )
    adjusted = flow_adjusted(settled, prints)
    gex = adjusted.options.set_index("strike")["gex_usd"]
    assert gex[20_000.0] == pytest.approx(60 * 15_937.76, abs=10)
    assert gex[19_500.0] == pytest.approx(-150 * 15_240.92, abs=10)
    assert gex[20_500.0] == pytest.approx(45 * 15_651.24, abs=10)
    assert adjusted.skipped == {"flow on options without a settled gamma (contracts)": 11}
    assert settled.options["gex_usd"].sum() == pytest.approx(1_593_776 - 3_048_184 + 782_562, abs=150)  # untouched
    assert "estimate" in FLOW_ASSUMPTION.lower()


def test_parity_forwards_by_hand():
    """F = K + C - P at each expiry's strike where |C - P| is least (the lower strike on a tie),
    from each option's last settlement; a strike with only a call, or a put with no settlement,
    gives no pair."""
    from nqflow.engine.gex import parity_forwards

    rows = [
        # expiry, strike, right, settlement
        ("NQZ6", 20000.0, "C", 700.0),
        ("NQZ6", 20000.0, "P", 300.0),  # gap 400
        ("NQZ6", 20500.0, "C", 410.0),
        ("NQZ6", 20500.0, "P", 500.0),  # gap 90
        ("NQZ6", 20500.0, "P", 480.0),  # the same put settled again later: its last counts, gap 70
        ("NQZ6", 21000.0, "C", 150.0),  # no put: no pair
        ("Q3AZ6", 20400.0, "C", 120.0),
        ("Q3AZ6", 20400.0, "P", 100.0),  # gap 20
        ("Q3AZ6", 20600.0, "C", 60.0),
        ("Q3AZ6", 20600.0, "P", 40.0),  # gap 20, a tie: the lower strike wins
        ("Q3AZ6", 20800.0, "C", 30.0),
        ("Q3AZ6", 20800.0, "P", np.nan),  # no settlement: no pair
        ("QNEZ6", 20000.0, "C", 500.0),  # calls only: no forward for the expiry
    ]
    options = pd.DataFrame(rows, columns=["expiry", "strike", "put_call", "settlement"])
    forwards = parity_forwards(options)
    assert forwards.index.tolist() == ["NQZ6", "Q3AZ6"]
    assert forwards["NQZ6"] == 20500.0 + 410.0 - 480.0
    assert forwards["Q3AZ6"] == 20400.0 + 120.0 - 100.0
    assert parity_forwards(options[options["put_call"] == "C"]).empty
