# The agent's MQTT link: umqtt.simple for CONNECT and the last will, plus a QoS 1
# publish that waits for its PUBACK with a deadline (umqtt.simple's own wait has none),
# one write per packet with TCP_NODELAY (small writes under Nagle cost 40 ms each), and
# reconnection with exponential backoff and jitter.
import random
import select
import struct

from edge.clock import ticks_ms, ticks_add, ticks_diff

try:
    from umqtt.simple import MQTTClient
except ImportError:  # CPython: umqtt.simple wants MicroPython's usocket
    from edge import sockshim
    sockshim.install()
    from umqtt.simple import MQTTClient

IPPROTO_TCP = 6
TCP_NODELAY = 1


class LinkDown(OSError):
    pass


class Link:
    def __init__(self, broker, device_id, log=print):
        self.broker = broker
        self.device_id = device_id
        self.topic = ("dev/%s/ev" % device_id).encode()
        self.status_topic = ("dev/%s/status" % device_id).encode()
        self.client = None
        self.poller = None
        self.pid = 0
        self.failures = 0
        self.retry_at = None     # ticks_ms before which we do not try again
        self.timeout_ms = 5000   # deadline for CONNACK and PUBACK
        self.log = log

    @property
    def up(self):
        return self.client is not None

    def wait_ms(self):
        """How long until the next connection attempt is due (0: now)."""
        if self.retry_at is None:
            return 0
        left = ticks_diff(self.retry_at, ticks_ms())
        return left if left > 0 else 0

    def connect(self):
        b = self.broker
        c = MQTTClient(self.device_id, b["host"], b.get("port", 1883), b.get("user"),
                       b.get("password"), b.get("keepalive", 60))
        c.set_last_will(self.status_topic, b"offline", retain=True, qos=1)
        try:
            # bound the connect and CONNACK wait: umqtt.simple would block forever
            c.connect()
            c.sock.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
            self.client = c
            self.poller = select.poll()
            self.poller.register(c.sock, select.POLLIN)
            self.publish(b"online", self.status_topic, retain=True)
        except Exception as e:  # OSError, MQTTException, IndexError on a cut stream
            self._down("connect to %s:%s failed: %r" % (b["host"], b.get("port", 1883), e))
            raise LinkDown(str(e))
        self.failures = 0
        self.retry_at = None
        self.log("mqtt connected to %s:%s" % (b["host"], b.get("port", 1883)))

    def _down(self, why):
        if self.client is not None:
            try:
                self.client.sock.close()
            except Exception:
                pass
        self.client = None
        self.poller = None
        self.failures += 1
        # exponential backoff with jitter, so a fleet does not reconnect in lockstep
        delay = min(60000, 500 * (1 << min(self.failures, 7)))
        delay = delay // 2 + random.getrandbits(16) % (delay // 2 + 1)
        self.retry_at = ticks_add(ticks_ms(), delay)
        self.log("mqtt down (%s); retry in %d ms" % (why, delay))

    def publish(self, payload, topic=None, retain=False, dup=False):
        """QoS 1 publish; returns when the broker has acknowledged it. Raises LinkDown."""
        topic = topic or self.topic
        self.pid = self.pid % 65535 + 1
        pid = self.pid
        body = 2 + len(topic) + 2 + len(payload)
        hdr = bytearray(b"\x32" if not dup else b"\x3a")   # PUBLISH, QoS 1 (DUP flag on resend)
        if retain:
            hdr[0] |= 1
        n = body
        while n > 0x7F:
            hdr.append((n & 0x7F) | 0x80)
            n >>= 7
        hdr.append(n)
        pkt = hdr + struct.pack("!H", len(topic)) + topic + struct.pack("!H", pid) + payload
        try:
            self.client.sock.write(pkt)
            self._wait_puback(pid)
        except Exception as e:
            self._down("publish failed: %r" % (e,))
            raise LinkDown(str(e))

    def _wait_puback(self, pid):
        start = ticks_ms()
        sock = self.client.sock
        while True:
            left = self.timeout_ms - ticks_diff(ticks_ms(), start)
            if left <= 0 or not self.poller.poll(left):
                raise OSError("no PUBACK within %d ms" % self.timeout_ms)
            op = sock.read(1)
            if not op:
                raise OSError("broker closed the connection")
            n = 0
            shift = 0
            while True:
                b = sock.read(1)
                if not b:
                    raise OSError("broker closed the connection")
                n |= (b[0] & 0x7F) << shift
                if not b[0] & 0x80:
                    break
                shift += 7
            rest = sock.read(n) if n else b""
            if op[0] == 0x40 and n == 2 and (rest[0] << 8 | rest[1]) == pid:
                return
            # anything else (a PINGRESP, an old PUBACK) is read and ignored

    def close(self):
        if self.client is not None:
            try:
                self.client.disconnect()
            except Exception:
                pass
        self.client = None
