# MQTT ingest: receive device events and status, verify them against the registry,
# commit them to the store, and only then acknowledge them to the broker.
#
#   dev/<device_id>/ev      one edge.codec event (QoS 1)
#   dev/<device_id>/status  b"online" / b"offline" (retained, and the device's LWT)
#
# The device id is taken from the topic (the MQTT identity), never from the payload.
#
# Threads: paho runs its network loop in its own thread (loop_start), which gives us
# its reconnect logic for free. Its on_message does nothing but hand the raw message to
# the event loop with call_soon_threadsafe; everything else (registry lookups, decoding,
# metrics, batching, acks) happens on the event loop thread, so no state is shared
# between threads and nothing needs a lock. The SQLite commit runs on the store's
# DbThread, so while one batch is being fsynced the next one accumulates in the queue:
# group commit, many messages per transaction when they arrive fast. paho's ack() only
# appends to its outgoing queue and wakes its thread, so calling it from the loop
# thread is safe.
from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.client import ConnectFlags
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.codec import CodecError, decode
from gateway.broker import BrokerAddress, BrokerError
from gateway.metrics import Metrics
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


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int


@dataclass
class Sorted:
    """One queue drain, sorted into what to store and what to ack."""
    events: list[EventRow] = field(default_factory=list)
    statuses: list[tuple[str, str]] = field(default_factory=list)
    acks: list[tuple[int, int]] = field(default_factory=list)


