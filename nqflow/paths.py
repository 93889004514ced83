"""Where nqflow's files live. Config paths are relative to the repository root, so the
notebooks (run with the root as working directory) and the scheduler agree on them.

Imports nothing from nqflow: any process can find its files without loading the engine."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = REPO_ROOT / "config" / "monitoring.toml"
NOTEBOOKS = REPO_ROOT / "notebooks"
MONITOR_NOTEBOOK = NOTEBOOKS / "monitor.ipynb"
OFF_BOOK_NOTEBOOK = NOTEBOOKS / "offbook.ipynb"
SESSION_NOTEBOOK = NOTEBOOKS / "session.ipynb"
REPORT_TEMPLATES = Path(__file__).resolve().parent / "reports" / "templates"


def resolve(path: str | Path, base: Path = REPO_ROOT) -> Path:
    """`path` as given when absolute, else relative to the repository root."""
    path = Path(path)
    return path if path.is_absolute() else base / path
