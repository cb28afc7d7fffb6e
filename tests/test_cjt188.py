"""CJ/T 188 water meters: the framing (edge/cjt188.py) on the worked frames of public
sources (tests/vectors/cjt188.json) under both runtimes, its refusals, the master and
the flow it derives (edge/cjt188_bus.py), the config, valve commands, and a meter
simulated on a pty read by the agent as shipped, end to end to the platform."""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import threading
import time

import pytest

from edge import cjt188
from edge.bus import KINDS
from edge.cjt188 import ChecksumError, ErrorReply, FrameError, Timeout
from edge.cjt188_bus import Master
from edge.cjt188_tools import address_request, address_text, valve_request
from edge.config import ConfigError, validate
from tools.common import runtime
from tools.testbench import scenarios
from tools.testbench.cjt188_meter import meter_data, reply, run_meter
from tools.testbench.site import Device, Site
from tools.testbench.vbus import VirtualBus

VECTORS = json.load(open(os.path.join(os.path.dirname(__file__), "vectors", "cjt188.json")))
ADDRESS = "78330011223344"


def frame(v: dict) -> bytes:
    return bytes.fromhex(v["hex"])


def request_of(v: dict) -> bytes:
    return cjt188.read_request(v["meter_type"], v["address"], v["order"])


# ---------------------------------------------------------------- the worked frames
@pytest.mark.parametrize("v", VECTORS["requests"], ids=lambda v: v["what"])
def test_requests_are_built_byte_for_byte(v):
    if v.get("address_request"):
        built = address_request(v["order"], v["preamble"])
    else:
        built = cjt188.read_request(v["meter_type"], v["address"], v["order"], 0, v["preamble"])
    assert built == frame(v)


def test_the_default_preamble_is_four_fe():
    assert cjt188.read_request(0x10, ADDRESS, 2018) == frame(VECTORS["requests"][0])


@pytest.mark.parametrize("v", VECTORS["replies"], ids=lambda v: v["what"])
def test_worked_replies_decode(v):
    total, settled, clock, st1, st2 = cjt188.meter_data(cjt188.parse_reply(request_of(v), frame(v)))
    assert (total, settled, list(clock), st1, st2) == (v["total"], v["settled"], v["clock"], v["st1"], v["st2"])


@pytest.mark.parametrize("v", VECTORS["refused"], ids=lambda v: v["what"])
def test_published_frames_with_a_wrong_checksum_are_refused(v):
    with pytest.raises(getattr(cjt188, v["error"])):
        cjt188.parse_reply(request_of(v), frame(v))


def test_the_address_is_bcd_low_byte_first():
    assert cjt188.address_bytes(ADDRESS) == bytes.fromhex("44332211003378")
    assert address_text(bytes.fromhex("44332211003378")) == ADDRESS
    assert cjt188.address_bytes(cjt188.WILDCARD) == b"\xaa" * 7
    for bad in ("7833001122334", "783300112233445", "7833001122334x", "", None, "٧٨٣٣٠٠١١٢٢٣٣٤٤"):
        with pytest.raises(ValueError):
            cjt188.address_bytes(bad)
    with pytest.raises(FrameError):
        address_text(bytes.fromhex("4433221100337A"))


# ---------------------------------------------------------------- both DI orders, any preamble
HFT = VECTORS["replies"][0]


@pytest.mark.parametrize("order,di", [(2004, "901f"), (2018, "1f90")])
def test_the_di_order_sent_is_the_meters_setting(order, di):
    assert cjt188.read_request(0x10, ADDRESS, order)[4 + 11:4 + 13].hex() == di


@pytest.mark.parametrize("asked", [2004, 2018])
@pytest.mark.parametrize("answered", [2004, 2018])
def test_either_di_order_is_accepted_on_receive(asked, answered):
    req = cjt188.read_request(0x10, ADDRESS, asked)
    answer = reply(cjt188.read_request(0x10, ADDRESS, answered), meter_data(12.34), ADDRESS)
    assert cjt188.meter_data(cjt188.parse_reply(req, answer))[0] == 12.34


