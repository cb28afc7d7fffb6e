"""edge.bus end to end on a real serial line: the pymodbus trace simulator (tools.testbench.simulate) on
one side of a socat pty pair, the edge Master on the other, under the MicroPython unix port
(a subprocess printing JSON) and under CPython with pyserial."""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import threading
import time

import pytest

from edge import mapcheck, reads, regmap
from edge.bus import Master
from edge.hal import cpython as hal
from edge.modbus import CrcError, FrameError, ModbusException, ModbusTimeout
from edge.modbus_write import write_multiple_request, write_single_request
from tools.common import runtime
from tools.testbench.simulate import run_simulator
from tools.testbench.vbus import VirtualBus

TIMEOUT_MS = 150
RETRIES = 2
ELEVATOR = {"mode": 0, "dir": -1, "speed": 1.62, "floor": -2, "door": 0, "zone": 1, "occupied": 1, "fault": 7}
WATER = {"total": 1248.299, "flow": 0.3035, "battery": 3.56}
# each profile on its own bus; the water meter sends floats word-swapped, like a TUF-2000M
SITES = {"elevator": (ELEVATOR, "ABCD"), "water_meter": (WATER, "CDAB")}


def profile_read(profile: str, order: str | None = None) -> tuple:
    """(function, first, count, table) of the one read of a profile's shipped map."""
    _, fc, first, count, table = reads.blocks(mapcheck.read_map(profile)["fields"], order)[0]
    return fc, first, count, table


TABLE = profile_read("elevator")[3]


def write_trace(path, profile: str, rows: list[tuple[float, dict | None]]) -> str:
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"trace": "test", "profile": profile, "period_s": 1}) + "\n")
        for t, r in rows:
            f.write(json.dumps({"t": t, "r": r}) + "\n")
    return str(path)


class Slave:
    """A simulator thread serving one end of a fresh virtual bus."""

    def __init__(self, tmp, profile: str, rows, order: str = "ABCD", **kw) -> None:
        self.bus = VirtualBus().start()
        self.faults: dict[str, int] = {}
        self.stop_event = threading.Event()
        ready = threading.Event()
        trace = write_trace(tmp / (profile + ".jsonl.gz"), profile, rows)
        self.thread = threading.Thread(target=run_simulator, args=(profile, trace, self.bus.b), kwargs=dict(
            stop_event=self.stop_event, faults=self.faults, order=order, ready=ready, **kw), daemon=True)
        self.thread.start()
        if not ready.wait(10):
            self.close()
            raise RuntimeError("simulator did not open " + self.bus.b)

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        self.bus.stop()


@pytest.fixture(scope="module", autouse=True)
def tools_present():
    # the rig is the point of these tests: missing parts fail, they do not skip
    assert shutil.which("socat"), "socat is not installed: run `make setup`"
    runtime.micropython()


