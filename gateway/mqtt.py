# A small asyncio MQTT client for the gateway's subscriber side: connect with a
# persistent session, subscribe, receive QoS 1 PUBLISHes, acknowledge them in batches.
# MQTT 3.1.1 (the embedded amqtt broker) and MQTT 5 (mosquitto, EMQX).
#
# Why not paho (which the tools and tests still use to publish): paho reads one packet
# per select() with three recv() calls, and a consumer on another thread costs a
# self-pipe write per message and a send() per PUBACK. Measured here (2 cores): paho
# tops out near 22,000 messages/s doing nothing else. This protocol object parses every
# complete packet of a read in one pass and sends a whole batch of PUBACKs in one write,
# on the event loop thread, so the gateway's own work (verify, commit) is what limits.
#
# Only what the gateway needs: no QoS 2 (it subscribes with QoS 1, so the broker never
# sends QoS 2), no will. TLS is asyncio's (connect(tls=...); gateway/broker.py makes the context).
# The packets are built and parsed by edge/mqtt.py and edge/mqtt_receiver.py, the codec
# the agent's link and the test brokers use too; this module is the connection:
# buffering, batching, futures, keepalive.
from __future__ import annotations

import asyncio
import ssl
import struct
from typing import Callable, NamedTuple, TypeVar

from edge import mqtt, mqtt_receiver
from edge.mqtt_receiver import CONNACK, DISCONNECT, PINGREQ, PINGRESP, PUBLISH, SUBACK

T = TypeVar("T")

MQTT311, MQTT5 = 4, 5
VERSIONS = {"3.1.1": MQTT311, "5": MQTT5}
# A device event is ~30 bytes. Sent as Maximum Packet Size in CONNECT (MQTT 5: the broker
# then never sends a larger PUBLISH); one that comes all the same (MQTT 3.1.1, a broker
# that ignores it) is skipped unread and acknowledged, never a reason to drop the
# connection (the broker would send it again at every reconnect).
MAX_PACKET = 256 * 1024
SESSION_NEVER_EXPIRES = 0xFFFFFFFF
RECEIVE_MAXIMUM = 65535          # MQTT 5: let the broker keep this many unacked messages in flight
# topics kept decoded, one or two a device: past this many, further ones are decoded for
# every message (a slower path, never a refusal)
TOPICS_MAX = 20000

CONNACK_311 = {1: "unacceptable protocol version", 2: "client id rejected",
               3: "server unavailable", 4: "bad user name or password", 5: "not authorized"}


class MqttError(Exception):
    """The broker refused, broke the protocol or went away; the message says which."""


class Message(NamedTuple):
    """One PUBLISH. A tuple: tens of thousands are made per second, and a frozen
    dataclass costs twice as much to create."""
    topic: str
    payload: bytes
    mid: int                     # packet id; 0 for QoS 0
    qos: int
    oversized: int = 0           # a PUBLISH over MAX_PACKET: its size; its payload was dropped unread


