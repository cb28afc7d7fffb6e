"""edge.link and the agent's send step against a fake broker on loopback that reads the
raw MQTT packets: a broker that accepts TCP and never answers makes connect fail within
its deadline; a lost PUBACK makes the agent resend the same event with DUP set; a
reboot marks what may have been out as possible duplicates; an idle link pings. Each
scenario runs under the MicroPython unix port and CPython."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator

import pytest

from edge import ack, codec, mqtt, mqtt_receiver as mr
from tools.common import runtime

RUNTIMES = ("micropython", "cpython")


SECRET = "00" * 16       # the agent's key in AGENT below


class FakeBroker:
    """MQTT 3.1.1 on 127.0.0.1, just enough of it, with a gateway behind it that
    acknowledges each event (edge/ack.py) on the subscribed topic after its PUBACK.
    mode: "ok"; "silent" (accepts TCP, never answers); "refuse" (CONNACK 5, not
    authorised); "lose_first_puback" (the first event publish gets no PUBACK: the
    connection is closed instead); "no_gateway" (PUBACKs, but no gateway ever
    acknowledges); "forged_ack" (acknowledgements signed with another key); "huge" (answers
    CONNECT with the header of a 2 MB packet)."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.packets: list[tuple[int, int, bytes]] = []   # (connection, first byte, body)
        self.lost = False
        self.subscribed = b""
        self.conns: list[socket.socket] = []
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, len(self.conns) - 1), daemon=True).start()

    @staticmethod
    def _packets(conn: socket.socket) -> Iterator[tuple[int, bytes]]:
        """(first byte, body) of each packet the client sends, until it closes."""
        buf = b""
        while True:
            got = mqtt.parse(buf, 0, len(buf), 1 << 20)
            if got is None:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
                continue
            first, i, end = got
            yield first, buf[i:end]
            buf = buf[end:]

    def _serve(self, conn: socket.socket, idx: int) -> None:
        try:
            for first, body in self._packets(conn):
                self.packets.append((idx, first, body))
                kind = first >> 4
                if self.mode == "silent":
                    continue
                if kind == mr.CONNECT and self.mode == "huge":
                    conn.sendall(b"\x20\x80\x80\x80\x01" + bytes(200))   # CONNACK of 2 MB, its start
                elif kind == mr.CONNECT:
                    conn.sendall(mr.connack(5 if self.mode == "refuse" else 0, False))   # 5: not authorised
                elif kind == mr.SUBSCRIBE:
                    self.subscribed = bytes(mqtt.split_publish(body, 0x30, 2, len(body))[0])
                    conn.sendall(mr.suback(body[0] << 8 | body[1], [0]))
                elif kind == mr.PUBLISH:
                    topic, pid, start = mqtt.split_publish(body, first, 0, len(body))
                    if self.mode == "lose_first_puback" and topic.endswith(b"/ev") and not self.lost:
                        self.lost = True
                        break
                    conn.sendall(mr.puback(pid))
                    if topic.endswith(b"/ev") and self.subscribed and self.mode != "no_gateway":
                        conn.sendall(self._gateway_ack(body[start:]))
                elif kind == mr.PINGREQ:
                    conn.sendall(mr.pingresp())
                elif kind == mr.DISCONNECT:
                    break
        except (ValueError, OSError):
            pass
        conn.close()

    def _gateway_ack(self, event: bytes) -> bytes:
        ev = codec.decode(event)
        key = "11" * 16 if self.mode == "forged_ack" else SECRET
        payload = ack.encode(codec.Signer(bytes.fromhex(key), "dev-1"), [(ev["boot"], ev["seq"], 1)])
        return mqtt.publish(self.subscribed, payload, 0, 0, False, False)

    def publishes(self, topic_end: bytes = b"/ev") -> list[tuple[int, bool, bytes]]:
        """(connection, DUP flag, payload) of every PUBLISH to a topic ending so."""
        out = []
        for idx, first, body in self.packets:
            if first >> 4 == mr.PUBLISH:
                topic, _, start = mqtt.split_publish(body, first, 0, len(body))
                if topic.endswith(topic_end):
                    out.append((idx, bool(first & 0x08), body[start:]))
        return out

    def __enter__(self) -> "FakeBroker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.srv.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def broker(request):
    b = FakeBroker(getattr(request, "param", "ok"))
    yield b
    b.close()


