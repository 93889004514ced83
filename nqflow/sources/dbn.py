"""DBN files: opening, checking and decoding them as `databento.DBNStore` does (its metadata and
record layouts; a file's records taken past the symbology mappings nqflow never reads), with
every failure turned into one line that names the file and the fix."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import databento as db
import numpy as np
import pandas as pd
import pyarrow as pa
import zstandard
from databento.common.constants import SCHEMA_STRUCT_MAP, SCHEMA_STRUCT_MAP_V1, SCHEMA_STRUCT_MAP_V2

from nqflow.errors import DataError

log = logging.getLogger(__name__)

SCHEMAS = ("trades", "definition", "statistics")

#: The fields nqflow reads of each schema, by how they decode: fixed-point prices become points
#: (NaN where undefined), nanosecond stamps UTC times (NaT where undefined), byte strings text,
#: the rest stays the integer it is. What `DBNStore.to_df` gives for these columns, decoded from
#: `DBNStore.to_ndarray` (9x faster on definitions: to_df formats every one of 70 fields).
DECODED_FIELDS: dict[str, dict[str, str]] = {
    "trades": {
        "ts_recv": "time",
        "ts_event": "time",
        "instrument_id": "int",
        "price": "price",
        "size": "int",
        "side": "text",
    },
    "definition": {
        "ts_recv": "time",
        "ts_event": "time",
        "instrument_id": "int",
        "raw_symbol": "text",
        "asset": "text",
        "instrument_class": "text",
        "strike_price": "price",
        "expiration": "time",
        "underlying": "text",
        "underlying_id": "int",
        "unit_of_measure_qty": "price",
        "contract_multiplier": "int",
        "leg_count": "int",
        "leg_index": "int",
        "leg_instrument_id": "int",
        "leg_side": "text",
        "leg_ratio_qty_numerator": "int",
        "leg_ratio_qty_denominator": "int",
        "leg_price": "price",
        "leg_delta": "price",
    },
    "statistics": {
        "ts_recv": "time",
        "ts_event": "time",
        "ts_ref": "time",
        "instrument_id": "int",
        "stat_type": "int",
        "price": "price",
        "quantity": "int",
        "stat_flags": "int",
    },
}
PRICE_SCALE = 1e9  # DBN fixed-point prices: units of 1e-9
UNDEF_PRICE = 2**63 - 1
UNDEF_TIMESTAMP = 2**64 - 1
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # the first four bytes of every zstd frame


@dataclass(frozen=True)
class DbnFile:
    path: Path
    schema: str
    start: pd.Timestamp
    end: pd.Timestamp


def open_dbn(path: Path, expected_schema: str | None = None, data: bytes | None = None) -> db.DBNStore:
    """Open a DBN file (or its bytes, `data`, read from `path` already), turning every decoding
    failure into one clear line naming the file."""
    try:
        # Bytes in a BytesIO: DBNStore names a bytes source by its repr, the whole file's (27 ms on a session's trades).
        store = db.DBNStore.from_file(path) if data is None else db.DBNStore.from_bytes(io.BytesIO(data))
        schema = str(store.schema) if store.schema is not None else None
    except FileNotFoundError:
        raise DataError(f"DBN file {path} does not exist; check the replay folder path") from None
    except Exception as exc:  # the decoder raises several types for bad bytes
        raise DataError(
            f"corrupt or truncated DBN file {path} ({type(exc).__name__}: {exc}); "
            f"delete it and re-download or regenerate it"
        ) from None
    if expected_schema and schema != expected_schema:
        raise _schema_error(path, schema, expected_schema)
    return store


#: Each DBN version's record structs by schema, as `DBNStore.to_ndarray` takes them.
_STRUCTS = {1: SCHEMA_STRUCT_MAP_V1, 2: SCHEMA_STRUCT_MAP_V2, 3: SCHEMA_STRUCT_MAP}
_SCHEMA_AT, _TS_OUT_AT = 24, {1: 60, 2: 52, 3: 52}  # byte offsets in a DBN stream's metadata
_MIXED_SCHEMA = 0xFFFF


def _fixed_header(data: bytes) -> tuple[int, str] | None:
    """(where the records start, the schema) from a DBN stream's fixed metadata fields, or None
    for a stream DBNStore is left to read (another version, mixed schemas, records with their
    send times, an unknown schema). The rest of the metadata, the symbology mappings (3.9 MB
    for a day of 17,000 NQ options), is what DBNStore decodes into Python objects, 11 ms a file,
    and nqflow never reads it: the definitions name every instrument. The layout is DBN's
    (version 1 has a record count more before ts_out)."""
    if len(data) < 8 or data[:3] != b"DBN" or data[3] not in _STRUCTS:
        return None
    offset = 8 + int.from_bytes(data[4:8], "little")
    if len(data) < max(offset, _TS_OUT_AT[data[3]] + 1) or data[_TS_OUT_AT[data[3]]]:
        return None
    code = int.from_bytes(data[_SCHEMA_AT : _SCHEMA_AT + 2], "little")
    try:
        schema = str(db.Schema.from_int(code)) if code != _MIXED_SCHEMA else None
    except Exception:  # a schema this databento does not know
        return None
    return (offset, schema) if schema in SCHEMAS else None


def _schema_error(path: Path, schema: str | None, expected: str) -> DataError:
    return DataError(
        f"DBN file {path} holds schema {schema!r}, expected {expected!r}; "
        f"move it out of the folder or pass the right file"
    )


def check_complete_dbn(path: Path) -> None:
    """A truncated zstd DBN file decodes silently to fewer records: refuse it instead. Known by
    its magic number, not its name: a download is checked while it is still a ``.part`` file.
    Streamed: a large download is never held in memory whole."""
    with path.open("rb") as handle:
        if handle.read(4) != ZSTD_MAGIC:
            return
    with path.open("rb") as handle:
        for _ in _decompressed(path, iter(lambda: handle.read(1 << 20), b"")):
            pass


def _decompressed(path: Path, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """A zstd stream's bytes, chunk by chunk; a corrupt or truncated stream is a one-line error
    naming `path` (the truncation is known at the end)."""
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    try:
        for chunk in chunks:
            yield decompressor.decompress(chunk)
    except zstandard.ZstdError as exc:
        raise DataError(f"corrupt DBN file {path} (zstd: {exc}); delete it and re-download or regenerate it") from None
    if not decompressor.eof:
        raise DataError(
            f"truncated DBN file {path} (the zstd stream ends early); delete it and re-download or regenerate it"
        )


def read_dbn(path: Path, expected_schema: str | None = None) -> pd.DataFrame:
    """Decode a whole DBN file to a DataFrame of the schema's `DECODED_FIELDS` (fields an older
    DBN version lacks are left out; legs, for one, are only in version 2 definitions on)."""
    records, schema = read_dbn_records(path, expected_schema)
    return frame_from_records(records, DECODED_FIELDS.get(schema, {}))


def read_dbn_records(path: Path, expected_schema: str | None = None) -> tuple[np.ndarray, str]:
    """A whole DBN file's records as one structured array (what `DBNStore.to_ndarray` gives), and
    its schema. A zstd file is decompressed once and checked whole (`check_complete_dbn`); the
    records are taken past the fixed metadata fields (`_fixed_header`), or by DBNStore from the
    bytes when the stream is of another shape."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"DBN file {path} does not exist; check the replay folder path") from None
    data = b"".join(_decompressed(path, [raw])) if raw[:4] == ZSTD_MAGIC else raw
    header = _fixed_header(data)
    if header is not None:
        offset, schema = header
        if expected_schema and schema != expected_schema:
            raise _schema_error(path, schema, expected_schema)
        dtype = np.dtype(_STRUCTS[data[3]][db.Schema.from_str(schema)]._dtypes)
        if (len(data) - offset) % dtype.itemsize == 0:  # else DBNStore's warning and cut, as before
            return np.frombuffer(data, dtype=dtype, offset=offset), schema
    store = open_dbn(path, expected_schema, data)
    try:
        records = store.to_ndarray()
    except Exception as exc:
        raise DataError(
            f"corrupt or truncated DBN file {path} ({type(exc).__name__}: {exc}); "
            f"delete it and re-download or regenerate it"
        ) from None
    # A file without records decodes to an empty array of shape (0, 1): flattened, no records.
    return records.reshape(-1), str(store.schema)


def frame_from_records(records: np.ndarray, fields: dict[str, str]) -> pd.DataFrame:
    """The named fields of DBN records (a structured array) as columns, decoded by kind (see
    `DECODED_FIELDS`): prices divided by the scale as DBNStore does, so the floats are the same."""
    present = records.dtype.names or ()
    columns: dict[str, object] = {}
    for name, kind in fields.items():
        if name not in present:
            continue
        values = records[name]
        if kind == "price":
            points = values.astype("float64") / PRICE_SCALE
            points[values == UNDEF_PRICE] = np.nan
            columns[name] = points
        elif kind == "time":
            stamps = values.astype("int64")
            undefined = values == UNDEF_TIMESTAMP
            if undefined.any():
                stamps[undefined] = np.iinfo("int64").min  # NaT
            columns[name] = pd.DatetimeIndex(stamps.view("datetime64[ns]"), tz="UTC")
        elif kind == "text":  # fixed-width bytes to Arrow text in one cast (NUL padding dropped)
            columns[name] = pd.array(pa.array(values).cast(pa.string()), dtype="str")
        else:
            columns[name] = values
    return pd.DataFrame(columns, index=pd.RangeIndex(len(records)))


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
