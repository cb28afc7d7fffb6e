# A small asyncio client for the NATS core text protocol, for the gateway's subscriber
# side on a nats-server cluster (docs/broker-cluster.md): several gateways share a
# district's devices through a NATS queue group, the work-sharing nats-server offers in
# place of MQTT shared subscriptions (which it does not have).
#
#   server: INFO {...}                     (then TLS, when it or the URL asks for it)
#   us:     CONNECT {...} PING             server: PONG, or -ERR 'Authorization Violation'
#   us:     SUB dev.*.ev GROUP 1 ... PING  server: PONG (a -ERR before it: a refused SUB)
#   server: MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n, PING (we: PONG)
#   us:     PUB dev.<id>.cmd.ack <#bytes>\r\n<ack>\r\n   (nats-server hands it to the
#           device's MQTT subscription)
#
# It offers what gateway/ingest.py uses of gateway/mqtt.py's MqttConnection (the
# BrokerConnection there: on_messages, publish_many, ack, disconnect, abort, closed,
# the keepalive), with MQTT topics in and out: nats-server maps an MQTT topic's '/' to
# '.', and a '.' inside a level to '//' (2.10 on; 2.9 refuses such a topic).
#
# Core NATS is at most once: a message in flight when a connection or the gateway dies
# is gone, and nothing is acknowledged to the broker (ack() does nothing). Nothing is
# lost for all that: a device keeps each event in its outbox until the gateway's
# end-to-end acknowledgement (edge/ack.py, docs/delivery.md) and sends it again.
# No headers (CONNECT "headers": false: the server strips the ones MQTT publishes carry),
# no request/reply, no JetStream.
from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections import deque
from typing import Awaitable, Callable, TypeVar

from gateway.mqtt import MAX_PACKET, TOPICS_MAX, BrokerConnection, Message, MqttError

log = logging.getLogger(__name__)
T = TypeVar("T")

VERSION = "1"                  # what CONNECT says of this client
WAIT_S = 10.0                  # a deadline on every answer we wait for (INFO, PONG)
MAX_LINE = 4096                # a protocol line (INFO with a cluster's URLs fits)
CRLF = b"\r\n"


class NatsError(MqttError):
    """The server refused, broke the protocol or went away (an MqttError, so ingest
    handles both transports alike)."""


def subject_of(topic: str) -> str:
    """An MQTT topic (or filter) as nats-server's MQTT listener maps it to a subject:
    dev/elev-1/cmd/ack -> dev.elev-1.cmd.ack, dev/+/ev -> dev.*.ev, # -> >, and a '.' in
    a level to '//'."""
    return ".".join({"+": "*", "#": ">"}.get(level, level.replace(".", "//")) for level in topic.split("/"))


def topic_of(subject: str) -> str:
    """The other way: dev.wm//7.ev -> dev/wm.7/ev."""
    return "/".join(level.replace("//", ".") for level in subject.split("."))


def _reason(line: bytes) -> str:
    """-ERR 'Authorization Violation' -> Authorization Violation."""
    return line[4:].strip().strip(b"'").decode("utf-8", "replace")