def topic_filters(share_group: str | None) -> list[str]:
    """Subscriptions; with a share group, gateway instances split the devices' traffic."""
    prefix = "$share/%s/" % share_group if share_group else ""
    return [prefix + "dev/+/" + EVENT_LEAF, prefix + "dev/+/" + STATUS_LEAF]


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
                 share_group: str | None = None, max_batch: int = 1000) -> None:
        self.broker = broker
        self.client_id = client_id
        self.registry = registry
        self.store = store
        self.db = db
        self.metrics = metrics
        self.on_commit = on_commit
        self.share_group = share_group
        self.max_batch = max_batch
        self._queue: asyncio.Queue[Incoming] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._writer: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._connected = False
        self._stopping = False

    # ---- lifecycle -------------------------------------------------------------

    async def start(self) -> asyncio.Task[None]:
        """Connect, subscribe, start the writer. Raises BrokerError with a clear reason."""
        loop = self._loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        # persistent session (clean_session=False) under a stable client id: QoS 1
        # messages that arrive while the gateway restarts wait for it in the broker.
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=False, protocol=mqtt.MQTTv311, manual_ack=True)
        # A username: brokers keep offline messages only for identified sessions (amqtt).
        client.username_pw_set(self.broker.username or self.client_id, self.broker.password)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        try:
            # blocking TCP connect (paho's own 5 s timeout), so off the event loop
            await asyncio.to_thread(client.connect, self.broker.host, self.broker.port, KEEPALIVE_S)
        except OSError as e:
            raise BrokerError(self._unreachable(str(e))) from e
        client.loop_start()
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), CONNECT_TIMEOUT_S)
        except asyncio.TimeoutError:
            self._halt_client()
            raise BrokerError(self._unreachable("no CONNACK/SUBACK within %.0f s" % CONNECT_TIMEOUT_S)) from None
        except BrokerError:
            self._halt_client()
            raise
        self._writer = asyncio.create_task(self._write_loop(), name="ingest-writer")
        return self._writer

    def _unreachable(self, why: str) -> str:
        return ("cannot connect to the MQTT broker at %s: %s. Start the broker there, pass the"
                " right --broker URL, or use --broker embedded" % (self.broker.url, why))

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Commit and ack what was received, then disconnect.

        Acking before the disconnect matters for amqtt, which drops unacked in-flight
        messages when a client leaves. What still arrives after that is committed too;
        its acks cannot be sent any more, so the broker redelivers it to the next
        session and the store ignores the duplicate.
        """
        if self._client is None:
            return
        if self._writer is not None and not self._writer.done():
            try:
                await asyncio.wait_for(self._queue.join(), drain_timeout)
            except asyncio.TimeoutError:
                log.warning("stopping with %d messages not yet committed: the broker will"
                            " redeliver them", self._queue.qsize())
        self._stopping = True
        self._halt_client()
        if self._writer is not None:
            if not self._writer.done():
                try:
                    await asyncio.wait_for(self._queue.join(), drain_timeout)
                except asyncio.TimeoutError:
                    pass   # counted above; unacked messages stay with the broker
                self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass

    def _halt_client(self) -> None:
        client = self._client
        if client is not None:
            self._stopping = True
            client.disconnect()
            # joins paho's thread: after this no callback can touch the event loop
            client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    # ---- paho callbacks (paho's thread: hand over to the loop, nothing else) --

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._call(self._queue.put_nowait, Incoming(msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: ConnectFlags,
                    reason: ReasonCode, props: object) -> None:
        if reason.is_failure:
            self._call(self._connect_failed, str(reason))
            return
        # Subscribing again after every reconnect costs little and covers a broker
        # that lost the session (restart without persistence).
        client.subscribe([(f, 1) for f in topic_filters(self.share_group)])
        self._call(self._connected_changed, True, flags.session_present)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int,
                      reasons: list[ReasonCode], props: object) -> None:
        self._call(self._subscribed, [str(r) for r in reasons if r.is_failure])

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object,
                       reason: ReasonCode, props: object) -> None:
        self._call(self._connected_changed, False, str(reason))

    # ---- the same events on the loop thread -----------------------------------

    def _connect_failed(self, why: str) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(BrokerError(self._unreachable("the broker refused: " + why)))
        else:
            self.metrics.inc("ingest.broker_refused")
            log.error("MQTT broker %s refused the connection: %s; retrying", self.broker.url, why)

    def _subscribed(self, failures: list[str]) -> None:
        if failures:
            self.metrics.inc("ingest.subscribe_refused")
            err = BrokerError("the MQTT broker at %s refused the subscription to %s: %s"
                              % (self.broker.url, ", ".join(topic_filters(self.share_group)),
                                 ", ".join(failures)))
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(err)
            else:
                log.error("%s", err)
        else:
            self.metrics.inc("ingest.subscriptions")
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)

    def _connected_changed(self, up: bool, detail: object) -> None:
        # one log line per state change, not one per reconnect attempt
        if up == self._connected:
            return
        self._connected = up
        self.metrics.set_state("broker_connected", int(up))
        if up:
            log.info("connected to MQTT broker %s as %s (session present: %s)",
                     self.broker.url, self.client_id, detail)
        elif not self._stopping:
            self.metrics.inc("ingest.broker_disconnects")
            log.warning("lost the MQTT broker %s (%s); reconnecting with backoff",
                        self.broker.url, detail)

    # ---- writer: verify, commit, ack -------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            sorted_ = self._sort(batch)
            result = await self._commit(sorted_)
            client = self._client
            if client is not None:
                # after the commit, in arrival order (MQTT 3.1.1 4.6: PUBACKs in order)
                for mid, qos in sorted_.acks:
                    client.ack(mid, qos)
            self.metrics.inc("ingest.stored", result.inserted)
            self.metrics.inc("ingest.duplicates", result.duplicates)
            self.metrics.inc("ingest.status", len(sorted_.statuses))
            self.metrics.inc("ingest.commits")
            for _ in batch:
                self._queue.task_done()
            self.on_commit(result)

    def _sort(self, batch: list[Incoming]) -> Sorted:
        out = Sorted()
        for m in batch:
            self.metrics.inc("ingest.received")
            if m.qos:
                out.acks.append((m.mid, m.qos))
            parsed = parse_topic(m.topic)
            if parsed is None:
                self._reject("?", m.topic, "bad_topic", "not dev/<device_id>/ev|status")
                continue
            device, leaf = parsed
            signer = self.registry.signer(device)
            if signer is None and self._refresh_registry():
                signer = self.registry.signer(device)
            if signer is None:
                self._reject(device, m.topic, "unknown_device", "not in %s" % self.registry.path)
                continue
            if leaf == STATUS_LEAF:
                status = STATUSES.get(m.payload)
                if status is None:
                    self._reject(device, m.topic, "bad_status", "payload %r" % m.payload[:20])
                else:
                    out.statuses.append((device, status))
                continue
            try:
                ev = decode(m.payload)
            except CodecError as e:
                self._reject(device, m.topic, "malformed", str(e))
                continue
            try:
                # decoded twice so that a wrong key is told apart from a broken payload
                decode(m.payload, signer)
            except CodecError as e:
                self._reject(device, m.topic, "bad_mac", str(e))
                continue
            out.events.append(EventRow.from_decoded(device, ev))
        return out

    def _refresh_registry(self) -> bool:
        """Pick up devices added with `edge-gateway devices add` while we run."""
        try:
            return self.registry.refresh()
        except RegistryError as e:
            self.metrics.inc("ingest.registry_errors")
            log.error("cannot reload the device registry, keeping the devices loaded before: %s", e)
            return False

    def _reject(self, device: str, topic: str, reason: str, detail: str) -> None:
        self.metrics.inc("ingest.rejected." + reason)
        log.warning("rejected a message from device %s on %s: %s (%s)", device, topic, reason, detail)

    async def _commit(self, s: Sorted) -> CommitResult:
        """Commit, retrying while the disk refuses; nothing is acked until it works.

        Meanwhile unacked messages stay with the broker (its in-flight window stops it
        from sending many more), so a full disk delays events instead of losing them.
        """
        if not s.events and not s.statuses:
            return CommitResult(0, 0, 0)
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
