"""A stand-in for Databento's Historical gateway on 127.0.0.1, serving the sample market.

It speaks the HTTP API the real ``databento.Historical`` client uses (HTTPS, because the
client forces the https scheme; the certificate comes from a trustme test CA):
- ``GET  /v0/metadata.get_dataset_range``  -> {"start", "end", "schema": {...}}
- ``POST /v0/metadata.get_cost``           -> dollars, priced by bytes like the real service
- ``POST /v0/timeseries.get_range``        -> zstd DBN: the sample's records of that schema with
  ``ts_recv`` in [start, end) whose instrument belongs to one of the ``stype_in=parent`` symbols

Authentication is HTTP basic with the key as user name. Faults are queued per endpoint
(`Fault`) and served in order: an HTTP status with a JSON ``detail`` and headers, a slow
answer, or a connection dropped half-way through the body. Every request is logged.
"""

from __future__ import annotations

import base64
import functools
import json
import ssl
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import databento as db
import databento_dbn as dbn
import numpy as np
import pandas as pd
import zstandard

#: Byte offset of ts_recv inside one record of each schema (after the 16-byte header for
#: definition/statistics; after price, size, action, side, flags, depth for trades).
TS_RECV_OFFSET = {"trades": 32, "definition": 16, "statistics": 16}
WARNING_HEADER = "X-Warning"
PRICE_PER_GB_USD = {"trades": 40.0, "definition": 5.0, "statistics": 5.0}


@dataclass
class Fault:
    """One injected misbehaviour: `status` (with `detail`, `headers`), `delay` seconds, or `drop`."""

    endpoint: str  # "get_range", "get_cost", "get_dataset_range"
    status: int | None = None
    detail: str = ""
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False


@dataclass
class _Schema:
    records: np.ndarray  # (n, record_size) uint8
    ts_recv: np.ndarray
    instrument_id: np.ndarray
    mappings: dict[int, str]


def _read_records(path: Path) -> tuple[str, np.ndarray]:
    """A sample file's schema (from its name, glbx-mdp3-YYYYMMDD.SCHEMA.dbn.zst) and its records as
    rows of bytes; the metadata is skipped, not decoded (its symbol mappings are most of a file)."""
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
    meta_len = struct.unpack_from("<I", raw, 4)[0]
    body = raw[8 + meta_len :]
    schema = path.name.split(".")[-3]
    if not body:
        return schema, np.empty((0, 0), np.uint8)
    size = body[0] * 4
    return schema, np.frombuffer(body, np.uint8).reshape(-1, size)


@functools.lru_cache(maxsize=4)
def sample_market(folder: Path) -> SampleMarket:
    """One `SampleMarket` per folder in a process: the gateways of every test module that uses
    one (Historical and Live) serve the same records, read once."""
    return SampleMarket(folder)


class SampleMarket:
    """The sample folder's records by schema, with which parent symbol each instrument answers to."""

    def __init__(self, folder: Path):
        by_schema: dict[str, list[np.ndarray]] = {}
        for path in sorted(folder.glob("*.dbn.zst")):
            schema, records = _read_records(path)
            if len(records):
                by_schema.setdefault(schema, []).append(records)
        self.schemas: dict[str, _Schema] = {}
        for schema, chunks in by_schema.items():
            records = np.concatenate(chunks)
            off = TS_RECV_OFFSET[schema]
            ts = np.ascontiguousarray(records[:, off : off + 8]).view("<u8").ravel()
            iid = np.ascontiguousarray(records[:, 4:8]).view("<u4").ravel()
            order = np.argsort(ts, kind="stable")
            self.schemas[schema] = _Schema(records[order], ts[order], iid[order], {})
        # the array decode nqflow uses (to_df maps every record's symbol: 16 s more per gateway),
        # of a file without symbol mappings: each instrument's symbol is its latest definition's
        definitions = db.DBNStore.from_bytes(self._dbn("definition", 0, 2**63 - 1, None, mapped=False)).to_ndarray()
        ids = definitions["instrument_id"].astype(int).tolist()
        symbols = dict(zip(ids, definitions["raw_symbol"].astype("U").tolist()))  # later records win
        for data in self.schemas.values():
            data.mappings.update(symbols)
        kind = np.where(definitions["instrument_class"] == b"F", "FUT", "OPT")  # spreads live under the options parent
        parents = np.char.add(np.char.add(definitions["asset"].astype("U"), "."), kind)
        self.parent_of = dict(zip(ids, parents.tolist()))
        self.start = pd.Timestamp(int(min(s.ts_recv.min() for s in self.schemas.values())), tz="UTC")
        self.end = pd.Timestamp(int(max(s.ts_recv.max() for s in self.schemas.values())) + 1, tz="UTC")

    def select(self, schema: str, start_ns: int, end_ns: int, parents: list[str] | None) -> np.ndarray:
        data = self.schemas[schema]
        lo, hi = np.searchsorted(data.ts_recv, [start_ns, end_ns])
        rows = np.arange(lo, hi)
        if parents is not None:
            wanted = np.array([iid for iid, p in self.parent_of.items() if p in set(parents)], dtype="<u4")
            rows = rows[np.isin(data.instrument_id[lo:hi], wanted)]
        return rows

    def _dbn(self, schema: str, start_ns: int, end_ns: int, parents: list[str] | None, mapped: bool = True) -> bytes:
        data = self.schemas[schema]
        rows = self.select(schema, start_ns, end_ns, parents)
        ids = sorted(set(data.instrument_id[rows].tolist())) if mapped else []
        day = pd.Timestamp(min(start_ns, 2**62), tz="UTC").date()
        known = set(self.parent_of.values()) if hasattr(self, "parent_of") else set()
        not_found = [p for p in parents or [] if p not in known]
        mappings = [
            SimpleNamespace(
                raw_symbol=data.mappings[i],
                intervals=[SimpleNamespace(start_date=day, end_date=day + pd.Timedelta(days=3), symbol=str(i))],
            )
            for i in ids
            if i in data.mappings
        ]
        metadata = dbn.Metadata(
            dataset="GLBX.MDP3",
            start=start_ns,
            end=end_ns,
            stype_in=dbn.SType.PARENT if parents else dbn.SType.RAW_SYMBOL,
            stype_out=dbn.SType.INSTRUMENT_ID,
            schema=dbn.Schema.from_str(schema),
            symbols=list(parents or []),
            partial=[],
            not_found=not_found,
            mappings=mappings,
            ts_out=False,
        )
        return bytes(metadata) + data.records[rows].tobytes()

    def dbn_zst(self, schema: str, start_ns: int, end_ns: int, parents: list[str]) -> bytes:
        return zstandard.ZstdCompressor(level=1).compress(self._dbn(schema, start_ns, end_ns, parents))

    def cost_usd(self, schema: str, start_ns: int, end_ns: int, parents: list[str]) -> float:
        rows = self.select(schema, start_ns, end_ns, parents)
        size = self.schemas[schema].records.shape[1]
        return len(rows) * size / 1e9 * PRICE_PER_GB_USD[schema]