@pytest.mark.parametrize("fe", [0, 1, 2, 3, 4, 7, 20])
def test_any_number_of_fe_before_the_start(fe):
    bare = frame(HFT).lstrip(b"\xfe")
    assert cjt188.need(b"\xfe" * fe + bare) == 0
    assert cjt188.meter_data(cjt188.parse_reply(request_of(HFT), b"\xfe" * fe + bare))[0] == 556677.0


def test_need_says_how_much_of_a_frame_is_missing():
    whole = frame(HFT)
    assert cjt188.need(b"") == cjt188.HEAD
    assert cjt188.need(whole[:4]) == cjt188.HEAD         # FE only: the frame has not begun
    assert cjt188.need(whole[:10]) == cjt188.HEAD - 6
    assert cjt188.need(whole[:20]) == len(whole) - 20
    assert cjt188.need(whole) == 0
    assert cjt188.need(b"\x00\x01") == 0                  # no frame at all: parse says so


# ---------------------------------------------------------------- refusals
def _data(**kw) -> bytes:
    return bytearray(meter_data(556677.0, **kw))


def _answer(data: bytes, req: bytes | None = None, **kw) -> bytes:
    return reply(req or request_of(HFT), bytes(data), ADDRESS, **kw)


@pytest.mark.parametrize("at,byte", [(0, 0x0A), (3, 0xA0), (5, 0xFF), (10, 0x6A), (16, 0xC0)])
def test_a_nibble_above_nine_is_an_error_not_a_number(at, byte):
    data = _data()
    data[at] = byte
    with pytest.raises(FrameError, match="not BCD"):
        cjt188.meter_data(cjt188.parse_reply(request_of(HFT), _answer(data)))


@pytest.mark.parametrize("unit,m3", [(0x29, 1.23456), (0x2A, 12.3456), (0x2B, 123.456), (0x2C, 1234.56),
                                     (0x2D, 12345.6), (0x2E, 123456.0)])
def test_volume_units_are_converted_to_m3(unit, m3):
    data = bytearray(b"\x56\x34\x12\x00" + bytes((unit,)) + bytes(14))
    assert cjt188.volume(data, 0) == pytest.approx(m3)


@pytest.mark.parametrize("unit", [0x00, 0x05, 0x28, 0x2F, 0x32, 0x35, 0xFF])
def test_a_unit_that_is_no_volume_is_an_error(unit):
    with pytest.raises(FrameError, match="unit"):
        cjt188.volume(b"\x00\x00\x00\x00" + bytes((unit,)), 0)


def test_an_error_reply_carries_its_status_bytes():
    req = request_of(HFT)
    with pytest.raises(ErrorReply) as err:
        cjt188.parse_reply(req, reply(req, b"\x12\x34", ADDRESS, error=True))
    assert (err.value.kind, err.value.code, KINDS[err.value.kind]) == (3, 0x3412, "exception")


@pytest.mark.parametrize("what,make,match", [
    ("another address", lambda r: reply(r, meter_data(1), "78330011223345"), "address"),
    ("another meter type", lambda r: reply(r, meter_data(1), ADDRESS, meter_type=0x11), "meter type"),
    ("another DI", lambda r: reply(cjt188.request(0x10, ADDRESS, 1, 0x9020), meter_data(1), ADDRESS), "DI"),
    ("another SER", lambda r: reply(cjt188.read_request(0x10, ADDRESS, 2018, ser=5), meter_data(1), ADDRESS), "SER"),
    ("a heat meter's data", lambda r: reply(r, bytes(43), ADDRESS), "not a water meter"),
    ("no end byte", lambda r: reply(r, meter_data(1), ADDRESS)[:-1] + b"\x17", "end byte"),
    ("a request echoed", lambda r: r, "control"),
    ("cut short", lambda r: reply(r, meter_data(1), ADDRESS)[:30], "short"),
    ("noise first", lambda r: b"\x00" + reply(r, meter_data(1), ADDRESS, preamble=0), "start byte"),
])
def test_a_reply_that_is_not_the_answer_is_refused(what, make, match):
    req = request_of(HFT)
    with pytest.raises(FrameError, match=match):
        cjt188.meter_data(cjt188.parse_reply(req, make(req)))


