# The reference district-platform receiver: what the uplink talks to in tests and the
# demo, and a statement of the API in code (docs/platform-api.yaml is the same in
# OpenAPI, docs/platform.md says why it is built so). Stores events idempotently by
# event id in its own SQLite file (mode 0600), each device's records in a hash chain.
#
#   POST /v1/events   {"gateway": id, "events": [...]} -> {"accepted": n, "duplicates": m}
#   GET  /v1/events?device=&type=&since=&limit=
#   GET  /v1/counts?device=
#   POST /v1/outcomes {"outcomes": [{"id": alarm event id, "outcome": confirmed|false|duplicate}]}
#   GET  /v1/review?days=30    devices worst first: false-alarm rate, alarm count, silence
#   GET  /v1/maintenance/check?device=&kind=&start=&end=   a claimed maintenance record against
#                              the device's sessions: confirmed | no_session | too_short
#   GET  /healthz                               (the only route without a signature)
#
# Every /v1/ request is signed by a gateway the platform knows (gateway/auth.py): the
# signature is checked before the body is decompressed or parsed. Each event carries the
# device's signed bytes; with the device keys imported, the platform checks each MAC
# itself and says per event what it could check (`verified`). Events the gateway makes
# itself (gateway/own_events.py) carry no device bytes and are marked as such.
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import sqlite3
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, TextIO

from aiohttp import web

from edge import ids
from edge.codec import BY_NAME, CodecError, Signer, decode
from edge.codes import ACTIONS, CODES
from gateway import auth, maintenance, own_events
from gateway.http import server_tls
from gateway.metrics import Metrics
from gateway.sqlite import DbThread, connect, transaction

log = logging.getLogger(__name__)

MAX_EVENTS = 5000                    # per POST; the gateway sends at most 2,000
MAX_BODY = 4 * 1024 * 1024           # bytes, on the wire and after gzip decompression
MAX_PAYLOAD = 256                    # bytes of one event's signed payload (a few dozen in practice)
MAX_INT = 2 ** 63 - 1                # what SQLite's INTEGER holds
LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 100_000             # a reference receiver: tests and the demo read all
GENESIS = "0" * 64                   # the prev_hash of a device's first record
LOG_EVERY_S = 60.0                   # a refusal of one kind from one peer is logged once a minute

