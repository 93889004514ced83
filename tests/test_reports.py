"""Reports readers open: the session flow page and the index of every alert, run through the
real scheduler (papermill, SQLite, outbox) on one sample session, opened in headless Chromium."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import SCREENSHOTS, chromium

from nqflow.config import load_config
from nqflow.engine.levels import days_to_expiry
from nqflow.engine.session_flow import leg_aggressors
from nqflow.market import hours as cal
from nqflow.ops.scheduling import Scheduler, SimulatedClock
from nqflow.paths import REPO_ROOT

# Slow: make test-fast leaves it out.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("reports")]  # one worker builds `reported`, not both


@pytest.fixture(scope="module")
def reported(sample_dir, truth, tmp_path_factory):
    """Three windows of one session with planted events, its off-book reading and its session
    report, through `Scheduler` as `run` does them; the index written last."""
    out = tmp_path_factory.mktemp("reports")
    config = load_config(
        overrides={
            "notify.email.enabled": False,
            "notify.slack.enabled": False,
            "notify.console.enabled": False,
            "notify.log.path": str(out / "alerts.log"),
        }
    )
    day = next(
        e["session"]
        for e in truth["events"]
        if e["kind"] == "off_book"
        and e["premium_usd"] >= 3e6
        and any(s["session"] == e["session"] and s["kind"] in ("sweep", "strategy") for s in truth["events"])
    )
    planted = [e for e in truth["events"] if e["session"] == day and e["kind"] in ("block", "sweep", "strategy")]
    starts = sorted({pd.Timestamp(e["window_start"]) for e in planted})[:3]
    clock = SimulatedClock(starts[0])
    scheduler = Scheduler(
        config,
        clock=clock,
        source="replay",
        data_dir=str(sample_dir),
        outputs_dir=out / "outputs",
        state_db=out / "state.sqlite",
    )
    windows = [(s, s + pd.Timedelta(minutes=15)) for s in starts]
    for start, end in windows:
        clock.current = end + pd.Timedelta(minutes=2)
        assert scheduler.process(start, end).ok
    trade_date = dt.date.fromisoformat(day)
    assert scheduler.daily_due("session", clock.now()) == []  # the session is still open
    clock.current = scheduler.ready_at("off_book", trade_date) + pd.Timedelta(minutes=40)
    assert scheduler.daily_due("session", clock.now()) == [trade_date]
    # the next-day statistics (off-book and confirmations), the session report that shows them, the dealer gamma page
    runs = scheduler.daily_tick()
    assert [(r.ok, r.notebook_path.stem) for r in runs] == [(True, "offbook"), (True, "session"), (True, "gex")], [
        r.error for r in runs
    ]
    assert scheduler.daily_tick() == []  # once each
    index = scheduler.refresh_index()
    return scheduler, trade_date, runs[1], index  # the session report


def test_session_report_figures_come_from_the_session_data(reported, source, config):
    scheduler, day, run, _ = reported
    assert run.html_path == scheduler.outputs_dir / str(day) / "session.html"
    row = cal.sessions(day, day).iloc[0]
    trades = source.trades(row.market_open, row.market_close)
    options = trades[trades["put_call"].isin(["C", "P"])]
    zero_dte = options.loc[days_to_expiry(options["ts_event"], options["expiration"]) == 0, "size"].sum()
    calls = options.loc[options["put_call"] == "C", "premium_usd"].sum()
    puts = options.loc[options["put_call"] == "P", "premium_usd"].sum()
    summary = run.summary
    assert summary["contracts"] == options["size"].sum()
    assert summary["zero_dte_share"] == pytest.approx(zero_dte / options["size"].sum())
    assert summary["put_call_premium_ratio"] == pytest.approx(puts / calls)
    recorded = [
        a.to_json()
        for a in scheduler.store.alerts(since=row.market_open.isoformat(), until=row.market_close.isoformat())
    ]
    # The report is written at the close: the session's own off-book alert comes the next day (the
    # next session's report shows it as the previous session's off-book activity).
    at_close = [a for a in recorded if a["kind"] != "off_book"]
    assert summary["alerts"] == len(at_close) >= 2 and len(recorded) == len(at_close) + 1
    recorded = at_close
    page = run.html_path.read_text()
    assert all(alert["symbol"] in page for alert in recorded)  # every alert in the one table
    assert "def " not in page and "read_session_flow(" not in page  # code hidden


def test_a_package_leg_takes_the_package_aggressor():
    """A bought call vertical whose leg prints carry no aggressor: bought at the long strike, sold at the short."""
    options = pd.DataFrame({"instrument_id": [1, 2, 3], "side": ["N", "N", "A"]})
    packages = pd.DataFrame(
        {
            "package_id": [0],
            "side": ["B"],
            "legs": [[{"instrument_id": 1, "sign": 1}, {"instrument_id": 2, "sign": -1}]],
        }
    )
    assert leg_aggressors(options, packages, np.array([0, 0, -1])).tolist() == ["B", "A", "A"]
    sold = packages.assign(side=["A"])
    assert leg_aggressors(options, sold, np.array([0, 0, -1])).tolist() == ["A", "B", "A"]


def test_window_reports_stay_under_one_megabyte(reported):
    scheduler, day, run, _ = reported
    reports = [Path(p) for p in scheduler.store.windows()["html_path"]]
    assert len(reports) == 3
    assert all(path.stat().st_size < 1_000_000 for path in reports), [path.stat().st_size for path in reports]


def test_index_filters_sorts_and_links_in_headless_chromium(reported, tmp_path):
    scheduler, day, _, index = reported
    alerts = [a.to_json() for a in scheduler.store.alerts() if a.kind != "confirmation"]  # follow-ups are not rows
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = chromium(p, tmp_path / "profile")
        page = browser.new_page()
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(index.as_uri())

        def visible():
            return page.eval_on_selector_all("#alerts tbody tr", "rows => rows.filter(r => !r.hidden).length")

        assert visible() == len(alerts)
        # sessions newest first, each with its alert count and its session report
        assert (
            str(day) in page.inner_text("#sessions") and page.locator("#sessions a", has_text="session report").count()
        )
        for kind in sorted({a["kind"] for a in alerts}):
            page.select_option('select[data-filter="kind"]', kind)
            assert visible() == sum(a["kind"] == kind for a in alerts), kind
        page.select_option('select[data-filter="kind"]', "")
        page.fill('input[data-filter="premium"]', "5")
        assert visible() == sum((a["premium_usd"] or 0) >= 5e6 for a in alerts)
        assert f"{visible()} of {len(alerts)} alerts shown" in page.inner_text("#shown")
        page.fill('input[data-filter="premium"]', "0")
        direction = alerts[0]["direction"]
        page.select_option('select[data-filter="direction"]', direction)
        assert visible() == sum(a["direction"] == direction for a in alerts)
        page.select_option('select[data-filter="direction"]', "")
        page.click("#alerts th:has-text('premium')")  # sort, largest first
        first = page.eval_on_selector("#alerts tbody tr", "r => parseFloat(r.dataset.premium)")
        assert first == pytest.approx(max(a["premium_usd"] for a in alerts), abs=0.01)
        # every link resolves to a file; the alert rows link to the report each came from
        links = page.eval_on_selector_all("a", "els => els.map(e => e.href)")
        assert links and all(Path(link.removeprefix("file://")).exists() for link in links)
        rows = page.eval_on_selector_all("#alerts tbody tr", "rows => rows.map(r => r.querySelector('a')?.href || '')")
        assert all(rows) and any(r.endswith("offbook.html") for r in rows)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "index.png"), full_page=True)
        assert all(url.startswith("file://") for url in requests)  # nothing fetched from a network
        browser.close()


def test_every_image_of_every_report_decodes_with_alt_text(reported, tmp_path):
    scheduler, day, run, _ = reported
    pages = [
        run.html_path,
        scheduler.outputs_dir / str(day) / "offbook.html",
        Path(scheduler.store.windows()["html_path"].iloc[0]),
    ]
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = chromium(p, tmp_path / "profile")
        page = browser.new_page()
        for path in pages:
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, e.alt])")
            assert len(images) >= 1 and all(
                done and width > 100 and alt and "No description" not in alt for done, width, alt in images
            ), path
            page.screenshot(path=str(SCREENSHOTS / f"{path.parent.name}-{path.stem}.png"), full_page=True)
        page.goto(run.html_path.as_uri())
        alts = page.eval_on_selector_all("img", "els => els.map(e => e.alt)")
        assert any(
            a.startswith("Bar chart of option premium bought (up) and sold (down) by the aggressor at") for a in alts
        )
        assert any(a.startswith("Line chart of net call and net put premium") for a in alts)
        browser.close()


def test_session_command_prints_only_json(sample_dir, tmp_path):
    import json
    import subprocess
    import sys

    command = [
        sys.executable,
        "scheduler.py",
        "--data-dir",
        str(sample_dir),
        "--state-db",
        str(tmp_path / "s.sqlite"),
        "--outputs",
        str(tmp_path / "out"),
        "session",
        "2026-11-20",
        "--json",
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # nothing but the JSON on stdout
    assert summary["trade_date"] == "2026-11-20" and summary["contracts"] > 10_000 and summary["alerts"] == 0
    assert (tmp_path / "out" / "2026-11-20" / "session.html").exists()
    bad = subprocess.run(
        [*command[:-3], "session", "2026-11-22"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode != 0 and "not a CME Globex trading day" in bad.stderr and len(bad.stderr.splitlines()) == 1
