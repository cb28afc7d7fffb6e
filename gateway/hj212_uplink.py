# The HJ 212 uplink: water-quality and noise readings the store holds go to an
# environmental platform as HJ 212-2017 packets over TCP (codec: gateway/hj212.py; facts
# and choices: docs/hj212.md). Off unless an endpoint is configured.
#
# Durable like the JSON uplink, and apart from it: packets are made from the store's
# rows into a table of their own (hj212_out, in the same SQLite file), each with its QN
# and its bytes, and stay there until the platform's 9014 with that QN arrives. A
# restart sends again what was not acknowledged, byte for byte (same QN). The JSON
# uplink's marks and the quota's deletes never touch hj212_out.
#
# What the flags say comes from what the device told us: a value a poll could not read
# is B (communication abnormal), device.comm_fault makes its neighbours B, and the
# maintenance reports of device.sensor_health make the episode's values C (calibration),
# M (out of the water, moved) or D (frozen or stuck: an instrument fault).
from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from gateway import hj212
from gateway.metrics import Metrics
from gateway.sqlite import DbThread, transaction
from gateway.store import Store, event_id

log = logging.getLogger(__name__)

# telemetry type -> (system code, ((our field, factor code, decimals), ...)). Factor
# codes and decimals: HJ 212-2017 Appendix B (turbidity w01003: field convention).
WATER = (("ph", "w01001", 2), ("do", "w01009", 1), ("nh3n", "w21003", 2), ("tp", "w21011", 2),
         ("temp", "w01010", 1), ("turb", "w01003", 1))
NOISE = (("laeq", "LA", 1),)
PROFILES = {"telemetry.water_quality": (hj212.ST_SURFACE_WATER, WATER),
            "telemetry.noise": (hj212.ST_NOISE, NOISE)}
HEALTH, COMM_FAULT = "device.sensor_health", "device.comm_fault"
TYPES = tuple(PROFILES) + (HEALTH, COMM_FAULT)
# device.sensor_health kind -> flag (edge/codes.py: 1 frozen, 2 stuck, 3 calibration,
# 4 out of water, 5 knocked or moved)
HEALTH_FLAGS = {1: "D", 2: "D", 3: "C", 4: "M", 5: "M"}
ALL_FIELDS = 255
# a report comes once per episode, when it is recognised: the episode began duration_s
# before; we take it to last HOLD_S more (the detector joins episodes this close: visit_s)
HOLD_S = 1800
COMM_S = 60                      # a comm fault report covers the polls this close to it
# a period's flag is the worst its samples had, in this order
WORST_FIRST = "DFBCMTSN"
GRACE_S = 120                    # a period closes this long after its end if no later reading came
KEEP_ACKED_S = 7 * 86400         # an acknowledged packet is kept this long (to look into), then deleted
PRUNE_EVERY_S = 3600

SCHEMA = """
CREATE TABLE IF NOT EXISTS hj212_out (
    key TEXT PRIMARY KEY,            -- 2011:<event id>, or <cn>:<device>:<period start>
    qn TEXT NOT NULL,
    packet BLOB NOT NULL,            -- the bytes sent, CRC and CR LF included
    made_at REAL NOT NULL,
    sent_at REAL,
    tries INTEGER NOT NULL DEFAULT 0,
    acked_at REAL                    -- the 9014 came
);
CREATE INDEX IF NOT EXISTS hj212_unacked ON hj212_out (made_at) WHERE acked_at IS NULL;
-- the events rowid the next scan starts after: held back to the first row of the oldest
-- open period, so a restart reads that period's rows again and closes it whole
CREATE TABLE IF NOT EXISTS hj212_cursor (one INTEGER PRIMARY KEY CHECK (one = 0), after INTEGER NOT NULL);
-- what the platform last set with CN=1000: it holds until it sets them again, restarts included
CREATE TABLE IF NOT EXISTS hj212_timeouts (one INTEGER PRIMARY KEY CHECK (one = 0), overtime INTEGER NOT NULL,
                                           recount INTEGER NOT NULL);
"""


