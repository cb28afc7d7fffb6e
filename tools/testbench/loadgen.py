"""A fleet of simulated devices for load tests: thousands of MQTT connections from one
process, each a device with its own broker account (user: its id; password: derived from
its secret, gateway.broker.device_password, so the broker's ACL holds it to dev/<id>/),
sending the exact bytes an agent sends (edge/event.py, signed with its secret) at QoS 1
and keeping each event until the gateway's end-to-end acknowledgement (edge/ack.py)
names it, as an agent's outbox does.

One asyncio loop, one Protocol per connection: no thread per device. The events are
signed before the measurement starts (Fleet.prepare), so that during it the fleet's own
cost is the writes; what it still costs is measured (Fleet.cpu_s) and reported beside
the gateway's, since it runs on the same cores.
"""
from __future__ import annotations

import asyncio
import hashlib
import math
import resource
import time
from collections import deque
from dataclasses import dataclass, field

from edge import ack, codec, mqtt
from edge.codes import ACTIONS, code_of
from gateway.broker import device_password
from tools.testbench.devices import T0, TELEMETRY

KEEPALIVE_S = 60
CONNECT_TIMEOUT_S = 30.0
CONNECTING_AT_ONCE = 200      # TCP + CONNECT + SUBSCRIBE handshakes in flight
def site(n: int, prefix: str = "") -> list[tuple[str, str, str]]:
    """n devices, half elevators, half water meters: (id, profile, secret hex); each its
    own secret, so each its own broker password."""
    out = []
    for i in range(n):
        profile = "elevator" if i % 2 == 0 else "water_meter"
        device_id = "%s%s-%05d" % (prefix, "elev" if i % 2 == 0 else "wm", i)
        out.append((device_id, profile, hashlib.sha256(b"fleet secret " + device_id.encode()).hexdigest()))
    return out


def raise_fd_limit(need: int) -> None:
    """One descriptor a connection: lift the soft limit towards the hard one (children,
    such as a broker started after this, inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need + 256
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise RuntimeError("%d connections need %d file descriptors; the hard limit is %d (ulimit -Hn)"
                               % (need, want, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@dataclass
class Stats:
    sent: int = 0
    acked: int = 0
    refused_acks: int = 0            # an ack whose MAC or shape is wrong: none from our gateway
    held: int = 0                    # sends skipped: the device's window of unacked events was full
    ack_latency: list[float] = field(default_factory=list)


class _Device(asyncio.Protocol):
    """One device's connection: CONNECT with its credentials, SUBSCRIBE to its ack topic,
    then whatever the fleet tells it to send; acks free its events."""

    def __init__(self, fleet: "Fleet", device_id: str, profile: str, secret_hex: str) -> None:
        self.fleet = fleet
        self.id = device_id
        self.secret = secret_hex
        self.signer = codec.Signer(bytes.fromhex(secret_hex), device_id)
        self.code = code_of(TELEMETRY[profile][0])
        self.values = codec.values_of(self.code, TELEMETRY[profile][1])
        self.topic = "dev/%s/ev" % device_id
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.seq = 0                          # the last event made
        self.queue: deque[bytes] = deque()    # PUBLISH packets made ahead, in seq order
        self.unacked: dict[int, float] = {}   # seq -> when it was sent

    def prepare(self, n: int) -> None:
        """Sign the next n events and frame them as PUBLISH packets."""
        for _ in range(n):
            self.seq += 1
            payload = codec.encode(self.signer, self.code, ACTIONS.index("report"), 1, self.seq,
                                   T0 + self.seq, self.values, True)
            self.queue.append(mqtt.publish(self.topic, payload, 1, (self.seq % 65535) + 1, False, False))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(mqtt.connect(self.id, KEEPALIVE_S, True, self.id, device_password(self.secret), None)
                        + mqtt.subscribe(1, (ack.topic(self.id),), 0))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("%s: connection closed during the handshake" % self.id))
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        i = 0
        while True:
            got = mqtt.parse(buf, i, len(buf), 1 << 16)
            if got is None:
                break
            first, j, end = got
            kind = first >> 4
            if kind == 2 and buf[j + 1] != 0 and not self.ready.done():     # CONNACK refused
                self.ready.set_exception(ConnectionError("%s: CONNACK code %d" % (self.id, buf[j + 1])))
            elif kind == 9 and not self.ready.done():                        # SUBACK
                self.ready.set_result(None)
            elif kind == 3:                                                   # PUBLISH: an ack
                _topic, _, k = mqtt.split_publish(buf, first, j, end)
                self._on_ack(bytes(buf[k:end]))
            i = end
        del buf[:i]

    def _on_ack(self, payload: bytes) -> None:
        ranges = ack.decode(self.signer, payload)
        stats = self.fleet.stats
        if ranges is None:
            stats.refused_acks += 1
            return
        now = time.monotonic()
        for _boot, first, n in ranges:
            for seq in range(first, first + n):
                sent = self.unacked.pop(seq, None)
                if sent is not None:
                    stats.acked += 1
                    stats.ack_latency.append(now - sent)

    def send_next(self, window: int) -> bool:
        if len(self.unacked) >= window or not self.queue or self.transport is None:
            return False
        self.unacked[self.seq - len(self.queue) + 1] = time.monotonic()
        self.transport.write(self.queue.popleft())
        return True


class Fleet:
    """devices: (id, profile, secret hex). window: events a device keeps unacknowledged
    before it holds back (an agent's outbox sends on; here a full window skips a turn)."""

    def __init__(self, host: str, port: int, devices: list[tuple[str, str, str]], window: int = 4) -> None:
        self.host, self.port, self.window = host, port, window
        self.specs = devices
        self.devices: list[_Device] = []
        self.stats = Stats()

    async def connect(self) -> float:
        """Connect every device, CONNECTING_AT_ONCE at a time; returns the seconds it took.
        Raises ConnectionError naming the first device the broker refused."""
        raise_fd_limit(len(self.specs))
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
        t = time.monotonic()

        async def one(spec: tuple[str, str, str]) -> _Device:
            async with gate:
                _, dev = await loop.create_connection(lambda: _Device(self, *spec), self.host, self.port)
                await asyncio.wait_for(dev.ready, CONNECT_TIMEOUT_S)
                return dev
        self.devices = list(await asyncio.gather(*[one(s) for s in self.specs]))
        return time.monotonic() - t

    def prepare(self, per_device: int) -> None:
        for d in self.devices:
            d.prepare(per_device)

    async def offer(self, rate: float, seconds: float) -> None:
        """Send at `rate` events/s in all, the devices in turn, for `seconds` (what is due
        by each 10 ms tick, so that no rate is rounded away)."""
        start = time.monotonic()
        due_total = 0
        turn = 0
        n = len(self.devices)
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                return
            due = math.floor(rate * elapsed) - due_total
            due_total += max(due, 0)
            for _ in range(max(due, 0)):
                if self.devices[turn % n].send_next(self.window):
                    self.stats.sent += 1
                else:
                    self.stats.held += 1
                turn += 1
            await asyncio.sleep(0.01)

    async def settle(self, timeout: float) -> int:
        """Wait until every event sent is acknowledged, or timeout; returns those still not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = sum(len(d.unacked) for d in self.devices)
            if not left:
                return 0
            await asyncio.sleep(0.1)
        return sum(len(d.unacked) for d in self.devices)

    def close(self) -> None:
        for d in self.devices:
            if d.transport is not None:
                d.transport.write(mqtt.packet(0xE0, b""))    # DISCONNECT
                d.transport.close()


def cpu_s() -> float:
    """This process's user + system time: the fleet's own cost."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