# What the platform could check of an event's device MAC, stored with each record.
MAC_OK, NO_KEY = "mac_ok", "no_key"  # (a bad MAC is refused, never stored)
# and own_events.VERIFIED ("gateway"): an event the gateway made, with no device MAC

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT NOT NULL,                -- <device>:<boot>:<seq>
    device TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    action TEXT NOT NULL,
    t INTEGER NOT NULL,
    clock_set INTEGER NOT NULL,
    values_json TEXT NOT NULL,
    gateway TEXT NOT NULL,
    received_at REAL NOT NULL,
    verified TEXT NOT NULL,          -- mac_ok | no_key | gateway (made by it: gateway/own_events.py)
    payload BLOB NOT NULL,           -- the device's signed bytes
    prev_hash TEXT NOT NULL,         -- the hash of the device's previous record (GENESIS for its first)
    hash TEXT NOT NULL,              -- sha256(prev_hash, the canonical record): see record_hash()
    superseded INTEGER NOT NULL DEFAULT 0   -- an unverified record a verified one replaced
);
CREATE UNIQUE INDEX IF NOT EXISTS events_id ON events (id) WHERE superseded = 0;
CREATE INDEX IF NOT EXISTS events_device_t ON events (device, t);
-- the end of each device's chain: a removed last record shows as a mismatch here
CREATE TABLE IF NOT EXISTS chain_heads (device TEXT PRIMARY KEY, hash TEXT NOT NULL, records INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS gateways (id TEXT PRIMARY KEY, secret TEXT NOT NULL, created_at REAL NOT NULL);
-- the key before a rotation is still good until previous_until, as at the gateway (gateway/registry.py)
CREATE TABLE IF NOT EXISTS device_keys (device TEXT PRIMARY KEY, secret TEXT NOT NULL, previous TEXT,
                                        previous_until REAL, imported_at REAL NOT NULL);
-- what dispatch found when it answered an alarm (POST /v1/outcomes); the latest word counts
CREATE TABLE IF NOT EXISTS outcomes (event_id TEXT PRIMARY KEY, device TEXT NOT NULL, outcome TEXT NOT NULL,
                                     by TEXT NOT NULL, at REAL NOT NULL, note TEXT);
"""
OUTCOMES = ("confirmed", "false", "duplicate")
MAX_OUTCOMES = 1000                  # per POST
REVIEW_DAYS = 30
# the columns a record's hash covers, in this order
RECORD = ("id, device, boot, seq, type, action, t, clock_set, values_json, gateway, received_at,"
          " verified, payload")


class ValidationError(ValueError):
    """A request that breaks the API; str() names the bad field."""


class ForgedEvent(ValidationError):
    """An event whose MAC fails under the device key the platform holds."""


class TooLarge(ValueError):
    """A body over MAX_BODY, on the wire or once decompressed."""


# ---- the body: bounded decompression, strict JSON -------------------------------------

def read_body(raw: bytes, encoding: str | None) -> bytes:
    """The request body, gunzipped when it is, never more than MAX_BODY bytes of it in
    memory: a few KB of gzip can inflate to gigabytes. Raises TooLarge or ValidationError."""
    if len(raw) > MAX_BODY:
        raise TooLarge("body: %d bytes, more than the %d allowed" % (len(raw), MAX_BODY))
    if not encoding or encoding == "identity":
        return raw
    if encoding != "gzip":
        raise ValidationError("Content-Encoding %r: only gzip is accepted" % encoding[:40])
    inflate = zlib.decompressobj(wbits=31)
    try:
        out = inflate.decompress(raw, MAX_BODY + 1)      # stops at the cap, whatever the input
    except zlib.error as e:
        raise ValidationError("body: not valid gzip (%s)" % e) from None
    if len(out) > MAX_BODY:
        raise TooLarge("body: more than %d bytes once decompressed" % MAX_BODY)
    if not inflate.eof:
        raise ValidationError("body: the gzip stream is truncated")
    return out


def _no_constant(name: str) -> None:
    raise ValueError("%s is not a JSON number: send a finite number or null" % name)


_parse = json.JSONDecoder(parse_constant=_no_constant).decode


def parse_json(body: bytes) -> Any:
    try:
        return _parse(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ValidationError("body: not valid JSON (%s)" % str(e)[:200]) from None


# ---- validation: one function per JSON shape --------------------------------------

def _int(obj: dict[str, Any], key: str, where: str, maximum: int = MAX_INT) -> int:
    v = obj.get(key)
    # bool is an int in Python, but true is not a sequence number
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= maximum:
        raise ValidationError("%s.%s: must be an integer from 0 to %d" % (where, key, maximum))
    return v


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not v or len(v) > 128:
        raise ValidationError("%s.%s: must be a non-empty string of at most 128 characters" % (where, key))
    try:
        v.encode()
    except UnicodeEncodeError:      # a lone surrogate, which JSON's \u escapes can carry
        raise ValidationError("%s.%s: is not valid Unicode" % (where, key)) from None
    return v


def _number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return -MAX_INT - 1 <= v <= MAX_INT
    return isinstance(v, float) and math.isfinite(v)


def validate_event(e: Any, where: str) -> dict[str, Any]:
    if not isinstance(e, dict):
        raise ValidationError("%s: must be an object" % where)
    device = _str(e, "device", where)
    try:
        ids.check(device)
    except ValueError as e:
        raise ValidationError("%s.device: %s" % (where, e)) from None
    boot = _int(e, "boot", where)
    seq = _int(e, "seq", where)
    eid = _str(e, "id", where)
    if eid != "%s:%d:%d" % (device, boot, seq):
        raise ValidationError("%s.id: must be '<device>:<boot>:<seq>' (%s:%d:%d), got %r"
                              % (where, device, boot, seq, eid))
    type_ = _str(e, "type", where)
    action = e.get("action")
    if action not in ACTIONS:
        raise ValidationError("%s.action: must be one of %s" % (where, ", ".join(ACTIONS)))
    t = _int(e, "t", where, 0xFFFFFFFF)
    clock_set = e.get("clock_set")
    if not isinstance(clock_set, bool):
        raise ValidationError("%s.clock_set: must be true or false" % where)
    values = e.get("values")
    if not isinstance(values, dict):
        raise ValidationError("%s.values: must be an object" % where)
    for k, v in values.items():
        if not (k.isascii() and k.isidentifier() and len(k) <= 32):
            raise ValidationError("%s.values: %r is not a field name (ASCII letters, digits, _)" % (where, k[:40]))
        if v is not None and not _number(v):
            raise ValidationError("%s.values.%s: must be a finite number (a 64-bit integer, or a float)"
                                  " or null" % (where, k))
    event = {"id": eid, "device": device, "boot": boot, "seq": seq, "type": type_,
             "action": action, "t": t, "clock_set": clock_set, "values": values}
    if boot == own_events.GATEWAY_BOOT:
        # made by the gateway that signed the request (gateway/own_events.py): no device bytes
        if type_ not in own_events.BY_NAME:
            raise ValidationError("%s.boot: %d marks an event the gateway makes, and %r is not one (%s)"
                                  % (where, boot, type_[:40], ", ".join(own_events.BY_NAME)))
        if e.get("payload") not in (None, ""):
            raise ValidationError("%s.payload: an event the gateway makes carries no device payload" % where)
        event["payload"] = b""
    else:
        event["payload"] = _payload(e.get("payload"), event, where)
    return event


def _payload(b64: Any, event: dict[str, Any], where: str) -> bytes:
    """The device's signed bytes, which must say what the JSON fields say."""
    if not isinstance(b64, str) or len(b64) > MAX_PAYLOAD * 4 // 3 + 4:
        raise ValidationError("%s.payload: must be the event's signed bytes in base64 (at most %d bytes)"
                              % (where, MAX_PAYLOAD))
    try:
        raw = base64.b64decode(b64, validate=True)
        signed = decode(raw)
    except (binascii.Error, ValueError) as e:     # CodecError is a ValueError
        raise ValidationError("%s.payload: %s" % (where, e)) from None
    for k in ("type", "action", "boot", "seq", "t", "clock_set", "values"):
        if signed[k] != event[k]:
            raise ValidationError("%s.%s: %r, but the signed payload says %r" % (where, k, event[k], signed[k]))
    return raw


def validate_upload(body: Any) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(body, dict):
        raise ValidationError("body: must be a JSON object with gateway and events")
    gateway = _str(body, "gateway", "body")
    events = body.get("events")
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_EVENTS:
        raise ValidationError("body.events: must be a list of 1 to %d events" % MAX_EVENTS)
    return gateway, [validate_event(e, "events[%d]" % i) for i, e in enumerate(events)]


def validate_outcomes(body: Any) -> list[dict[str, Any]]:
    items = body.get("outcomes") if isinstance(body, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_OUTCOMES:
        raise ValidationError("body.outcomes: must be a list of 1 to %d outcomes" % MAX_OUTCOMES)
    out = []
    for i, item in enumerate(items):
        where = "outcomes[%d]" % i
        if not isinstance(item, dict):
            raise ValidationError("%s: must be an object with id and outcome" % where)
        eid = _str(item, "id", where)
        if item.get("outcome") not in OUTCOMES:
            raise ValidationError("%s.outcome: must be one of %s" % (where, ", ".join(OUTCOMES)))
        note = item.get("note")
        if note is not None and not (isinstance(note, str) and len(note) <= 500):
            raise ValidationError("%s.note: must be text of at most 500 characters" % where)
        out.append({"id": eid, "outcome": item["outcome"], "note": note})
    return out


def _query_int(q: Any, key: str, default: int | None, lo: int, hi: int = MAX_INT) -> int | None:
    raw = q.get(key)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise ValidationError("query %s: %r is not an integer" % (key, raw[:40])) from None
    if not lo <= v <= hi:
        raise ValidationError("query %s: must be between %d and %d" % (key, lo, hi))
    return v


# ---- storage --------------------------------------------------------------------------

def record_hash(prev_hash: str, record: Iterable[Any]) -> str:
    """sha256 over the previous record's hash and this record's columns (RECORD) as
    canonical JSON (the payload in hex)."""
    values = [v.hex() if isinstance(v, bytes) else v for v in record]
    canonical = json.dumps(values, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256((prev_hash + "\n" + canonical).encode()).hexdigest()


@dataclass
class Added:
    """What one upload did: new events (for --print), and the rest by kind."""
    new: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    conflicts: list[str] = field(default_factory=list)   # same id, other content: the first kept
    replaced: list[str] = field(default_factory=list)    # an unverified record gave way to a verified one


class PlatformDB:
    """The platform's tables. Blocking: call through a DbThread (the CLI's admin commands
    call it directly)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.conn = connect(self.path)           # mode 0600, and its -wal and -shm files
        cols = {r[1] for r in self.conn.execute("PRAGMA table_info(events)")}
        if cols and "hash" not in cols:
            raise sqlite3.DatabaseError("%s was made by an older platform (no hash chain, no MAC check):"
                                        " move it away and start with a new file" % self.path)
        self.conn.executescript(SCHEMA)
        self._signers: dict[tuple[str, str], Signer] = {}

    def close(self) -> None:
        self.conn.close()

    # ---- provisioning: gateways and device keys

    def add_gateway(self, gateway: str, replace: bool = False) -> auth.Credentials:
        creds = auth.Credentials.new(gateway)
        with transaction(self.conn) as c:
            if not replace and c.execute("SELECT 1 FROM gateways WHERE id = ?", (gateway,)).fetchone():
                raise ValueError("gateway %s exists; --replace gives it a new secret (the old one stops"
                                 " working at once)" % gateway)
            c.execute("INSERT OR REPLACE INTO gateways (id, secret, created_at) VALUES (?,?,?)",
                      (gateway, creds.secret, time.time()))
        return creds

    def gateway_secret(self, gateway: str) -> str | None:
        row = self.conn.execute("SELECT secret FROM gateways WHERE id = ?", (gateway,)).fetchone()
        return row[0] if row else None

    def import_keys(self, keys: dict[str, tuple[str, str | None, float | None]]) -> int:
        """{device: (hex secret, the previous one or None, until when it is good)}, from the
        file `edge-gateway devices export-keys` writes."""
        now = time.time()
        with transaction(self.conn) as c:
            c.executemany("INSERT OR REPLACE INTO device_keys (device, secret, previous, previous_until, imported_at)"
                          " VALUES (?,?,?,?,?)", [(d, *k, now) for d, k in keys.items()])
        return len(keys)

    def _mac_ok(self, e: dict[str, Any], secret: str, previous: str | None, until: float | None, now: float) -> bool:
        for key in (secret, previous if previous and until and now <= until else None):
            if key is not None:
                try:
                    decode(e["payload"], self._signer(e["device"], key))
                    return True
                except CodecError:
                    pass
        return False

    def _signer(self, device: str, secret: str) -> Signer:
        signer = self._signers.get((device, secret))
        if signer is None:
            if len(self._signers) > 10_000:
                self._signers.clear()
            signer = self._signers[(device, secret)] = Signer(bytes.fromhex(secret), device)
        return signer

    # ---- events

    def add(self, gateway: str, events: list[dict[str, Any]], where: list[str] | None = None) -> Added:
        """Store what is new, in one transaction, each in its device's chain.

        An event whose MAC fails under the device key the platform holds is refused
        (ValidationError: nothing of the batch is stored). An event with a verified MAC
        replaces an unverified record of the same id; otherwise the first record of an
        id stays, and a later one with other content is a conflict."""
        now = time.time()
        out = Added()
        devices = sorted({e["device"] for e in events})
        keys = {r[0]: r[1:] for r in self.conn.execute(
            "SELECT device, secret, previous, previous_until FROM device_keys WHERE device IN (%s)"
            % ",".join("?" * len(devices)), devices)}
        heads: dict[str, list[Any]] = {}
        with transaction(self.conn) as c:
            for i, e in enumerate(events):
                device = e["device"]
                verified = NO_KEY
                if e["boot"] == own_events.GATEWAY_BOOT:
                    verified = own_events.VERIFIED        # the request's signature is all there is to check
                elif device in keys:
                    if not self._mac_ok(e, *keys[device], now):
                        raise ForgedEvent(
                            "%s: the MAC does not match the key the platform holds for device %s: a forged"
                            " event, or the device's key changed (export it again with `edge-gateway devices"
                            " export-keys` and import it with `edge-gateway platform import-keys`)"
                            % ("%s (%s)" % (where[i], e["id"]) if where else e["id"], device))
                    verified = MAC_OK
                old = c.execute("SELECT rowid, verified, payload, gateway FROM events"
                                " WHERE id = ? AND superseded = 0", (e["id"],)).fetchone()
                if old is not None:
                    if verified == MAC_OK and old[1] != MAC_OK:
                        c.execute("UPDATE events SET superseded = 1 WHERE rowid = ?", (old[0],))
                        out.replaced.append("%s (was %s from gateway %s)" % (e["id"], old[1], old[3]))
                    elif bytes(old[2]) == e["payload"]:
                        out.duplicates += 1
                        continue
                    else:
                        out.conflicts.append("%s (kept the record from gateway %s)" % (e["id"], old[3]))
                        continue
                head = heads.get(device)
                if head is None:
                    row = c.execute("SELECT hash, records FROM chain_heads WHERE device = ?", (device,)).fetchone()
                    head = heads[device] = list(row) if row else [GENESIS, 0]
                record = (e["id"], device, e["boot"], e["seq"], e["type"], e["action"], e["t"],
                          int(e["clock_set"]), json.dumps(e["values"], separators=(",", ":")), gateway, now,
                          verified, e["payload"])
                digest = record_hash(head[0], record)
                c.execute("INSERT INTO events (" + RECORD + ", prev_hash, hash) VALUES (%s)"
                          % ",".join("?" * 15), (*record, head[0], digest))
                head[0], head[1] = digest, head[1] + 1
                out.new.append(dict(e, verified=verified))
            c.executemany("INSERT OR REPLACE INTO chain_heads (device, hash, records) VALUES (?,?,?)",
                          [(d, h, n) for d, (h, n) in heads.items()])
        return out

    def list(self, device: str | None = None, type_: str | None = None, since: int | None = None,
             limit: int = LIST_LIMIT_DEFAULT) -> list[dict[str, Any]]:
        """Events in arrival order; since filters on the event time t (unix seconds)."""
        where, args = ["superseded = 0"], []
        for sql, arg in (("device = ?", device), ("type = ?", type_), ("t >= ?", since)):
            if arg is not None:
                where.append(sql)
                args.append(arg)
        rows = self.conn.execute(
            "SELECT " + RECORD + " FROM events WHERE " + " AND ".join(where)
            + " ORDER BY rowid LIMIT ?", (*args, limit)).fetchall()
        return [{"id": r[0], "device": r[1], "boot": r[2], "seq": r[3], "type": r[4],
                 "action": r[5], "t": r[6], "clock_set": bool(r[7]), "values": json.loads(r[8]),
                 "gateway": r[9], "received_at": r[10], "verified": r[11],
                 "payload": base64.b64encode(r[12]).decode()} for r in rows]

    # ---- alarm outcomes and the review of devices

    def record_outcomes(self, by: str, items: list[dict[str, Any]], where: list[str]) -> int:
        """Store each alarm's outcome (replacing an earlier word on it), all or none.
        Raises ValidationError naming the item whose event is not a raised alarm here."""
        now = time.time()
        with transaction(self.conn) as c:
            for item, place in zip(items, where):
                row = c.execute("SELECT device, type, action FROM events WHERE id = ? AND superseded = 0",
                                (item["id"],)).fetchone()
                code = BY_NAME.get(row[1]) if row else None
                if row is None or row[2] != "raise" or code is None or CODES[code][1] != "alarm":
                    raise ValidationError("%s.id: %r is not an alarm raised on this platform"
                                          % (place, item["id"][:160]))
                c.execute("INSERT OR REPLACE INTO outcomes (event_id, device, outcome, by, at, note)"
                          " VALUES (?,?,?,?,?,?)", (item["id"], row[0], item["outcome"], by, now, item.get("note")))
        return len(items)

    def review(self, days: int = REVIEW_DAYS, now: float | None = None) -> list[dict[str, Any]]:
        """Every device, worst first: the highest false-alarm rate, then the most alarms,
        then the longest silence, over the last `days` days (by arrival at the platform).
        false_rate: false alarms out of those dispatch gave an outcome for (None: none yet)."""
        now = time.time() if now is None else now
        since = now - days * 86400
        alarms = [n for n, (_, kind, _) in CODES.items() if kind == "alarm"]
        names = [CODES[n][0] for n in alarms]
        out: dict[str, dict[str, Any]] = {}
        for device, last in self.conn.execute("SELECT device, max(received_at) FROM events WHERE superseded = 0"
                                              " GROUP BY device"):
            out[device] = {"device": device, "alarms": 0, "types": {}, "confirmed": 0, "false": 0,
                           "duplicate": 0, "unreviewed": 0, "false_rate": None, "last_seen": last,
                           "silent_s": round(now - last, 1)}
        rows = self.conn.execute(
            "SELECT e.device, e.type, o.outcome FROM events e LEFT JOIN outcomes o ON o.event_id = e.id"
            " WHERE e.superseded = 0 AND e.action = 'raise' AND e.received_at >= ? AND e.type IN (%s)"
            % ",".join("?" * len(names)), (since, *names))
        for device, type_, outcome in rows:
            d = out[device]
            d["alarms"] += 1
            d["types"][type_] = d["types"].get(type_, 0) + 1
            d[outcome or "unreviewed"] += 1
        for d in out.values():
            reviewed = d["confirmed"] + d["false"] + d["duplicate"]
            d["false_rate"] = round(d["false"] / reviewed, 3) if reviewed else None
        return sorted(out.values(), key=lambda d: (-(d["false_rate"] or 0.0), -d["alarms"], -d["silent_s"]))

    # ---- maintenance as evidence (gateway/maintenance.py)

    def check_maintenance(self, device: str, kind: str, start: int, end: int) -> dict[str, Any]:
        """A maintenance company's claimed record against the sessions the device reported.
        A session's report arrives when it ends (its t), so those ending from start on."""
        rows = self.conn.execute("SELECT " + RECORD + " FROM events WHERE superseded = 0 AND device = ?"
                                 " AND type = ? AND action = 'clear' AND t >= ? ORDER BY t",
                                 (device, maintenance.SESSION_TYPE, start)).fetchall()
        sessions = [maintenance.session_of({"id": r[0], "action": r[5], "clock_set": bool(r[7]),
                                            "values": json.loads(r[8]), "verified": r[11]}) for r in rows]
        return dict(maintenance.check_claim(kind, start, end, [s for s in sessions if s is not None]),
                    device=device)

    def counts(self, device: str | None = None) -> dict[str, Any]:
        """Stored events per device and type: what a gateway's delivery is checked against."""
        devices: dict[str, dict[str, int]] = {}
        total = 0
        where, args = ("AND device = ? ", (device,)) if device else ("", ())
        for device, type_, n in self.conn.execute(
                "SELECT device, type, count(*) FROM events WHERE superseded = 0 " + where
                + "GROUP BY device, type ORDER BY device, type", args):
            devices.setdefault(device, {})[type_] = n
            total += n
        return {"total": total, "devices": devices}

    def verify_chains(self) -> tuple[int, list[str]]:
        """Walk every device's chain: (records checked, problems), each problem naming
        the record (its id and row) and what was done to it."""
        problems: list[str] = []
        rows = self.conn.execute("SELECT rowid, " + RECORD + ", prev_hash, hash, superseded FROM events"
                                 " ORDER BY device, rowid").fetchall()
        by_device: dict[str, list[Any]] = {}
        for r in rows:
            by_device.setdefault(r[2], []).append(r)
        heads = {d: (h, n) for d, h, n in self.conn.execute("SELECT device, hash, records FROM chain_heads")}
        for device in sorted(set(by_device) | set(heads)):
            chain = by_device.get(device, [])
            hashes = {r[15]: r for r in chain}
            prev = GENESIS
            for r in chain:
                name = "record %s (row %d)" % (r[1], r[0])
                if record_hash(r[14], r[1:14]) != r[15]:
                    problems.append("%s: its content does not match its hash: edited" % name)
                if r[14] != prev:
                    before = hashes.get(r[14])
                    problems.append(
                        "%s: out of order, it follows %s (row %d) in the chain" % (name, before[1], before[0])
                        if before is not None else "%s: the record before it in %s's chain is missing: removed"
                        % (name, device))
                prev = r[15]
            head, records = heads.get(device, (GENESIS, 0))
            if head != prev:                 # (a record removed before the last one shows above)
                problems.append("device %s: the chain ends after %d records, its head says %d: %s"
                                % (device, len(chain), records, "records removed at its end"
                                   if records > len(chain) else "the head or the last record was altered"))
            live = {r[1] for r in chain if not r[16]}
            for r in chain:
                if r[16] and r[1] not in live:
                    problems.append("record %s (row %d): marked superseded, but no record replaces it: hidden"
                                    % (r[1], r[0]))
        return len(rows), problems


# ---- the human line for --print ---------------------------------------------------------

def event_line(e: dict[str, Any]) -> str:
    """'12:03:04 ALARM raise elevator.entrapment elev-001 floor=7 duration_s=61'."""
    when = time.strftime("%H:%M:%S", time.localtime(e["t"])) if e["clock_set"] else "boot+%ds" % e["t"]
    code = BY_NAME.get(e["type"])
    own = own_events.BY_NAME.get(e["type"])
    kind = (CODES[code][1] if code is not None else own_events.CODES[own][1] if own is not None
            else "event").upper()
    values = " ".join("%s=%s" % (k, v) for k, v in e["values"].items() if v is not None)
    return " ".join(p for p in (when, kind, e["action"], e["type"], e["device"], values) if p)


# ---- HTTP --------------------------------------------------------------------------------

def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GATEWAY: web.RequestKey[str] = web.RequestKey("gateway", str)   # the authenticated gateway's id


class Platform:
    """The receiver's handlers and state; create_app() wires them into an app."""

    def __init__(self, db_path: str | Path, echo: TextIO | None = None) -> None:
        self.db = PlatformDB(db_path)
        self.thread = DbThread("platform-db")
        self.echo = echo
        self.verifier = auth.Verifier()
        # platform.posts / .accepted / .duplicates / .invalid / .refused.<reason> ...; tests await them
        self.metrics = Metrics()
        self._logged: dict[tuple[str, str], float] = {}

    def refuse(self, request: web.Request, status: int, reason: str, message: str) -> web.Response:
        """A counted refusal, and a log line (once a minute per peer and reason: a flood of
        bad requests must not become a flood of log lines)."""
        self.metrics.inc("platform.refused." + reason)
        key = (request.remote or "?", reason)
        now = time.monotonic()
        if now - self._logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            if len(self._logged) > 1000:
                self._logged.clear()
            self._logged[key] = now
            log.warning("refused %s %s from %s (HTTP %d, %s): %s", request.method, request.path[:80],
                        key[0], status, reason, message)
        return _error(status, message)

    @web.middleware
    async def authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every /v1/ request: signed by a known gateway, fresh, never seen before."""
        if not request.path.startswith("/v1/"):
            return await handler(request)
        try:
            raw = await request.read()          # as sent: auto_decompress is off
        except web.HTTPRequestEntityTooLarge:
            return self.refuse(request, 413, "too_large", "body: more than %d bytes" % MAX_BODY)
        try:
            fields = auth.parse(request.headers.get("Authorization"))
            secret = await self.thread.call(self.db.gateway_secret, fields["gateway"])
            request[GATEWAY] = self.verifier.check(fields, secret, request.method, request.raw_path, raw)
        except auth.AuthError as e:
            return self.refuse(request, 429 if e.reason == "busy" else 401, e.reason, str(e))
        return await handler(request)

    async def post_events(self, request: web.Request) -> web.Response:
        gateway = request[GATEWAY]
        try:
            body = read_body(await request.read(), request.headers.get("Content-Encoding"))
            claimed, events = validate_upload(parse_json(body))
            if claimed != gateway:
                return self.refuse(request, 403, "wrong_gateway", "body.gateway: %r, but the request is signed"
                                   " by gateway %s" % (claimed[:64], gateway))
            key = request.headers.get("Idempotency-Key")
            if key is not None and key != auth.idempotency_key(gateway, body):
                raise ValidationError("Idempotency-Key: does not match the body and the gateway (it is %s)"
                                      % auth.IDEMPOTENCY_RULE)
            added = await self.thread.call(self.db.add, gateway, events,
                                           ["events[%d]" % i for i in range(len(events))])
        except TooLarge as e:
            return self.refuse(request, 413, "too_large", str(e))
        except ValidationError as e:
            self.metrics.inc("platform.invalid")
            return self.refuse(request, 400, "mac_bad" if isinstance(e, ForgedEvent) else "invalid", str(e))
        for what, items in (("conflicts", added.conflicts), ("replaced", added.replaced)):
            if items:
                self.metrics.inc("platform." + what, len(items))
                log.warning("upload from gateway %s: %s %d event(s): %s%s", gateway,
                            "kept the first record of" if what == "conflicts" else
                            "a verified event replaced an unverified record of", len(items),
                            ", ".join(items[:5]), " ..." if len(items) > 5 else "")
        if self.echo is not None:
            for event in added.new:
                print(event_line(event), file=self.echo, flush=True)
        for e in added.new:
            self.metrics.inc("platform.verified." + e["verified"])
        self.metrics.inc("platform.accepted", len(added.new))
        self.metrics.inc("platform.duplicates", len(events) - len(added.new))
        self.metrics.inc("platform.posts")
        return web.json_response({"accepted": len(added.new), "duplicates": len(events) - len(added.new)})

    async def get_events(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            since = _query_int(q, "since", None, 0)
            limit = _query_int(q, "limit", LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX)
        except ValidationError as e:
            return self.refuse(request, 400, "invalid", str(e))
        events = await self.thread.call(self.db.list, q.get("device") or None, q.get("type") or None,
                                        since, limit)
        return web.json_response({"events": events, "count": len(events)})

    async def post_outcomes(self, request: web.Request) -> web.Response:
        """Dispatch's word on alarms: {"outcomes": [{"id": event id, "outcome": "confirmed"|"false"|
        "duplicate", "note": optional text}]}, signed like every /v1/ request."""
        try:
            items = validate_outcomes(parse_json(read_body(await request.read(),
                                                           request.headers.get("Content-Encoding"))))
            n = await self.thread.call(self.db.record_outcomes, request[GATEWAY], items,
                                       ["outcomes[%d]" % i for i in range(len(items))])
        except TooLarge as e:
            return self.refuse(request, 413, "too_large", str(e))
        except ValidationError as e:
            return self.refuse(request, 400, "invalid", str(e))
        self.metrics.inc("platform.outcomes", n)
        return web.json_response({"recorded": n})

    async def get_review(self, request: web.Request) -> web.Response:
        try:
            days = _query_int(request.query, "days", REVIEW_DAYS, 1, 3660)
        except ValidationError as e:
            return self.refuse(request, 400, "invalid", str(e))
        devices = await self.thread.call(self.db.review, days)
        return web.json_response({"days": days, "devices": devices})

    async def get_maintenance_check(self, request: web.Request) -> web.Response:
        """?device=&kind=&start=&end= (unix s): confirmed, no_session or too_short, with the
        sessions it rests on."""
        q = request.query
        try:
            device = _str(dict(q), "device", "query")
            kind = q.get("kind")
            if kind not in maintenance.BY_KIND:
                raise ValidationError("query kind: must be one of %s" % ", ".join(maintenance.BY_KIND))
            start = _query_int(q, "start", None, 0, 0xFFFFFFFF)
            end = _query_int(q, "end", None, 0, 0xFFFFFFFF)
            if start is None or end is None or end < start:
                raise ValidationError("query start, end: both required, unix seconds, end not before start")
        except ValidationError as e:
            return self.refuse(request, 400, "invalid", str(e))
        return web.json_response(await self.thread.call(self.db.check_maintenance, device, kind, start, end))

    async def get_counts(self, request: web.Request) -> web.Response:
        return web.json_response(await self.thread.call(self.db.counts, request.query.get("device") or None))

    async def healthz(self, request: web.Request) -> web.Response:
        await self.thread.call(self.db.conn.execute, "SELECT 1")
        return web.json_response({"status": "ok"})

    def close(self) -> None:
        self.thread.close()
        self.db.close()


PLATFORM_KEY: web.AppKey[Platform] = web.AppKey("platform", Platform)


def create_app(db_path: str | Path, echo: TextIO | None = None,
               middlewares: Iterable[Any] = ()) -> web.Application:
    """The receiver as an aiohttp app; app[PLATFORM_KEY] is its Platform. Run it with
    auto_decompress=False (PlatformServer does): read_body() inflates, with a cap.

    middlewares: extra aiohttp middlewares, e.g. a test's fault injector (before the
    signature check).
    """
    platform = Platform(db_path, echo)
    app = web.Application(client_max_size=MAX_BODY, middlewares=[*middlewares, platform.authenticate])
    app[PLATFORM_KEY] = platform
    app.router.add_post("/v1/events", platform.post_events)
    app.router.add_get("/v1/events", platform.get_events)
    app.router.add_get("/v1/counts", platform.get_counts)
    app.router.add_post("/v1/outcomes", platform.post_outcomes)
    app.router.add_get("/v1/review", platform.get_review)
    app.router.add_get("/v1/maintenance/check", platform.get_maintenance_check)
    app.router.add_get("/healthz", platform.healthz)

    async def close(app: web.Application) -> None:
        platform.close()
    app.on_cleanup.append(close)
    return app


class PlatformServer:
    """The receiver on a loopback port, started and stopped in-process.

        async with PlatformServer(tmp_path / "platform.sqlite") as p:
            creds = p.add_gateway("gw-1", tmp_path / "gw")    # the gateway's credentials file
            ... p.url ..., await p.platform.metrics.wait_until(lambda: ..., timeout)

    tls: (certificate file, key file) to serve HTTPS.
    """

    def __init__(self, db_path: str | Path, host: str = "127.0.0.1", port: int = 0,
                 echo: TextIO | None = None, middlewares: Iterable[Any] = (),
                 tls: tuple[str | Path, str | Path] | None = None) -> None:
        self.ssl = server_tls(*tls) if tls else None
        self.app = create_app(db_path, echo, middlewares)
        self.platform = self.app[PLATFORM_KEY]
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return "%s://%s:%d" % ("https" if self.ssl else "http", self.host, self.port)

    def add_gateway(self, gateway: str, data_dir: str | Path | None = None) -> auth.Credentials:
        """Provision a gateway (tests); with data_dir, its credentials file goes there,
        where the gateway looks for it by default."""
        creds = self.platform.db.add_gateway(gateway, replace=True)
        if data_dir is not None:
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            creds.save(Path(data_dir) / auth.FILENAME)
        return creds

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app, access_log=None, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]
        log.info("platform receiver listening on %s (database %s)", self.url, self.platform.db.path)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "PlatformServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
