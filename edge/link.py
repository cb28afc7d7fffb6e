# The agent's MQTT 3.1.1 link on one TCP socket: CONNECT with a last will, a subscription
# to the gateway's acknowledgements (edge/ack.py), QoS 1 PUBLISH that waits for its
# PUBACK, PINGREQ while idle, reconnection with exponential backoff and jitter. A PUBLISH
# that arrives (an acknowledgement) goes to on_message(payload) whenever the link reads.
# Every wait has a deadline (umqtt.simple's connect() and its PUBACK wait have none, so
# the agent has its own client; edge/mqtt.py builds and parses the packets), and every
# packet is one write with _TCP_NODELAY (small writes under Nagle cost 40 ms each). With
# broker.tls the socket is wrapped in TLS (docs/tls.md: what it costs on the heap).
import random
import select
import socket

from edge import mqtt
from edge.clock import const, ticks_ms, ticks_add, ticks_diff

_IPPROTO_TCP = const(6)
_TCP_NODELAY = const(1)


class LinkDown(OSError):
    pass


def tls_context(ca_file):
    """A TLS client context that trusts only the CA in ca_file (DER, on the board's flash).
    Made once, when the link is: with its CA it is the largest piece of TLS on the
    MicroPython heap (about 3.7 KB, 3 KB of it one block), which the heap of a running
    agent may no longer have in one piece."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    with open(ca_file, "rb") as f:
        ctx.load_verify_locations(cadata=f.read())
    return ctx


def _wrap(ctx, sock, host):
    """sock in TLS: the broker's certificate must chain to the CA and name host."""
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except (ValueError, OSError) as e:   # MicroPython: ValueError; CPython: SSLError, an OSError
        sock.close()
        raise OSError("TLS refused: %s; broker.ca must be the CA that signed the broker's certificate, and"
                      " the certificate must name %s" % (str(e).strip() or repr(e), host))