def test_kinds_match_the_comm_fault_event():
    assert [c.kind for c in (Timeout, ChecksumError, ErrorReply, FrameError)] == [1, 2, 3, 4]
    with pytest.raises(Timeout):
        cjt188.parse_reply(request_of(HFT), b"")
    with pytest.raises(ChecksumError):
        good = frame(HFT)
        cjt188.parse_reply(request_of(HFT), good[:-3] + bytes((good[-3] ^ 1,)) + good[-2:])


MP_SCRIPT = """
import json
from edge import cjt188, cjt188_tools
v = json.load(open("%s"))
for r in v["requests"]:
    if r.get("address_request"):
        print(cjt188_tools.address_request(r["order"], r["preamble"]) == bytes.fromhex(r["hex"].replace(" ", "")))
    else:
        print(cjt188.read_request(r["meter_type"], r["address"], r["order"], 0, r["preamble"])
              == bytes.fromhex(r["hex"].replace(" ", "")))
for r in v["replies"]:
    req = cjt188.read_request(r["meter_type"], r["address"], r["order"])
    print(json.dumps(cjt188.meter_data(cjt188.parse_reply(req, bytes.fromhex(r["hex"].replace(" ", ""))))))
for r in v["refused"]:
    req = cjt188.read_request(r["meter_type"], r["address"], r["order"])
    try:
        cjt188.parse_reply(req, bytes.fromhex(r["hex"].replace(" ", "")))
    except cjt188.Cjt188Error as e:
        print(type(e).__name__, e.kind)
try:
    cjt188.bcd(b"\\x1a", 0, 1)
except cjt188.FrameError as e:
    print("bcd", e.kind)
"""


