"""Stand-ins and helpers shared by the tests (their fixtures are in conftest.py): the one alert
factory, the SMTP inbox (aiosmtpd) and the Slack webhook on loopback, the stand-in Databento
gateway's key and config, headless Chromium (Debian's, never a download) and the reader's check
of a report page."""

from __future__ import annotations

import dataclasses
import email
import json
import shutil
import socket
import threading
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from nqflow.alerts import ALERT_FIELDS, Alert, to_alerts
from nqflow.config import Config, load_config
from nqflow.engine.monitor import run_window
from nqflow.ops.runner import NotebookRun
from nqflow.paths import REPO_ROOT

#: The stand-in Databento gateway's API key (a test value, never a real one).
KEY = "db-TESTkey-standin-0123456789"

SCREENSHOTS = REPO_ROOT / "outputs" / "screenshots"  # kept for review (outputs/ is git-ignored)

#: The flags that keep Chromium off the network in this closed sandbox (DESIGN "Facts").
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def chromium(p, profile: Path, width: int = 1300, height: int = 1000):
    """A headless Chromium context (Playwright driving Debian's binary) with a fresh profile."""
    binary = shutil.which("chromium")
    if not binary:
        pytest.skip("Debian's chromium is not installed (.ci/ensure-chromium installs it as root)")
    return p.chromium.launch_persistent_context(
        str(profile),
        executable_path=binary,
        headless=True,
        viewport={"width": width, "height": height},
        args=CHROMIUM_ARGS,
    )


#: What a trader must never meet in a report (run in the page): `NaN`, a Python list literal, a
#: spread's raw `UD:` code in a table's headline column, a page or a table that scrolls sideways.
READER_CHECK = r"""() => {
  const problems = [];
  const text = document.body.innerText;
  for (const word of ["NaN", "None", "nan%"]) {
    if (new RegExp(`(^|[^A-Za-z])${word}([^A-Za-z]|$)`).test(text)) problems.push(`the text holds ${word}`);
  }
  const literal = text.match(/\[\s*'[^'\n]*'(\s*,\s*'[^'\n]*')*\s*\]/);
  if (literal) problems.push(`a Python list literal: ${literal[0].slice(0, 60)}`);
  const headline = ["symbol", "instrument", "package", "what"];
  for (const table of document.querySelectorAll("table")) {
    const heads = [...table.querySelectorAll("thead th")].map(th => th.innerText.trim().toLowerCase());
    heads.forEach((head, column) => {
      if (!headline.includes(head)) return;
      for (const row of table.querySelectorAll("tbody tr")) {
        const cell = row.children[column];
        if (cell && cell.innerText.includes("UD:")) problems.push(`UD: code in the ${head} column: ${cell.innerText}`);
      }
    });
  }
  if (document.documentElement.scrollWidth > window.innerWidth + 1) problems.push("the page scrolls sideways");
  for (const element of document.querySelectorAll("body *")) {
    const style = getComputedStyle(element);
    if (["auto", "scroll"].includes(style.overflowX) && element.scrollWidth > element.clientWidth + 1) {
      problems.push(`a ${element.tagName.toLowerCase()}.${element.className} scrolls sideways`);
    }
  }
  return problems;
}"""


def reader_problems(page, url: str, screenshot: Path | None = None) -> list[str]:
    """Open `url` and return what a trader should not meet there (`READER_CHECK`)."""
    page.goto(url)
    page.wait_for_load_state("load")
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    return page.evaluate(READER_CHECK)


# --------------------------------------------------------------------------- alerts and channels
SMTP_PASSWORD = "smtp-SECRET-pw-7731"
WEBHOOK_PATH = "/services/T000/B000/SECRET-hook-token"


