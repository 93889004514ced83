"""The live path's figures (#24), against the loopback stand-ins (never timed tests):

1. latency: `scheduler.py live` streams busy hours of the sample market paced by event time
   (``--speed`` event seconds per wall second; real time is 1, and a higher speed only adds
   load), and for every flash alert measures from the moment the gateway sent the print that
   completed the event (the first record at or after ``event_time + sweep_span_ms``) to the
   alert's delivery to the alert log: p50, p99 and max (target p99 <= 1 s);
2. throughput: one whole session replayed as fast as the gateway sends, in records per second
   end to end (recorded into the cache and judged; target >= 50,000/s);
3. peak resident memory of the `live` process over that session (target <= 300 MB).

The Historical stand-in serves the day's definitions and open interest, as Databento does.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import trustme

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import KEY  # noqa: E402
from standin_gateway import StandInGateway  # noqa: E402
from standin_live_gateway import Behaviour, StandInLiveGateway, live_command  # noqa: E402

from nqflow.config import load_config  # noqa: E402
from nqflow.market import hours as cal  # noqa: E402
from nqflow.research.sample.generator import generate_sample_market  # noqa: E402

LATENCY_RANGES = [  # busy afternoons with planted blocks, sweeps, packages and worked orders
    ("2026-10-27T14:00Z", "2026-10-27T19:00Z"),
    ("2026-10-28T13:30Z", "2026-10-28T19:00Z"),
    ("2026-10-30T14:30Z", "2026-10-30T17:00Z"),
    ("2026-11-02T14:30Z", "2026-11-02T19:30Z"),
    ("2026-11-03T15:00Z", "2026-11-03T19:30Z"),
]
THROUGHPUT_SESSION = "2026-10-30"


def _recorded_until(state_db: Path) -> pd.Timestamp | None:
    if not state_db.exists():
        return None
    with sqlite3.connect(state_db) as conn:
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'live_recorded_until'").fetchone()
        except sqlite3.OperationalError:
            return None
    return pd.Timestamp(row[0]) if row else None


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _stream(gw, lgw, start: pd.Timestamp, end: pd.Timestamp, behaviour: Behaviour) -> dict:
    """One `scheduler.py live --start` process until it has recorded `end`; what it did."""
    lgw.behaviour = behaviour
    lgw.sent.clear()
    before = sum(s.records_sent for s in lgw.sessions)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        env = {**os.environ, "DATABENTO_API_KEY": KEY}
        process = subprocess.Popen(
            live_command(tmp, gw.url, lgw.address, "--start", start.isoformat()),
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        first_record = None
        peak = 0.0
        try:
            while (_recorded_until(tmp / "state.sqlite") or start) < end:
                if process.poll() is not None:
                    raise SystemExit(f"live exited with {process.returncode}")
                if first_record is None and lgw.sent:
                    first_record = lgw.sent[0][0]
                peak = max(peak, _peak_rss_mb(process.pid))
                time.sleep(0.05)
            done = time.time()
            peak = max(peak, _peak_rss_mb(process.pid))
        finally:
            process.terminate()
            process.wait(30)
        with sqlite3.connect(tmp / "state.sqlite") as conn:
            rows = conn.execute(
                "SELECT a.kind, a.event_time, d.delivered_at FROM alerts a JOIN deliveries d USING (alert_id) "
                "WHERE d.channel = 'log' AND d.status = 'sent' AND a.kind != 'health'"
            ).fetchall()
    return {
        "alerts": rows,
        "sent": list(lgw.sent),
        "records": sum(s.records_sent for s in lgw.sessions) - before,
        "seconds": done - (first_record or done),
        "peak_mb": peak,
    }


def latencies(run: dict, span_ms: int) -> list[float]:
    """Seconds from the gateway sending each alert's completing print to its delivery to the log."""
    sent = run["sent"]
    out = []
    for _kind, event_time, delivered_at in run["alerts"]:
        complete = (pd.Timestamp(event_time) + pd.Timedelta(milliseconds=span_ms)).value
        chunk = next((wall for wall, last_ts in sent if last_ts >= complete), None)
        if chunk is not None and delivered_at:
            out.append(pd.Timestamp(delivered_at).timestamp() - chunk)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=240.0, help="event seconds per wall second (latency run)")
    args = parser.parse_args()
    sample = generate_sample_market(ROOT / "data" / "sample")
    config = load_config()
    ca = trustme.CA()
    with tempfile.TemporaryDirectory() as folder:
        bundle = Path(folder) / "ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)
        with (
            StandInGateway(sample, KEY, ca.issue_cert("127.0.0.1")) as gw,
            StandInLiveGateway(key=KEY, market=gw.market) as lgw,
        ):
            session = pd.Timestamp(THROUGHPUT_SESSION).date()
            row = cal.sessions(session, session).iloc[0]
            whole = _stream(gw, lgw, row.market_open, row.market_close, Behaviour(end=row.market_close))
            print(
                f"whole session {THROUGHPUT_SESSION} as fast as the gateway sends: {whole['records']:,} records "
                f"in {whole['seconds']:.1f} s = {whole['records'] / max(whole['seconds'], 1e-9):,.0f} records/s "
                f"(target >= 50,000/s)",
                flush=True,
            )
            print(f"peak resident memory of `live` over the session: {whole['peak_mb']:.0f} MB (target <= 300 MB)")
            waits: list[float] = []
            for first, last in LATENCY_RANGES:
                start, end = pd.Timestamp(first), pd.Timestamp(last)
                run = _stream(gw, lgw, start, end, Behaviour(speed=args.speed, end=end + pd.Timedelta(seconds=5)))
                waits += latencies(run, config.thresholds.sweep_span_ms)
                print(f"  {first}..{last}: {len(run['alerts'])} flash alert(s)", flush=True)
    waits.sort()
    p99 = waits[min(len(waits) - 1, int(round(0.99 * (len(waits) - 1))))] if waits else float("nan")
    print(
        f"flash latency, gateway send of the completing print -> alert log, {len(waits)} alerts at "
        f"{args.speed:g}x event time: p50 {statistics.median(waits):.3f} s, p99 {p99:.3f} s, max {max(waits):.3f} s "
        f"(target p99 <= 1 s)"
        if waits
        else "flash latency: no alert was delivered"
    )


if __name__ == "__main__":
    main()