def test_same_results_on_micropython(tmp_path):
    script = tmp_path / "vectors.py"
    script.write_text(MP_SCRIPT % os.path.join(os.path.dirname(__file__), "vectors", "cjt188.json"))
    out = subprocess.run([runtime.micropython(), str(script)], env=runtime.micropython_env(),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr + out.stdout
    lines = out.stdout.split("\n")
    assert lines[:2] == ["True", "True"]
    for line, v in zip(lines[2:4], VECTORS["replies"]):
        assert json.loads(line) == [v["total"], v["settled"], v["clock"], v["st1"], v["st2"]]
    assert lines[4:6] == ["CrcError 2", "bcd 4"]           # a bad checksum: edge.bus.CrcError, kind 2


# ---------------------------------------------------------------- the master and its reading
class ScriptedUart:
    """A meter that answers each request with the next of `answers` (bytes, or None for
    silence), as a HAL UART."""

    def __init__(self, answers) -> None:
        self.answers = list(answers)
        self.pending = b""
        self.sent: list[bytes] = []

    def write(self, data):
        self.sent.append(bytes(data))
        self.pending = self.answers.pop(0) or b""

    def read(self, n, timeout_ms):
        got, self.pending = self.pending[:n], self.pending[n:]
        return got

    def flush_input(self):
        self.pending = b""


class FakeAgent:
    def __init__(self) -> None:
        self.t = 1_780_000_000.0
        self.events: list[tuple] = []

    def now(self):
        return self.t

    def emit(self, t, code, action, values):
        self.events.append((code, tuple(values)))


BUS = {"address": ADDRESS, "meter_type": 0x10, "di_order": 2018, "baud": 2400, "timeout_ms": 50, "retries": 1}


def _meter(total: float, st1: int = 0) -> bytes:
    return reply(cjt188.read_request(0x10, ADDRESS, 2018), meter_data(total, st1=st1), ADDRESS)


def test_flow_is_derived_from_the_total_between_polls():
    uart = ScriptedUart([_meter(100.00), _meter(100.05), _meter(100.04), _meter(100.10)])
    m, agent = Master(uart, BUS, 11), FakeAgent()
    assert m.read(0, 0, 0, 0, (), agent) == {"total": 100.0}       # the first poll: flow unknown
    agent.t += 60
    assert m.read(0, 0, 0, 0, (), agent) == {"total": 100.05, "flow": pytest.approx(3.0)}
    agent.t += 60
    assert m.read(0, 0, 0, 0, (), agent) == {"total": 100.04}      # backwards: no negative flow
    agent.t += 120
    assert m.read(0, 0, 0, 0, (), agent)["flow"] == pytest.approx(0.06 * 3600 / 120)
    assert uart.sent[0] == frame(VECTORS["requests"][0])
    assert m.counts["ok"] == 4


def test_battery_low_and_the_valve_are_reported_once_an_episode():
    states = [0, 4, 4, 5, 5, 0, 3, 4]      # ST1: battery low (D2), valve closed (01), abnormal (11)
    uart = ScriptedUart([_meter(1.0, st1) for st1 in states])
    m, agent = Master(uart, BUS, 11), FakeAgent()
    for _ in states:
        m.read(0, 0, 0, 0, (), agent)
        agent.t += 60
    assert agent.events == [(0x15, (6, 2, 0)), (0x15, (7, 0, 0)), (0x15, (8, 0, 0)), (0x15, (6, 2, 0))]


def test_faults_are_retried_counted_by_kind_and_an_error_reply_is_not_retried():
    good = _meter(5.0)
    bad_cs = good[:-2] + bytes((good[-2] ^ 1, 0x16))
    error = reply(cjt188.read_request(0x10, ADDRESS, 2018), b"\x01\x00", ADDRESS, error=True)
    uart = ScriptedUart([None, bad_cs, good[:25], good, error])
    m = Master(uart, BUS, 11)
    with pytest.raises(ChecksumError):
        m.read_meter()                        # silence, then a bad checksum: both attempts spent
    assert m.read_meter()[0] == 5.0           # cut short, then whole
    with pytest.raises(ErrorReply) as err:
        m.read_meter()
    assert err.value.code == 1 and not uart.answers
    assert m.counts == {"ok": 1, "timeout": 1, "crc": 1, "exception": 1, "frame": 1}


def test_a_meter_on_a_pty_read_by_the_agents_master(tmp_path):
    from edge.hal import cpython as hal
    rows = [(0, {"total": 147.969}), (60, {"total": 148.02, "valve": 1})]
    trace = scenarios.write(str(tmp_path / "t.jsonl.gz"), {"trace": "t", "profile": "water_meter",
                                                           "start": scenarios.START}, rows)
    stop, ready = threading.Event(), threading.Event()
    with VirtualBus() as vbus:
        t = threading.Thread(target=run_meter, args=(trace, vbus.b, ADDRESS), daemon=True,
                             kwargs=dict(stop_event=stop, ready=ready, speed=1000))
        t.start()
        assert ready.wait(10)
        uart = hal.open_uart({"port": vbus.a, "baud": 2400})
        try:
            m = Master(uart, dict(BUS, timeout_ms=300), 11)
            assert m.read_meter()[0] == 147.97           # to 2 decimals
            time.sleep(0.1)                               # the next row, a minute later at 1000x
            total, _, clock, st1, _ = m.read_meter()
            assert (total, st1, clock[:4]) == (148.02, 1, (2026, 3, 2, 8))
            with pytest.raises(Timeout):
                Master(uart, dict(BUS, address="78330011223345", retries=0), 11).read_meter()
        finally:
            uart.close()
            stop.set()
            t.join(5)


# ---------------------------------------------------------------- config and valve
GOOD = {"device_id": "wm-0001", "secret": "00112233445566778899aabbccddeeff", "profile": "water_meter",
        "bus": {"port": "/dev/ttyUSB0", "protocol": "cjt188", "address": ADDRESS},
        "broker": {"host": "127.0.0.1"}}


def test_config_defaults_for_a_cjt188_meter():
    bus = validate(copy.deepcopy(GOOD))["bus"]
    assert (bus["baud"], bus["parity"], bus["stop"]) == (2400, "E", 1)
    assert (bus["meter_type"], bus["di_order"]) == (0x10, 2004)
    assert "map" not in validate(copy.deepcopy(GOOD)) or validate(copy.deepcopy(GOOD))["map"] is None


@pytest.mark.parametrize("mutate,message", [
    (lambda c: c["bus"].pop("address"), "config.bus.address: required"),
    (lambda c: c["bus"].update(address="12345"), "config.bus.address: a CJ/T 188 address is 14 digits"),
    (lambda c: c["bus"].update(address=78330011223344), "config.bus.address: must be str"),
    (lambda c: c["bus"].update(di_order=2010), "config.bus.di_order: 2010 is not one of 2004"),
    (lambda c: c["bus"].update(di_order="2004"), "config.bus.di_order: must be int"),
    (lambda c: c["bus"].update(meter_type=0x99), "config.bus.meter_type"),
    (lambda c: c["bus"].update(protocol="mbus"), "config.bus.protocol: 'mbus' is not one of modbus, cjt188"),
    (lambda c: c.update(profile="noise"), "config.bus.protocol: cjt188 reads household water meters"),
    (lambda c: c["bus"].update(protocol="modbus"), "config.bus.address: a CJ/T 188 meter's, only with"),
])
def test_a_bad_cjt188_field_is_named(mutate, message):
    cfg = copy.deepcopy(GOOD)
    mutate(cfg)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(cfg)


def test_valve_commands_only_where_the_config_allows_them():
    bus = validate(copy.deepcopy(GOOD))["bus"]
    with pytest.raises(ValueError, match="valve_control"):
        valve_request(bus, False)
    bus["valve_control"] = True
    close = valve_request(bus, False)
    t, addr, c, body = cjt188.parse(close)
    assert (t, addr, c, body) == (0x10, cjt188.address_bytes(ADDRESS), 0x04, b"\xa0\x17\x00\x99")
    assert cjt188.parse(valve_request(bus, True))[3][-1] == 0x55
    assert "edge/cjt188_tools.py" in runtime.NOT_ON_BOARDS


# ---------------------------------------------------------------- end to end
def test_a_cjt188_meters_continuous_flow_reaches_the_platform(tmp_path):
    # the agent as shipped (.mpy, 96k) reads a simulated meter over a pty at 2400 baud;
    # the detector's run shortened to 10 minutes of trace (a minute a second)
    water = scenarios.write(str(tmp_path / "water.jsonl.gz"), *scenarios.water_meter(seconds=3600, flow_from=180))
    device = Device("wm-cjt", "water_meter", water, speed=60, heap=runtime.AGENT_HEAP,
                    site={"resolution": 0.01}, params={"cf_s": 600},
                    bus={"protocol": "cjt188", "address": ADDRESS, "di_order": 2018})
    with Site(str(tmp_path / "site"), [device]) as site:
        events = site.wait_for(lambda ev: [e for e in ev if e["type"] == "water.continuous_flow"], timeout=50)
        log = site.log_of("agent-wm-cjt")
    running = [e for e in events if e["type"] == "water.continuous_flow" and e["action"] == "raise"]
    assert running, "no continuous-flow alarm reached the platform:\n" + log[-2000:]
    assert running[0]["values"]["flow"] > 0.1
    telemetry = [e for e in events if e["type"] == "telemetry.water_meter"]
    assert telemetry and telemetry[0]["values"]["total"] == pytest.approx(147.97, abs=0.01)
    assert telemetry[0]["values"]["battery"] is None
    assert not [e for e in events if e["type"] == "device.comm_fault"], "bus faults on a good meter"