class Link:
    def __init__(self, broker, device_id, log=print, timeout_ms=5000, on_message=None, subscribe=None):
        self.broker = broker
        self.device_id = device_id
        self.topic = ("dev/%s/ev" % device_id).encode()
        self.status_topic = ("dev/%s/status" % device_id).encode()
        self.on_message = on_message   # called with the payload of each PUBLISH received
        self.sub_topic = subscribe     # a topic filter to subscribe to at QoS 0 on connect
        self.sock = None
        self.poller = None
        self.rx = b""            # received bytes not yet parsed into a packet
        self.pid = 0
        self.failures = 0
        self.retry_at = None     # ticks_ms before which we do not try again
        self.timeout_ms = timeout_ms   # deadline for the TCP connect, CONNACK, PUBACK, PINGRESP
        # ping after half the keepalive without traffic: the broker drops a session
        # after 1.5 keepalives of silence, and a dead broker is found before an alarm
        self.ping_ms = broker.get("keepalive", 60) * 500
        self.used = ticks_ms()         # last acknowledged packet
        self.log = log
        self.tls = tls_context(broker["ca"]) if broker.get("tls") else None

    @property
    def up(self):
        return self.sock is not None

    def wait_ms(self):
        """How long until the next connection attempt is due (0: now)."""
        if self.retry_at is None:
            return 0
        left = ticks_diff(self.retry_at, ticks_ms())
        return left if left > 0 else 0

    def ping_in_ms(self):
        """How long until an idle link should ping (0: now)."""
        left = self.ping_ms - ticks_diff(ticks_ms(), self.used)
        return left if left > 0 else 0

    def connect(self):
        b = self.broker
        where = "%s:%s" % (b["host"], b.get("port", 1883))
        try:
            # DNS has no deadline on MicroPython; a site broker is named by its address
            addr = socket.getaddrinfo(b["host"], b.get("port", 1883))[0][-1]
            s = self.sock = socket.socket()
            s.settimeout(self.timeout_ms / 1000)   # bounds the TCP and TLS handshakes, and every write
            s.connect(addr)
            try:
                s.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
            except OSError:
                pass   # a port without it: each packet is one write anyway
            if self.tls is not None:
                s = self.sock = _wrap(self.tls, s, b["host"])
            self.poller = select.poll()
            self.poller.register(s, select.POLLIN)
            self.rx = b""
            # a clean session; the will: "offline", retained, at QoS 1
            user = b.get("user")
            s.sendall(mqtt.connect(self.device_id, b.get("keepalive", 60), True, user,
                                   None if user is None else b.get("password") or "",
                                   (self.status_topic, b"offline", 1, True)))
            body = self._expect(0x20, "CONNACK")
            if len(body) != 2 or body[1]:
                raise OSError("broker refused the connection: CONNACK %r" % bytes(body))
            if self.sub_topic:
                # QoS 0: an acknowledgement lost on the way is made good by a resend
                s.sendall(mqtt.subscribe(1, (self.sub_topic,), 0))
                body = self._expect(0x90, "SUBACK")
                if len(body) != 3 or body[2] & 0x80:
                    raise OSError("broker refused the subscription to %s: SUBACK %r" % (self.sub_topic, bytes(body)))
            self.publish(b"online", self.status_topic, retain=True)
        except Exception as e:  # OSError, a cut stream, a refused CONNECT
            raise self._down("connect to " + where, e)
        self.failures = 0
        self.retry_at = None
        self.log("mqtt connected to " + where)

    def _down(self, what, e):
        """Close the socket after what failed with e and schedule the next attempt;
        returns the LinkDown to raise."""
        if self.sock is not None:
            try:
                self.sock.close()
            except Exception:
                pass
        self.sock = None
        self.poller = None
        self.failures += 1
        # exponential backoff with jitter, so a fleet does not reconnect in lockstep
        delay = min(60000, 500 * (1 << min(self.failures, 7)))
        delay = delay // 2 + random.getrandbits(16) % (delay // 2 + 1)
        self.retry_at = ticks_add(ticks_ms(), delay)
        self.log("mqtt down (%s failed: %r); retry in %d ms" % (what, e, delay))
        return LinkDown(str(e))

    def publish(self, payload, topic=None, retain=False, dup=False):
        """QoS 1 publish; returns when the broker has acknowledged it. Raises LinkDown.
        dup=True marks a packet that may have reached the broker before (MQTT 3.3.1.1)."""
        topic = topic or self.topic
        self.pid = self.pid % 65535 + 1
        pid = self.pid
        try:
            self.sock.sendall(mqtt.publish(topic, payload, 1, pid, dup, retain))
            while True:
                body = self._expect(0x40, "PUBACK")
                if len(body) == 2 and body[0] << 8 | body[1] == pid:
                    self.used = ticks_ms()
                    return
                # an older PUBACK (its publish timed out before): read and ignored
        except Exception as e:
            raise self._down("publish", e)

    def ping(self):
        """PINGREQ and its PINGRESP: keeps the session alive while there is nothing to
        send, and finds a dead broker before an alarm needs it. Raises LinkDown."""
        try:
            self.sock.sendall(mqtt.packet(0xC0, b""))   # PINGREQ
            self._expect(0xD0, "PINGRESP")
            self.used = ticks_ms()
        except Exception as e:
            raise self._down("ping", e)

    def _expect(self, ptype, name, wait_ms=None):
        """The body of the next packet whose first byte's type bits are ptype (0x20
        CONNACK, 0x40 PUBACK, 0x90 SUBACK, 0xD0 PINGRESP), within the deadline. A PUBLISH
        goes to on_message; other packets (a PINGRESP, a stray PUBACK) are skipped.
        wait_ms: only read what arrives within it, then return None (no error)."""
        deadline = ticks_add(ticks_ms(), self.timeout_ms if wait_ms is None else wait_ms)
        while True:
            # the broker sends only small packets: refuse anything above 1 KiB
            got = mqtt.parse(self.rx, 0, len(self.rx), 1024)
            if got is None:
                left = ticks_diff(deadline, ticks_ms())
                if left <= 0 or not self._readable(left):
                    if wait_ms is not None:
                        return None
                    raise OSError("no %s within %d ms" % (name, self.timeout_ms))
                chunk = self.sock.recv(256)
                if not chunk:
                    raise OSError("broker closed the connection")
                self.rx += chunk
                continue
            first, i, end = got
            body = self.rx[i:end]
            self.rx = self.rx[end:]
            if first & 0xF0 == ptype:
                return body
            if first & 0xF0 == 0x30 and self.on_message is not None:
                _, _, start = mqtt.split_publish(body, first, 0, len(body))
                self.on_message(body[start:])
                if wait_ms is not None:
                    return None     # the caller may have more to send now

    def _readable(self, ms):
        # CPython's ssl keeps the rest of a TLS record past a short recv() where poll()
        # cannot see it; MicroPython's poll() counts it
        pending = getattr(self.sock, "pending", None)
        return (pending is not None and pending() > 0) or self.poller.poll(ms)

    def wait(self, ms):
        """Read what the broker sends for up to ms, instead of sleeping: returns early
        once a PUBLISH (an acknowledgement) has been handed on. Raises LinkDown."""
        try:
            self._expect(0, "", ms)
        except Exception as e:
            raise self._down("read", e)

    def close(self):
        if self.sock is not None:
            try:
                self.sock.sendall(mqtt.packet(0xE0, b""))   # DISCONNECT: the broker drops the will
                self.sock.close()
            except Exception:
                pass
        self.sock = None