class NatsConnection(BrokerConnection):
    """One connection to a NATS server. Created by connect(); handshake(), subscribe()."""

    PING = b"PING\r\n"
    Error = NatsError

    def __init__(self, on_messages: Callable[[BrokerConnection, list[Message]], None],
                 queue: str | None = None) -> None:
        super().__init__(on_messages)
        self.queue = queue             # the queue group every SUB joins; None: ordinary subscriptions
        loop = asyncio.get_running_loop()
        self.info: asyncio.Future[dict] = loop.create_future()
        self._pongs: deque[asyncio.Future[None] | None] = deque()   # one per PING sent, in order
        self._violations: list[str] = []   # -ERR 'Permissions Violation ...' since the last look
        self._welcome = False              # CONNECT answered: a fatal -ERR is no longer a refusal
        self._buf = bytearray()
        self._topics: dict[bytes, str] = {}     # subject -> topic, for the subjects seen
        self._heads: dict[str, bytes] = {}      # topic -> "PUB <subject> ", for publish_many
        self._told: set[str] = set()

    # ---- asyncio.Protocol ----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        data = self._heard(data)
        buf = self._buf
        buf += data
        n = len(buf)
        i = 0
        messages: list[Message] = []
        try:
            while i < n:
                eol = buf.find(CRLF, i, i + MAX_LINE)
                if eol < 0:
                    if n - i >= MAX_LINE:
                        raise NatsError("a protocol line longer than %d bytes" % MAX_LINE)
                    break                       # the rest of the line has not arrived
                if buf.startswith(b"MSG ", i):
                    got = self._msg(buf, i + 4, eol, n)
                    if got is None:
                        break                   # its payload has not all arrived
                    messages.append(got[0])
                    i = got[1]
                    if i > n:                   # an oversized one: drop what is still to come
                        self._drop, i = i - n, n
                else:
                    self._control(bytes(buf[i:eol]))
                    i = eol + 2
        except (NatsError, ValueError) as e:    # ValueError: a bad number or UTF-8
            del buf[:]
            if messages:
                self.on_messages(self, messages)
            self.abort("protocol error from the broker: %s" % e)
            return
        del buf[:i]
        if messages:
            self.on_messages(self, messages)

    def _msg(self, buf: bytearray, j: int, eol: int, n: int) -> tuple[Message, int] | None:
        """The MSG whose arguments are buf[j:eol], as (Message, the index after it), or
        None until it is whole. One over MAX_PACKET: a Message without its payload
        (ingest rejects it as oversized), its bytes skipped unread."""
        args = bytes(buf[j:eol]).split()
        if len(args) not in (3, 4):             # subject sid [reply-to] size
            raise NatsError("a MSG line with %d arguments" % len(args))
        size = int(args[-1])
        if size < 0:
            raise NatsError("a MSG of %d bytes" % size)
        start = eol + 2
        end = start + size
        topic = self._topics.get(args[0])
        if topic is None:
            topic = topic_of(args[0].decode())
            if len(self._topics) < TOPICS_MAX:
                self._topics[args[0]] = topic
        if size > MAX_PACKET:
            return Message(topic, b"", 0, 0, size), end + 2
        if n < end + 2:
            return None
        if buf[end:end + 2] != CRLF:
            raise NatsError("a MSG payload not followed by CRLF")
        return Message(topic, bytes(buf[start:end]), 0, 0), end + 2

    def _control(self, line: bytes) -> None:
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"PING":
            self._write(b"PONG\r\n")
        elif verb == b"PONG":
            self._welcome = True                # the first answers the CONNECT's PING
            fut = self._pongs.popleft() if self._pongs else None
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif verb == b"INFO":
            if not self.info.done():           # later ones: cluster changes, nothing for us
                self.info.set_result(json.loads(line[5:]))
        elif verb == b"-ERR":
            self._error(_reason(line))
        elif verb != b"+OK":
            raise NatsError("unexpected %r" % line[:40])

    def _error(self, reason: str) -> None:
        """A permissions violation leaves the connection open (the SUB or PUB is
        dropped); any other -ERR is the server closing it."""
        if reason.lower().startswith("permissions violation"):
            self._violations.append(reason)
            if reason not in self._told and len(self._told) < 100:
                self._told.add(reason)
                log.warning("NATS server: %s", reason)
            return
        self.abort(("error from the broker: %s" if self._welcome else
                    "the broker refused the connection: %s") % reason)

    # ---- the client's side ------------------------------------------------------------

    async def handshake(self, client_id: str, username: str | None, password: str | None,
                        keepalive: int, clean_start: bool = False) -> bool:
        """CONNECT, then PING and wait for its PONG (an -ERR instead is a refusal, raised
        as NatsError with the server's reason). Returns False: no session in core NATS.
        The arguments are MqttConnection.handshake's; clean_start means nothing here."""
        connect = {"verbose": False, "pedantic": False, "name": client_id, "lang": "python",
                   "version": VERSION, "protocol": 1, "headers": False,
                   "tls_required": isinstance(self.transport, asyncio.Transport)
                   and self.transport.get_extra_info("sslcontext") is not None}
        if username:
            connect.update(user=username, **({"pass": password} if password else {}))
        self._write(b"CONNECT " + json.dumps(connect).encode() + CRLF)
        await self._round_trip()
        self._start_keepalive(keepalive)
        return False

    async def subscribe(self, filters: list[str], qos: int = 0) -> list[int]:
        """SUB to each MQTT filter's subject, in the queue group if there is one; then a
        PING. Returns per filter 0 (QoS 0: core NATS), or 0x80 where the server said it
        is not allowed, as a SUBACK would (qos is ignored)."""
        if self.queue is not None and (not self.queue or len(self.queue.split()) != 1):
            raise NatsError("queue group %r: a NATS queue group is one word, no spaces" % self.queue)
        self._violations.clear()
        subjects = [subject_of(f) for f in filters]
        queue = " " + self.queue if self.queue else ""
        self._write(b"".join(("SUB %s%s %d\r\n" % (s, queue, sid)).encode() for sid, s in enumerate(subjects, 1)))
        await self._round_trip()
        refused = " ".join(self._violations)
        return [0x80 if '"%s"' % s in refused else 0 for s in subjects]

    def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """PUB each (topic, payload), in one write. On a connection that is gone,
        nothing: a device that misses an acknowledgement sends its events again."""
        if messages and self._writable():
            self._write(b"".join([b"%s%d\r\n%s\r\n" % (self._head(t), len(p), p) for t, p in messages]))

    def _head(self, topic: str) -> bytes:
        head = self._heads.get(topic)
        if head is None:
            head = b"PUB %s " % subject_of(topic).encode()
            if len(self._heads) < TOPICS_MAX:
                self._heads[topic] = head
        return head

    # ---- internals ----------------------------------------------------------------------

    def _ping(self) -> None:
        self._pongs.append(None)            # its PONG answers no one, but keeps the order
        self._write(self.PING)

    async def _round_trip(self) -> None:
        """PING and wait for its PONG: the server has then read all we sent before."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs.append(fut)
        self._write(self.PING)
        await _within(self._await(fut), "PONG")


async def _within(wait: Awaitable[T], what: str) -> T:
    try:
        return await asyncio.wait_for(wait, WAIT_S)
    except asyncio.TimeoutError:
        raise NatsError("no %s from the broker within %.0f s" % (what, WAIT_S)) from None


async def connect(host: str, port: int, on_messages: Callable[[BrokerConnection, list[Message]], None],
                  tls: ssl.SSLContext | None = None, queue: str | None = None) -> NatsConnection:
    """Open the TCP connection, read the server's INFO and, when tls is given or the
    server requires TLS, upgrade to TLS (the server's certificate must name host; without
    a context of ours, the system's CAs). No CONNECT yet. Raises OSError (ssl.SSLError is
    one) or NatsError."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(lambda: NatsConnection(on_messages, queue), host, port)
    try:
        info = await _within(proto._await(proto.info), "INFO")
        if tls is not None or info.get("tls_required"):
            if not info.get("tls_required") and not info.get("tls_available"):
                raise NatsError("the server at %s:%d offers no TLS" % (host, port))
            # the protocol object stays; its transport becomes the TLS one
            proto.transport = await loop.start_tls(transport, proto, tls or ssl.create_default_context(),
                                                   server_hostname=host)
    except BaseException:
        proto.abort("not connected")
        raise
    return proto
