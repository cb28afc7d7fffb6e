"""The agent's watchdog on a Raspberry Pi: systemd's, fed over $NOTIFY_SOCKET (the
sd_notify protocol) only while the loop is healthy. The real agent under CPython, a real
pymodbus slave on a pty, a real datagram socket standing where systemd listens."""
import socket

from edge.hal.cpython import Watchdog
from tools.testbench import scenarios
from tools.testbench.site import Device, Site


def listen(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(20)
    return s


def test_feed_tells_systemd_the_loop_is_alive(tmp_path, monkeypatch):
    sock = listen(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    wdt = Watchdog(60000)
    wdt.feed()
    assert [sock.recv(64), sock.recv(64)] == [b"READY=1", b"WATCHDOG=1"]


def test_without_systemd_feeding_is_harmless(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    Watchdog(60000).feed()


def test_the_agent_feeds_systemd_while_it_polls(tmp_path, monkeypatch):
    sock = listen(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    trace = scenarios.write(str(tmp_path / "elev.jsonl.gz"), *scenarios.elevator(seconds=600, entrapment_at=None))
    device = Device("elev-wdt", "elevator", trace, runtime="cpython", config={"watchdog_ms": 5000})
    with Site(str(tmp_path / "site"), [device]):
        # mosquitto speaks sd_notify too (READY=1): count the agent's pings
        got = []
        while got.count(b"WATCHDOG=1") < 3:
            got.append(sock.recv(64))
    assert set(got) == {b"READY=1", b"WATCHDOG=1"}, got