def run_script(rt: str, code: str, *args: str, timeout: float = 60) -> dict:
    argv = [runtime.micropython()] if rt == "micropython" else [sys.executable]
    proc = subprocess.run(argv + ["-c", code, *args], env=runtime.micropython_env(), capture_output=True,
                          text=True, timeout=timeout, cwd="/")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout.strip().splitlines()[-1])


CONNECT = """
import sys, json
from edge.clock import ticks_ms, ticks_diff
from edge.link import Link, LinkDown
link = Link({"host": "127.0.0.1", "port": int(sys.argv[1]), "keepalive": 30}, "dev-1", lambda *a: None,
            int(sys.argv[2]))
t0 = ticks_ms()
error = None
try:
    link.connect()
except LinkDown as e:
    error = str(e)
print(json.dumps({"ms": ticks_diff(ticks_ms(), t0), "error": error, "up": link.up, "retry_ms": link.wait_ms()}))
"""


@pytest.mark.parametrize("rt", RUNTIMES)
@pytest.mark.parametrize("broker", ["silent"], indirect=True)
def test_connect_fails_within_its_deadline_when_no_connack_comes(broker, rt):
    out = run_script(rt, CONNECT, str(broker.port), "700")
    assert out["error"] and "CONNACK" in out["error"], out
    assert 650 <= out["ms"] < 3000, out
    assert not out["up"] and out["retry_ms"] > 0, "no backoff after a failed connect"
    assert [p[1] for p in broker.packets] == [0x10], "something other than one CONNECT was sent"


@pytest.mark.parametrize("rt", RUNTIMES)
@pytest.mark.parametrize("broker", ["refuse"], indirect=True)
def test_a_refused_connect_is_an_error_that_says_so(broker, rt):
    out = run_script(rt, CONNECT, str(broker.port), "2000")
    assert "refused" in out["error"] and out["ms"] < 1500, out


@pytest.mark.parametrize("rt", RUNTIMES)
@pytest.mark.parametrize("broker", ["huge"], indirect=True)
def test_a_packet_longer_than_the_link_takes_is_refused_at_its_header(broker, rt):
    # the link reads a few KB at most, never what a broker (or whoever answers) announces
    out = run_script(rt, CONNECT, str(broker.port), "2000")
    assert "a packet of 2097152 bytes (limit 1024)" in out["error"] and out["ms"] < 1500, out


@pytest.mark.parametrize("rt", RUNTIMES)
def test_connect_sends_the_will_and_the_online_status(broker, rt):
    out = run_script(rt, CONNECT, str(broker.port), "2000")
    assert out["error"] is None and out["up"]
    (_, first, body), = [p for p in broker.packets if p[1] == 0x10]
    assert body[:7] == b"\x00\x04MQTT\x04" and body[7] == 0x2E        # clean session, will QoS 1, retained
    assert b"dev/dev-1/status" in body and b"offline" in body
    assert broker.publishes(b"/status") == [(0, False, b"online")]


AGENT = """
import sys, json
from edge.agent import Agent
from edge.link import Link
from edge.outbox import Outbox
from edge.state import MemoryStore
from edge.clock import sleep_ms, ticks_ms, ticks_diff
port, state, keepalive = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
count, run_ms = int(sys.argv[4]), int(sys.argv[5])
cfg = {"device_id": "dev-1", "secret": "00" * 16, "profile": "water_meter",
       "bus": {"port": "-", "baud": 9600, "slave": 1, "word_order": "ABCD"}}
link = Link({"host": "127.0.0.1", "port": port, "keepalive": keepalive}, "dev-1", lambda *a: None, 1000)
agent = Agent(cfg, None, link, MemoryStore(), Outbox(state), lambda: 1780000000)
import edge.agent
edge.agent.log = lambda *a: None
for i in range(count):
    agent.emit(1780000000 + i, 0x12, 0, (i,))      # device.boot reports stand in for events
t0 = ticks_ms()
while ticks_diff(ticks_ms(), t0) < run_ms:
    idle = agent.send_one()
    if idle:
        if link.up:
            agent._net(link.wait, min(idle, 50))
        else:
            sleep_ms(min(idle, 50))
agent.outbox.commit()
print(json.dumps({"left": agent.outbox.count, "seq": agent.seq, "bad_acks": agent.bad_acks}))
"""


