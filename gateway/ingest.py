# MQTT ingest: receive device events and status, verify them against the registry,
# commit them to the store, and only then acknowledge them to the broker.
#
#   dev/<device_id>/ev      one edge.codec event (QoS 1)
#   dev/<device_id>/status  b"online" / b"offline" (retained, and the device's LWT)
#
# The device id is taken from the topic (the MQTT identity), never from the payload, and
# the event's MAC covers it (edge/event.py).
#
# No message can stop the gateway: whatever is wrong with one (too large, not an event,
# a wrong key, numbers out of range, a replay of an event deleted since) makes it a
# rejection, counted in ingest.rejected.<reason>, logged once per device and reason
# (untrusted strings escaped), and acknowledged to the broker like any other, so it is
# not delivered again. What a device signed validly is acknowledged to it too, refused
# or not: it would send it again for ever otherwise.
#
#   dev/<device_id>/cmd/ack  the gateway's acknowledgement (edge/ack.py), published at
#                            QoS 0 after each commit: the (boot, seq) of every event of
#                            the device the batch stored or already had. The device
#                            forgets an event only then (docs/delivery.md).
#
# One thread: the MQTT connection (gateway/mqtt.py) is an asyncio protocol on the event
# loop, so a read hands every message it completed to the writer in one call, and the
# writer acks a whole batch in one write after its commit. Nothing is shared between
# threads except the SQLite commit, which runs on the store's DbThread: while one batch
# is being fsynced the next one accumulates (group commit, thousands of messages per
# transaction when they arrive fast).
#
# The session is persistent (clean start off, a stable client id; MQTT 5 with a session
# that never expires), so QoS 1 messages published while the gateway is away or
# restarting wait for it in the broker, and a message that was delivered but not acked
# before a crash is delivered again (in a share group: not, see _connect). With MQTT 5
# the gateway also sets Receive Maximum to 65535: the broker may keep that many messages
# in flight to it, whatever its max_inflight_messages, which is what lets a batch grow
# past 20.
#
# On a nats-server cluster the gateway may speak NATS instead (--broker tls:// or
# nats://, gateway/nats.py): the same subscriptions as subjects, --share-group as a
# NATS queue group, the acknowledgements to devices as NATS messages. That path is at
# most once to the gateway (no session, no PUBACK): see _connect.
from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
from collections import deque
from itertools import repeat
from dataclasses import dataclass, field
from typing import Any, Callable

from edge import ack
from edge.codec import CodecError, Signer, decode, decode_row
from edge.codes import CODES
from gateway.broker import BrokerAddress, BrokerError
from gateway.metrics import Metrics
from gateway import nats
from gateway.mqtt import MAX_PACKET, MQTT5, BrokerConnection, Message, MqttError, connect
from gateway.registry import Registry, RegistryError
from gateway.sqlite import DbThread
from gateway.store import CommitResult, EventRow, Store

log = logging.getLogger(__name__)

EVENT_LEAF = "ev"
STATUS_LEAF = "status"
STATUSES = {b"online": "online", b"offline": "offline"}
CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 30
STORE_RETRY_MAX_S = 30.0
# Group commit: telemetry waits up to this long for its commit, so that one fsync, one
# PUBACK write and one acknowledgement per device serve many events (each commit writes
# a page of the key index per device it touches: at 1,000 events/s from 100 devices,
# commits every 50 ms cost 0.085 core-ms per event, every 250 ms 0.057). Anything else
# (an alarm, a report, a device going offline) is committed as soon as it arrives,
# together with whatever telemetry is waiting; so is a full batch.
COMMIT_EVERY_S = 0.25
# event codes that do not wait for the group commit: byte 1 of the payload, read
# before the event is decoded (a code that is not an event at all fails decoding later)
TELEMETRY_CODES = bytes(code for code, entry in CODES.items() if entry[1] == "telemetry")
RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 30.0
TOLD_MAX = 1000     # (device, reason) pairs logged; beyond, rejections are only counted
ROUTES_MAX = 20000  # topics kept parsed (one or two a device); beyond, parsed for every message


@dataclass
class Sorted:
    """One inbox drain, sorted into what to store and what to ack."""
    events: list[EventRow] = field(default_factory=list)
    signers: list[Signer] = field(default_factory=list)   # per event: the key that verified it
    statuses: list[tuple[str, str]] = field(default_factory=list)


