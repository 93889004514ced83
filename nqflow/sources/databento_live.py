"""The Live stream written into the Databento cache, laid out as the Historical source lays it.

Trades go to ``<cache_dir>/<dataset>/trades/<trade date>/<start>-<end>.dbn.zst``, one file per
schedule window (the name and metadata range a Historical pull of that window would have), so
the window notebook's `DatabentoSource` finds the window covered and pulls nothing. A window
is written once the stream is ``live.record_grace_seconds`` of event time past its end, whole
or not at all (written beside and renamed into place: a killed process leaves no half file),
and only when it holds option trades: a window the feed carried no options for is left to
Historical (the licence without options is a health alert of its own, `nqflow.ops.live`).
Definitions and statistics go to their day's folder as ``live-<first>-<last>.dbn.zst``, once
that day's Historical pull is in the cache (before it, a live file would stand for the whole
day). Records are kept by ``ts_event``; one arriving for a window already written is counted
and left out (the window's notebook may have run).

`TRADE_DTYPE` decodes trade records straight from their bytes: the live path's hot loop
decodes thousands of records a second and needs five of their fields.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import databento_dbn as dbn
import numpy as np
import pandas as pd
import zstandard

from nqflow.market import hours as cal
from nqflow.sources.dbn import DECODED_FIELDS, frame_from_records

log = logging.getLogger(__name__)

#: One DBN v2/v3 trades record (`databento_dbn.TradeMsg`, 48 bytes).
TRADE_DTYPE = np.dtype(
    [
        ("length", "u1"),
        ("rtype", "u1"),
        ("publisher_id", "<u2"),
        ("instrument_id", "<u4"),
        ("ts_event", "<u8"),
        ("price", "<i8"),
        ("size", "<u4"),
        ("action", "S1"),
        ("side", "S1"),
        ("flags", "u1"),
        ("depth", "u1"),
        ("ts_recv", "<u8"),
        ("ts_in_delta", "<i4"),
        ("sequence", "<u4"),
    ]
)


def trades_frame(records: bytes) -> pd.DataFrame:
    """Trade records' bytes as the raw frame `nqflow.market.frames.tidy_trades` takes: the columns
    a trades file decodes to (`nqflow.sources.dbn.read_dbn`), so a live window is the recorded one."""
    return frame_from_records(np.frombuffer(records, dtype=TRADE_DTYPE), DECODED_FIELDS["trades"])


@dataclass
class _Window:
    start: pd.Timestamp
    end: pd.Timestamp
    trade_date: dt.date
    records: list[bytes] = field(default_factory=list)
    options: int = 0


class LiveRecorder:
    """Buffers the stream by window (trades) and day (definitions, statistics) and writes them
    into `cache_dir` (the ``<cache_dir>/<dataset>`` folder `DatabentoSource` reads)."""

    def __init__(self, cache_dir: Path, dataset: str, symbols: list[str], interval: pd.Timedelta, grace: pd.Timedelta):
        self.cache_dir = Path(cache_dir)
        self.dataset, self.symbols = dataset, symbols
        self.interval, self.grace = interval, grace
        self._windows: dict[pd.Timestamp, _Window] = {}
        self._days: dict[tuple[str, dt.date], list[tuple[int, bytes]]] = {}
        self._day_of_hour: dict[int, dt.date] = {}
        self.written: set[pd.Timestamp] = set()  # window starts written by this recorder
        self.late = 0  # records for a window already written, left out
        self.recorded_until: pd.Timestamp | None = None  # end of the last window written

    def add_trades(self, records: bytes, ts_event: np.ndarray, is_option: np.ndarray) -> None:
        """Trade records (concatenated bytes, in stream order) with their ts_event (ns) and
        whether each is on an option or spread."""
        size = TRADE_DTYPE.itemsize
        starts = (ts_event // self.interval.value) * self.interval.value
        for start_ns in np.unique(starts):
            at = np.flatnonzero(starts == start_ns)
            start = pd.Timestamp(int(start_ns), tz="UTC")
            if start in self.written:
                self.late += len(at)
                continue
            window = self._windows.get(start)
            if window is None:
                session = cal.session_of(start)
                if session is None:  # the market is closed then: a stray print, kept nowhere
                    self.late += len(at)
                    continue
                window = self._windows[start] = _Window(start, start + self.interval, session[0])
            window.records.extend(records[i * size : (i + 1) * size] for i in at)
            window.options += int(is_option[at].sum())

    def add_day(self, schema: str, ts_event: int, record: bytes) -> None:
        """A definition or statistics record."""
        hour = ts_event // 3_600_000_000_000
        day = self._day_of_hour.get(hour)
        if day is None:  # sessions open and close on the hour: one calendar lookup per hour of records
            ts = pd.Timestamp(hour * 3_600_000_000_000, tz="UTC")
            session = cal.session_of(ts) or cal.session_of(ts + pd.Timedelta(hours=12))
            day = self._day_of_hour[hour] = session[0] if session else ts.date()
        self._days.setdefault((schema, day), []).append((ts_event, record))

    def due(self, until: pd.Timestamp) -> list[pd.Timestamp]:
        """Window starts whose end the stream has passed by the grace."""
        return sorted(s for s, w in self._windows.items() if w.end + self.grace <= until)

    def write_due(self, until: pd.Timestamp, covered) -> list[Path]:
        """Write every window the stream is past (`due`); `covered(start, end)` says when the
        cache already holds it (a Historical pull). Returns the files written."""
        paths = []
        for start in self.due(until):
            window = self._windows.pop(start)
            self.written.add(start)
            self.recorded_until = max(self.recorded_until or window.end, window.end)
            if not window.options:
                log.info("live: no option trades in %s; the window is left to Historical", f"{start:%H:%M}Z")
                continue
            if covered(window.start, window.end):
                continue
            folder = self.cache_dir / "trades" / str(window.trade_date)
            path = folder / f"{window.start:%Y%m%dT%H%M%S}-{window.end:%Y%m%dT%H%M%S}.dbn.zst"
            paths.append(self._write(path, "trades", window.start, window.end, window.records))
        return paths

    def write_days(self, ready) -> list[Path]:
        """Write the buffered definitions and statistics of every day `ready(schema, day)` says
        holds its Historical pull already."""
        paths = []
        for (schema, day), rows in list(self._days.items()):
            if not rows or not ready(schema, day):
                continue
            del self._days[(schema, day)]
            first, last = min(ts for ts, _ in rows), max(ts for ts, _ in rows)
            start, end = pd.Timestamp(first, tz="UTC"), pd.Timestamp(last + 1, tz="UTC")
            path = self.cache_dir / schema / str(day) / f"live-{start:%Y%m%dT%H%M%S%f}-{end:%Y%m%dT%H%M%S%f}.dbn.zst"
            paths.append(self._write(path, schema, start, end, [record for _, record in rows]))
        return paths

    def forget_from(self, ts: pd.Timestamp) -> None:
        """Drop what is buffered at or after `ts`: the stream replays it (a reconnect)."""
        for start in [s for s in self._windows if s + self.interval > ts]:
            del self._windows[start]
        for key, rows in self._days.items():
            self._days[key] = [(t, r) for t, r in rows if t < ts.value]

    def _write(self, path: Path, schema: str, start: pd.Timestamp, end: pd.Timestamp, records: list[bytes]) -> Path:
        metadata = dbn.Metadata(
            dataset=self.dataset,
            start=start.value,
            stype_in=dbn.SType.PARENT,  # type: ignore[arg-type]  # the stubs type the enum members as str
            stype_out=dbn.SType.INSTRUMENT_ID,  # type: ignore[arg-type]
            schema=dbn.Schema.from_str(schema),
            symbols=list(self.symbols),
            partial=[],
            not_found=[],
            mappings=[],
            end=end.value,
            ts_out=False,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.part"
        with partial.open("wb") as handle:
            handle.write(zstandard.ZstdCompressor(level=3).compress(bytes(metadata) + b"".join(records)))
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(path)
        log.info("live: recorded %s %s (%d records)", schema, path.name, len(records))
        return path