@pytest.mark.parametrize("rt", RUNTIMES)
@pytest.mark.parametrize("broker", ["lose_first_puback"], indirect=True)
def test_a_publish_whose_puback_was_lost_is_resent_with_dup(broker, rt, tmp_path):
    out = run_script(rt, AGENT, str(broker.port), str(tmp_path / "state"), "30", "3", "2500")
    assert out["left"] == 0
    sent = broker.publishes()
    first = sent[0]
    assert first[:2] == (0, False)
    # the connection dropped without a PUBACK: after the reconnect the same bytes, marked DUP
    assert sent[1] == (1, True, first[2])
    assert [s[1] for s in sent[2:]] == [False, False]
    assert len({s[2] for s in sent}) == 3, "an event was lost or a new one was marked DUP"


@pytest.mark.parametrize("rt", RUNTIMES)
@pytest.mark.parametrize("broker", ["no_gateway", "forged_ack"], indirect=True)
def test_events_the_broker_has_but_the_gateway_never_acknowledged_stay_and_go_again(broker, rt, tmp_path):
    state = str(tmp_path / "state")
    out = run_script(rt, AGENT, str(broker.port), state, "30", "3", "1500")
    # PUBACKed by the broker, but no (genuine) word from the gateway: all still on flash,
    # each sent once (a window of them is out), none again before the acknowledgement is late
    assert out["left"] == 3 and len(broker.publishes()) == 3
    assert out["bad_acks"] == (3 if broker.mode == "forged_ack" else 0)
    with FakeBroker("ok") as good:
        out = run_script(rt, AGENT, str(good.port), state, "30", "0", "1500")
        assert out["left"] == 0 and out["bad_acks"] == 0
        sent = good.publishes()
    assert [s[1] for s in sent] == [True, True, True], "a resend after the reboot is not marked DUP"
    assert [s[2] for s in sent] == [s[2] for s in broker.publishes()]


@pytest.mark.parametrize("rt", RUNTIMES)
def test_each_event_goes_once_when_every_one_is_acknowledged(broker, rt, tmp_path):
    out = run_script(rt, AGENT, str(broker.port), str(tmp_path / "state"), "30", "40", "2500")
    assert out["left"] == 0 and out["bad_acks"] == 0
    sent = broker.publishes()
    assert len(sent) == 40 and len({s[2] for s in sent}) == 40 and not any(s[1] for s in sent)


@pytest.mark.parametrize("rt", RUNTIMES)
def test_after_a_reboot_what_may_have_been_out_goes_with_dup(broker, rt, tmp_path):
    state = str(tmp_path / "state")
    silent = FakeBroker("silent")
    try:
        # the broker never acknowledges: three events stay on flash; then the power goes
        out = run_script(rt, AGENT, str(silent.port), state, "30", "3", "1500")
        assert out["left"] == 3
    finally:
        silent.close()
    out = run_script(rt, AGENT, str(broker.port), state, "30", "0", "1500")
    assert out["left"] == 0
    sent = broker.publishes()
    # a window of them may have been out at the cut: all three go marked DUP
    assert [s[1] for s in sent] == [True, True, True]
    assert len({s[2] for s in sent}) == 3


@pytest.mark.parametrize("rt", RUNTIMES)
def test_an_idle_link_pings_at_half_the_keepalive(broker, rt, tmp_path):
    out = run_script(rt, AGENT, str(broker.port), str(tmp_path / "state"), "1", "0", "1800")
    assert out["left"] == 0
    pings = [p for p in broker.packets if p[1] == 0xC0]
    assert 2 <= len(pings) <= 4, broker.packets   # every 500 ms of silence
    assert sum(1 for p in broker.packets if p[1] == 0x10) == 1, "the pings did not keep the session"


def test_close_sends_disconnect(broker):
    from edge.link import Link
    link = Link({"host": "127.0.0.1", "port": broker.port}, "dev-1", lambda *a: None)
    link.connect()
    link.close()
    deadline = time.monotonic() + 2
    while not [p for p in broker.packets if p[1] == 0xE0] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [p for p in broker.packets if p[1] == 0xE0] and not link.up