def _ns(value: str) -> int:
    ts = pd.Timestamp(int(value)) if value.lstrip("-").isdigit() else pd.Timestamp(value)
    return int((ts if ts.tzinfo else ts.tz_localize("UTC")).value)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that timed out and hung up is part of the tests, not a failure


class StandInGateway:
    """Run with ``with StandInGateway(folder, key, certificate) as gw:``; ``gw.url`` is the gateway."""

    def __init__(
        self,
        folder: Path,
        key: str,
        server_cert,
        available_end: pd.Timestamp | None = None,
        cost_multiplier: float = 1.0,
    ):
        self.market = sample_market(Path(folder))
        self.key = key
        self.available_end = available_end or self.market.end
        self.cost_multiplier = cost_multiplier
        self.faults: deque[Fault] = deque()
        self.log: list[SimpleNamespace] = []
        self._lock = threading.Lock()
        gateway = self
        handler = type("Handler", (_Handler,), {"gateway": gateway})
        self.server = _Server(("127.0.0.1", 0), handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_cert.configure_cert(context)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StandInGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def inject(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def next_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.endpoint == endpoint:
                    self.faults.remove(fault)
                    return fault
        return None

    def requests(self, endpoint: str, schema: str | None = None) -> list[SimpleNamespace]:
        return [r for r in self.log if r.endpoint == endpoint and (schema is None or r.params.get("schema") == schema)]


class _Handler(BaseHTTPRequestHandler):
    gateway: StandInGateway
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes on a kept-alive connection: with Nagle's algorithm the
    # body waits for the client's delayed ACK, 40 ms on every request (half the soak's time).
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _json(self, status: int, body, headers: dict | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, str(value))
        self.end_headers()
        self.wfile.write(payload)

    def _authorised(self) -> bool:
        auth = self.headers.get("Authorization", "")
        user = base64.b64decode(auth[6:]).decode().split(":")[0] if auth.startswith("Basic ") else ""
        if user != self.gateway.key:
            self._json(401, {"detail": "Authentication failed."})
            return False
        return True

    def _handle(self, params: dict[str, str]) -> None:
        endpoint = urlsplit(self.path).path.rsplit("/", 1)[-1].split(".", 1)[-1]
        self.gateway.log.append(SimpleNamespace(endpoint=endpoint, params=params, at=time.monotonic()))
        fault = self.gateway.next_fault(endpoint)
        if fault and fault.delay:
            time.sleep(fault.delay)
        if fault and fault.status:
            return self._json(fault.status, {"detail": fault.detail or "injected"}, fault.headers)
        if not self._authorised():
            return None
        gw, market = self.gateway, self.gateway.market
        if endpoint == "get_dataset_range":
            end = gw.available_end.isoformat()
            return self._json(
                200,
                {
                    "start": market.start.isoformat(),
                    "end": end,
                    "schema": {s: {"start": market.start.isoformat(), "end": end} for s in market.schemas},
                },
            )
        schema, parents = params.get("schema", "trades"), [s for s in params.get("symbols", "").split(",") if s]
        if params.get("stype_in") != "parent" or not parents or schema not in market.schemas:
            return self._json(422, {"detail": "symbology_invalid_request: expected stype_in=parent symbols"})
        # Like the real service, a parent that resolves to nothing is a warning, not an error.
        unknown = [p for p in parents if p not in set(market.parent_of.values())]
        warning = (
            {WARNING_HEADER: json.dumps([f"BentoWarning: symbols not found: {', '.join(unknown)}"])} if unknown else {}
        )
        start_ns, end_ns = _ns(params["start"]), _ns(params["end"])
        if end_ns > gw.available_end.value:
            return self._json(422, {"detail": "data_end_after_available_end: the end is after the available range"})
        if endpoint == "get_cost":
            return self._json(200, market.cost_usd(schema, start_ns, end_ns, parents) * gw.cost_multiplier, warning)
        if endpoint != "get_range":
            return self._json(404, {"detail": f"unknown endpoint {endpoint}"})
        body = market.dbn_zst(schema, start_ns, end_ns, parents)
        self.send_response(200)
        for name, value in warning.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault and fault.drop:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return None
        self.wfile.write(body)
        return None

    def do_GET(self) -> None:
        self._handle({k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self._handle({k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()})
