"""Where nqflow's files live. Config paths are relative to the repository root, so the
notebooks (run with the root as working directory) and the scheduler agree on them.

Imports only nqflow.errors: any process can find its files without loading the engine."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from nqflow.errors import StorageError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = REPO_ROOT / "config" / "monitoring.toml"
NOTEBOOKS = REPO_ROOT / "notebooks"
MONITOR_NOTEBOOK = NOTEBOOKS / "monitor.ipynb"
OFF_BOOK_NOTEBOOK = NOTEBOOKS / "offbook.ipynb"
SESSION_NOTEBOOK = NOTEBOOKS / "session.ipynb"
GEX_NOTEBOOK = NOTEBOOKS / "gex.ipynb"
REPORT_TEMPLATES = Path(__file__).resolve().parent / "reports" / "templates"


def resolve(path: str | Path, base: Path = REPO_ROOT) -> Path:
    """`path` as given when absolute, else relative to the repository root."""
    path = Path(path)
    return path if path.is_absolute() else base / path


def ensure_writable(folder: Path, what: str, setting: str) -> Path:
    """`folder`, created if missing, once a file could be written in it; else one line naming
    the folder, why, and the fix (`what`: "outputs folder"; `setting`: the key or flag that moves it)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".nqflow-write-check-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        owner = f"user {os.getuid()}" if hasattr(os, "getuid") else "this user"
        raise StorageError(
            f"cannot write to the {what} {folder} ({reason}): make it writable for {owner}, "
            f"or set {setting} to a folder it can write"
        ) from None
    return folder