@dataclass
class Hj212Config:
    endpoint: str                    # host:port of the platform's HJ 212 receiver
    password: str = "123456"         # PW (6 characters); the standard's examples use 123456
    mn: dict[str, str] = field(default_factory=dict)   # device -> MN; default: the device id
    version: str = "2017"            # or "2025": the Flag's version bits
    overtime: int = hj212.OVERTIME_S # reply timeout and retries (Table 1); CN=1000 changes them
    recount: int = hj212.RECOUNT
    minutes: int = 10                # MinInterval: 1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30
    utc_offset_h: float = 8.0        # QN and DataTime are site local time (Beijing: +8)
    backoff_max: float = 60.0


class Flags:
    """What a device told us about its instruments, as time windows per field."""

    def __init__(self) -> None:
        self.windows: list[tuple[float, float, int, str]] = []    # (from, to, field or ALL, flag)

    def note(self, type_: str, t: int, values: dict[str, Any]) -> None:
        if type_ == HEALTH and values.get("kind") in HEALTH_FLAGS:
            self.windows.append((t - (values.get("duration_s") or 0), t + HOLD_S,
                                 values.get("field", ALL_FIELDS), HEALTH_FLAGS[values["kind"]]))
        elif type_ == COMM_FAULT:
            self.windows.append((t - COMM_S, t + COMM_S, ALL_FIELDS, "B"))
        self.windows = [w for w in self.windows if w[1] >= t - 2 * HOLD_S]

    def flag(self, t: int, index: int, value: Any) -> str:
        if value is None:
            return "B"                   # the poll failed: no value from the instrument
        found = [f for lo, hi, i, f in self.windows if lo <= t <= hi and i in (index, ALL_FIELDS)]
        return worst(found) if found else "N"


def worst(flags: list[str]) -> str:
    return min(flags, key=WORST_FIRST.index) if flags else "N"


@dataclass
class Period:
    device: str
    type: str
    cn: str
    start: int
    end: int
    first_rowid: int
    last_t: int = 0                  # the device's time of its latest sample, and our clock then
    seen_at: float = 0.0
    samples: list[tuple[dict[str, Any], dict[str, str]]] = field(default_factory=list)


def period_items(type_: str, samples: list[tuple[dict[str, Any], dict[str, str]]]) -> list[tuple[str, str]]:
    """A 2051/2061's CP items: Min/Avg/Max and the worst flag per water factor; noise as
    Leq (energy mean), LMx and LMn with the suffix -Data (Table 4: noise of a period)."""
    items: list[tuple[str, str]] = []
    for name, code, dec in PROFILES[type_][1]:
        xs = [v[name] for v, _ in samples if v.get(name) is not None]
        flag = worst([f[name] for _, f in samples])
        if type_ == "telemetry.noise":
            if xs:
                leq = 10 * math.log10(sum(10 ** (x / 10) for x in xs) / len(xs))
                items += [("Leq-Data", hj212.number(leq, dec)), ("LMx-Data", hj212.number(max(xs), dec)),
                          ("LMn-Data", hj212.number(min(xs), dec))]
            items.append(("Leq-Flag", flag))
            continue
        if xs:
            items += [(code + "-Min", hj212.number(min(xs), dec)),
                      (code + "-Avg", hj212.number(sum(xs) / len(xs), dec)),
                      (code + "-Max", hj212.number(max(xs), dec))]
        items.append((code + "-Flag", flag))
    return items


def realtime_items(type_: str, values: dict[str, Any], flags: dict[str, str]) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    for name, code, dec in PROFILES[type_][1]:
        if values.get(name) is not None:
            items.append((code + "-Rtd", hj212.number(values[name], dec)))
        items.append((code + "-Flag", flags[name]))
    return items


