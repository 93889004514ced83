"""A stand-in for Databento's Live gateway on 127.0.0.1, streaming the sample market.

It speaks the Raw API the real ``databento.Live`` client speaks (plain TCP):
- greeting ``lsg_version=...`` and challenge ``cram=...`` lines; the client answers
  ``auth=<sha256("<cram>|<key>")>-<last 5 of key>|dataset=...|encoding=dbn|ts_out=0|...``,
  checked with the client's own `databento.common.cram.get_challenge_response`;
  ``success=1|session_id=N`` or ``success=0|error=...``;
- one ``schema=...|stype_in=parent|symbols=...|start=...|id=N|is_last=0/1`` line per chunk of
  symbols, then ``start_session=0``;
- then DBN: the metadata, a ``SUBSCRIPTION_ACK`` system message per subscription, an
  ``ErrorMsg`` per parent symbol that resolves to nothing (the session goes on), a
  ``SymbolMappingMsg`` per instrument, the sample's records of the subscribed schemas and
  parents in ``ts_recv`` order (from each subscription's ``start``, by ``ts_event``), a
  ``REPLAY_COMPLETED`` per schema once the sample is sent, and heartbeats while idle.

`Behaviour` makes it misbehave as the real service can: pace (an event-time speed-up, or as
fast as the socket takes), drop the connection after some records, refuse with an error
(bad key, connection limit), leave a class of instruments out (a licence without options),
stop at an event time. Every session's subscriptions are logged; `sent` records when each
chunk of records left (wall clock, with the last ``ts_event`` in it), for latency figures.
"""

from __future__ import annotations

import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import databento_dbn as dbn
import numpy as np
import pandas as pd
from databento.common.cram import get_challenge_response
from standin_gateway import SampleMarket, sample_market

LIVE_KEY = "db-LiveStandInKey0000000000000"
ERRORS = {
    "auth": "Authentication failed.",
    "limit": "User has reached their open connection limit",
}
CHUNK_RECORDS = 512  # records per socket write when sending as fast as possible


@dataclass
class Behaviour:
    """How the next sessions misbehave (`StandInLiveGateway.behaviour`, changeable between sessions)."""

    speed: float | None = None  # event seconds per wall second; None: as fast as the socket takes
    drop_after: int | None = None  # close the connection after this many data records (once)
    error: str | None = None  # "auth" or "limit": refuse the session with that error
    without_options: bool = False  # leave out option and spread records (a futures-only licence)
    end: pd.Timestamp | None = None  # send records with ts_event before this only
    heartbeat_s: float = 0.5
    replay_hours: float | None = None  # a start further back than this (wall clock): REPLAY_DATA_AGED_OUT


@dataclass
class _Session:
    number: int
    subscriptions: list[dict] = field(default_factory=list)
    records_sent: int = 0


