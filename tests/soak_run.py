"""The soak test's scheduler process (tests/test_soak.py): `scheduler.py run`'s own loop
(`Scheduler.run_forever`) on a simulated clock kept in a file, so that a process SIGKILLed
and started again resumes at the simulated time it had reached.

Usage: python tests/soak_run.py SETTINGS.json
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

from nqflow.alerts import plain, to_alerts
from nqflow.config import load_config
from nqflow.engine.baseline import BaselineStore
from nqflow.engine.monitor import run_window
from nqflow.errors import NqflowError
from nqflow.ops.runner import NotebookRun, execute_window
from nqflow.ops.scheduling import Scheduler
from nqflow.sources import make_source


class FileClock:
    """Simulated time that `run` moves by its poll interval, written after every pass; the
    process stops itself once `end` is reached."""

    def __init__(self, path: Path, start: pd.Timestamp, end: pd.Timestamp):
        self.path, self.end = path, end
        self.current = pd.Timestamp(path.read_text()) if path.exists() else start

    def now(self) -> pd.Timestamp:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.current += pd.Timedelta(seconds=seconds)

    def wait(self, stop: threading.Event, seconds: float) -> None:
        self.sleep(seconds)
        partial = self.path.with_suffix(".partial")
        partial.write_text(self.current.isoformat())
        partial.replace(self.path)
        if self.current >= self.end:
            stop.set()


class SoakExecutor:
    """Each window in this process through `run_window`, the code the notebook runs (a kernel
    per window would make two sessions take an hour), except one chosen window's first
    attempt: that one runs the real notebook, and its kernel is killed mid-run."""

    def __init__(self, config, source, baseline: BaselineStore, kill_window: pd.Timestamp, marker: Path):
        self.config, self.source, self.baseline = config, source, baseline
        self.kill_window, self.marker = kill_window, marker

    def __call__(self, start, end, outputs_dir, parameters) -> NotebookRun:
        if start == self.kill_window and not self.marker.exists():
            self.marker.touch()
            return self.killed(start, end, outputs_dir, parameters)
        path = Path(outputs_dir) / f"{start:%Y-%m-%d}" / f"{start:%H%M}.in-process"
        began = time.monotonic()
        try:
            result = run_window(self.config, start, end, self.source, self.baseline, record_baseline=False)
        except NqflowError as exc:
            return NotebookRun(
                path, None, error=f"{type(exc).__name__}: {exc}".splitlines()[0], duration_s=time.monotonic() - began
            )
        return NotebookRun(
            path,
            None,
            alerts=to_alerts(result.alerts),
            summary=plain(result.summary),
            duration_s=time.monotonic() - began,
        )

    def killed(self, start, end, outputs_dir, parameters) -> NotebookRun:
        box: dict = {}
        thread = threading.Thread(target=lambda: box.update(run=execute_window(start, end, outputs_dir, parameters)))
        thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and thread.is_alive():
            kernels = [p for p in psutil.Process().children(recursive=True) if "ipykernel" in " ".join(p.cmdline())]
            if kernels:
                time.sleep(1.5)  # let it start working on the window
                for kernel in kernels:
                    kernel.kill()
                print(f"soak: killed the kernel of window {start:%Y-%m-%d %H:%M}Z", file=sys.stderr, flush=True)
                break
            time.sleep(0.05)
        thread.join()
        return box["run"]


def main() -> None:
    settings = json.loads(Path(sys.argv[1]).read_text())
    config = load_config(overrides=settings["overrides"])
    state = Path(settings["state_dir"])
    clock = FileClock(state / "clock.txt", pd.Timestamp(settings["start"]), pd.Timestamp(settings["end"]))
    source = make_source(config, "databento", settings["cache_dir"])
    executor = SoakExecutor(
        config,
        source,
        BaselineStore(settings["baseline"]),
        pd.Timestamp(settings["kill_window"]),
        state / "kernel-killed",
    )
    # The overrides go to the notebook too (the killed window's): it must talk to the stand-in gateway only.
    scheduler = Scheduler(
        config,
        clock=clock,
        source="databento",
        data_dir=settings["cache_dir"],
        overrides=settings["overrides"],
        outputs_dir=state / "outputs",
        state_db=state / "state.sqlite",
        executor=executor,
    )
    scheduler.run_forever()


if __name__ == "__main__":
    main()
