"""Run the monitoring notebook for one window with papermill, read its scraps, write its HTML.

Outputs per window: outputs/YYYY-MM-DD/<HHMM>-<HHMM>Z.ipynb (executed, errors included when it
failed) and the same name .html (code hidden, charts embedded); outputs/index.html lists them.
Secrets are never notebook parameters: the kernel inherits them from the environment.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import scrapbook as sb
from nbconvert import HTMLExporter
from traitlets.config import Config

from nqflow.alerts import Alert, check_summary
from nqflow.errors import DataNotYetAvailable
from nqflow.paths import (
    GEX_NOTEBOOK,
    MONITOR_NOTEBOOK,
    OFF_BOOK_NOTEBOOK,
    REPO_ROOT,
    REPORT_TEMPLATES,
    SESSION_NOTEBOOK,
    ensure_writable,
)

#: The kernel's sockets are encrypted with CurveZMQ when its kernelspec supports it (ipykernel 7.4
#: does): the kernel runs over TCP on this machine, and other local users could otherwise read it.
KERNEL_CONFIG = Config({"KernelManager": {"transport_encryption": "auto"}})

KERNEL_NAME = "nqflow"


@dataclass
class NotebookRun:
    notebook_path: Path
    html_path: Path | None
    alerts: list[Alert] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0
    #: The exception's class name when the notebook raised one (papermill's ``ename``).
    error_type: str | None = None
    #: What the notebook learned about earlier alerts (scrap ``notes``): note -> rows, each with
    #: its ``alert_id`` (``confirmation``: next-morning verdicts; ``worked_final``: a worked
    #: order's final total). Kept beside the alerts, which stay as they were sent.
    notes: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def waiting(self) -> bool:
        """It failed only because the data is not published yet: try later, no attempt spent."""
        return self.error_type == DataNotYetAvailable.__name__


def check_notes(data) -> dict[str, list[dict]]:
    """The ``notes`` scrap read back: note name -> rows with an ``alert_id``; anything else is a one-line error."""
    if not isinstance(data, dict) or not all(
        isinstance(rows, list) and all(isinstance(r, dict) and isinstance(r.get("alert_id"), str) for r in rows)
        for rows in data.values()
    ):
        raise ValueError("the notes scrap must map a note name to rows with an alert_id; glue Confirmations.records()")
    return {str(k): v for k, v in data.items()}


def window_paths(outputs_dir: Path, start: pd.Timestamp, end: pd.Timestamp) -> tuple[Path, Path]:
    folder = outputs_dir / f"{start:%Y-%m-%d}"
    stem = f"{start:%H%M}-{end:%H%M}Z"
    return folder / f"{stem}.ipynb", folder / f"{stem}.html"


def kernel_name() -> str:
    """The project's kernel when registered (make installs it into .venv), else python3."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def execute_window(
    start: pd.Timestamp, end: pd.Timestamp, outputs_dir: Path, parameters: dict, notebook: Path = MONITOR_NOTEBOOK
) -> NotebookRun:
    """Execute the notebook for [start, end); a failed run still leaves its executed notebook."""
    notebook_path, html_path = window_paths(outputs_dir, start, end)
    params = {"window_start": start.isoformat(), "window_end": end.isoformat(), **parameters}
    return execute_notebook(notebook, notebook_path, html_path, params)


#: Notebooks run once per session: job -> (notebook, file name under outputs/YYYY-MM-DD/).
DAILY_NOTEBOOKS = {
    "off_book": (OFF_BOOK_NOTEBOOK, "offbook"),
    "session": (SESSION_NOTEBOOK, "session"),
    "gex": (GEX_NOTEBOOK, "gex"),
}


def daily_paths(outputs_dir: Path, job: str, trade_date) -> tuple[Path, Path]:
    name = DAILY_NOTEBOOKS[job][1]
    folder = outputs_dir / f"{trade_date}"
    return folder / f"{name}.ipynb", folder / f"{name}.html"


def execute_daily(job: str, trade_date, outputs_dir: Path, parameters: dict) -> NotebookRun:
    """Execute one session's notebook of `job` (`DAILY_NOTEBOOKS`), like a window's."""
    notebook_path, html_path = daily_paths(outputs_dir, job, trade_date)
    return execute_notebook(
        DAILY_NOTEBOOKS[job][0], notebook_path, html_path, {"trade_date": str(trade_date), **parameters}
    )


def execute_notebook(notebook: Path, notebook_path: Path, html_path: Path, params: dict) -> NotebookRun:
    """Execute a parameterised notebook with papermill, write its HTML report and read its scraps
    (``alerts``, ``summary``); a failed run still leaves its executed notebook."""
    began = time.monotonic()
    error = error_type = None
    try:
        ensure_writable(notebook_path.parent, "outputs folder", "data.outputs_dir or --outputs")
        pm.execute_notebook(
            str(notebook),
            str(notebook_path),
            parameters=params,
            kernel_name=kernel_name(),
            progress_bar=False,
            cwd=str(REPO_ROOT),
            log_output=False,
            config=KERNEL_CONFIG,
        )
    except pm.PapermillExecutionError as exc:
        error, error_type = f"{exc.ename}: {exc.evalue}".splitlines()[0][:500], exc.ename
    except Exception as exc:  # kernel died, notebook missing, outputs folder not writable, ...
        error, error_type = f"{type(exc).__name__}: {exc}".splitlines()[0][:500], type(exc).__name__
    run = NotebookRun(notebook_path, None, error=error, error_type=error_type)
    if notebook_path.exists():
        try:
            run.html_path = write_html(notebook_path, html_path)
        except OSError as exc:
            run.error = run.error or f"could not write the report {html_path}: {exc}".splitlines()[0][:500]
        if error is None:
            try:
                scraps = sb.read_notebook(str(notebook_path)).scraps
                run.alerts = [Alert.from_json(a) for a in scraps["alerts"].data]
                run.summary = dict(check_summary(scraps["summary"].data))
                if "notes" in scraps:
                    run.notes = check_notes(scraps["notes"].data)
            except Exception as exc:
                run.error = f"could not read the notebook's scraps: {exc}".splitlines()[0][:500]
    run.duration_s = time.monotonic() - began
    return run


#: nbconvert templates shipped with nqflow: `nqflow_report` is the lab template plus chart descriptions as alt text.


def write_html(notebook_path: Path, html_path: Path) -> Path:
    """Self-contained HTML report with the code hidden and the charts embedded as images."""
    exporter = HTMLExporter(
        template_name="nqflow_report",
        extra_template_basedirs=[str(REPORT_TEMPLATES)],
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    with warnings.catch_warnings():
        # scrapbook's scrap outputs have no HTML form; they are data for the scheduler, not the reader.
        warnings.filterwarnings("ignore", message=".*scrapbook.scrap.*")
        body, _ = exporter.from_notebook_node(nbformat.read(notebook_path, as_version=4))
    html_path.write_text(body, encoding="utf-8")
    return html_path
