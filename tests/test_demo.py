"""`make demo` (scheduler.py demo): the README's first command, run as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from nqflow.engine.monitor import REPO_ROOT
from nqflow.ops.store import RunOutcome, StateStore

# Slow: make test-fast leaves it out.
pytestmark = pytest.mark.slow


def test_demo_finds_in_each_window_what_it_says_was_planted_and_its_pages_read_cleanly(sample_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABENTO", "NQFLOW_"))}
    # Pointed at a state database a demo did not create: it is used as it is, never deleted.
    state = StateStore(tmp_path / "state.sqlite")
    theirs = ("2026-10-30T15:00:00+00:00", "2026-10-30T15:15:00+00:00")
    state.start_attempt(*theirs, theirs[0])
    state.finish_window(*theirs, RunOutcome("ok", theirs[0], 1.0, None, None, 0, {}))
    run = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scheduler.py"),
            "--outputs",
            str(tmp_path / "outputs"),
            "--state-db",
            str(tmp_path / "state.sqlite"),
            "--set",
            f"notify.log.path={tmp_path / 'alerts.log'}",
            "demo",
            "--windows",
            "3",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "not created by a demo, so nothing in it is deleted" in run.stdout.splitlines()[0]
    kept = state.windows(limit=100)
    assert theirs[0] in set(kept["window_start"]) and len(kept) == 1 + 3  # theirs, and the demo's three
    window_part, *daily = run.stdout.split("\n== session ")
    windows = window_part.split("\n== window ")[1:]
    assert len(windows) == 3
    for block in windows:
        planted = re.findall(r"planted: .*?: (expect an? (\w+) alert|below the thresholds, no alert expected)", block)
        assert planted, block
        printed = re.findall(r"^\[(?:LOW|MEDIUM|HIGH) \d+\] (\w+)", block, flags=re.M)
        expected = [kind for _, kind in planted if kind]
        assert set(expected) <= set(printed) if expected else not printed, block
        report = re.search(r"report (\S+\.html)", block).group(1)
        assert report.startswith(str(tmp_path / "outputs")) and os.path.exists(report)
    assert run.stdout.rstrip().endswith(str(tmp_path / "outputs" / "index.html"))
    assert any(re.search(r"^\[HIGH \d+\] worked_order ", block, flags=re.M) for block in windows)
    # then the next-day statistics of the sessions (off-book blocks, and every alert opened or closed,
    # beside what was planted) and the session reports, each with its report
    off_book = [block for block in daily if "off the order book" in block.splitlines()[0]]
    assert off_book and any(re.search(r"^\[HIGH \d+\] off_book ", block, flags=re.M) for block in off_book)
    verdicts = re.findall(
        r"^   (opening|closing|mixed|unknown): (\w+) .*?(?:\(planted: (\w+)\))?$", "".join(off_book), re.M
    )
    assert verdicts and all(planted in ("", verdict) for verdict, _, planted in verdicts)  # as planted
    assert any(planted for _, _, planted in verdicts)  # at least one verdict checked against ground truth
    follow_ups = sum(block.count("\n[follow-up] ") for block in off_book)
    assert follow_ups >= 1  # one per session, on the channels that carried its alerts
    sessions = [
        re.search(r"report (\S+/session\.html)", block).group(1)
        for block in daily
        if "the session report" in block.splitlines()[0]
    ]
    assert sessions and all(os.path.exists(path) for path in sessions)
    sent = (tmp_path / "alerts.log").read_text().count("alert_id")
    alerts = sum(len(re.findall(r"^\[(?:LOW|MEDIUM|HIGH) \d+\]", block, flags=re.M)) for block in windows + off_book)
    assert sent == alerts + follow_ups
    index = (tmp_path / "outputs" / "index.html").read_text()
    assert index.count("<tr data-kind=") == alerts  # every alert in the index's alert table (follow-ups are not alerts)
    # one dealer-positioning page, for the last session, with walls and a flip, linked from the index
    gex_pages = sorted((tmp_path / "outputs").rglob("gex.html"))
    assert len(gex_pages) == 1, gex_pages
    positioning = re.search(r"call wall ([\d.]+), put wall ([\d.]+), zero gamma (\S+); report (\S+)", daily[-1])
    assert positioning and positioning.group(4) == str(gex_pages[0])
    assert f'href="{gex_pages[0].relative_to(tmp_path / "outputs").as_posix()}"' in index
    # every page the demo wrote, as a trader reads it in headless Chromium: no NaN, no Python list,
    # no raw UD: code in a headline column, nothing that scrolls sideways (screenshots kept)
    from helpers import SCREENSHOTS, chromium, reader_problems
    from playwright.sync_api import sync_playwright

    pages = sorted((tmp_path / "outputs").rglob("*.html"))
    assert len(pages) >= 3 + len(sessions) + 1 + 1  # windows, session and off-book pages, the index
    with sync_playwright() as p:
        browser = chromium(p, tmp_path / "profile")
        page = browser.new_page()
        problems = {}
        for html in pages:
            shot = SCREENSHOTS / "demo" / (html.relative_to(tmp_path / "outputs").as_posix().replace("/", "_") + ".png")
            found = reader_problems(page, html.as_uri(), shot)
            if found:
                problems[html.name] = found
        browser.close()
    assert problems == {}