class BrokerConnection(asyncio.Protocol):
    """What ingest uses of a connection to the broker, whatever the protocol (this
    module's MQTT, gateway/nats.py's NATS): messages to on_messages, once per read with
    every message that read completed; ack, publish_many, disconnect, abort, closed (a
    future whose result says why it closed), is_open; and the keepalive below."""

    PING = b""                   # what _keepalive sends; the broker's answer refreshes _last_heard
    Error = MqttError            # what a refusal or a lost connection raises (a subclass per protocol)

    def __init__(self, on_messages: Callable[[BrokerConnection, list[Message]], None]) -> None:
        self.on_messages = on_messages
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[str] = loop.create_future()   # result: why it closed
        self._last_heard = loop.time()
        self._pinger: asyncio.Task[None] | None = None
        self._drop = 0               # bytes of an oversized message still to come and be dropped

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        why = "connection closed by the broker" if exc is None else "connection lost: %s" % exc
        self._fail(why)

    def _heard(self, data: bytes) -> bytes:
        """For data_received: the broker is alive; what is left of data once the rest of
        an oversized message (skipped unread) is dropped."""
        self._last_heard = asyncio.get_running_loop().time()
        if self._drop:
            k = min(self._drop, len(data))
            self._drop -= k
            data = data[k:]
        return data

    def ack(self, mids: list[int]) -> None:
        """Acknowledge these messages to the broker; nothing where it has no such thing."""

    def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        raise NotImplementedError

    def disconnect(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self._fail("disconnected")

    def abort(self, why: str) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._fail(why)

    @property
    def is_open(self) -> bool:
        return not self.closed.done()

    def _writable(self) -> bool:
        return not self.closed.done() and self.transport is not None and not self.transport.is_closing()

    def _write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise self.Error("not connected")
        self.transport.write(data)

    async def _await(self, fut: "asyncio.Future[T]") -> T:
        """The answer, or self.Error if the connection closes first."""
        done, _ = await asyncio.wait([fut, self.closed], return_when=asyncio.FIRST_COMPLETED)
        if fut in done:
            return fut.result()
        raise self.Error(self.closed.result())

    def _fail(self, why: str) -> None:
        if not self.closed.done():
            self.closed.set_result(why)
        if self._pinger is not None:
            self._pinger.cancel()

    def _start_keepalive(self, keepalive: int) -> None:
        self._pinger = asyncio.create_task(self._keepalive(keepalive), name="broker-keepalive")

    def _ping(self) -> None:
        self._write(self.PING)

    async def _keepalive(self, keepalive: int) -> None:
        """A ping every half keep-alive; a broker silent for 1.5 keep-alives is gone
        (a half-open TCP connection would otherwise never tell us)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(keepalive / 2)
            if loop.time() - self._last_heard > keepalive * 1.5:
                self.abort("no answer from the broker for %.0f s" % (loop.time() - self._last_heard))
                return
            try:
                self._ping()
            except MqttError:
                return


class MqttConnection(BrokerConnection):
    """One connection to the broker. Created by connect(); messages go to on_messages,
    called once per read with every PUBLISH that read completed, in arrival order."""

    PING = mqtt.packet(PINGREQ << 4, b"")

    def __init__(self, version: int, on_messages: Callable[[BrokerConnection, list[Message]], None]) -> None:
        super().__init__(on_messages)
        self.version = version
        self.session_present = False
        loop = asyncio.get_running_loop()
        self._connack: asyncio.Future[int] = loop.create_future()
        self._subacks: dict[int, asyncio.Future[bytes]] = {}
        self._next_mid = 1
        self._buf = bytearray()
        self._topics: dict[bytes, str] = {}   # for read_publishes: a topic's bytes -> its str
        self._heads: dict[str, bytes] = {}    # for _qos0: a topic -> its PUBLISH's variable header

    # ---- asyncio.Protocol ----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        data = self._heard(data)
        buf = self._buf
        if buf:
            # what a packet cut by the last read needs: nothing read until it is whole
            buf += data
            try:
                if mqtt.parse(buf, 0, len(buf), MAX_PACKET) is None:
                    return
            except ValueError:
                pass                         # the loop below says what is wrong
            data = bytes(buf)
            buf.clear()
        # Read from data as it came: a bytes object, so a payload is one slice of it.
        n = len(data)
        i = 0
        messages: list[Message] = []
        parse, split, fast = mqtt.parse, mqtt_receiver.split_publish, mqtt_receiver.read_publishes
        v5 = self.version == MQTT5
        topics = self._topics
        try:
            while True:
                i = fast(data, i, n, v5, topics, Message, messages)
                try:
                    got = parse(data, i, n, MAX_PACKET)
                except ValueError as e:
                    big = self._oversized(data, i, n, e)
                    if big is None:                    # its header has not all arrived
                        break
                    messages.append(big[0])
                    i = min(big[1], n)
                    self._drop = big[1] - i
                    continue
                if got is None:                   # the rest has not arrived yet
                    break
                first, j, end = got
                if first >> 4 == PUBLISH:
                    qos = (first >> 1) & 3
                    if qos == 2:
                        raise MqttError("QoS 2 PUBLISH on a QoS 1 subscription")
                    topic, mid, j = split(data, first, j, end, v5)
                    name = topic.decode()
                    if len(topics) < TOPICS_MAX:
                        topics[topic] = name
                    messages.append(Message(name, data[j:end], mid, qos))
                else:
                    self._control(first >> 4, data[j:end])
                i = end
        except (MqttError, ValueError, IndexError) as e:   # ValueError: a bad length, topic or UTF-8
            buf += data[i:]
            if messages:
                self.on_messages(self, messages)
            self.abort("protocol error from the broker: %s" % e)
            return
        if i < n:
            buf += data[i:]
        if messages:
            self.on_messages(self, messages)

    def _oversized(self, buf: bytearray, i: int, n: int, error: ValueError) -> tuple[Message, int] | None:
        """The PUBLISH over MAX_PACKET at buf[i], which mqtt.parse refused with error, as
        (a Message without its payload, the index after its end, maybe beyond n), or None
        until its topic and packet id have arrived. Anything else raises error again."""
        first = buf[i]
        try:
            got = mqtt.get_varint(buf, i + 1, n, 4)     # whole: parse has read it
        except ValueError:                              # malformed
            got = None
        if got is None or first >> 4 != PUBLISH or (first >> 1) & 3 == 2:
            raise error
        size, j = got
        if n - j < 2:
            return None
        head = j + 2 + (buf[j] << 8 | buf[j + 1]) + (2 if first & 0x06 else 0)
        if n < head:
            return None
        topic, mid, _ = mqtt.split_publish(buf, first, j, head)
        return Message(topic.decode("utf-8", "replace"), b"", mid, (first >> 1) & 3, size), j + size

    def _control(self, ptype: int, body: bytes) -> None:
        if ptype == CONNACK:
            if not self._connack.done():
                self.session_present = bool(body[0] & 1)
                self._connack.set_result(body[1])
        elif ptype == SUBACK:
            mid = body[0] << 8 | body[1]
            i = mqtt_receiver.skip_props(body, 2, len(body)) if self.version == MQTT5 else 2
            fut = self._subacks.pop(mid, None)
            if fut is not None and not fut.done():
                fut.set_result(body[i:])
        elif ptype == DISCONNECT:
            reason = body[0] if body else 0
            self.abort("the broker disconnected us (reason 0x%02x)" % reason)
        elif ptype != PINGRESP:
            raise MqttError("unexpected packet type %d" % ptype)

    # ---- the client's side ------------------------------------------------------------

    async def handshake(self, client_id: str, username: str | None, password: str | None,
                        keepalive: int, clean_start: bool = False) -> bool:
        """CONNECT and wait for CONNACK; returns session_present. Raises MqttError.
        clean_start: a session that ends with the connection (MQTT 5: expiry 0)."""
        props = None
        if self.version == MQTT5:
            # Session Expiry Interval: keep the session (and its queued messages) while the
            # gateway is away; Receive Maximum: how many unacked messages may be in flight.
            # Maximum Packet Size: what the broker may send us (larger PUBLISHes it drops).
            expiry = b"" if clean_start else b"\x11" + struct.pack(">I", SESSION_NEVER_EXPIRES)
            props = expiry + b"\x21" + struct.pack(">H", RECEIVE_MAXIMUM) + b"\x27" + struct.pack(">I", MAX_PACKET)
        self._write(mqtt.connect(client_id, keepalive, clean_start, username or None, password or None, None, props))
        code = await self._await(self._connack)
        if code:
            why = CONNACK_311.get(code, "reason 0x%02x" % code) if self.version == MQTT311 else "reason 0x%02x" % code
            raise MqttError("the broker refused the connection: %s" % why)
        self._start_keepalive(keepalive)
        return self.session_present

    async def subscribe(self, filters: list[str], qos: int = 1) -> list[int]:
        """SUBSCRIBE and wait for SUBACK; returns one granted QoS or failure code per filter."""
        mid = self._mid()
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._subacks[mid] = fut
        self._write(mqtt.subscribe(mid, filters, qos, b"" if self.version == MQTT5 else None))
        return list(await self._await(fut))

    def ack(self, mids: list[int]) -> None:
        """PUBACK these packet ids, in this order, in one write. On a connection that is
        gone, nothing: the broker sends them again on the next one (they are stored, so
        the store ignores the repeats) and a commit must never fail for a lost ack."""
        if mids and self._writable():
            self._write(mqtt_receiver.pubacks(mids))

    def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """PUBLISH each (topic, payload) at QoS 0, in one write. On a connection that is
        gone, nothing: these are the gateway's acknowledgements to devices, and a device
        that misses one sends its events again."""
        if messages and self._writable():
            self._write(b"".join([self._qos0(t, p) for t, p in messages]))

    def _qos0(self, topic: str, payload: bytes) -> bytes:
        """mqtt.publish(topic, payload) at QoS 0, the topic's part made once: the same
        few topics (a device's ack) go out many times a second."""
        head = self._heads.get(topic)
        if head is None:
            # the topic; at QoS 0 no packet id; MQTT 5: no properties (their length, 0)
            head = mqtt.string(topic) + (b"\0" if self.version == MQTT5 else b"")
            if len(self._heads) < TOPICS_MAX:
                self._heads[topic] = head
        n = len(head) + len(payload)
        # first byte 0x30: PUBLISH, QoS 0; a remaining length below 128 is one byte
        return bytes((0x30, n)) + head + payload if n < 0x80 else mqtt.packet(0x30, head + payload)

    def disconnect(self) -> None:
        """A clean DISCONNECT: the session stays (clean_start was False)."""
        if self._writable():
            self._write(mqtt.packet(DISCONNECT << 4, b""))
        super().disconnect()

    # ---- internals ----------------------------------------------------------------------

    def _mid(self) -> int:
        mid = self._next_mid
        self._next_mid = mid % 65535 + 1
        return mid


async def connect(host: str, port: int, version: int,
                  on_messages: Callable[[BrokerConnection, list[Message]], None],
                  tls: ssl.SSLContext | None = None) -> MqttConnection:
    """Open the TCP connection, with TLS if tls is given (the broker's certificate must
    name host); no MQTT handshake yet. Raises OSError (ssl.SSLError is one)."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: MqttConnection(version, on_messages), host, port,
                                            ssl=tls, server_hostname=host if tls else None)
    return proto
