# The gateway's durable store: every verified event, committed before its MQTT ack,
# de-duplicated by (device, boot, seq), and the upload queue the uplink drains, one
# queue per stream (gateway/streams.py). Also what the disk quota and the retention
# period take away (gateway/quota.py decides when), and the marks that outlive them, so
# a deleted event sent again is refused as a replay. Blocking sqlite3 calls: run them
# on one DbThread (gateway/sqlite.py).
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

from edge.codec import MAX_ID           # device boots are below it; the gateway's own events use it
from gateway.sqlite import connect, transaction
from gateway.streams import DEFAULT_STREAMS, Stream, rank_of_kind

FILENAME = "events.sqlite"
# the kind a device's outbox keeps apart from the others, in a log of its own (edge/agent.py)
TELEMETRY = "telemetry"

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    device TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    code INTEGER NOT NULL,
    type TEXT NOT NULL,
    kind TEXT NOT NULL,
    prio INTEGER NOT NULL,           -- the stream's rank (streams.py): 0 is uploaded first
    action TEXT NOT NULL,
    t INTEGER NOT NULL,              -- unix seconds, or seconds since boot when clock_set = 0
    clock_set INTEGER NOT NULL,
    values_json TEXT NOT NULL,
    received_at REAL NOT NULL,
    uploaded_at REAL,
    rejected_at REAL,                -- the platform refused it (4xx): kept, never retried
    reject_reason TEXT,
    payload BLOB,                    -- the device's signed bytes: the platform checks the MAC itself
    PRIMARY KEY (device, boot, seq)
);
-- The upload queues: only pending rows, in (stream, arrival) order, so finding a
-- stream's next batch stays cheap however much history the table holds.
CREATE INDEX IF NOT EXISTS events_pending ON events (prio)
    WHERE uploaded_at IS NULL AND rejected_at IS NULL;
-- Pending events the disk quota threw away, per stream: counted for good, not just logged.
CREATE TABLE IF NOT EXISTS dropped (
    stream TEXT PRIMARY KEY,
    events INTEGER NOT NULL,
    last_at REAL NOT NULL
);
-- Per device and outbox log (0: alarms and reports, 1: telemetry), never deleted: the
-- highest (boot, seq) the quota or retention deleted (the highest ever stored is the
-- greater of that and the table's). A device sends each log in order and, after a loss,
-- again from the oldest event not acknowledged (edge/outbox.py), so an event of a log at
-- or below its "gone" mark that the table does not hold was stored and deleted: a
-- replay (docs/delivery.md). high_boot and high_seq: as gone, for stores made before.
CREATE TABLE IF NOT EXISTS marks (
    device TEXT NOT NULL,
    log INTEGER NOT NULL,
    high_boot INTEGER NOT NULL,
    high_seq INTEGER NOT NULL,
    gone_boot INTEGER NOT NULL DEFAULT 0,
    gone_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device, log)
);
CREATE TABLE IF NOT EXISTS device_status (
    device TEXT PRIMARY KEY,
    status TEXT NOT NULL,            -- online / offline (retained + LWT from the device)
    at REAL NOT NULL
);
-- Every status message, for the online rate of the status page (gateway/status.py);
-- kept STATUS_LOG_S. Rare: a device sends one when it connects and its will when it drops.
CREATE TABLE IF NOT EXISTS status_log (
    device TEXT NOT NULL,
    at REAL NOT NULL,                -- the commit's time: statuses of one batch share it, rowid orders them
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS status_log_device ON status_log (device, at);
-- Events a device sent again that the store already held (a lost PUBACK or gateway ack,
-- a reboot before it): the status page's resends per device. Written only by commits
-- that met one; kept STATUS_LOG_S.
CREATE TABLE IF NOT EXISTS resends (
    device TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS resends_at ON resends (at);
-- The status page's alarms, reports and recent events: all but telemetry, which is most
-- rows. A partial index, so a telemetry insert costs nothing more; a query uses it when
-- its WHERE says NOTABLE.
CREATE INDEX IF NOT EXISTS events_notable ON events (received_at) WHERE kind != 'telemetry';
"""
NOTABLE = "kind != 'telemetry'"
STATUS_LOG_S = 31 * 86400


class EventRow(NamedTuple):
    """One verified event as ingest hands it to the store. A tuple, like mqtt.Message:
    one is made per event on ingest and per event read for upload, and a frozen
    dataclass costs ten times as much to create."""
    device: str
    boot: int
    seq: int
    code: int
    type: str
    kind: str
    action: str
    t: int
    clock_set: bool
    values: dict[str, Any] | str     # by field name; or already as the JSON text the store keeps (ingest's)
    payload: bytes = b""             # the signed bytes as the device sent them

    @classmethod
    def from_decoded(cls, device: str, ev: dict[str, Any], payload: bytes = b"") -> "EventRow":
        """From edge.codec.decode's dict, and the payload it was decoded from."""
        return cls(device, ev["boot"], ev["seq"], ev["code"], ev["type"], ev["kind"],
                   ev["action"], ev["t"], ev["clock_set"], ev["values"], payload)

    @property
    def id(self) -> str:
        return event_id(self.device, self.boot, self.seq)


def event_id(device: str, boot: int, seq: int) -> str:
    """An event's stable id, the platform's key: <device>:<boot>:<seq>."""
    return "%s:%d:%d" % (device, boot, seq)


# The columns that make an EventRow, in EventRow's field order.
ROW_COLUMNS = "device, boot, seq, code, type, kind, action, t, clock_set, values_json"


# made once: json.dumps(v, separators=...) builds a new encoder on every call
_encode_json = json.JSONEncoder(separators=(",", ":")).encode
_decode_json = json.JSONDecoder().decode


def _json_of(values: dict[str, Any] | str) -> str:
    return values if isinstance(values, str) else _encode_json(values)


def _event_row(r: Sequence[Any]) -> EventRow:
    return EventRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), _decode_json(r[9]))