class StandInLiveGateway:
    """``with StandInLiveGateway(folder) as gw:``; ``gw.address`` is ``"127.0.0.1:<port>"``."""

    def __init__(
        self,
        folder: Path | None = None,
        key: str = LIVE_KEY,
        behaviour: Behaviour | None = None,
        market: SampleMarket | None = None,
    ):
        if market is None and folder is None:
            raise ValueError("give the sample folder, or the market another stand-in loaded from it")
        self.market = market or sample_market(Path(folder))  # type: ignore[arg-type]
        self.key = key
        self.behaviour = behaviour or Behaviour()
        self.sessions: list[_Session] = []
        self.sent: list[tuple[float, int]] = []  # (time.time() after the write, last ts_event in it)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connections: list[socket.socket] = []
        self._is_option = {
            iid: parent.endswith(".OPT") for iid, parent in self.market.parent_of.items()
        }  # spreads live under the options parent too

    def __enter__(self) -> StandInLiveGateway:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._listener.close()
        for conn in list(self._connections):
            _close(conn)

    # -- the protocol ---------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # records go out as written, as a gateway's do
            self._connections.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._session(conn, conn.makefile("rb"))
        except (OSError, ValueError):
            pass  # the client went away: part of the tests
        finally:
            _close(conn)
            if conn in self._connections:
                self._connections.remove(conn)

    def _session(self, conn: socket.socket, lines) -> None:
        behaviour = self.behaviour
        challenge = secrets.token_hex(8)
        conn.sendall(f"lsg_version=0.0.0-standin\ncram={challenge}\n".encode())
        auth = _fields(lines.readline())
        if behaviour.error in ERRORS or auth.get("auth") != get_challenge_response(challenge, self.key):
            error = ERRORS.get(behaviour.error or "auth", ERRORS["auth"])
            conn.sendall(f"success=0|error={error}\n".encode())
            return
        session = _Session(len(self.sessions) + 1)
        self.sessions.append(session)
        conn.sendall(f"success=1|session_id={session.number}\n".encode())
        while True:
            line = lines.readline()
            if not line:
                return
            request = _fields(line)
            if "start_session" in request:
                break
            session.subscriptions.append(request)
        self._stream(conn, session, behaviour)

    def _plan(self, session: _Session, behaviour: Behaviour) -> tuple[list[bytes], np.ndarray, np.ndarray, list[str]]:
        """What this session sends: control records first, then (schema index, row) of every
        data record in ts_recv order, and the parent symbols that resolve to nothing."""
        known = set(self.market.parent_of.values())
        picks, unknown = [], []
        for sub in session.subscriptions:
            schema = sub["schema"]
            parents = [s for s in sub.get("symbols", "").split(",") if s]
            unknown += [p for p in parents if p not in known]
            data = self.market.schemas.get(schema)
            if data is None:
                continue
            rows = self.market.select(schema, 0, 2**63 - 1, parents)
            start = int(sub["start"]) if sub.get("start") else None
            ts_event = np.ascontiguousarray(data.records[rows, 8:16]).view("<u8").ravel()
            keep = np.ones(len(rows), dtype=bool) if start is None else ts_event >= start
            if behaviour.end is not None:
                keep &= ts_event < behaviour.end.value
            if behaviour.without_options:
                keep &= ~np.array([self._is_option.get(int(i), False) for i in data.instrument_id[rows]], dtype=bool)
            picks.append((schema, rows[keep]))
        names = [schema for schema, _ in picks]
        schema_of = (
            np.concatenate([np.full(len(rows), k) for k, (_, rows) in enumerate(picks)]) if picks else np.empty(0)
        )
        rows_all = np.concatenate([rows for _, rows in picks]) if picks else np.empty(0, dtype="int64")
        ts = (
            np.concatenate([self.market.schemas[schema].ts_recv[rows] for schema, rows in picks])
            if picks
            else np.empty(0, dtype="uint64")
        )
        order = np.argsort(ts, kind="stable")
        return names, schema_of[order].astype("int64"), rows_all[order].astype("int64"), sorted(set(unknown))

    def _stream(self, conn: socket.socket, session: _Session, behaviour: Behaviour) -> None:
        if behaviour.replay_hours is not None:
            oldest = time.time_ns() - int(behaviour.replay_hours * 3600e9)
            if any(int(sub.get("start") or oldest) < oldest for sub in session.subscriptions):
                # as Databento does: an error record, and the session ends
                conn.sendall(bytes(self._metadata(session)))
                conn.sendall(
                    bytes(
                        dbn.ErrorMsg(
                            time.time_ns(),
                            "Requested replay start is older than the last 24 hours",
                            code=dbn.ErrorCode.REPLAY_DATA_AGED_OUT,
                        )
                    )
                )
                return
        names, schema_of, rows, unknown = self._plan(session, behaviour)
        control = [bytes(self._metadata(session))]
        now = time.time_ns()
        for sub in session.subscriptions:
            control.append(
                bytes(
                    dbn.SystemMsg(
                        now,
                        f"Subscription request {sub.get('id', 0)} for {sub['schema']} data succeeded",
                        dbn.SystemCode.SUBSCRIPTION_ACK,
                    )
                )
            )
        for parent in unknown:
            control.append(
                bytes(
                    dbn.ErrorMsg(
                        now,
                        f"Failed to resolve symbol: {parent}",
                        code=dbn.ErrorCode.SYMBOL_RESOLUTION_FAILED,
                    )
                )
            )
        mapped = set()
        for k, name in enumerate(names):
            data = self.market.schemas[name]
            for iid in np.unique(data.instrument_id[rows[schema_of == k]]).tolist():
                if iid in mapped or iid not in data.mappings:
                    continue
                mapped.add(iid)
                control.append(
                    bytes(
                        dbn.SymbolMappingMsg(
                            0,
                            iid,
                            now,
                            dbn.SType.PARENT,
                            self.market.parent_of.get(iid, ""),
                            dbn.SType.RAW_SYMBOL,
                            data.mappings[iid],
                            0,
                            2**63 - 1,
                        )
                    )
                )
        conn.sendall(b"".join(control))
        self._send_records(conn, session, behaviour, names, schema_of, rows)
        for name in names:
            conn.sendall(
                bytes(dbn.SystemMsg(time.time_ns(), f"Finished {name} replay", dbn.SystemCode.REPLAY_COMPLETED))
            )
        while not self._stop.is_set():  # caught up: heartbeats until the client leaves
            time.sleep(behaviour.heartbeat_s)
            conn.sendall(bytes(dbn.SystemMsg(time.time_ns(), "Heartbeat", dbn.SystemCode.HEARTBEAT)))

    def _metadata(self, session: _Session) -> dbn.Metadata:
        first_start = min((int(s["start"]) for s in session.subscriptions if s.get("start")), default=0)
        return dbn.Metadata(
            dataset="GLBX.MDP3",
            start=first_start,
            stype_in=dbn.SType.PARENT,
            stype_out=dbn.SType.INSTRUMENT_ID,
            schema=None,
            symbols=sorted({s for sub in session.subscriptions for s in sub.get("symbols", "").split(",") if s}),
            partial=[],
            not_found=[],
            mappings=[],
            ts_out=False,
        )

    def _send_records(self, conn, session, behaviour, names, schema_of, rows) -> None:
        if not len(rows):
            return
        records = [self.market.schemas[name].records for name in names]
        ts_event = np.empty(len(rows), dtype="int64")
        for k in range(len(names)):
            at = schema_of == k
            ts_event[at] = np.ascontiguousarray(records[k][rows[at], 8:16]).view("<i8").ravel()
        wall0, event0 = time.time(), int(ts_event[0])
        limit = behaviour.drop_after
        i = 0
        while i < len(rows):
            if self._stop.is_set():
                return
            j = min(i + CHUNK_RECORDS, len(rows))
            if behaviour.speed:
                # pace by event time: send what is due now, then sleep to the next record's time
                due_wall = wall0 + (ts_event[i] - event0) / 1e9 / behaviour.speed
                delay = due_wall - time.time()
                if delay > 0:
                    time.sleep(min(delay, behaviour.heartbeat_s))
                    if delay > behaviour.heartbeat_s:
                        conn.sendall(bytes(dbn.SystemMsg(time.time_ns(), "Heartbeat", dbn.SystemCode.HEARTBEAT)))
                        continue
                horizon = event0 + (time.time() - wall0) * behaviour.speed * 1e9
                j = max(i + 1, min(j, i + int(np.searchsorted(ts_event[i:j], horizon, side="right"))))
            if limit is not None and session.records_sent + (j - i) >= limit:
                j = i + max(limit - session.records_sent, 0)
                self._write(conn, records, schema_of, rows, ts_event, i, j, session)
                behaviour.drop_after = None  # once
                raise OSError("dropped by the stand-in (Behaviour.drop_after)")
            self._write(conn, records, schema_of, rows, ts_event, i, j, session)
            i = j

    def _write(self, conn, records, schema_of, rows, ts_event, i, j, session) -> None:
        if j <= i:
            return
        parts, k = [], i
        while k < j:  # runs of one schema, each one numpy take
            run_end = (
                k + int(np.argmax(schema_of[k:j] != schema_of[k])) if (schema_of[k:j] != schema_of[k]).any() else j
            )
            parts.append(records[schema_of[k]][rows[k:run_end]].tobytes())
            k = run_end
        conn.sendall(b"".join(parts))
        session.records_sent += j - i
        self.sent.append((time.time(), int(ts_event[j - 1])))


def live_command(
    folder: Path, historical_url: str, live_address: str, *args: str, sets: dict | None = None
) -> list[str]:
    """`scheduler.py ... live ARGS` against the two stand-ins, its cache, state and alert log in
    `folder`, the console quiet; `sets` adds config overrides."""
    settings = {
        "data.source": "databento",
        "data.cache_dir": str(folder / "cache"),
        "data.state_db": str(folder / "state.sqlite"),
        "data.outputs_dir": str(folder / "outputs"),
        "databento.gateway": historical_url,
        "databento.live_gateway": live_address,
        "notify.console.enabled": "false",
        "notify.log.path": str(folder / "alerts.log"),
        **(sets or {}),
    }
    command = [sys.executable, str(Path(__file__).resolve().parent.parent / "scheduler.py")]
    for key, value in settings.items():
        command += ["--set", f"{key}={value}"]
    return [*command, "live", *args]


def _fields(line: bytes) -> dict[str, str]:
    text = line.decode().strip()
    return dict(part.partition("=")[::2] for part in text.split("|") if part)


def _close(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()


__all__ = ["LIVE_KEY", "Behaviour", "StandInLiveGateway", "live_command"]
