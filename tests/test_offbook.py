"""Off-book flow (nqflow.engine.offbook): blocks read from next-day statistics, against planted ground truth,
and run by the scheduler once a day through the real notebook, outbox and index."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import chromium as chromium_context

from nqflow.config import load_config
from nqflow.engine.offbook import SETTLEMENT, group_packages, off_book_volumes, read_off_book
from nqflow.engine.positions import verdict_of
from nqflow.errors import DataNotYetAvailable
from nqflow.market import hours as cal
from nqflow.ops.scheduling import Scheduler, SimulatedClock
from nqflow.ops.store import RunOutcome
from nqflow.paths import REPO_ROOT


def planted_off_book(truth) -> dict[str, dict]:
    return {e["session"]: e for e in truth["events"] if e["kind"] == "off_book"}


def test_every_planted_block_is_found_and_none_invented(source, truth, config):
    planted = planted_off_book(truth)
    assert {"block", "vertical", "calendar", None} >= {e["strategy"] for e in planted.values()}
    assert any(e["package"] for e in planted.values()) and any(not e["package"] for e in planted.values())
    read = 0
    for day in source.sessions_available()[:-1]:  # the last session's statistics are not in the sample
        result = read_off_book(source, day, config)
        read += 1
        event = planted.get(str(day))
        off = result.volumes[result.volumes["off_book_volume"] > 0]
        if event is None:
            assert off.empty and result.alerts.empty, f"off-book volume invented on {day}"
            continue
        # measured exactly: the planted sizes, on the planted options, valued at settlement
        assert dict(zip(off["instrument_id"], off["off_book_volume"])) == dict(
            zip(event["instrument_ids"], event["sizes"])
        )
        assert off["premium_usd"].sum() == pytest.approx(event["premium_usd"], abs=1.0)
        # the blocks opened positions: the next morning's open interest says so (the day's screen
        # volume on the same options opens and closes its own share, so the rise is not exactly the size)
        verdicts = [verdict_of(v, c, config.confirm.share) for v, c in zip(off["off_book_volume"], off["oi_change"])]
        assert verdicts == ["opening"] * len(off), f"{day}: {verdicts}"
        if event["premium_usd"] < config.thresholds.off_book_premium_usd:
            assert result.alerts.empty, f"a block below the threshold alerted on {day}"
            continue
        (alert,) = result.alerts.to_dict("records")
        assert sorted(alert["instrument_ids"]) == sorted(event["instrument_ids"])
        assert alert["kind"] == "off_book" and alert["level"] == ("package" if event["package"] else "instrument")
        assert alert["volume"] == event["size"] and alert["direction"] == "UNKNOWN"
        if event["package"]:
            assert alert["strategy"] == event["strategy"]
            assert sorted(leg["ratio"] for leg in alert["legs"]) == [1, 1]
        assert any("positions opened" in r for r in alert["reasons"])
        assert any("exchange-for-related-position" in r for r in alert["reasons"])
    assert read == len(source.sessions_available()) - 1


def test_a_session_whose_statistics_are_not_out_waits(source, config):
    last = source.sessions_available()[-1]
    with pytest.raises(DataNotYetAvailable, match=f"session {last} are not published yet"):
        read_off_book(source, last, config)


def test_preliminary_settlement_only_is_not_read_as_final(source, truth):
    day = dt.date.fromisoformat(next(iter(planted_off_book(truth))))
    following = source.statistics(cal.next_trading_day(day))
    preliminary = following.assign(stat_flags=following["stat_flags"].where(following["stat_type"] != SETTLEMENT, 0))
    chain = source.chain(day)
    with pytest.raises(DataNotYetAvailable, match="final settlement"):
        off_book_volumes(
            day, pd.DataFrame({"instrument_id": [], "size": []}), source.statistics(day), preliminary, chain
        )


def test_packages_are_simple_ratios_of_one_contract_size():
    volumes = pd.DataFrame(
        {
            "off_book_volume": [500.0, 1000.0, 7.0, 11.0, 500.0],
            "premium_usd": [5e6, 4e6, 1e5, 1e5, 3e6],
            "multiplier": [20.0, 20.0, 20.0, 20.0, 2.0],
        }
    )
    groups = sorted(sorted(g) for g in group_packages(volumes, max_ratio=4))
    assert groups == [[0, 1], [2], [3], [4]]  # 500:1000 pair; 7 and 11 do not; a micro never joins NQ


def test_scheduler_reads_a_watched_session_once_after_publication(sample_dir, truth, tmp_path):
    day = dt.date.fromisoformat(next(s for s, e in planted_off_book(truth).items() if e["premium_usd"] >= 3e6))
    row = cal.sessions(day, day).iloc[0]
    following = cal.sessions(cal.next_trading_day(day), cal.next_trading_day(day)).iloc[0]
    config = load_config(
        overrides={
            "notify.email.enabled": False,
            "notify.slack.enabled": False,
            "notify.log.path": str(tmp_path / "alerts.log"),
            "schedule.session_reports": False,
        }
    )
    clock = SimulatedClock(row.market_close)
    state = tmp_path / "state.sqlite"
    scheduler = Scheduler(
        config, clock=clock, source="replay", data_dir=str(sample_dir), outputs_dir=tmp_path / "out", state_db=state
    )
    # the monitor watched a window of that session
    start = row.market_open + pd.Timedelta(hours=16)
    scheduler.store.start_attempt(start.isoformat(), (start + pd.Timedelta(minutes=15)).isoformat(), start.isoformat())
    scheduler.store.finish_window(
        start.isoformat(),
        (start + pd.Timedelta(minutes=15)).isoformat(),
        RunOutcome("ok", start.isoformat(), 1.0, None, None, 0, {}),
    )
    assert scheduler.daily_due("off_book", clock.now()) == []  # the statistics come with the next session
    clock.current = following.market_open + pd.Timedelta(minutes=40)
    assert scheduler.daily_due("off_book", clock.now()) == [day]
    runs = {daily.notebook_path.stem: daily for daily in scheduler.daily_tick()}  # and that session's dealer gamma
    run = runs["offbook"]
    assert run.ok and len(run.alerts) == 1 and run.alerts[0].kind == "off_book"
    assert scheduler.daily_tick() == []  # once
    again = Scheduler(
        config, clock=clock, source="replay", data_dir=str(sample_dir), outputs_dir=tmp_path / "out", state_db=state
    )
    assert again.daily_due("off_book", clock.now()) == []  # and once across restarts
    logged = [json.loads(line) for line in (tmp_path / "alerts.log").read_text().splitlines()]
    assert [a["alert_id"] for a in logged] == [run.alerts[0].alert_id]
    index = (tmp_path / "out" / "index.html").read_text()
    assert "off the order book" in index and f'{day}/offbook.html">off-book report</a>' in index


def test_unpublished_day_waits_without_spending_attempts(sample_dir, tmp_path):
    config = load_config(
        overrides={
            "notify.email.enabled": False,
            "notify.slack.enabled": False,
            "notify.log.enabled": False,
            "notify.console.enabled": False,
        }
    )
    last = cal.trading_days(dt.date(2026, 11, 27), dt.date(2026, 11, 27))[0]
    clock = SimulatedClock(pd.Timestamp("2026-11-30T00:00Z"))
    scheduler = Scheduler(
        config,
        clock=clock,
        source="replay",
        data_dir=str(sample_dir),
        outputs_dir=tmp_path / "out",
        state_db=tmp_path / "state.sqlite",
    )
    run = scheduler.process_daily("off_book", last)
    record = scheduler.store.daily_run("off_book", str(last))
    assert run.waiting and record["status"] == "waiting" and record["attempts"] == 0
    assert pd.Timestamp(record["next_attempt_at"]) == clock.now() + pd.Timedelta(
        minutes=config.schedule.daily_wait_minutes
    )


@pytest.mark.slow
def test_offbook_command_prints_only_json_and_sends_once(sample_dir, truth, tmp_path):
    day = next(s for s, e in planted_off_book(truth).items() if e["premium_usd"] >= 3e6)
    command = [
        sys.executable,
        "scheduler.py",
        "--data-dir",
        str(sample_dir),
        "--state-db",
        str(tmp_path / "s.sqlite"),
        "--outputs",
        str(tmp_path / "out"),
        "--set",
        f"notify.log.path={tmp_path / 'alerts.log'}",
        "--set",
        "notify.email.enabled=false",
        "--set",
        "notify.slack.enabled=false",
        "offbook",
        day,
        "--json",
    ]
    first = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    alerts = json.loads(first.stdout)  # nothing but the JSON on stdout
    # The console channel's lines went to stderr: the alert's, once. Other lines there (a kernel's
    # own log lines, which also start with "[") are not alerts.
    console = re.compile(r"^\[(?:LOW|MEDIUM|HIGH)(?: \d+)?\] |^\[follow-up\] ")
    sent = [line for line in first.stderr.splitlines() if console.match(line)]
    assert [a["kind"] for a in alerts] == ["off_book"] and len(sent) == 1 and " off_book " in sent[0], first.stderr
    second = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and json.loads(second.stdout) == alerts
    assert not [line for line in second.stderr.splitlines() if console.match(line)], second.stderr  # not sent again
    assert len((tmp_path / "alerts.log").read_text().splitlines()) == 1


def test_offbook_report_renders_in_headless_chromium(sample_dir, truth, tmp_path):
    from nqflow.ops.runner import execute_daily

    day = next(s for s, e in planted_off_book(truth).items() if e["package"])
    run = execute_daily(
        "off_book",
        day,
        tmp_path,
        {"config_path": "", "source": "replay", "data_dir": str(sample_dir), "state_db": "", "overrides": {}},
    )
    assert run.ok, run.error
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = chromium_context(p, tmp_path / "profile")
        page = browser.new_page()
        page.goto(Path(run.html_path).as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, e.alt])")
        assert images and all(done and width > 100 for done, width, _ in images)
        (alt,) = [alt for _, _, alt in images if alt.startswith("Bar charts of off-book premium")]
        planted = planted_off_book(truth)[day]
        assert all(symbol.split(" ")[0] in alt and symbol in alt for symbol in planted["symbols"])
        assert "def " not in page.inner_text("body")  # code hidden
        page.screenshot(path=str(tmp_path / "offbook.png"))
        browser.close()