class PendingEvent(NamedTuple):
    """An event waiting for upload, as read from the store: its values still the stored
    JSON text, which the uplink sends as it is (decoding and encoding them again for
    every event was most of the uplink's work)."""
    rowid: int
    received_at: float
    device: str                      # then ROW_COLUMNS, in order
    boot: int
    seq: int
    code: int
    type: str
    kind: str
    action: str
    t: int
    clock_set: int
    values_json: str
    payload: bytes                   # the device's signed bytes
    prio: int                        # its stream's rank
    generation: int                  # the store's when it was read (Store.mark_batch_uploaded)

    @property
    def id(self) -> str:
        return event_id(self.device, self.boot, self.seq)

    @property
    def row(self) -> EventRow:
        """The event, its values decoded (tests, debugging)."""
        return _event_row(self[2:])


@dataclass(frozen=True)
class CommitResult:
    inserted: int
    duplicates: int
    by_rank: tuple[int, ...] = ()    # events of the batch per stream rank, new or duplicate
    at: float = 0.0                  # the received_at of the new rows (unix time)
    replays: tuple[EventRow, ...] = ()   # refused: stored once and deleted since (marks)
    unstorable: tuple[EventRow, ...] = ()   # refused: SQLite would not take them


INSERT_EVENT = ("INSERT OR IGNORE INTO events (device, boot, seq, code, type, kind, prio, action,"
                " t, clock_set, values_json, received_at, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")
RAISE_GONE = ("INSERT INTO marks (device, log, high_boot, high_seq, gone_boot, gone_seq) VALUES (?,?,?,?,?,?)"
              " ON CONFLICT (device, log) DO UPDATE SET gone_boot = excluded.gone_boot, gone_seq = excluded.gone_seq"
              " WHERE (excluded.gone_boot, excluded.gone_seq) > (gone_boot, gone_seq)")
# what a row the database cannot take raises, unlike a failing disk (retried: OperationalError)
DATA_ERRORS = (OverflowError, ValueError, TypeError, sqlite3.InterfaceError, sqlite3.DataError,
               sqlite3.IntegrityError, sqlite3.ProgrammingError)
PENDING = "uploaded_at IS NULL AND rejected_at IS NULL"
SETTLED = "(uploaded_at IS NOT NULL OR rejected_at IS NOT NULL)"


