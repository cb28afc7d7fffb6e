# The reference platform's HJ 212 receiver: an asyncio TCP server beside the JSON one
# (gateway/platform.py). It checks each packet's length, CRC and fields
# (gateway/hj212.py), stores what it accepts in the platform's SQLite file, answers the
# uploads that ask for it with a 9014 carrying their QN, and counts and logs what it
# refuses. One row per (MN, QN): a packet sent again after a lost 9014 is answered
# again, not stored twice.
#
#   async with Hj212Server(tmp_path / "platform.sqlite") as hj:
#       ... hj.port ..., hj.packets(), hj.refused
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gateway import hj212
from gateway.sqlite import connect, transaction

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS hj212_packets (
    mn TEXT NOT NULL,
    qn TEXT NOT NULL,
    st TEXT NOT NULL,
    cn TEXT NOT NULL,
    data_time TEXT,
    cp_json TEXT NOT NULL,           -- the CP items, in order
    peer TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (mn, qn)
);
"""
IDLE_S = 600                         # a connection silent this long is closed


def check(p: hj212.Packet) -> str | None:
    """Why an upload that parsed is still refused (None: accepted)."""
    if p.cn not in hj212.DATA_CNS:
        return "cn"
    if not p.qn or not p.qn.isdigit() or not p.st or not p.mn:
        return "fields"
    return None


class Hj212Server:
    def __init__(self, db_path: str | Path, host: str = "127.0.0.1", port: int = 0, version: str = "2017") -> None:
        self.db_path = Path(db_path)
        self.host, self.port = host, port
        self.version = version
        self.conn: sqlite3.Connection | None = None
        self.refused: Counter[str] = Counter()
        self.accepted = 0
        self.ack = True                  # tests: False drops the 9014s (a platform that lost them)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.replies: list[tuple[str, dict[str, str]]] = []   # the sites' 9011 and 9012, in order

    async def start(self) -> int:
        self.conn = connect(self.db_path)
        self.conn.executescript(SCHEMA)
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("HJ 212 receiver listening on %s:%d", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()
            self._server = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    async def __aenter__(self) -> "Hj212Server":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _refuse(self, reason: str, peer: str, raw: bytes) -> None:
        self.refused[reason] += 1
        log.warning("HJ 212 from %s refused (%s): %r", peer, reason, raw[:80])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = "%s:%d" % writer.get_extra_info("peername")[:2]
        self._writers.add(writer)
        buf = b""
        try:
            while True:
                data = await asyncio.wait_for(reader.read(4096), IDLE_S)
                if not data:
                    return
                events, buf = hj212.parse_all(buf + data)
                for ev in events:
                    if isinstance(ev, hj212.Refused):
                        self._refuse(ev.reason, peer, ev.raw)
                    elif ev.cn in (hj212.CN_QN_REPLY, hj212.CN_EXE_REPLY):
                        log.info("HJ 212 from %s: %s %s", peer, ev.cn, ev.cp)
                        self.replies.append((ev.cn, dict(ev.cp)))
                    elif (why := check(ev)) is not None:
                        self._refuse(why, peer, repr(ev).encode())
                    else:
                        self._store(ev, peer)
                        if ev.wants_ack and self.ack:
                            writer.write(hj212.build(hj212.data_ack(ev, self.version)))
                await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _store(self, p: hj212.Packet, peer: str) -> None:
        assert self.conn is not None
        with transaction(self.conn) as c:
            c.execute("INSERT OR IGNORE INTO hj212_packets (mn, qn, st, cn, data_time, cp_json, peer,"
                      " received_at) VALUES (?,?,?,?,?,?,?,?)",
                      (p.mn, p.qn, p.st, p.cn, p.cp.get("DataTime"), json.dumps(p.cp), peer, time.time()))
        self.accepted += 1

    def set_timeouts(self, overtime: int, recount: int, pw: str = "123456") -> None:
        """Send CN=1000 to every connected site (the operator's command)."""
        for w in self._writers:
            w.write(hj212.build(hj212.set_timeout(hj212.qn_at(time.time(), 8), pw, "0", overtime, recount,
                                                  self.version)))

    def packets(self, cn: str | None = None) -> list[dict[str, Any]]:
        assert self.conn is not None
        rows = self.conn.execute("SELECT mn, qn, st, cn, data_time, cp_json FROM hj212_packets"
                                 " WHERE ? IS NULL OR cn = ? ORDER BY rowid", (cn, cn)).fetchall()
        return [{"mn": r[0], "qn": r[1], "st": r[2], "cn": r[3], "data_time": r[4], "cp": json.loads(r[5])}
                for r in rows]
