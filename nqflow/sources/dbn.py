"""DBN files: opening, checking and decoding them with `databento.DBNStore`, with every failure
turned into one line that names the file and the fix."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import databento as db
import pandas as pd
import zstandard

from nqflow.errors import DataError

log = logging.getLogger(__name__)

SCHEMAS = ("trades", "definition", "statistics")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # the first four bytes of every zstd frame


@dataclass(frozen=True)
class DbnFile:
    path: Path
    schema: str
    start: pd.Timestamp
    end: pd.Timestamp


def _quiet_to_df(store: db.DBNStore) -> pd.DataFrame:
    # databento's to_df emits a Pandas4Warning under pandas 3 from inside the client.
    # Symbols come from the definitions (raw_symbol), so the symbology mapping, which costs
    # four fifths of decoding a trades file, is skipped.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return store.to_df(map_symbols=False)


def open_dbn(path: Path, expected_schema: str | None = None) -> db.DBNStore:
    """Open a DBN file, turning every decoding failure into one clear line naming the file."""
    try:
        store = db.DBNStore.from_file(path)
        schema = str(store.schema) if store.schema is not None else None
    except FileNotFoundError:
        raise DataError(f"DBN file {path} does not exist; check the replay folder path") from None
    except Exception as exc:  # the decoder raises several types for bad bytes
        raise DataError(
            f"corrupt or truncated DBN file {path} ({type(exc).__name__}: {exc}); "
            f"delete it and re-download or regenerate it"
        ) from None
    if expected_schema and schema != expected_schema:
        raise DataError(
            f"DBN file {path} holds schema {schema!r}, expected {expected_schema!r}; "
            f"move it out of the folder or pass the right file"
        )
    return store


def check_complete_dbn(path: Path) -> None:
    """A truncated zstd DBN file decodes silently to fewer records: refuse it instead. Known by
    its magic number, not its name: a download is checked while it is still a ``.part`` file."""
    with path.open("rb") as handle:
        if handle.read(4) != ZSTD_MAGIC:
            return
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                decompressor.decompress(chunk)
    except zstandard.ZstdError as exc:
        raise DataError(f"corrupt DBN file {path} (zstd: {exc}); delete it and re-download or regenerate it") from None
    if not decompressor.eof:
        raise DataError(
            f"truncated DBN file {path} (the zstd stream ends early); delete it and re-download or regenerate it"
        )


def read_dbn(path: Path, expected_schema: str | None = None) -> pd.DataFrame:
    """Decode a whole DBN file to a DataFrame (index reset, ts_recv a column)."""
    store = open_dbn(path, expected_schema)
    check_complete_dbn(path)
    try:
        frame = _quiet_to_df(store)
    except Exception as exc:
        raise DataError(
            f"corrupt or truncated DBN file {path} ({type(exc).__name__}: {exc}); "
            f"delete it and re-download or regenerate it"
        ) from None
    return frame.reset_index()


def describe_dbn(path: Path) -> DbnFile | None:
    """Schema and time range of a DBN file from its metadata (no records decoded)."""
    store = open_dbn(path)
    schema = str(store.schema) if store.schema is not None else "mixed"
    if schema not in SCHEMAS:
        log.warning("ignoring %s: schema %s is not one of %s", path, schema, ", ".join(SCHEMAS))
        return None
    meta = store.metadata
    end = pd.Timestamp(meta.end, tz="UTC") if meta.end else pd.Timestamp.max.tz_localize("UTC")
    return DbnFile(path, schema, pd.Timestamp(meta.start, tz="UTC"), end)