class Packer:
    """Turns store rows into packets: a 2011 per reading, a 2051 per MinInterval and a
    2061 per hour once the period is over. Sans-I/O: rows in, (key, qn, bytes) out."""

    def __init__(self, cfg: Hj212Config) -> None:
        self.cfg = cfg
        self.flags: dict[str, Flags] = {}
        self.open: dict[tuple[str, str], Period] = {}     # (device, cn) -> its open period
        self._last_ms = 0

    def qn(self, now: float) -> str:
        # one QN per packet, however many are made in one millisecond
        self._last_ms = max(self._last_ms + 1, int(now * 1000))
        return hj212.qn_at(self._last_ms / 1000, self.cfg.utc_offset_h)

    def _packet(self, key: str, cn: str, type_: str, device: str, t: int, items: list[tuple[str, str]],
                now: float) -> tuple[str, str, bytes]:
        qn = self.qn(now)
        p = hj212.data_packet(cn, PROFILES[type_][0], self.cfg.mn.get(device, device), self.cfg.password,
                              self.cfg.version, qn, hj212.data_time(t, self.cfg.utc_offset_h), items)
        return key, qn, hj212.build(p)

    def row(self, rowid: int, device: str, boot: int, seq: int, type_: str, t: int, clock_set: bool,
            values: dict[str, Any], now: float) -> list[tuple[str, str, bytes]]:
        if not clock_set:
            return []                    # no DataTime without the time of day
        if type_ not in PROFILES:
            self.flags.setdefault(device, Flags()).note(type_, t, values)
            return []
        fl = self.flags.setdefault(device, Flags())
        flags = {name: fl.flag(t, i, values.get(name)) for i, (name, _, _) in enumerate(PROFILES[type_][1])}
        out = self.close(now, device, t)
        out.append(self._packet("2011:" + event_id(device, boot, seq), hj212.CN_REALTIME, type_, device, t,
                                realtime_items(type_, values, flags), now))
        for cn, length in ((hj212.CN_MINUTE, 60 * self.cfg.minutes), (hj212.CN_HOUR, 3600)):
            start = t - t % length
            p = self.open.get((device, cn))
            if p is None or p.start != start:
                p = self.open[(device, cn)] = Period(device, type_, cn, start, start + length, rowid)
            p.samples.append((values, flags))
            p.last_t, p.seen_at = t, now
        return out

    def close(self, now: float, device: str | None = None, t: int | None = None) -> list[tuple[str, str, bytes]]:
        """Packets of the periods that are over: for device, those a reading at t is past;
        for all, those GRACE_S past their end by the device's clock as we estimate it (its
        last reading's time plus our time since): a backlog read after an outage is
        closed by its own later readings, not by today's date."""
        out = []
        for k, p in list(self.open.items()):
            if (device == p.device and t is not None and t >= p.end) or (device is None and self._due(p) <= now):
                del self.open[k]
                out.append(self._packet("%s:%s:%d" % (p.cn, p.device, p.start), p.cn, p.type, p.device, p.start,
                                        period_items(p.type, p.samples), now))
        return out

    def keep_from(self, cursor: int) -> int:
        """The rowid a restart must read after: before the oldest open period's first row."""
        return min([cursor] + [p.first_rowid - 1 for p in self.open.values()])

    @staticmethod
    def _due(p: Period) -> float:
        return p.seen_at + (p.end - p.last_t) + GRACE_S

    def next_close(self) -> float | None:
        return min((self._due(p) for p in self.open.values()), default=None)