@pytest.fixture(scope="module")
def slaves(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bus")
    made = {name: Slave(tmp, name, [(0, reading)], order) for name, (reading, order) in SITES.items()}
    yield made
    for s in made.values():
        s.close()


@pytest.fixture()
def slave(slaves):
    s = slaves["elevator"]
    s.faults.clear()
    yield s
    s.faults.clear()


@pytest.fixture()
def master(slave):
    uart = hal.open_uart({"port": slave.bus.a, "baud": 9600, "parity": "E"})
    yield Master(uart, 9600, timeout_ms=TIMEOUT_MS, retries=RETRIES)
    uart.close()


MP_SCRIPT = """
import json, sys
from edge import hal, mapcheck, modbus, reads, regmap
from edge.bus import Master
port, profile, order, ops = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
probe, fc, first, count, table = reads.blocks(mapcheck.read_map(profile)["fields"], order)[0]
m = Master(hal.open_uart({"port": port, "baud": 9600, "parity": "E"}), 9600, %d, %d)
for op in ops:
    try:
        words = m.read_registers(1, fc, first, count)
        out = {"reading": regmap.decode(table, words, order, first)}
    except modbus.ModbusError as e:
        out = {"error": type(e).__name__, "kind": e.kind, "code": getattr(e, "code", 0)}
    print(json.dumps(out))
print(json.dumps({"counts": m.counts}))
""" % (TIMEOUT_MS, RETRIES)


def run_micropython(tmp_path, port: str, profile: str, order: str, ops: int) -> list[dict]:
    script = tmp_path / "poll.py"
    script.write_text(MP_SCRIPT)
    out = subprocess.run([runtime.micropython(), "-X", "heapsize=256k", str(script), port, profile, order,
                          ",".join(["read"] * ops)],
                         env=runtime.micropython_env(), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr + out.stdout
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.mark.parametrize("profile", SITES)
def test_micropython_reads_and_decodes_the_profile_block(slaves, tmp_path, profile):
    reading, order = SITES[profile]
    lines = run_micropython(tmp_path, slaves[profile].bus.a, profile, order, 2)
    assert lines[0] == lines[1] == {"reading": reading}
    assert lines[2]["counts"]["ok"] == 2


@pytest.mark.parametrize("profile", SITES)
def test_cpython_reads_and_decodes_the_profile_block(slaves, profile):
    reading, order = SITES[profile]
    uart = hal.open_uart({"port": slaves[profile].bus.a, "baud": 9600, "parity": "E"})
    try:
        m = Master(uart, 9600, timeout_ms=TIMEOUT_MS, retries=RETRIES)
        fc, first, count, table = profile_read(profile, order)
        assert regmap.decode(table, m.read_registers(1, fc, first, count)) == reading
        assert m.counts["ok"] == 1
    finally:
        uart.close()


def test_micropython_sees_the_distinct_errors(slave, tmp_path):
    slave.faults.update(bad_crc=RETRIES + 1, exception=1)
    lines = run_micropython(tmp_path, slave.bus.a, "elevator", "ABCD", 3)
    assert lines[0] == {"error": "CrcError", "kind": 2, "code": 0}
    assert lines[1] == {"error": "ModbusException", "kind": 3, "code": 4}
    assert lines[2] == {"reading": ELEVATOR}
    assert lines[3]["counts"] == {"ok": 1, "timeout": 0, "crc": RETRIES + 1, "exception": 1, "frame": 0}


def test_first_register_is_wire_address_0(master):
    # pymodbus' SimData addresses are wire addresses (the old ModbusSequentialDataBlock's
    # "first address 1" is its own off-by-one); past the block the slave says 02
    assert master.read_registers(1, 3, 0, 1) == [0]                 # mode
    assert master.read_registers(1, 3, 3, 1) == [0xFFFE]            # floor -2 at address 3
    with pytest.raises(ModbusException) as info:
        master.read_registers(1, 3, 0, 9)
    assert info.value.code == 2 and info.value.name == "illegal data address"


def test_exception_response_is_not_retried(master, slave):
    # one faulty reply: a retry would have got the good one and returned values
    slave.faults["exception"] = 1
    with pytest.raises(ModbusException) as info:
        master.read_registers(1, 3, 0, 8)
    assert (info.value.code, info.value.kind) == (4, 3)
    assert master.counts == {"ok": 0, "timeout": 0, "crc": 0, "exception": 1, "frame": 0}
    assert regmap.decode(TABLE, master.read_registers(1, 3, 0, 8)) == ELEVATOR


def test_bad_crc_raises_after_retries(master, slave):
    slave.faults["bad_crc"] = RETRIES + 1
    with pytest.raises(CrcError):
        master.read_registers(1, 3, 0, 8)
    assert master.counts["crc"] == RETRIES + 1
    assert master.last_error.kind == 2


def test_retry_recovers_from_one_bad_reply(master, slave):
    slave.faults.update(bad_crc=1, garbage=1)
    assert regmap.decode(TABLE, master.read_registers(1, 3, 0, 8)) == ELEVATOR
    assert master.counts["ok"] == 1 and master.counts["crc"] + master.counts["frame"] == 2


@pytest.mark.parametrize("fault", ["short", "wrong_slave"])
def test_malformed_replies_are_frame_errors(master, slave, fault):
    slave.faults[fault] = RETRIES + 1
    with pytest.raises(FrameError):
        master.read_registers(1, 3, 0, 8)
    assert master.counts["frame"] == RETRIES + 1


def test_silence_times_out_within_the_budget(master, slave):
    slave.faults["silence"] = RETRIES + 1
    t = time.monotonic()
    with pytest.raises(ModbusTimeout):
        master.read_registers(1, 3, 0, 8)
    took = time.monotonic() - t
    # per attempt the Master also allows the reply's transmit time (~25 ms) and listens
    # for a quiet line (~25 ms) before retrying; the rest of the slack is a busy machine
    budget = TIMEOUT_MS * (RETRIES + 1) / 1000
    assert budget <= took < budget + 0.5
    assert master.counts["timeout"] == RETRIES + 1


def test_other_slave_ids_get_no_answer(master):
    with pytest.raises(ModbusTimeout):
        master.read_registers(2, 3, 0, 8)


def test_writes_echo_and_read_back(master):
    # registers 5..7 writable, as a map's "writable" [{"address": 5, "count": 3}] makes them
    master.writable = mapcheck.writable({"writable": [{"address": 5, "count": 3, "probe": 0}]}, [1])
    assert master.transact(write_single_request(1, 7, 99)) == (7, 99)
    assert master.transact(write_multiple_request(1, 5, [0, 1])) == (5, 2)
    assert master.read_registers(1, 3, 5, 3) == [0, 1, 99]
    assert master.transact(write_single_request(1, 7, 7)) == (7, 7)


@pytest.mark.parametrize("writable, request_", [
    ((), write_single_request(1, 7, 99)),                       # nothing writable: the default
    (((1, 5, 8),), write_multiple_request(1, 6, [1, 2, 3])),    # runs past the writable range
    (((1, 5, 8),), write_single_request(2, 5, 1)),              # another slave
    (((1, 5, 8),), write_single_request(0, 5, 1)),              # a broadcast
    (((1, 5, 8),), bytes.fromhex("010500070000")),              # a coil (FC 05): a map holds registers
])
def test_writes_the_map_does_not_allow_never_reach_the_wire(master, slave, writable, request_):
    master.writable = writable
    before = master.read_registers(1, 3, 0, 8)
    slave.faults["silence"] = 1     # the slave's next reply withheld: consumed by any request it hears
    with pytest.raises(ValueError, match="not writable"):
        master.transact(request_)
    time.sleep(0.05)
    assert slave.faults.pop("silence") == 1                                     # nothing was sent
    assert master.read_registers(1, 3, 0, 8) == before                          # nothing changed


def test_trace_rows_drive_the_slave(tmp_path):
    # speed 10: the device answers, goes silent (r null) at 1 s, answers again at 2 s.
    # Before its first row is due the slave already holds that row.
    moved = dict(ELEVATOR, floor=5, speed=None)
    anchor = time.time() + 0.5
    s = Slave(tmp_path, "elevator", [(0, ELEVATOR), (10, None), (20, moved)], speed=10.0, anchor=anchor)
    uart = hal.open_uart({"port": s.bus.a, "baud": 9600})
    try:
        m = Master(uart, 9600, timeout_ms=TIMEOUT_MS, retries=0)
        assert regmap.decode(TABLE, m.read_registers(1, 3, 0, 8)) == ELEVATOR
        time.sleep(max(0.0, anchor + 1.2 - time.time()))
        with pytest.raises(ModbusTimeout):
            m.read_registers(1, 3, 0, 8)
        time.sleep(max(0.0, anchor + 2.2 - time.time()))
        # a null field keeps its last value
        assert regmap.decode(TABLE, m.read_registers(1, 3, 0, 8)) == dict(ELEVATOR, floor=5)
    finally:
        uart.close()
        s.close()
