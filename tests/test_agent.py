"""edge.agent's loop with fakes for the bus and the broker (CPython, in process): events
are on flash before they are logged, a full outbox reports what it dropped, the
watchdog is fed only while polls keep coming, and a poll that raises or a value the wire
cannot carry is reported, not a crash. Then the agent as a board runs it (MicroPython,
.mpy, 96 KiB heap) against a real Modbus slave on a pty whose float registers hold NaN,
infinity and 1e30."""
from __future__ import annotations

import json
import math
import signal
import struct
import subprocess
import threading
import time

import pytest

from edge import agent as agent_mod, regmap
from edge.agent import Agent
from edge.clock import ticks_ms
from edge.codec import decode
from edge.codes import FIELD_MAX, RAISE, REPORT, code_of
from edge.mapcheck import profile_map
from tools.common.devconfig import board_map
from edge.outbox import Outbox
from edge.state import MemoryStore
from tools.common import runtime
from tools.common.procs import free_port, stop
from tools.testbench import scenarios
from tools.testbench.simulate import run_simulator
from tools.testbench.vbus import VirtualBus

SECRET = "00" * 16
ELEVATOR_IDLE = [0, 0, 0, 3, 0, 1, 0, 0]    # mode, dir, speed, floor 3, door, zone, occupied, fault


class Stop(BaseException):
    """Ends a test's loop: not an Exception, which a poll catches and reports."""


class Master:
    """Answers every poll with the same words, or raises `error`; stops the loop after
    `polls` polls."""

    def __init__(self, polls: int = 10 ** 9, words: list[int] = ELEVATOR_IDLE,
                 error: Exception | None = None) -> None:
        self.left = polls
        self.words = words
        self.error = error

    # the agent's poll decodes as the Modbus master's does, from these words
    def read(self, slave, fc, first, count, table, agent):
        return regmap.decode(table, self.read_registers(slave, fc, first, count), "ABCD", first)

    def read_registers(self, slave, fc, addr, count):
        self.left -= 1
        if self.left < 0:
            raise Stop()
        if self.error is not None:
            raise self.error
        return self.words


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