class Hj212Uplink:
    def __init__(self, cfg: Hj212Config, store: Store, db: DbThread, metrics: Metrics) -> None:
        self.cfg = cfg
        self.store = store
        self.db = db
        self.metrics = metrics
        self.packer = Packer(cfg)
        self.wake = asyncio.Event()          # rows were committed
        self.ready = asyncio.Event()         # packets are waiting to be sent
        self.waiting: dict[str, asyncio.Future[None]] = {}   # QN -> its 9014
        self.cursor = 0
        self.overtime, self.recount = cfg.overtime, cfg.recount
        self.pruned_at = 0.0

    def notify(self) -> None:
        self.wake.set()

    # ---- the store side (on the DB thread) ---------------------------------------------

    def _open_tables(self) -> tuple[int, tuple[int, int] | None]:
        """The cursor, and the timeout and retries the platform set (None: never)."""
        c = self.store.conn
        c.executescript(SCHEMA)
        row = c.execute("SELECT after FROM hj212_cursor").fetchone()
        top = c.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()[0]
        timeouts = c.execute("SELECT overtime, recount FROM hj212_timeouts").fetchone()
        # a delete of the newest rows lets SQLite hand their rowids out again: never past the top
        return min(row[0] if row else 0, top), (tuple(timeouts) if timeouts else None)

    def _save_timeouts(self, overtime: int, recount: int) -> None:
        with transaction(self.store.conn) as c:
            c.execute("INSERT INTO hj212_timeouts (one, overtime, recount) VALUES (0, ?, ?) ON CONFLICT (one)"
                      " DO UPDATE SET overtime = excluded.overtime, recount = excluded.recount", (overtime, recount))

    def _scan(self, now: float) -> int:
        c = self.store.conn
        top = c.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()[0]
        self.cursor = min(self.cursor, top)
        marks = ",".join("?" * len(TYPES))
        rows = c.execute("SELECT rowid, device, boot, seq, type, t, clock_set, values_json FROM events"
                         " WHERE rowid > ? AND type IN (" + marks + ") ORDER BY rowid LIMIT 1000",
                         (self.cursor,) + TYPES).fetchall()
        out = []
        for rowid, device, boot, seq, type_, t, clock_set, values in rows:
            out += self.packer.row(rowid, device, boot, seq, type_, t, bool(clock_set), json.loads(values), now)
            self.cursor = rowid
        out += self.packer.close(now)
        with transaction(c) as tx:
            tx.executemany("INSERT OR IGNORE INTO hj212_out (key, qn, packet, made_at) VALUES (?,?,?,?)",
                           [(k, qn, pkt, now) for k, qn, pkt in out])
            tx.execute("INSERT INTO hj212_cursor (one, after) VALUES (0, ?) ON CONFLICT (one) DO UPDATE"
                       " SET after = excluded.after", (self.packer.keep_from(self.cursor),))
            if now - self.pruned_at >= PRUNE_EVERY_S:
                # the platform has them: the table keeps a week to look into, not the years
                # a gateway runs (the scan never makes a packet that old again)
                self.pruned_at = now
                tx.execute("DELETE FROM hj212_out WHERE acked_at < ?", (now - KEEP_ACKED_S,))
        return len(rows)

    def _next(self) -> tuple[str, bytes] | None:
        return self.store.conn.execute("SELECT qn, packet FROM hj212_out WHERE acked_at IS NULL"
                                       " ORDER BY made_at, rowid LIMIT 1").fetchone()

    def _sent(self, qn: str, now: float) -> None:
        with transaction(self.store.conn, synced=False) as c:   # lost in a power cut: one try uncounted
            c.execute("UPDATE hj212_out SET sent_at = ?, tries = tries + 1 WHERE qn = ?", (now, qn))

    def _acked(self, qn: str, now: float) -> None:
        # not synced: an ack mark lost in a power cut sends the packet again, and the
        # platform keeps one per (MN, QN)
        with transaction(self.store.conn, synced=False) as c:
            c.execute("UPDATE hj212_out SET acked_at = ? WHERE qn = ?", (now, qn))

    def counts(self) -> dict[str, int]:
        r = self.store.conn.execute("SELECT count(*), count(acked_at) FROM hj212_out").fetchone()
        return {"packets": r[0], "acked": r[1], "unacked": r[0] - r[1]}

    # ---- the loops ------------------------------------------------------------------

    async def run(self) -> None:
        self.cursor, timeouts = await self.db.call(self._open_tables)
        if timeouts is not None:
            self.overtime, self.recount = timeouts
        self.ready.set()                     # what a previous run left unacknowledged
        sender = asyncio.create_task(self._send_loop(), name="hj212-send")
        try:
            while True:
                while await self.db.call(self._scan, time.time()):
                    pass
                self.ready.set()
                due = self.packer.next_close()
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), None if due is None else max(0.1, due - time.time()))
                except asyncio.TimeoutError:
                    pass
                if sender.done():
                    sender.result()          # a failure of the sender is the uplink's
        finally:
            sender.cancel()

    async def _send_loop(self) -> None:
        host, _, port = self.cfg.endpoint.rpartition(":")
        backoff = 1.0
        while True:
            await self.ready.wait()
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), self.overtime)
            except (OSError, asyncio.TimeoutError) as e:
                self.metrics.inc("hj212.connect_failures")
                log.warning("HJ 212 endpoint %s unreachable: %s; again in %.0f s", self.cfg.endpoint, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.cfg.backoff_max)
                continue
            receiver = asyncio.create_task(self._receive(reader, writer), name="hj212-receive")
            try:
                done = await self._send_all(writer, receiver)
            finally:
                receiver.cancel()
                writer.close()
                for f in self.waiting.values():
                    f.cancel()
                self.waiting.clear()
            if done:
                backoff = 1.0
            else:                            # not all acknowledged: the link is bad, wait
                self.ready.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.cfg.backoff_max)

    async def _send_all(self, writer: asyncio.StreamWriter, receiver: asyncio.Task[None]) -> bool:
        """Send the unacknowledged packets in order, each until its 9014 or its retries
        run out. True: all acknowledged; False: give up this connection."""
        while True:
            self.ready.clear()               # before the read: a scan's set after it is kept
            nxt = await self.db.call(self._next)
            if nxt is None:                  # all acknowledged: keep the connection, wait for more
                waiter = asyncio.ensure_future(self.ready.wait())
                await asyncio.wait([waiter, receiver], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if receiver.done():
                    return True
                continue
            qn, packet = nxt
            fut = self.waiting[qn] = asyncio.get_running_loop().create_future()
            for _ in range(1 + self.recount):
                if receiver.done():
                    return False             # the platform closed the connection
                try:
                    writer.write(packet)
                    await writer.drain()
                except OSError:
                    return False
                await self.db.call(self._sent, qn, time.time())
                self.metrics.inc("hj212.sent")
                try:
                    await asyncio.wait_for(asyncio.shield(fut), self.overtime)
                    break
                except asyncio.TimeoutError:
                    self.metrics.inc("hj212.timeouts")
            else:
                log.warning("HJ 212 packet %s not acknowledged after %d tries; kept, sent again later",
                            qn, 1 + self.recount)
                return False
            del self.waiting[qn]
            await self.db.call(self._acked, qn, time.time())
            self.metrics.inc("hj212.acked")

    async def _receive(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = b""
        while True:
            data = await reader.read(4096)
            if not data:
                return
            events, buf = hj212.parse_all(buf + data)
            for ev in events:
                if isinstance(ev, hj212.Refused):
                    self.metrics.inc("hj212.refused." + ev.reason)
                    log.warning("HJ 212: refused %d bytes from the platform (%s)", len(ev.raw), ev.reason)
                elif ev.cn == hj212.CN_DATA_ACK and ev.qn in self.waiting:
                    self.waiting[ev.qn].done() or self.waiting[ev.qn].set_result(None)
                elif ev.cn == hj212.CN_SET_TIMEOUT:
                    await self._set_timeout(ev, writer)

    async def _set_timeout(self, p: hj212.Packet, writer: asyncio.StreamWriter) -> None:
        """CN=1000: 9011 (accepted, refused, or a wrong PW), then on success the new values,
        kept in the store so that they outlive a restart, and 9012."""
        got = hj212.timeouts_of(p)
        v = self.cfg.version
        code = hj212.QN_BAD_PW if p.pw != self.cfg.password else hj212.QN_READY if got else hj212.QN_REFUSED
        writer.write(hj212.build(hj212.reply(p, hj212.CN_QN_REPLY, "QnRtn", code, v)))
        if code != hj212.QN_READY or got is None:
            self.metrics.inc("hj212.commands_refused")
            log.warning("HJ 212: refused a CN=1000 from the platform (%s)",
                        "wrong PW" if code == hj212.QN_BAD_PW else "OverTime or ReCount missing or out of range")
            return
        await self.db.call(self._save_timeouts, *got)
        self.overtime, self.recount = got
        log.info("HJ 212: the platform set the reply timeout to %d s and the retries to %d", *got)
        writer.write(hj212.build(hj212.reply(p, hj212.CN_EXE_REPLY, "ExeRtn", hj212.EXE_OK, v)))


def parse_mn(items: list[str]) -> dict[str, str]:
    """--hj212-mn DEVICE=MN, repeated."""
    out = {}
    for item in items:
        device, eq, mn = item.partition("=")
        if not eq or not device or not mn:
            raise ValueError("%r: not DEVICE=MN" % item)
        out[device] = mn
    return out
