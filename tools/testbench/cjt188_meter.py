"""The meter side of CJ/T 188, for the simulator, the bench and the tests: a water meter's
replies (901F metering data, its address, an error reply) built from a reading, and a
meter that answers from a trace on a serial port (a socat pty). The master side is
edge/cjt188.py and edge/cjt188_bus.py; docs/cjt188.md has the frame and its sources.

A trace row's reading gives `total` (m3; flow is the agent's to derive) and, for scripted
episodes, `valve` (ST1 D1 D0: 0 open, 1 closed, 3 abnormal) and `battery_low` (0 or 1);
a null row makes the meter silent, as simulate.TracePlayer plays it for a Modbus slave.
"""
from __future__ import annotations

import threading
import time

from edge import cjt188, cjt188_tools
from tools.testbench.simulate import FaultPlan, TracePlayer, corrupt

# what a misbehaving meter can do: simulate.FAULTS' kinds that make sense without Modbus
# (simulate.corrupt makes the first four; bad_crc spoils the checksum, where Modbus has
# its CRC's low byte), and an error reply
FAULTS = ("silence", "bad_crc", "garbage", "short", "exception")


def bcd(value: int, n: int) -> bytes:
    """n BCD bytes of value, low byte first."""
    digits = "%0*d" % (2 * n, value)
    if len(digits) > 2 * n:
        raise ValueError("%d does not fit %d BCD bytes" % (value, n))
    return bytes(reversed(bytes.fromhex(digits)))


def meter_data(total: float, settled: float | None = None, clock: tuple = (2026, 3, 2, 8, 0, 0),
               st1: int = 0, st2: int = 0, unit: int = 0x2C) -> bytes:
    """The 19 bytes of a water meter's 901F DATA: volumes in m3 with 2 decimals (unit
    0x2C) or scaled to another unit code (0x29 L .. 0x2E m3 x 100)."""
    def volume(m3: float) -> bytes:
        return bcd(round(m3 * 10 ** (2 - (unit - 0x2C))), 4) + bytes((unit,))
    y, mo, d, h, mi, s = clock
    return (volume(total) + volume(total if settled is None else settled)
            + bcd(s, 1) + bcd(mi, 1) + bcd(h, 1) + bcd(d, 1) + bcd(mo, 1) + bcd(y, 2) + bytes((st1, st2)))


def reply(request: bytes, data: bytes, address: str, meter_type: int = cjt188.COLD_WATER,
          error: bool = False, preamble: int = 2) -> bytes:
    """The meter's answer to a request frame: its own type and address, the control code
    with D7 (and D6 for an error reply, whose data is SER and the two status bytes), the
    DI as it came (in either byte order) and the SER echoed."""
    _, _, c, body = cjt188.parse(request)
    payload = bytes((body[2],)) + data if error else body[:3] + data
    head = (bytes((0x68, meter_type)) + cjt188.address_bytes(address)
            + bytes((c | 0x80 | (0x40 if error else 0), len(payload))) + payload)
    return b"\xfe" * preamble + head + bytes((sum(head) & 0xFF, 0x16))


class Meter:
    """A water meter at `address` answering read-data (901F) and read-address (810A)
    requests from the reading a TracePlayer has in force."""

    def __init__(self, player: TracePlayer, address: str, meter_type: int = cjt188.COLD_WATER, faults=None,
                 start: float = 0.0) -> None:
        self.player = player
        self.address = address
        self.wire_address = cjt188.address_bytes(address)
        self.meter_type = meter_type
        self.start = start         # Unix time of trace time 0, for the meter's clock
        self.plan = FaultPlan(faults)
        self.polls = 0

    def clock(self) -> tuple:
        tm = time.gmtime(self.start + self.player.t + 8 * 3600)    # the meter keeps China time
        return tm[:6]

    def answer(self, request: bytes) -> bytes:
        """The bytes the meter sends for one request frame (b"" when it keeps quiet)."""
        try:
            t, addr, c, body = cjt188.parse(request)
        except cjt188.Cjt188Error:
            return b""        # a meter ignores what it cannot read
        if addr not in (self.wire_address, b"\xaa" * 7) or t not in (self.meter_type, cjt188.ANY_TYPE):
            return b""        # another meter's
        self.polls += 1
        self.player.advance()
        fault = "silence" if self.player.silent else self.plan.next(request)
        di = {body[0] << 8 | body[1], body[1] << 8 | body[0]}
        if fault == "exception" or c not in (cjt188.READ_DATA, cjt188_tools.READ_ADDRESS):
            return reply(request, b"\x00\x00", self.address, self.meter_type, error=True)
        if c == cjt188_tools.READ_ADDRESS and cjt188_tools.DI_ADDRESS in di:
            return corrupt(fault, reply(request, b"", self.address, self.meter_type))
        if cjt188.DI_METER not in di:
            return reply(request, b"\x00\x00", self.address, self.meter_type, error=True)
        v = self.player.values
        st1 = (v.get("valve") or 0) & 3 | (4 if v.get("battery_low") else 0)
        data = meter_data(v.get("total") or 0.0, None, self.clock(), st1)
        return corrupt(fault, reply(request, data, self.address, self.meter_type))


def serve(meter: Meter, port: str, baud: int, stop_event: threading.Event | None = None,
          ready: threading.Event | None = None) -> None:
    """Answer requests on a serial port until stop_event is set (forever if None)."""
    import serial
    from edge.hal.cpython import is_pty
    from edge import line
    s = serial.Serial(port, baud, bytesize=line.DATA_BITS, parity="N" if is_pty(port) else line.PARITY,
                      timeout=0.02)
    if ready is not None:
        ready.set()
    buf = b""
    try:
        while stop_event is None or not stop_event.is_set():
            got = s.read(64)
            if not got:
                buf = b""      # a pause ends a frame: what was half-heard is dropped
                continue
            buf += got
            if cjt188.need(buf) == 0:
                out = meter.answer(buf)
                buf = b""
                if out:
                    s.write(out)
                    s.flush()
    finally:
        s.close()


def run_meter(trace_path: str, port: str, address: str, speed: float = 1.0, baud: int = 2400,
              stop_event: threading.Event | None = None, faults=None, ready: threading.Event | None = None,
              anchor: float | None = None) -> Meter:
    """Serve a trace as a CJ/T 188 water meter until stop_event is set (forever if None)."""
    from tools.testbench.mp_replay import parse_iso
    player = TracePlayer((), trace_path, speed, anchor)
    start = parse_iso(player.header["start"])[0] if "start" in player.header else 0.0
    meter = Meter(player, address, faults=faults, start=start)
    try:
        serve(meter, port, baud, stop_event, ready)
    finally:
        player.close()
    return meter