def make(tmp_path, master=None, link=None, outbox=None, speed: float = 50, profile: str = "elevator") -> Agent:
    cfg = {"device_id": "elev-t", "secret": SECRET, "profile": profile,
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


# ---- what a poll cannot read ------------------------------------------------------------

def water_words(flow: float, total_l: int = 12500) -> list[int]:
    """The water meter's registers (total in litres, flow as a big-endian float32, battery)."""
    f = struct.pack(">f", flow)
    return [total_l >> 16, total_l & 0xFFFF, f[0] << 8 | f[1], f[2] << 8 | f[3], 356]


def test_nan_infinity_and_1e30_go_out_unknown_and_are_reported(tmp_path, lines):
    ob = Outbox(str(tmp_path / "outbox"))
    master = Master()
    a = make(tmp_path, master=master, outbox=ob, profile="water_meter")
    clock = [1_780_000_000]
    a.now = lambda: clock[0]
    for flow in (0.3, math.nan, 1e30, math.inf, 0.3):    # a poll every 5 minutes, each a telemetry sample
        master.words = water_words(flow)
        a.poll_once()
        clock[0] += 300
    events = stored(ob)      # every one decodes: nothing the gateway would refuse
    telemetry = [e["values"] for e in events if e["type"] == "telemetry.water_meter"]
    assert [v["flow"] for v in telemetry] == [0.3, None, None, None, 0.3]
    assert {v["total"] for v in telemetry} == {12.5}, "the fields around an unknown one are kept"
    faults = [e["values"] for e in events if e["type"] == "device.poll_fault"]
    assert faults == [{"not_a_number": 1, "out_of_range": 0, "errors": 0},
                      {"not_a_number": 0, "out_of_range": 1, "errors": 0},
                      {"not_a_number": 1, "out_of_range": 0, "errors": 0}]
    assert a.polls == 5 and not [line for line in lines if line.startswith("poll failed")]


def test_a_value_beyond_its_field_is_unknown_whatever_the_event(tmp_path, lines):
    ob = Outbox(str(tmp_path / "outbox"))
    a = make(tmp_path, outbox=ob)
    a.emit(1_780_000_000, code_of("elevator.overspeed"), RAISE, (math.inf, 1.75))
    a.emit(1_780_000_000, code_of("elevator.overspeed"), RAISE, (FIELD_MAX / 100, 1.75))   # 2**53 once scaled
    a.emit(1_780_000_000, code_of("elevator.overspeed"), RAISE, (FIELD_MAX / 100 - 1, 1.75))
    assert [e["values"]["speed"] for e in stored(ob)] == [None, None, FIELD_MAX / 100 - 1]
    assert a.poll_faults == [0, 2, 0]


def test_a_poll_that_raises_is_reported_once_a_minute_and_polling_goes_on(tmp_path, lines):
    ob = Outbox(str(tmp_path / "outbox"))
    # a USB RS-485 adapter pulled out: not a Modbus error, an OSError from the port
    a = make(tmp_path, master=Master(error=OSError(5, "Input/output error")), outbox=ob)
    clock = [1_780_000_000]
    a.now = lambda: clock[0]
    for _ in range(150):                 # the elevator polls every second
        a.poll_once()
        clock[0] += 1
    a.master.error = None
    a.pipeline.step = lambda t, r: 1 / 0    # a detector's bug, on a reading that answered
    for _ in range(30):
        a.poll_once()
        clock[0] += 1
    clock[0] += 60
    a.report_faults()
    faults = [e for e in stored(ob) if e["type"] == "device.poll_fault"]
    assert [e["t"] - 1_780_000_000 for e in faults] == [0, 60, 120, 240], "not one report a minute"
    assert sum(e["values"]["errors"] for e in faults) == 180 and a.polls == 180
    # logged once between two reports (the first poll, and after each report), and a new error at once
    failed = [line.split()[2] for line in lines if line.startswith("poll failed")]
    assert failed == ["OSError"] * 4 + ["ZeroDivisionError"]
    assert "poll failed: OSError [Errno 5] Input/output error" in lines


def test_the_loop_runs_on_through_polls_that_raise(tmp_path, lines):
    a = make(tmp_path, master=Master(polls=40, error=RuntimeError("a bug")), speed=500)
    with pytest.raises(Stop):
        a.run()
    assert a.polls == 40 and len([line for line in lines if line.startswith("poll failed")]) <= 2


# ---- the agent as shipped, on a real bus ------------------------------------------------

SPEED = 600          # trace seconds per real second: a water meter poll every 100 ms


def test_a_meter_sending_nan_infinity_or_1e30_under_micropython(tmp_path):
    """A pymodbus slave on a pty serves real float32 NaN, -infinity and 1e30 words to the
    agent as a board runs it (.mpy, 96 KiB heap): it polls on, the flow goes out
    unknown, device.poll_fault counts them, and every stored event decodes."""
    flows = [0.3, math.nan, -math.inf, 1e30, 0.3]
    rows = [(600 * i, {"total": 12.5, "flow": f, "battery": 3.56}) for i, f in enumerate(flows)]
    trace = scenarios.write(str(tmp_path / "water.jsonl.gz"),
                            {"trace": "test", "profile": "water_meter", "period_s": 60}, rows)
    mpy = runtime.compile_agent(str(tmp_path / "mpy"))
    anchor = time.time() + 1.0           # trace time 0, for the slave and the agent's clock
    bus = VirtualBus().start()
    stop_event = threading.Event()
    ready = threading.Event()
    sim = threading.Thread(target=run_simulator, args=("water_meter", trace, bus.b), kwargs=dict(
        speed=SPEED, anchor=anchor, stop_event=stop_event, ready=ready), daemon=True)
    sim.start()
    proc = None
    try:
        assert ready.wait(10), "the simulator did not open its port"
        cfg = {"device_id": "wm-nan", "secret": SECRET, "profile": "water_meter", "log_telemetry": True,
               "bus": {"port": bus.a, "slave": 1, "timeout_ms": 200, "retries": 1},
               "broker": {"host": "127.0.0.1", "port": free_port()},     # nobody there: events stay on flash
               "clock": {"anchor": anchor, "origin": 1_780_000_000, "speed": SPEED},
               # the map inlined, as provisioning does: a board has no map files
               "map": board_map(profile_map("water_meter", None))}
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        env = runtime.micropython_env()
        env["MICROPYPATH"] = ".frozen:" + mpy
        state = tmp_path / "state"
        proc = subprocess.Popen(runtime.command("micropython", "edge.agent", str(tmp_path / "config.json"),
                                                str(state), heap=runtime.AGENT_HEAP),
                                env=env, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0 + 600 * len(flows) / SPEED)
        assert proc.poll() is None, "the agent stopped:\n" + proc.communicate()[0]
    finally:
        stop(proc, sig=signal.SIGINT)
        stop_event.set()
        sim.join(10)
        bus.stop()
    log = proc.communicate()[0]
    assert "Traceback" not in log and "poll failed" not in log, log
    events = stored(Outbox(str(state / "outbox")))
    flows_sent = [e["values"]["flow"] for e in events if e["type"] == "telemetry.water_meter"]
    assert flows_sent[0] == 0.3 and flows_sent[-1] == 0.3 and None in flows_sent, log
    assert not [f for f in flows_sent if f not in (0.3, None)], log
    faults = [e["values"] for e in events if e["type"] == "device.poll_fault"]
    # NaN and -infinity for 10 polls each: not a number; 1e30 once a telemetry sample carries it
    assert sum(f["not_a_number"] for f in faults) >= 10 and sum(f["out_of_range"] for f in faults) >= 1, log
    assert not sum(f["errors"] for f in faults), log
