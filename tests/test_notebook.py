"""The monitoring notebook under papermill: scraps read back, HTML reports opened in Chromium."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest
from helpers import chromium as chromium_context

from nqflow.ops.runner import execute_window
from nqflow.ops.store import RunOutcome, StateStore
from nqflow.reports.index import write_index

# Slow: make test-fast leaves it out.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("notebook")]  # one papermill run, not one per worker

SECRETS = {
    "DATABENTO_API_KEY": "db-SECRETkey0123456789",
    "NQFLOW_SMTP_PASSWORD": "smtp-SECRET-pw-42",
    "NQFLOW_SLACK_WEBHOOK_URL": "http://127.0.0.1:9/hooks/SECRET-webhook",
}


@pytest.fixture(scope="module")
def executed(sample_dir, truth, tmp_path_factory):
    """One real papermill run of a window holding a planted $3M+ block, with secrets in the environment."""
    block = next(
        e
        for e in truth["events"]
        if e["kind"] == "block" and e["premium_usd"] > 3e6 and e["session"] == truth["sessions"][-1]
    )
    out = tmp_path_factory.mktemp("outputs")
    saved = {k: os.environ.get(k) for k in SECRETS}
    os.environ.update(SECRETS)
    try:
        start = pd.Timestamp(block["window_start"])
        run = execute_window(
            start,
            start + pd.Timedelta(minutes=15),
            out,
            {"data_dir": str(sample_dir), "state_db": str(out / "state.sqlite")},
        )
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    return block, run, out


def test_papermill_run_glues_the_planted_block_as_an_alert(executed):
    block, run, _ = executed
    assert run.ok, run.error
    large = [a.to_json() for a in run.alerts if a.kind == "large_order"]
    assert any(a["instrument_ids"] == block["instrument_ids"] for a in large)
    alert = next(a for a in large if a["instrument_ids"] == block["instrument_ids"])
    assert alert["premium_usd"] == pytest.approx(block["premium_usd"], rel=1e-9)
    assert alert["direction"] == {"B": "BUY", "A": "SELL"}[block["side"]]
    assert run.summary["alerts"] == len(run.alerts) and run.summary["option_trades"] > 0


def test_html_report_hides_code_and_embeds_charts(executed):
    _, run, _ = executed
    page = run.html_path.read_text()
    assert "run_window(" not in page and "import scrapbook" not in page
    assert page.count("data:image/png;base64") >= 4


def test_secrets_never_reach_notebooks_or_reports(executed):
    _, run, out = executed
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".ipynb", ".html", ".log", ".json"):
            text = path.read_text(errors="ignore")
            for secret in SECRETS.values():
                assert secret not in text, f"{secret} leaked into {path}"


def test_failed_run_keeps_its_executed_notebook(sample_dir, tmp_path):
    start = pd.Timestamp("2026-10-30T15:00Z")
    run = execute_window(
        start,
        start + pd.Timedelta(minutes=15),
        tmp_path,
        {"data_dir": str(tmp_path / "missing"), "state_db": str(tmp_path / "s.sqlite")},
    )
    assert not run.ok and "replay folder" in run.error and "does not exist" in run.error
    assert run.notebook_path.exists() and "does not exist" in run.notebook_path.read_text()


def test_index_and_report_render_in_headless_chromium(executed, tmp_path):
    _, run, out = executed
    store = StateStore(out / "state.sqlite")
    start = run.summary["window_start"]
    store.start_attempt(start, run.summary["window_end"], start)
    store.finish_window(
        start,
        run.summary["window_end"],
        RunOutcome(
            "ok", start, run.duration_s, str(run.notebook_path), str(run.html_path), len(run.alerts), run.summary
        ),
    )
    index = write_index(out, store.windows())
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = chromium_context(p, tmp_path / "profile")
        page = browser.new_page()
        page.goto(index.as_uri())
        links = page.eval_on_selector_all("a", "els => els.map(e => e.href)")
        assert len(links) == 2 and all(Path(href.removeprefix("file://")).exists() for href in links)
        report = next(href for href in links if href.endswith(".html"))
        page.goto(report)
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
        assert len(images) >= 4 and all(done and width > 100 for done, width in images)
        # every chart says in words what it shows (nbconvert's stand-in says "No description")
        alts = page.eval_on_selector_all("img", "els => els.map(e => e.alt)")
        assert all(alt and "No description" not in alt for alt in alts)
        assert any(alt.startswith("Bar chart of contracts traded by strike") for alt in alts)
        assert "Alerts" in page.inner_text("body")
        page.screenshot(path=str(out / "report.png"), full_page=False)
        browser.close()


def test_index_links_reports_kept_in_an_earlier_outputs_folder(tmp_path):
    """Changing data.outputs_dir must not break the index: older reports stay linked where they are."""
    old = tmp_path / "old-outputs" / "2026-10-30"
    old.mkdir(parents=True)
    report = old / "1500-1515Z.html"
    report.write_text("<html>report</html>")
    store = StateStore(tmp_path / "state.sqlite")
    start, end = "2026-10-30T15:00:00+00:00", "2026-10-30T15:15:00+00:00"
    store.start_attempt(start, end, start)
    store.finish_window(start, end, RunOutcome("ok", start, 1.0, None, str(report), 0, {"alerts_by_kind": {}}))
    index = write_index(tmp_path / "new-outputs", store.windows())
    href = re.search(r'href="([^"]+)">report<', index.read_text()).group(1)
    assert (index.parent / href).resolve() == report.resolve()


def test_index_reads_a_window_that_failed_then_passed(tmp_path):
    """A NULL error beside a real one comes back from pandas as NaN: the index must not choke on it."""
    store = StateStore(tmp_path / "state.sqlite")
    for minute, (status, error) in zip(("00", "15"), (("ok", None), ("failed", "DataError: gone"))):
        start = f"2026-10-30T15:{minute}:00+00:00"
        store.start_attempt(start, start, start)
        store.finish_window(start, start, RunOutcome(status, start, 1.0, None, None, 0, {}, error=error))
    page = write_index(tmp_path / "out", store.windows()).read_text()
    assert "DataError: gone" in page and "nan" not in page.lower().replace("nanos", "")