def alert_json(
    n: int = 0,
    window_start: str = "2026-10-29T14:15:00+00:00",
    kind: str = "large_order",
    confidence: float = 50.0,
    tier: float | None = None,
    symbol: str | None = None,
    **changes,
) -> dict:
    """The one alert factory, in the JSON form a notebook glues and the store keeps: alert `n` of
    a window, any field set by `changes`. `make_alert` gives the same alert as an `Alert`."""
    alert = {field: None for field in ALERT_FIELDS}
    alert.update(
        alert_id=f"{kind}-{window_start[:16]}-{n:03d}",
        kind=kind,
        window_start=window_start,
        window_end=(pd.Timestamp(window_start) + pd.Timedelta(minutes=15)).isoformat(),
        event_time=window_start,
        level="instrument",
        symbol=symbol or f"NQZ6 C{21000 + 25 * n}",
        direction="BUY",
        sentiment="BULLISH",
        volume=400 + n,
        premium_usd=3.2e6 + n * 1e5,
        confidence=confidence,
        label="HIGH" if confidence >= 70 else "MEDIUM" if confidence >= 40 else "LOW",
        tier=tier,
        ratio=tier,
        reasons=[f"reason one of alert {n}", "second reason"],
    )
    alert.update(changes)
    return alert


def make_alert(
    n: int = 0,
    window_start: str = "2026-10-29T14:15:00+00:00",
    kind: str = "large_order",
    confidence: float = 50.0,
    tier: float | None = None,
    symbol: str | None = None,
    **changes,
) -> Alert:
    """`alert_json`'s alert as the `Alert` the process passes around."""
    return Alert.from_json(alert_json(n, window_start, kind, confidence, tier, symbol, **changes))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- servers
class Inbox:
    """aiosmtpd handler keeping every accepted message; `hold` makes DATA hang until released."""

    def __init__(self, hold: threading.Event | None = None):
        self.messages: list[email.message.EmailMessage] = []
        self.hold, self.in_data = hold, threading.Event()

    async def handle_DATA(self, server, session, envelope):
        self.in_data.set()
        if self.hold is not None:
            while not self.hold.is_set():
                import asyncio

                await asyncio.sleep(0.05)
            return "451 try again later"
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == b"desk"
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok)


def smtp_server(tls, inbox: Inbox, port: int) -> Controller:
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=tls[1],
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()
    return controller


class Webhook:
    """A loopback HTTP endpoint that answers like Slack's incoming webhook, with scripted failures."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.script: list[tuple[int, dict]] = []  # (status, headers) for the next requests
        self.hold: threading.Event | None = None  # set: a message is taken, then its answer waits for it
        self.received = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # headers and body are two writes (see standin_gateway._Handler)

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, headers = hook.script.pop(0) if hook.script else (200, {})
                if status == 200 and self.path == WEBHOOK_PATH:
                    hook.bodies.append(json.loads(body))
                    hook.received.set()
                    if hook.hold is not None:
                        hook.hold.wait(60)
                payload = b"ok" if status == 200 else b"rate_limited" if status == 429 else b"error"
                self.send_response(status if self.path == WEBHOOK_PATH else 404)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{WEBHOOK_PATH}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- the stand-in Databento gateway
def make_config(gw, **databento) -> Config:
    base = Config()
    settings = {
        "gateway": gw.url,
        "retry_base_seconds": 0.02,
        "retry_max_seconds": 1.0,
        "timeout_seconds": 3.0,
        "range_cache_seconds": 0.0,
        **databento,
    }
    return dataclasses.replace(base, databento=dataclasses.replace(base.databento, **settings))


# --------------------------------------------------------------------------- the scheduler without a kernel
class InProcessExecutor:
    """Runs the same nqflow.engine.monitor.run_window the notebook runs, without a kernel, and can fail on demand."""

    def __init__(self, source, baseline, fail_times: int = 0):
        self.source, self.baseline, self.fail_times, self.calls = source, baseline, fail_times, []

    def __call__(self, start, end, outputs_dir, parameters):
        self.calls.append(start)
        path = Path(outputs_dir) / f"{start:%Y%m%d%H%M}.ipynb"
        if self.fail_times > 0:
            self.fail_times -= 1
            return NotebookRun(path, None, error="DataError: injected failure")
        result = run_window(load_config(), start, end, self.source, self.baseline, record_baseline=False)
        return NotebookRun(path, None, alerts=to_alerts(result.alerts), summary={"alerts": len(result.alerts)})
