"""Simulated Modbus RTU slave on a serial port (a socat pty): a pymodbus 3.16 serial server
whose registers follow a corpus trace, encoded by a register map (the profile's, or any
map: a shipped one's name or a file, edge/maps and docs/register-maps.md). A trace field
the map lacks is not served; a map field the trace lacks reads 0.

Trace semantics (corpus/README.md): rows are played at `speed` x real time, trace time 0
being due at `anchor` (Unix time; default: the first row plays at once and holds until the
next is due). A row with `"r": null` makes the slave silent (no reply at all) until the next answered
row, so the master sees a timeout, as on a dead bus. A field that is null keeps its last
value (0 before the first one): one failed field cannot be told apart on a real block read,
and an invented out-of-range value would look like a glitch the trace never had. Missing
lines (gaps) hold the previous row. After the last row the slave keeps its last state.

Faults, for tests: `faults` is a dict of counts, e.g. {"bad_crc": 3}, consumed one per reply
in FAULTS order (the caller may add to it while the server runs), or a callable
f(request_pdu_bytes) -> fault name or None. Every fault is real bytes on the pty:
  silence     no reply                                   -> master: ModbusTimeout
  bad_crc     the reply with its CRC flipped             -> CrcError
  garbage     random bytes of the reply's length         -> CrcError (or FrameError)
  short       the reply cut in half                      -> FrameError
  wrong_slave a valid reply from another slave id        -> FrameError
  exception   exception response 04 (device failure)     -> ModbusException(code=4)
Reads outside the map's blocks get pymodbus' own exception 02 (illegal data address).
Holding and input registers are one space (FC 03 and 04 read the same words).

--protocol cjt188 serves a CJ/T 188 water meter at --address instead (its total from
the trace, tools/testbench/cjt188_meter.py), with the faults that make sense there.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import asyncio
import gzip
import json
import os
import threading
import time
from typing import Any, Callable

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge import line, modbus, reads, regmap
from edge.config import ConfigError
from edge.profiles import NAMES
from tools.common.rs485 import load_map
from tools.testbench import slave
from edge.hal.cpython import is_pty
from tools.testbench.vbus import VirtualBus

FAULTS = ("silence", "bad_crc", "garbage", "short", "wrong_slave", "exception")


class TracePlayer:
    """The slave's register image at the current (scaled) trace time."""

    def __init__(self, blocks, trace_path: str, speed: float = 1.0, anchor: float | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be above 0, not {speed}")
        self.speed = speed
        # the map's reads (edge.reads.blocks): (probe, function, first, count, table)
        self.blocks = blocks
        self._file = gzip.open(trace_path, "rt")
        self.header = json.loads(self._file.readline())
        self._next = self._read_row()
        # anchor: the Unix time at which trace time 0 is due, shared with the agents of a
        # simulated site; by default the first row is due now
        first_t = self._next["t"] if self._next else 0.0
        self.anchor = anchor if anchor is not None else time.time() - first_t / speed
        self.t = first_t            # trace time of the row in force
        self.silent = False
        self.values: dict[str, Any] = {}
        self.words = [[0] * b[3] for b in self.blocks]     # a block's words, in self.blocks' order
        self.version = 0            # bumped when words change, so writes survive until then
        # the first row holds from start-up, so a master polling before it is due sees a device
        self.advance(max(first_t, self.trace_time()))

    def _read_row(self) -> dict | None:
        line = self._file.readline()
        while line and not line.strip():
            line = self._file.readline()
        return json.loads(line) if line else None

    def trace_time(self) -> float:
        return (time.time() - self.anchor) * self.speed

    def advance(self, now: float | None = None) -> None:
        """Apply every row due by trace time `now` (default: the clock's); cheap when none is."""
        if now is None:
            now = self.trace_time()
        row = None
        while self._next is not None and self._next["t"] <= now:
            row = self._next
            self._apply(row)
            self._next = self._read_row()
        if row is not None:
            self.t = row["t"]
            if not self.silent:
                self.words = [slave.encode(b[4], self.values) for b in self.blocks]
                self.version += 1

    def _apply(self, row: dict) -> None:
        r = row["r"]
        self.silent = r is None
        if r is not None:
            for k, v in r.items():
                if v is not None:
                    self.values[k] = v

    def close(self) -> None:
        self._file.close()


class FaultPlan:
    """Which fault, if any, the next reply carries."""

    def __init__(self, faults: dict[str, int] | Callable[[bytes], str | None] | None) -> None:
        if isinstance(faults, dict):
            unknown = set(faults) - set(FAULTS)
            if unknown:
                raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
        self.faults = faults

    def next(self, request: bytes) -> str | None:
        f = self.faults
        if f is None:
            return None
        if callable(f):
            return f(request)
        for name in FAULTS:
            if f.get(name, 0) > 0:
                f[name] -= 1
                return name
        return None


def corrupt(fault: str | None, reply: bytes) -> bytes:
    """The bytes a faulty slave puts on the line instead of `reply`."""
    if fault is None:
        return reply
    if fault == "silence":
        return b""
    if fault == "bad_crc":
        return reply[:-2] + bytes((reply[-2] ^ 0xFF, reply[-1]))
    if fault == "garbage":
        return os.urandom(len(reply))
    if fault == "short":
        return reply[: len(reply) // 2]
    if fault == "wrong_slave":
        return modbus.seal(bytes((reply[0] % 247 + 1,)) + reply[1:-2])
    if fault == "exception":
        return slave.exception_response(reply[0], reply[1] & 0x7F, 4)
    raise ValueError(f"unknown fault {fault!r}")


class SimulatedSlave:
    """Glue between pymodbus and the trace: refresh registers on each access, and decide
    on the way out whether the reply is sent, mangled or withheld."""

    def __init__(self, player: TracePlayer, slave: int | tuple[int, ...], faults=None) -> None:
        self.player = player
        # the slave id of each probe (one id for a one-probe map)
        self.slaves = (slave,) if isinstance(slave, int) else tuple(slave)
        self.slave = self.slaves[0]
        self.plan = FaultPlan(faults)
        self.polls = 0
        self.sent: list[str | None] = []   # fault applied per reply, for tests and logs
        self._request = b""
        self._version = [-1] * len(player.blocks)

    def _action(self, probe: int):
        async def action(fc, start_address, address, count, registers, set_values):
            # pymodbus calls this before it touches `registers`; a new trace row overwrites
            # them, otherwise a master's write stays readable (FC 06 reads its value back)
            p = self.player
            p.advance()
            if p.version != self._version[probe]:
                self._version[probe] = p.version
                for b, (pr, _, first, n, _) in enumerate(p.blocks):
                    if pr == probe:
                        i = first - start_address
                        registers[i: i + n] = p.words[b]
            return None
        return action

    def trace_pdu(self, sending: bool, pdu):
        # on RS-485 a slave ignores frames for other ids; pymodbus would answer them
        if not sending and pdu.dev_id != 0 and pdu.dev_id not in self.slaves:
            return None
        return pdu

    def trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._request = data
            return data
        self.polls += 1
        self.player.advance()
        fault = "silence" if self.player.silent else self.plan.next(self._request)
        self.sent.append(fault)
        del self.sent[:-100]
        return corrupt(fault, data)

    def device(self) -> SimDevice | list[SimDevice]:
        p = self.player
        probes: dict[int, list[SimData]] = {}
        for b, (probe, _, first, _, _) in enumerate(p.blocks):
            probes.setdefault(probe, []).append(SimData(first, values=list(p.words[b]), datatype=DataType.REGISTERS))
        devices = [SimDevice(id=self.slaves[probe], simdata=sorted(data, key=lambda d: d.address),
                             action=self._action(probe)) for probe, data in sorted(probes.items())]
        return devices[0] if len(devices) == 1 else devices


async def serve(slave_sim: SimulatedSlave, port: str, baud: int = line.BAUD, parity: str = line.PARITY,
                stop: int | None = None, stop_event: threading.Event | None = None,
                ready: threading.Event | None = None) -> None:
    stop = line.stop_bits(parity, stop)
    if is_pty(port):
        parity = "N"     # a pty has no parity (edge/hal/cpython.py does the same)
    server = ModbusSerialServer(
        slave_sim.device(), framer=FramerType.RTU, port=port, baudrate=baud,
        parity=parity, stopbits=stop, broadcast_enable=True,
        trace_packet=slave_sim.trace_packet, trace_pdu=slave_sim.trace_pdu)
    await server.serve_forever(background=True)
    if ready is not None:
        ready.set()
    try:
        if stop_event is None:
            await asyncio.Event().wait()
        else:
            await asyncio.to_thread(stop_event.wait)
    finally:
        await server.shutdown()


def run_simulator(profile: str | None, trace_path: str, port: str, speed: float = 1.0, slave: int | None = None,
                  baud: int = line.BAUD, stop_event: threading.Event | None = None, faults=None,
                  order: str | None = None, parity: str = line.PARITY, ready: threading.Event | None = None,
                  anchor: float | None = None, map: str | dict | None = None) -> SimulatedSlave:
    """Serve until stop_event is set (forever if None). Blocking: run it in a thread or
    process. ready, if given, is set once the port is open. anchor: Unix time of trace
    time 0 (default: the first row is due at once). map: a checked map, a shipped map's
    name or a map file (default: the profile's); order: the word order, over the map's;
    slave: the id (a map of several probes answers as its slaves, or as the ids given)."""
    m = map if isinstance(map, dict) else load_map(map, profile)
    player = TracePlayer(reads.blocks(m["fields"], order), trace_path, speed, anchor)
    if len(m["slaves"]) > 1:
        slave = slave if isinstance(slave, (tuple, list)) else m["slaves"]
    elif slave is None:
        slave = m["slaves"][0]
    sim = SimulatedSlave(player, slave, faults)
    try:
        asyncio.run(serve(sim, port, baud, parity, None, stop_event, ready))
    finally:
        player.close()
    return sim


@contextlib.contextmanager
def serving(profile: str | None, trace_path: str, directory: str | None = None, **kwargs):
    """A virtual bus (socat ptys) whose far end run_simulator serves from a thread until
    the block ends; yields the bus, whose .a is the master's end. kwargs: run_simulator's."""
    stop_event, ready = threading.Event(), threading.Event()
    with VirtualBus(directory) as bus:
        t = threading.Thread(target=run_simulator, args=(profile, trace_path, bus.b),
                             kwargs=dict(kwargs, stop_event=stop_event, ready=ready), daemon=True)
        t.start()
        try:
            if not ready.wait(10):
                raise RuntimeError("the simulator did not open " + bus.b)
            yield bus
        finally:
            stop_event.set()
            t.join(10)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--protocol", choices=line.PROTOCOLS, default=line.PROTOCOLS[0],
                    help="modbus (default): a slave by a register map; cjt188: a CJ/T 188 water meter at --address, "
                         "serving the trace's total (docs/cjt188.md)")
    ap.add_argument("--address", default=None,
                    help="cjt188: the meter's address, 14 digits (maker, then meter number), e.g. 78330011223344")
    ap.add_argument("--profile", choices=NAMES, help="the device's profile (its map, unless --map)")
    ap.add_argument("--map", help="the register map to serve: a shipped map's name (edge/maps) or a map file")
    ap.add_argument("--trace", required=True, help="trace to play (.jsonl.gz, corpus format)")
    ap.add_argument("--port", required=True, help="serial port the slave serves, e.g. the B side of a socat pair")
    ap.add_argument("--speed", type=float, default=1.0, help="trace seconds per real second (default 1)")
    ap.add_argument("--slave", type=int, default=None,
                    help="slave id (default: the map's; a map of several probes answers as its slaves)")
    ap.add_argument("--baud", type=int, default=None,
                    help="baud rate (default: the protocol's, %d for modbus, %d for cjt188)" % (
                        line.baud(), line.baud("cjt188")))
    ap.add_argument("--parity", choices=line.PARITIES, default=line.PARITY, help="parity (default %(default)s)")
    ap.add_argument("--anchor", type=float, default=None,
                    help="Unix time at which trace time 0 is due (default: the first row plays at once)")
    ap.add_argument("--order", choices=regmap.ORDERS, default=None,
                    help="word/byte order of 32-bit registers (default: the map's, else ABCD)")
    ap.add_argument("--faults", metavar="KIND=N,...", default="",
                    help="misbehave on the next N replies of each kind, in this order: %s "
                         "(e.g. bad_crc=2,exception=2)" % ", ".join(FAULTS))


def parse_faults(text: str) -> dict[str, int] | None:
    if not text:
        return None
    faults = {}
    for item in text.split(","):
        name, _, n = item.partition("=")
        if name not in FAULTS or not n.isdigit():
            raise ValueError("--faults: %r is not KIND=N with KIND one of %s" % (item, ", ".join(FAULTS)))
        faults[name] = int(n)
    return faults


def run(args: argparse.Namespace) -> int:
    if not args.speed > 0:
        print("edgectl simulate: --speed must be above 0", file=sys.stderr)
        return 2
    if not os.path.exists(args.trace):
        print("edgectl simulate: no trace at %s" % args.trace, file=sys.stderr)
        return 2
    try:
        faults = parse_faults(args.faults)
    except ValueError as e:
        print("edgectl simulate: %s" % e, file=sys.stderr)
        return 2
    baud = args.baud or line.baud(args.protocol)
    if args.protocol == "cjt188":
        return _run_meter(args, faults, baud)
    if not (args.profile or args.map):
        print("edgectl simulate: give --profile, --map or both", file=sys.stderr)
        return 2
    try:
        m = load_map(args.map, args.profile)
    except ConfigError as e:
        print("edgectl simulate: %s" % e, file=sys.stderr)
        return 2
    slaves = m["slaves"] if len(m["slaves"]) > 1 else [args.slave or m["slaves"][0]]
    print("simulate: %s trace %s on %s, slave %s, %d baud, speed %g"
          % (args.map or args.profile, os.path.basename(args.trace), args.port, ",".join(map(str, slaves)),
             baud, args.speed), flush=True)
    try:
        run_simulator(args.profile, args.trace, args.port, args.speed, args.slave, baud,
                      order=args.order, parity=args.parity, anchor=args.anchor, faults=faults, map=m)
    except KeyboardInterrupt:
        pass
    return 0


def _run_meter(args: argparse.Namespace, faults: dict[str, int] | None, baud: int) -> int:
    from edge import cjt188
    from tools.testbench.cjt188_meter import FAULTS as METER_FAULTS, run_meter
    try:
        cjt188.address_bytes(args.address or "")
    except ValueError as e:
        print("edgectl simulate: --address: %s" % e, file=sys.stderr)
        return 2
    if args.profile not in (None, "water_meter") or args.map:
        print("edgectl simulate: a CJ/T 188 meter is a water_meter, with no register map", file=sys.stderr)
        return 2
    if faults and set(faults) - set(METER_FAULTS):
        print("edgectl simulate: a CJ/T 188 meter's faults are %s" % ", ".join(METER_FAULTS), file=sys.stderr)
        return 2
    print("simulate: CJ/T 188 water meter %s, trace %s on %s, %d baud, speed %g"
          % (args.address, os.path.basename(args.trace), args.port, baud, args.speed), flush=True)
    try:
        run_meter(args.trace, args.port, args.address, args.speed, baud, faults=faults, anchor=args.anchor)
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edgectl simulate",
                                 description="Play a trace as a Modbus RTU slave, or a CJ/T 188 water meter, "
                                             "on a serial port or pty.")
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
