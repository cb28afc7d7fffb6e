"""edge.agent's loop with fakes for the bus and the broker (CPython, in process): events
are on flash before they are logged, a full outbox reports what it dropped, and the
watchdog is fed only while polls keep coming."""
from __future__ import annotations

import time

import pytest

from edge import agent as agent_mod
from edge.agent import Agent
from edge.clock import ticks_ms
from edge.codec import decode
from edge.codes import RAISE, REPORT, code_of
from edge.outbox import Outbox
from edge.state import MemoryStore

SECRET = "00" * 16
ELEVATOR_IDLE = [0, 0, 0, 3, 0, 1, 0, 0]    # mode, dir, speed, floor 3, door, zone, occupied, fault


class Stop(Exception):
    pass


class Master:
    """Answers every poll with the same words; stops the loop after `polls` polls."""

    def __init__(self, polls: int = 10 ** 9) -> None:
        self.left = polls

    def read_registers(self, slave, fc, addr, count):
        self.left -= 1
        if self.left < 0:
            raise Stop()
        return ELEVATOR_IDLE


class DownLink:
    """A broker that is never there: an attempt every 100 ms; the second one hangs for
    `slow_ms`, as a network call past its deadline would."""
    timeout_ms = 10
    up = False

    def __init__(self, slow_ms: int = 0) -> None:
        self.slow_ms = slow_ms
        self.attempts = 0
        self.retry_at = 0

    def wait_ms(self):
        return max(0, self.retry_at - ticks_ms())

    def connect(self):
        self.attempts += 1
        if self.attempts == 2 and self.slow_ms:
            time.sleep(self.slow_ms / 1000)
        self.retry_at = ticks_ms() + 100
        raise OSError("no broker")

    def close(self):
        pass


class Watchdog:
    timeout_ms = 200

    def __init__(self) -> None:
        self.fed: list[int] = []

    def feed(self) -> None:
        self.fed.append(ticks_ms())


def make(tmp_path, master=None, link=None, outbox=None, speed: float = 50) -> Agent:
    cfg = {"device_id": "elev-t", "secret": SECRET, "profile": "elevator",
           "bus": {"port": "-", "baud": 9600, "slave": 1, "word_order": "ABCD"},
           "site": {"rated_speed": 1.75, "floors": [-1, 11]},
           "clock": {"anchor": time.time(), "origin": 1_780_000_000, "speed": speed}}
    return Agent(cfg, master or Master(), link or DownLink(), MemoryStore(),
                 outbox or Outbox(str(tmp_path / "outbox")), time.time)


@pytest.fixture
def lines(monkeypatch):
    out: list[str] = []
    monkeypatch.setattr(agent_mod, "log", lambda *a: out.append(" ".join(str(x) for x in a)))
    return out


def stored(ob: Outbox) -> list[dict]:
    """Every event in the outbox, alarms first, as the gateway would decode them."""
    events = []
    while True:
        head = ob.next()
        if head is None:
            return events
        events.append(decode(head[1]))
        head[0].ack()


def test_an_event_is_in_the_outbox_before_its_log_line(tmp_path, lines):
    ob = Outbox(str(tmp_path / "outbox"))
    a = make(tmp_path, outbox=ob)
    seen = []
    append = ob.append

    def spy(alarm, payload):
        seen.append(len(lines))
        append(alarm, payload)

    ob.append = spy
    a.emit(1_780_000_000, code_of("elevator.entrapment"), RAISE, (3, 31))
    assert seen == [0] and lines == ["event raise elevator.entrapment seq=1 [3, 31]"]


def test_a_full_outbox_drops_telemetry_first_and_reports_it(tmp_path, lines):
    ob = Outbox(str(tmp_path / "outbox"), max_bytes=2048, seg_bytes=512)
    a = make(tmp_path, outbox=ob)
    tel = code_of("telemetry.elevator")
    for i in range(300):
        a.emit(1_780_000_000 + i, tel, REPORT, (0, 0, 0.0, i % 10 + 1, 0, 1, 0, 0))
        if i % 50 == 0:
            a.emit(1_780_000_000 + i, code_of("elevator.overspeed"), RAISE, (2.1, 1.75))
        a.report_drops()   # as after each poll
    events = stored(ob)
    reports = [e for e in events if e["type"] == "device.outbox_drop"]
    assert reports and all(r["values"]["alarms"] == 0 for r in reports)
    telemetry = [e for e in events if e["type"] == "telemetry.elevator"]
    assert len(telemetry) + sum(r["values"]["telemetry"] for r in reports) == 300
    assert len([e for e in events if e["type"] == "elevator.overspeed"]) == 6, "an alarm went while telemetry was left"
    assert any("outbox full: dropped" in line for line in lines)
    # nothing is renumbered: seqs stay unique, and the newest telemetry is what survived
    seqs = [e["seq"] for e in events]
    assert len(seqs) == len(set(seqs))
    assert telemetry[-1]["values"]["floor"] == 299 % 10 + 1


def test_the_watchdog_is_fed_while_polls_come(tmp_path, lines):
    wdt = Watchdog()
    a = make(tmp_path, master=Master(polls=40))
    with pytest.raises(Stop):
        a.run(wdt)
    assert a.polls == 40
    gaps = [b - x for x, b in zip(wdt.fed, wdt.fed[1:])]
    assert len(wdt.fed) >= 40 and max(gaps) < Watchdog.timeout_ms // 2, gaps


def test_the_watchdog_is_not_fed_while_the_loop_is_stuck(tmp_path, lines):
    wdt = Watchdog()
    # polls every 20 ms; a network call that hangs 400 ms is past every deadline
    a = make(tmp_path, master=Master(polls=30), link=DownLink(slow_ms=400))
    with pytest.raises(Stop):
        a.run(wdt)
    gaps = [b - x for x, b in zip(wdt.fed, wdt.fed[1:])]
    assert max(gaps) >= 400, "fed while the loop was stuck"
    assert [line for line in lines if line.startswith("watchdog: not fed")]
    assert wdt.fed[-1] > wdt.fed[0] + 400, "feeding did not resume once polls came again"


def test_healthy_means_a_recent_poll(tmp_path):
    a = make(tmp_path)
    a.poll_once()
    assert a.healthy()
    a.polled_at = ticks_ms() - (2 * a.period_ms + 3 * a.link.timeout_ms + 1)
    assert not a.healthy()


def test_a_drop_report_that_cannot_be_stored_does_not_loop(tmp_path, lines):
    ob = Outbox(str(tmp_path / "outbox"))
    a = make(tmp_path, outbox=ob)

    def full(alarm, payload):
        ob.dropped[alarm] += 1
    ob.append = full                     # flash that accepts nothing
    a.emit(1_780_000_000, code_of("elevator.overspeed"), RAISE, (2.1, 1.75))
    a.report_drops()                     # its own report is lost too: counted for next time
    assert ob.dropped == [0, 1]
    assert len([line for line in lines if line.startswith("outbox full")]) == 1
