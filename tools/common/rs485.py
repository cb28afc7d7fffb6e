"""The sensor bus from the installer's laptop (a USB RS-485 adapter, pymodbus + pyserial):
the bus `edgectl read` (tools/read.py) and `edgectl scan` (tools/scan.py) use. pymodbus
is a second, independent Modbus implementation,
so a fault it confirms is on the wire, not in our agent.
"""
from __future__ import annotations

import argparse
import json
import logging
import os

from edge import config, line, mapcheck, reads, regmap
from edge.hal.cpython import is_pty


def shipped_maps() -> list[str]:
    """The names of the maps the project ships (edge/maps)."""
    return sorted(f[:-5] for f in os.listdir(mapcheck._maps_dir()) if f.endswith(".json"))


def load_map(spec: str | None = None, profile: str | None = None) -> dict:
    """A register map, checked (edge.mapcheck.check_map): a map file, a shipped map's name
    (edge/maps), or by default the profile's own; with a profile, one that gives the
    profile's fields. Raises edge.config.ConfigError naming what is wrong."""
    if spec and (os.sep in spec or spec.endswith(".json")):
        try:
            with open(spec) as fh:
                m = json.load(fh)
        except (OSError, ValueError) as e:
            raise config.ConfigError("%s: cannot read the map (%s)" % (spec, e)) from None
        return mapcheck.profile_map(profile, m, spec) if profile else mapcheck.check_map(m, spec)
    if spec and spec not in shipped_maps():
        raise config.ConfigError("map %r: no such map file or shipped map; shipped: %s" % (
            spec, ", ".join(shipped_maps())))
    return mapcheck.profile_map(profile, spec, "map") if profile else mapcheck.read_map(spec)


class BusError(Exception):
    """The bus could not be used; the message says what to check."""


def line_settings(baud: int, parity: str, stop: int | None) -> str:
    return "%d %d%s%d" % (baud, line.DATA_BITS, parity, line.stop_bits(parity, stop))


def no_answer(slave: int, port: str, baud: int, parity: str, stop: int | None) -> str:
    return ("no answer from slave %d on %s at %s: check the A/B wiring, the slave id (edgectl scan) "
            "and the baud rate" % (slave, port, line_settings(baud, parity, stop)))


class Bus:
    """One pymodbus RTU client on a serial port, with a short timeout and no retries."""

    def __init__(self, port: str, baud: int = line.BAUD, parity: str = line.PARITY, stop: int | None = None,
                 timeout: float = 0.3) -> None:
        from pymodbus.client import ModbusSerialClient
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        self.port, self.baud, self.parity = port, baud, parity
        self.stop = line.stop_bits(parity, stop)
        # a pty moves bytes, not bits: Linux refuses parity on one (see edge.hal.cpython)
        wire_parity = "N" if is_pty(port) else parity
        self.client = ModbusSerialClient(port, baudrate=baud, parity=wire_parity, stopbits=self.stop,
                                         timeout=timeout, retries=0)
        if not self.client.connect():
            raise BusError("cannot open %s: check that the USB RS-485 adapter is plugged in "
                           "(ls /dev/ttyUSB*) and that you may use it (the dialout group)" % port)

    def read(self, slave: int, function: int, address: int, count: int):
        """Register values, a pymodbus exception response, or None when nobody answered."""
        from pymodbus.exceptions import ModbusException
        call = self.client.read_input_registers if function == 4 else self.client.read_holding_registers
        try:
            resp = call(address, count=count, device_id=slave)
        except ModbusException:
            return None
        if resp.isError():
            return resp if hasattr(resp, "exception_code") else None
        return list(resp.registers)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Bus":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_device(bus: Bus, slave: int | None, m: dict, order: str | None = None) -> dict:
    """One poll of every field of a checked register map (load_map), decoded. Raises
    BusError. A map of several probes (water_quality) reads each at its own slave id;
    slave None: the map's. order: the word order, over the map's."""
    ids = m["slaves"] if len(m["slaves"]) > 1 else [slave or m["slaves"][0]]
    reading: dict = {}
    for probe, fc, first, count, table in reads.blocks(m["fields"], order):
        sid = ids[probe]
        result = bus.read(sid, fc, first, count)
        if result is None:
            raise BusError(no_answer(sid, bus.port, bus.baud, bus.parity, bus.stop))
        if not isinstance(result, list):
            raise BusError("slave %d refused to read %d registers from %d with FC %02d (Modbus exception %d): it is "
                           "probably not a device of this map (%s), or its register map differs" % (
                               sid, count, first, fc, result.exception_code, m.get("model") or "no model given"))
        reading.update(regmap.decode(table, result, "ABCD", first))
    return reading