def topic_filters(share_group: str | None) -> list[str]:
    """Subscriptions; with a share group, gateway instances split the devices' traffic."""
    prefix = "$share/%s/" % share_group if share_group else ""
    return [prefix + "dev/+/" + EVENT_LEAF, prefix + "dev/+/" + STATUS_LEAF]


def ranges_of(pairs: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(boot, seq) pairs, in any order, as the fewest (boot, first seq, count) triples."""
    out: list[list[int]] = []
    for boot, seq in sorted(set(pairs)):
        if out and out[-1][0] == boot and out[-1][1] + out[-1][2] == seq:
            out[-1][2] += 1
        else:
            out.append([boot, seq, 1])
    return [(b, s, n) for b, s, n in out]


def parse_topic(topic: str) -> tuple[str, str] | None:
    """dev/<device_id>/<leaf> -> (device_id, leaf), or None for any other shape."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != "dev" or not parts[1] or parts[2] not in (EVENT_LEAF, STATUS_LEAF):
        return None
    return parts[1], parts[2]


class Ingest:
    def __init__(self, broker: BrokerAddress, client_id: str, registry: Registry, store: Store,
                 db: DbThread, metrics: Metrics,
                 on_commit: Callable[[CommitResult], None] = lambda r: None,
                 share_group: str | None = None, max_batch: int = 5000,
                 commit_every: float = COMMIT_EVERY_S,
                 mqtt_version: int = MQTT5) -> None:
        self.broker = broker
        # a cluster's nodes, tried in turn: the next after a lost connection or a failed
        # attempt, so a dead node costs one attempt (a single broker: always the same)
        self._nodes = broker.nodes()
        self._turn = 0
        self.client_id = client_id
        self.registry = registry
        self.store = store
        self.db = db
        self.metrics = metrics
        self.on_commit = on_commit
        self.share_group = share_group
        self.max_batch = max_batch
        self.commit_every = commit_every
        self.mqtt_version = mqtt_version
        # (connection it came on, message): acks go back on that connection only
        self._inbox: deque[tuple[BrokerConnection, Message]] = deque()
        self._arrived = asyncio.Event()
        self._urgent = asyncio.Event()    # something other than telemetry is in the inbox
        self._drained = asyncio.Event()   # set while the inbox is empty and nothing is being committed
        self._drained.set()
        self._conn: BrokerConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self._stopping = False
        self._told: set[tuple[str, str]] = set()   # (device, reason) already logged
        self._routes: dict[str, tuple[str, str] | None] = {}   # topic -> parse_topic's, for the topics seen
        self._registry_error = ""

    # ---- lifecycle -------------------------------------------------------------

    async def start(self) -> asyncio.Task[None]:
        """Connect (to the first node that answers), subscribe, start the writer. Raises
        BrokerError with a clear reason."""
        for last in [False] * (len(self._nodes) - 1) + [True]:
            try:
                await asyncio.wait_for(self._connect(), CONNECT_TIMEOUT_S)
                break
            except (asyncio.TimeoutError, OSError, MqttError) as e:
                self._close()
                self._turn += 1
                if last:
                    timeout = isinstance(e, asyncio.TimeoutError)
                    why = "no CONNACK/SUBACK within %.0f s" % CONNECT_TIMEOUT_S if timeout else str(e)
                    raise BrokerError(self._unreachable(why)) from (None if timeout else e)
        self._task = asyncio.create_task(self._run(), name="ingest")
        return self._task

    async def _run(self) -> None:
        await asyncio.gather(self._write_loop(), self._stay_connected())

    def _unreachable(self, why: str) -> str:
        return ("cannot connect to the MQTT broker at %s: %s. Start the broker there, pass the"
                " right --broker URL, or use --broker embedded" % (self.broker.url, why))

    @property
    def _node(self) -> BrokerAddress:
        """The node this attempt or connection is for."""
        return self._nodes[self._turn % len(self._nodes)]

    async def _connect(self) -> None:
        """TCP, CONNECT (persistent session), SUBSCRIBE QoS 1; on NATS (gateway/nats.py)
        INFO, TLS, CONNECT, SUB in the queue group. Raises OSError or MqttError."""
        node = self._node
        conn: BrokerConnection
        if node.nats:
            # Core NATS delivers at most once: no session keeps what arrives while the
            # gateway is away, and a message in flight when it dies is gone. Nothing is
            # lost by that: a device keeps each event until this gateway's end-to-end
            # acknowledgement (docs/delivery.md) and sends it again, to whichever member
            # of the queue group then takes it. A retained status (dev/X/status) is not
            # delivered to a core NATS subscription: only the live ones reach us.
            conn = self._conn = await nats.connect(node.host, node.port, self._on_messages,
                                                   node.ssl_context(), self.share_group)
        else:
            conn = self._conn = await connect(node.host, node.port, self.mqtt_version,
                                              self._on_messages, node.ssl_context())
        # A user name: brokers keep offline messages only for identified sessions (amqtt).
        # In a share group, a session that ends with the connection: a broker hands a
        # member's share to its session even while it is away (mosquitto round-robins to
        # offline members and never gives a dead member's share to another, its issue
        # 2662), so a persistent session would hold half the site's events for a dead
        # instance; without one, the others take all new traffic at once, and what was in
        # flight to the dead one the devices send again (no end-to-end ack came).
        present = await conn.handshake(self.client_id, node.username or self.client_id,
                                       node.password, KEEPALIVE_S, clean_start=self.share_group is not None)
        # Subscribing again after every reconnect costs little and covers a broker
        # that lost the session (restart without persistence).
        # on NATS the share group is the connection's queue group, not a $share/ prefix
        filters = topic_filters(None if node.nats else self.share_group)
        granted = await conn.subscribe(filters, 1)
        failures = [f for f, g in zip(filters, granted) if g >= 0x80]
        if failures or len(granted) != len(filters):
            self.metrics.inc("ingest.subscribe_refused")
            raise MqttError("the broker refused the subscription to %s (codes %s)"
                            % (", ".join(failures or filters), granted))
        self.metrics.inc("ingest.subscriptions")
        self._connected = True
        self.metrics.set_state("broker_connected", 1)
        protocol = (("NATS, queue group %s" % self.share_group if self.share_group else "NATS") if node.nats
                    else "MQTT 5" if self.mqtt_version == MQTT5 else "MQTT 3.1.1")
        log.info("connected to MQTT broker %s as %s (%s, session present: %s)", node.url,
                 self.client_id, protocol, present)

    async def _stay_connected(self) -> None:
        """After a lost connection: reconnect with backoff, one log line per state change."""
        while True:
            assert self._conn is not None
            why = await self._conn.closed
            if self._stopping:
                return
            self._connected = False
            self.metrics.set_state("broker_connected", 0)
            self.metrics.inc("ingest.broker_disconnects")
            log.warning("lost the MQTT broker %s (%s); reconnecting with backoff", self._node.url, why)
            self._turn += 1
            delay = RECONNECT_MIN_S
            while not self._stopping:
                try:
                    await asyncio.wait_for(self._connect(), CONNECT_TIMEOUT_S)
                    break
                except (OSError, MqttError, asyncio.TimeoutError) as e:
                    self._close()
                    if isinstance(e, MqttError) and "refused" in str(e):
                        self.metrics.inc("ingest.broker_refused")
                        log.error("MQTT broker %s: %s; retrying", self._node.url, e)
                    log.debug("reconnect to %s failed: %r", self._node.url, e)
                    self._turn += 1
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, RECONNECT_MAX_S)

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Commit and ack what was received, then disconnect.

        Acking before the disconnect matters for amqtt, which drops unacked in-flight
        messages when a client leaves. What still arrives after that is committed too;
        its acks cannot be sent any more, so the broker redelivers it to the next
        session and the store ignores the duplicate.
        """
        if self._task is None:
            self._close()
            return
        try:
            await asyncio.wait_for(self._drained.wait(), drain_timeout)
        except asyncio.TimeoutError:
            log.warning("stopping with %d messages not yet committed: the broker will"
                        " redeliver them", len(self._inbox))
        self._stopping = True
        self._close()
        try:
            await asyncio.wait_for(self._drained.wait(), drain_timeout)
        except asyncio.TimeoutError:
            pass   # counted above; unacked messages stay with the broker
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def queued(self) -> int:
        return len(self._inbox)

    # ---- writer: verify, commit, ack -------------------------------------------

    def _on_messages(self, conn: BrokerConnection, messages: list[Message]) -> None:
        """From the connection's data_received: every message one read completed."""
        self._inbox.extend(zip(repeat(conn), messages))
        self._drained.clear()
        self._arrived.set()
        if not self._urgent.is_set():
            for m in messages:
                if m.payload[1:2] not in TELEMETRY_CODES or not m.topic.endswith(EVENT_LEAF):
                    self._urgent.set()
                    break

    async def _write_loop(self) -> None:
        inbox = self._inbox
        loop = asyncio.get_running_loop()
        began = -self.commit_every
        while True:
            if not inbox:
                self._drained.set()
                self._arrived.clear()
                await self._arrived.wait()
                continue
            # group commit at a trickle too: the first event after a quiet spell goes at once
            wait = began + self.commit_every - loop.time()
            if wait > 0 and len(inbox) < self.max_batch and not self._urgent.is_set():
                try:
                    await asyncio.wait_for(self._urgent.wait(), wait)
                except asyncio.TimeoutError:
                    pass
            began = loop.time()
            self._urgent.clear()
            batch = [inbox.popleft() for _ in range(min(len(inbox), self.max_batch))]
            # devices added, keys rotated or revoked (edgectl provision, edge-gateway devices
            # add) count from the next batch on: a stat of devices.json when nothing changed
            self._refresh_registry()
            sorted_ = self._sort([m for _, m in batch])
            result = await self._commit(sorted_)
            # after the commit, in arrival order (MQTT 3.1.1 4.6: PUBACKs in order), on
            # the connection each message came on; after a reconnect the broker sends
            # the unacked ones again and the store ignores them
            conn, mids = batch[0][0], []
            for c, m in batch:
                if c is not conn:
                    conn.ack(mids)
                    conn, mids = c, []
                if m.qos:
                    mids.append(m.mid)
            conn.ack(mids)
            self._acknowledge(sorted_)
            for e in result.replays:
                self._reject(e.device, "dev/%s/ev" % e.device, "replay",
                             "(%d, %d) is at or below what the store deleted (docs/delivery.md)" % (e.boot, e.seq))
            for e in result.unstorable:
                self._reject(e.device, "dev/%s/ev" % e.device, "unstorable", "(%d, %d)" % (e.boot, e.seq))
            self.metrics.inc("ingest.received", len(batch))
            self.metrics.inc("ingest.stored", result.inserted)
            self.metrics.inc("ingest.duplicates", result.duplicates)
            self.metrics.inc("ingest.status", len(sorted_.statuses))
            self.metrics.inc("ingest.commits")
            self.on_commit(result)

    def _acknowledge(self, s: Sorted) -> None:
        """Tell each device which of its events the store now holds (or refused for good),
        signed with the key the events were signed with (and the current one)."""
        if not s.events or self._conn is None:
            return
        by_key: dict[tuple[str, Signer], list[tuple[int, int]]] = {}
        for e, signer in zip(s.events, s.signers):
            by_key.setdefault((e.device, signer), []).append((e.boot, e.seq))
        acks = []
        for (device, signer), pairs in by_key.items():
            ranges = ranges_of(pairs)
            # events signed with the key before a rotation: the device may hold that key
            # still, or the new one already with these events left in its outbox, so they
            # are acknowledged under both and the device takes the one it can check
            current = self.registry.signer(device)
            for key in (signer,) if current is None or current is signer else (signer, current):
                for i in range(0, len(ranges), ack.MAX_RANGES):
                    acks.append((ack.topic(device), ack.encode(key, ranges[i:i + ack.MAX_RANGES])))
        self._conn.publish_many(acks)
        self.metrics.inc("ingest.acks_sent", len(acks))

    def _sort(self, batch: list[Message]) -> Sorted:
        out = Sorted()
        for m in batch:
            try:
                self._sort_one(m, out)
            except Exception as e:   # a bug must cost one message, not the gateway
                if ("?", "internal") not in self._told:
                    log.exception("ingest failed on a message on %r", m.topic)
                self._reject("?", m.topic, "internal", repr(e))
        return out

    def _sort_one(self, m: Message, out: Sorted) -> None:
        parsed = self._routes.get(m.topic, False)
        if parsed is False:
            parsed = parse_topic(m.topic)
            if len(self._routes) < ROUTES_MAX:
                self._routes[m.topic] = parsed
        if m.oversized:
            self._reject(parsed[0] if parsed else "?", m.topic, "oversized",
                         "%d bytes, more than %d; skipped unread" % (m.oversized, MAX_PACKET))
            return
        if parsed is None:
            self._reject("?", m.topic, "bad_topic", "not dev/<device_id>/ev|status")
            return
        device, leaf = parsed
        if device not in self.registry:
            self._reject(device, m.topic, "unknown_device", "not in %s" % self.registry.path)
            return
        if leaf == STATUS_LEAF:
            status = STATUSES.get(m.payload)
            if status is None:
                self._reject(device, m.topic, "bad_status", "payload %r" % m.payload[:20])
            else:
                out.statuses.append((device, status))
            return
        got = self._verify(device, m.payload)
        if isinstance(got, CodecError):
            # decoded again without the key, to tell a wrong key from a broken payload
            try:
                decode(m.payload)
            except CodecError:
                self._reject(device, m.topic, "malformed", str(got))
            else:
                self._reject(device, m.topic, "bad_mac", str(got))
            return
        row, signer = got
        out.events.append(EventRow(device, *row, m.payload))
        out.signers.append(signer)

    def _verify(self, device: str, payload: bytes) -> tuple[tuple[Any, ...], Signer] | CodecError:
        """The event (decode_row's) and the key it verified with: the device's, or during a rotation's
        grace period the one before (counted: ingest.old_key); else the CodecError."""
        signer = self.registry.signer(device)
        if signer is None:
            return CodecError("%r is not in the registry" % device)
        try:
            return decode_row(payload, signer), signer
        except CodecError as e:
            old = self.registry.previous_signer(device)
            if old is None:
                return e
            try:
                row = decode_row(payload, old)
            except CodecError:
                return e
        self.metrics.inc("ingest.old_key")
        self._tell(device, "old_key", "an event signed with the key before the last rotation"
                   " (accepted during its grace period)")
        return row, old

    def _refresh_registry(self) -> None:
        """Pick up devices added with `edge-gateway devices add` while we run."""
        try:
            self.registry.refresh()
            self._registry_error = ""
        except RegistryError as e:
            if str(e) != self._registry_error:     # once per broken version of the file
                self._registry_error = str(e)
                self.metrics.inc("ingest.registry_errors")
                log.error("cannot reload the device registry, keeping the devices loaded before: %s", e)

    def _reject(self, device: str, topic: str, reason: str, detail: str) -> None:
        self.metrics.inc("ingest.rejected." + reason)
        self._tell(device, reason, "rejected a message on %r: %s" % (topic, detail))

    def _tell(self, device: str, reason: str, what: str) -> None:
        """One warning per device and reason; the counters say how often. Device ids and
        topics come from the network: %r, so a newline cannot forge a log line."""
        if (device, reason) in self._told or len(self._told) > TOLD_MAX:
            return
        self._told.add((device, reason))
        if len(self._told) > TOLD_MAX:
            log.warning("more than %d devices and reasons logged: further ones are only counted"
                        " (ingest.rejected.*)", TOLD_MAX)
            return
        log.warning("device %r: %s: %s (logged once; counted in ingest.%s)", device, reason, what,
                    reason if reason == "old_key" else "rejected." + reason, extra={"device": device})

    async def _commit(self, s: Sorted) -> CommitResult:
        """Commit, retrying while the disk refuses; nothing is acked until it works.

        Meanwhile unacked messages stay with the broker (its in-flight window stops it
        from sending many more), so a full disk delays events instead of losing them.
        """
        if not s.events and not s.statuses:
            return CommitResult(0, 0)
        delay = 0.5
        failing_since = None
        while True:
            try:
                result = await self.db.call(self.store.commit, s.events, s.statuses)
            except (sqlite3.Error, OSError) as e:
                self.metrics.inc("ingest.store_errors")
                if failing_since is None:
                    failing_since = asyncio.get_running_loop().time()
                    self.metrics.set_state("store_failing", 1)
                    log.error("cannot commit %d events to %s: %s; nothing is acknowledged,"
                              " retrying", len(s.events), self.store.path, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, STORE_RETRY_MAX_S)
                continue
            if failing_since is not None:
                self.metrics.set_state("store_failing", 0)
                log.info("store %s writable again after %.1f s", self.store.path,
                         asyncio.get_running_loop().time() - failing_since)
            return result
