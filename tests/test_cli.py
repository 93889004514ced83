"""The command line as a script user pipes it: with --json, stdout is JSON and nothing else."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nqflow.paths import REPO_ROOT


@pytest.mark.slow
def test_window_json_is_only_json_while_the_console_channel_prints(sample_dir, truth, tmp_path):
    block = next(e for e in truth["events"] if e["kind"] == "block" and e["premium_usd"] > 3e6)
    base = [
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
    ]
    done = subprocess.run(
        [*base, "window", block["window_start"], "--json"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    alerts = json.loads(done.stdout)  # `| jq` works: the console's alert lines went to stderr
    assert any(a["kind"] == "large_order" and a["instrument_ids"] == block["instrument_ids"] for a in alerts)
    assert (
        "large_order" in done.stderr
        and f"window {block['window_start'][:10]} {block['window_start'][11:16]}-" in done.stderr
    )
    history = subprocess.run([*base, "alerts", "--json"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert history.returncode == 0 and sorted(a["alert_id"] for a in json.loads(history.stdout)) == sorted(
        a["alert_id"] for a in alerts
    )


def test_systemd_units_run_commands_the_cli_knows(tmp_path):
    """config/systemd: each ExecStart is a scheduler.py command line our parser accepts; the
    timer's calendar is valid where systemd-analyze exists."""
    import configparser
    import shlex
    import shutil

    from nqflow.cli import _parser

    units = sorted((REPO_ROOT / "config" / "systemd").glob("*.service"))
    assert {u.name for u in units} >= {"nqflow.service", "nqflow-doctor.service"}
    commands = {}
    for unit in units:
        parsed = configparser.ConfigParser(strict=False, interpolation=None)
        parsed.read(unit)
        words = shlex.split(parsed["Service"]["ExecStart"])
        assert words[1] == "scheduler.py"
        commands[unit.name] = _parser().parse_args(words[2:]).command
        assert parsed["Service"]["EnvironmentFile"] == "/etc/nqflow/env"  # secrets never in the unit
    assert commands["nqflow.service"] == "run" and commands["nqflow-doctor.service"] == "doctor"
    timer = configparser.ConfigParser(strict=False, interpolation=None)
    timer.read(REPO_ROOT / "config" / "systemd" / "nqflow-doctor.timer")
    if shutil.which("systemd-analyze"):
        done = subprocess.run(
            ["systemd-analyze", "calendar", timer["Timer"]["OnCalendar"]], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