VALVES = {0: "open", 1: "closed", 2: "abnormal", 3: "abnormal"}   # ST1 D1 D0 (docs/cjt188.md)


def open_meter(port: str, baud: int, parity: str, stop: int | None, timeout: float, address: str,
               order: int, meter_type: int | None = None):
    """(master, uart): a CJ/T 188 master on this machine's adapter, the agent's own
    (edge/cjt188_bus.py: there is no second CJ/T 188 implementation to check it against),
    one attempt per request. Raises BusError."""
    from edge import cjt188
    from edge.cjt188_bus import Master
    from edge.hal import cpython
    try:
        uart = cpython.UART(port, baud, parity, stop)
    except (OSError, ValueError) as e:
        raise BusError("cannot open %s (%s): check that the USB RS-485 / M-Bus adapter is plugged in "
                       "(ls /dev/ttyUSB*) and that you may use it (the dialout group)" % (port, e)) from None
    bus = {"address": address, "meter_type": cjt188.COLD_WATER if meter_type is None else meter_type,
           "di_order": order, "baud": baud, "timeout_ms": int(timeout * 1000), "retries": 0}
    return Master(uart, bus, line.char_bits(parity, stop)), uart


def meter_problem(e: Exception, what: str, port: str, baud: int, parity: str, stop: int | None) -> str:
    """What a technician should check after a CJ/T 188 error (edge.cjt188's classes)."""
    from edge import cjt188
    where = "%s at %s" % (port, line_settings(baud, parity, stop))
    if isinstance(e, cjt188.Timeout):
        return ("no answer from %s on %s: check the wiring (M-Bus or A/B), the address (edgectl scan --protocol "
                "cjt188), the baud rate (2400, else 1200) and the meter's power; a meter asleep may need more FE "
                "bytes before it wakes" % (what, where))
    if isinstance(e, cjt188.ErrorReply):
        return "%s on %s refused the read (error reply, status %04x)" % (what, where, e.code)
    return "%s on %s answered, but not a reading: %s (check the DI order, --di-order 2004 or 2018)" % (
        what, where, e)


def bus_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--port", required=True, help="the serial port of the RS-485 adapter, e.g. /dev/ttyUSB0")
    ap.add_argument("--parity", choices=line.PARITIES, default=line.PARITY, help="parity (default: %(default)s)")
    ap.add_argument("--stop-bits", type=int, choices=(1, 2), default=None,
                    help="stop bits (default: 1, or 2 without parity)")
    ap.add_argument("--timeout", type=float, default=0.3, help="seconds to wait for each answer (default: 0.3)")
    ap.add_argument("--json", action="store_true", help="print JSON")


def meter_arguments(ap: argparse.ArgumentParser) -> None:
    """The protocol, and a CJ/T 188 meter's own settings (docs/cjt188.md)."""
    from edge import cjt188
    ap.add_argument("--protocol", choices=line.PROTOCOLS, default=line.PROTOCOLS[0],
                    help="modbus (default), or cjt188: household water meters (CJ/T 188, 2400 8E1)")
    ap.add_argument("--di-order", type=int, choices=cjt188.ORDERS, default=cjt188.ORDERS[0],
                    help="cjt188: the data identifier's byte order the meter expects: 2004 (90 1F, the default) "
                         "or 2018 (1F 90); either is accepted in replies")
    ap.add_argument("--meter-type", type=lambda v: int(v, 0), default=None, metavar="T",
                    help="cjt188: the meter type, e.g. 0x10 cold water (the default)")