class Store:
    def __init__(self, path: str | Path, streams: Sequence[Stream] = DEFAULT_STREAMS) -> None:
        self.path = Path(path)
        self.streams = tuple(streams)
        self._rank = rank_of_kind(self.streams)
        self.conn = connect(self.path)
        if self.conn.execute("SELECT 1 FROM pragma_table_info('events')").fetchone() and not \
                self.conn.execute("SELECT 1 FROM pragma_table_info('events') WHERE name = 'payload'").fetchone():
            self.conn.execute("ALTER TABLE events ADD COLUMN payload BLOB")   # a store made before it
        self.conn.executescript(SCHEMA)
        # bumped by every delete: SQLite may then give a deleted row's rowid to a new
        # event, so a rowid read before names the row it was read from only while this
        # has not changed
        self.generation = 0
        # (device, log) -> the gone mark, in memory: checked for every event
        self._gone: dict[tuple[str, int], tuple[int, int]] = {
            (d, log): (b, q) for d, log, b, q in self.conn.execute(
                "SELECT device, log, gone_boot, gone_seq FROM marks WHERE gone_boot > 0 OR gone_seq > 0")}

    @classmethod
    def in_dir(cls, data_dir: str | Path, streams: Sequence[Stream] = DEFAULT_STREAMS) -> "Store":
        return cls(Path(data_dir) / FILENAME, streams)

    def close(self) -> None:
        self.conn.close()

    def commit(self, events: Sequence[EventRow],
               statuses: Sequence[tuple[str, str]] = (), now: float | None = None) -> CommitResult:
        """Insert events and status changes in ONE transaction; duplicates are ignored.

        Returns how many were new and how many were already stored: a
        redelivered MQTT message or a device resending after a lost PUBACK is a duplicate.
        An event at or below its log's gone mark that the table does not hold is a replay,
        refused (CommitResult.replays).
        """
        now = time.time() if now is None else now
        last = len(self.streams) - 1
        per_rank = [0] * len(self.streams)
        rows, kept = [], []
        replays = self._replays(events) if self._gone else ()
        refused = {(e.device, e.boot, e.seq) for e in replays}
        for e in events:
            if refused and (e.device, e.boot, e.seq) in refused:
                continue
            rank = self._rank.get(e.kind, last)
            per_rank[rank] += 1
            kept.append(e)
            rows.append((e.device, e.boot, e.seq, e.code, e.type, e.kind, rank, e.action, e.t,
                         int(e.clock_set), _json_of(e.values), now, e.payload))
        try:
            inserted, unstorable = self._insert(kept, rows, statuses, now, one_by_one=False)
        except DATA_ERRORS:
            # a row SQLite cannot take (a number past 64 bits, if the decoder let one
            # through): that transaction rolled back; again row by row, so that it alone
            # is refused and the rest stored
            inserted, unstorable = self._insert(kept, rows, statuses, now, one_by_one=True)
        return CommitResult(inserted, len(rows) - len(unstorable) - inserted, tuple(per_rank), now,
                            tuple(replays), tuple(unstorable))

    def _insert(self, kept: list[EventRow], rows: list[tuple[Any, ...]], statuses: Sequence[tuple[str, str]],
                now: float, one_by_one: bool) -> tuple[int, list[EventRow]]:
        """One transaction: the rows (INSERT OR IGNORE skips duplicates) and the status
        changes. Returns how many rows were new, and the events of those refused (one by
        one only; otherwise the first refusal raises and the transaction rolls back).

        No savepoint around the batch: SQLite would copy every page the batch changes
        into a statement journal (a temp file past 64 KiB, and a commit at 100 devices
        changes a page of the key index for each), for a rollback only a row the decoder
        should not have let through can need; the whole transaction's rollback serves.
        """
        unstorable = []
        with transaction(self.conn) as c:
            before = c.total_changes
            if one_by_one:
                for e, row in zip(kept, rows):
                    try:
                        c.execute(INSERT_EVENT, row)
                    except DATA_ERRORS:
                        unstorable.append(e)
            else:
                # one prepared statement for the whole batch, in arrival order
                c.executemany(INSERT_EVENT, rows)
            inserted = c.total_changes - before
            if inserted < len(rows) - len(unstorable):
                self._note_resends(c, kept, now)
            if statuses:
                c.executemany("INSERT INTO device_status (device, status, at) VALUES (?,?,?)"
                              " ON CONFLICT (device) DO UPDATE SET status = excluded.status,"
                              " at = excluded.at", [(d, st, now) for d, st in statuses])
                c.executemany("INSERT INTO status_log (device, at, status) VALUES (?,?,?)",
                              [(d, now, st) for d, st in statuses])
                c.execute("DELETE FROM status_log WHERE at < ?", (now - STATUS_LOG_S,))
        return inserted, unstorable

    @staticmethod
    def _note_resends(c: sqlite3.Connection, kept: Sequence[EventRow], now: float) -> None:
        """The devices of a batch's events the table held before it (received earlier):
        one row each in resends. Only for a batch that met a duplicate: a row each."""
        resent = []
        for e in kept:
            if c.execute("SELECT received_at < ? FROM events WHERE device = ? AND boot = ? AND seq = ?",
                         (now, e.device, e.boot, e.seq)).fetchone() == (1,):
                resent.append((e.device, now))
        c.executemany("INSERT INTO resends (device, at) VALUES (?,?)", resent)
        c.execute("DELETE FROM resends WHERE at < ?", (now - STATUS_LOG_S,))

    def resends(self, since: float) -> dict[str, int]:
        """device -> the events it sent again that were already stored, received since."""
        return dict(self.conn.execute("SELECT device, count(*) FROM resends WHERE at >= ? GROUP BY device", (since,)))

    def _replays(self, events: Sequence[EventRow]) -> list[EventRow]:
        """The events at or below their log's gone mark that the table does not hold."""
        gone = self._gone
        out = []
        for e in events:
            mark = gone.get((e.device, int(e.kind == TELEMETRY)))
            if mark is not None and (e.boot, e.seq) <= mark and self.conn.execute(
                    "SELECT 1 FROM events WHERE device = ? AND boot = ? AND seq = ?",
                    (e.device, e.boot, e.seq)).fetchone() is None:
                out.append(e)
        return out

    def _delete(self, c: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> int:
        """DELETE FROM events WHERE rowid IN (SELECT rowid FROM events WHERE <where>),
        in the caller's transaction, first raising the gone mark of every (device, log)
        to the highest (boot, seq) it deletes."""
        rows = "rowid IN (SELECT rowid FROM events WHERE " + where + ")"
        gone: dict[tuple[str, int], tuple[int, int]] = {}
        for device, log, boot, seq in c.execute(
                "SELECT device, kind = ?, boot, max(seq) FROM events WHERE " + rows + " GROUP BY 1, 2, 3",
                (TELEMETRY,) + args):
            if boot >= MAX_ID:          # made by the gateway (gateway/own_events.py), in no device's log
                continue
            if (boot, seq) > gone.get((device, log), (-1, -1)):
                gone[(device, log)] = (boot, seq)
        c.executemany(RAISE_GONE, [k + v + v for k, v in gone.items()])
        n = c.execute("DELETE FROM events WHERE " + rows, args).rowcount
        for k, v in gone.items():       # a rollback leaves these above the table's: harmless,
            self._gone[k] = max(v, self._gone.get(k, v))   # the rows are still there
        if n:
            self.generation += 1        # (a rollback after it too: harmless, a batch is marked by key)
        return n


    def next_batch(self, rank: int, limit: int, after: int = 0) -> list[PendingEvent]:
        """The next events of one stream to upload, oldest first.

        after: only rows past this rowid. An upload lane passes the last rowid it was
        handed, so it reads each pending row once, not again on every commit while its
        batch fills. Rowids only grow while no row is deleted; after a delete (the
        quota, retention) the lane starts again from 0.
        """
        rows = self.conn.execute(
            "SELECT rowid, received_at, " + ROW_COLUMNS + ", payload, prio, ? FROM events"
            " WHERE prio = ? AND " + PENDING + " AND rowid > ? ORDER BY rowid LIMIT ?",
            (self.generation, rank, after, limit)).fetchall()
        return list(map(PendingEvent._make, rows))

    def _mark(self, rows: Iterable[EventRow | PendingEvent], set_sql: str, params: tuple[Any, ...]) -> int:
        # by primary key, not rowid: the quota may delete rows while their batch is on the
        # wire, and SQLite may then give a deleted row's rowid to a new event. Not synced:
        # a mark lost in a power cut sends the event again, which the platform has
        with transaction(self.conn, synced=False) as c:
            before = c.total_changes
            c.executemany("UPDATE events SET " + set_sql + " WHERE device = ? AND boot = ? AND seq = ?",
                          [params + (r.device, r.boot, r.seq) for r in rows])
            return c.total_changes - before

    def mark_uploaded(self, rows: Iterable[EventRow | PendingEvent], now: float | None = None) -> int:
        now = time.time() if now is None else now
        return self._mark(rows, "uploaded_at = ?", (now,))

    def mark_batch_uploaded(self, batch: Sequence[PendingEvent], now: float | None = None) -> int:
        """Mark a batch of an upload lane uploaded: rows of one stream as next_batch handed
        them out, oldest first, with none of the stream's pending rows between them left
        out (what a lane reads from its cursor on, or a run of it: deliver's halves).

        One UPDATE over the batch's rowid range (the pending index finds it) instead of a
        lookup by key per row: the range holds no other pending row of the stream, and no
        other event has one of its rowids unless a delete came after the first row was
        read (the generation moved); then by key.
        """
        if not batch or batch[0].generation != self.generation:
            return self.mark_uploaded(batch, now)
        now = time.time() if now is None else now
        with transaction(self.conn, synced=False) as c:     # as _mark's
            return int(c.execute(
                "UPDATE events SET uploaded_at = ? WHERE rowid BETWEEN ? AND ? AND prio = ? AND " + PENDING,
                (now, batch[0].rowid, batch[-1].rowid, batch[0].prio)).rowcount)

    def mark_rejected(self, rows: Iterable[EventRow | PendingEvent], reason: str,
                      now: float | None = None) -> int:
        now = time.time() if now is None else now
        return self._mark(rows, "rejected_at = ?, reject_reason = ?", (now, reason))

    def pending_count(self, rank: int | None = None) -> int:
        if rank is None:
            return int(self.conn.execute("SELECT count(*) FROM events WHERE " + PENDING).fetchone()[0])
        return int(self.conn.execute("SELECT count(*) FROM events WHERE prio = ? AND " + PENDING,
                                     (rank,)).fetchone()[0])

    def counts(self) -> dict[str, int]:
        """Totals for the status page and the tests."""
        r = self.conn.execute(
            "SELECT count(*), count(uploaded_at), count(rejected_at) FROM events").fetchone()
        dropped = self.conn.execute("SELECT coalesce(sum(events), 0) FROM dropped").fetchone()[0]
        return {"stored": r[0], "uploaded": r[1], "rejected": r[2],
                "pending": r[0] - r[1] - r[2], "dropped": int(dropped)}

    def stream_counts(self) -> dict[str, dict[str, int]]:
        """Per stream: events waiting for upload, and dropped by the quota since the start."""
        pending = dict(self.conn.execute("SELECT prio, count(*) FROM events WHERE " + PENDING
                                         + " GROUP BY prio").fetchall())
        dropped = dict(self.conn.execute("SELECT stream, events FROM dropped").fetchall())
        return {s.name: {"pending": int(pending.get(rank, 0)), "dropped": int(dropped.get(s.name, 0))}
                for rank, s in enumerate(self.streams)}

    def events(self, device: str | None = None) -> list[EventRow]:
        """All stored events in arrival order (tests, debugging)."""
        sql = "SELECT " + ROW_COLUMNS + " FROM events"
        args: tuple[Any, ...] = ()
        if device is not None:
            sql += " WHERE device = ?"
            args = (device,)
        rows = self.conn.execute(sql + " ORDER BY rowid", args).fetchall()
        return [_event_row(r) for r in rows]

    def device_status(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT device, status FROM device_status").fetchall())

    # ---- what the status page shows (gateway/status.py) -------------------------------

    def device_statuses(self) -> dict[str, tuple[str, float]]:
        """device -> (its last status, since when)."""
        return {d: (st, at) for d, st, at in self.conn.execute("SELECT device, status, at FROM device_status")}

    def status_history(self, device: str, since: float) -> list[tuple[float, str]]:
        """A device's status changes from since on, led by the last one before since (the
        status it was in at since), oldest first."""
        before = self.conn.execute("SELECT at, status FROM status_log WHERE device = ? AND at < ?"
                                   " ORDER BY at DESC, rowid DESC LIMIT 1", (device, since)).fetchall()
        return before + self.conn.execute("SELECT at, status FROM status_log WHERE device = ? AND at >= ?"
                                          " ORDER BY at, rowid", (device, since)).fetchall()

    def last_received(self, device: str) -> float | None:
        """When the device's latest stored event (highest boot, seq) arrived."""
        row = self.conn.execute("SELECT received_at FROM events WHERE device = ? AND boot < ?"
                                " ORDER BY boot DESC, seq DESC LIMIT 1", (device, MAX_ID)).fetchone()
        return row[0] if row else None

    def notable(self, since: float = 0.0, limit: int = -1, kind: str | None = None) -> list[tuple[float, EventRow]]:
        """Alarms and reports (no telemetry; kind: only those) received since, newest first,
        with when each arrived."""
        rows = self.conn.execute("SELECT received_at, " + ROW_COLUMNS + " FROM events WHERE " + NOTABLE
                                 + " AND received_at >= ? AND (? IS NULL OR kind = ?)"
                                 " ORDER BY received_at DESC LIMIT ?", (since, kind, kind, limit))
        return [(r[0], _event_row(r[1:])) for r in rows]

    def latest_of_type(self, type_: str) -> dict[str, tuple[float, dict[str, Any]]]:
        """device -> (when it arrived, values) of its latest stored event of an alarm or
        report type, e.g. device.boot (the firmware version)."""
        rows = self.conn.execute("SELECT device, max(received_at), values_json FROM events WHERE " + NOTABLE
                                 + " AND type = ? GROUP BY device", (type_,))
        return {d: (at, _decode_json(v)) for d, at, v in rows}

    def latest_telemetry(self, device: str, limit: int) -> list[tuple[float, EventRow]]:
        """A device's newest telemetry (by boot, seq), newest first, with when each arrived."""
        rows = self.conn.execute("SELECT received_at, " + ROW_COLUMNS + " FROM events WHERE device = ?"
                                 " AND kind = ? ORDER BY boot DESC, seq DESC LIMIT ?", (device, TELEMETRY, limit))
        return [(r[0], _event_row(r[1:])) for r in rows]

    # ---- what the quota and the retention period take away (gateway/quota.py) ----------

    def used_bytes(self) -> int:
        """Bytes in use in the database: pages minus the free list. Deleting rows frees
        pages for reuse without shrinking the file, so this, not the file size, is what a
        quota can act on."""
        page_size, pages, free = (self.conn.execute("PRAGMA " + p).fetchone()[0]
                                  for p in ("page_size", "page_count", "freelist_count"))
        return int(page_size * (pages - free))

    def row_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def prune_settled(self, older_than: float | None = None, limit: int | None = None) -> int:
        """Delete uploaded (or rejected) events, oldest first: the platform holds them, or
        refused them for good. older_than: only those settled before this unix time."""
        where = SETTLED
        args: tuple[Any, ...] = ()
        if older_than is not None:
            where = "(uploaded_at < ? OR rejected_at < ?)"
            args = (older_than, older_than)
        with transaction(self.conn) as c:
            return self._delete(c, where + " ORDER BY rowid LIMIT ?", args + (limit or -1,))

    def drop_pending(self, rank: int, limit: int, now: float | None = None) -> int:
        """Delete a stream's oldest pending events, and count them in table dropped."""
        now = time.time() if now is None else now
        with transaction(self.conn) as c:
            n = self._delete(c, "prio = ? AND " + PENDING + " ORDER BY rowid LIMIT ?", (rank, limit))
            if n:
                c.execute("INSERT INTO dropped (stream, events, last_at) VALUES (?,?,?) ON CONFLICT (stream)"
                          " DO UPDATE SET events = events + excluded.events, last_at = excluded.last_at",
                          (self.streams[rank].name, n, now))
        return n


def last_boot(data_dir: str | Path, device: str) -> int:
    """The highest boot the gateway in data_dir has stored from device, its rows deleted
    or not (0: none, or no store there). Read only: edgectl provision starts the device's
    boot counter above it, so a board whose flash was erased never reuses an event id."""
    path = Path(data_dir) / FILENAME
    if not path.exists():
        return 0
    conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT max(b) FROM (SELECT max(gone_boot) AS b FROM marks WHERE device = ?"
                                " UNION ALL SELECT max(boot) FROM events WHERE device = ? AND boot < ?)",
                                (device, device, MAX_ID)).fetchone()[0] or 0)
    finally:
        conn.close()
