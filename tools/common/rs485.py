"""The sensor bus from the installer's laptop (a USB RS-485 adapter, pymodbus + pyserial):
`edgectl read` reads one device once and prints its decoded readings; tools/scan.py
finds the slave ids that answer. pymodbus is a second, independent Modbus implementation,
so a fault it confirms is on the wire, not in our agent.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from edge import regmap
from edge.hal.cpython import is_pty
from tools.simulate import load_profile


class BusError(Exception):
    """The bus could not be used; the message says what to check."""


def line_settings(baud: int, parity: str, stop: int | None) -> str:
    return "%d 8%s%d" % (baud, parity, stop or (1 if parity != "N" else 2))


def no_answer(slave: int, port: str, baud: int, parity: str, stop: int | None) -> str:
    return ("no answer from slave %d on %s at %s: check the A/B wiring, the slave id (edgectl scan) "
            "and the baud rate" % (slave, port, line_settings(baud, parity, stop)))


class Bus:
    """One pymodbus RTU client on a serial port, with a short timeout and no retries."""

    def __init__(self, port: str, baud: int = 9600, parity: str = "E", stop: int | None = None,
                 timeout: float = 0.3) -> None:
        from pymodbus.client import ModbusSerialClient
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        self.port, self.baud, self.parity = port, baud, parity
        self.stop = stop or (1 if parity != "N" else 2)
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


def read_device(bus: Bus, slave: int, profile: str, order: str = "ABCD") -> dict:
    """One poll of a device by its profile's register map, decoded. Raises BusError."""
    prof = load_profile(profile)
    first, count = regmap.span(prof.REGISTERS)
    result = bus.read(slave, prof.FUNCTION, first, count)
    if result is None:
        raise BusError(no_answer(slave, bus.port, bus.baud, bus.parity, bus.stop))
    if not isinstance(result, list):
        raise BusError("slave %d refused to read %d registers from %d (Modbus exception %d): it is probably "
                       "not a %s device, or its register map differs" % (
                           slave, count, first, result.exception_code, profile))
    return regmap.decode(prof.REGISTERS, result, order, first)


def bus_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--port", required=True, help="the serial port of the RS-485 adapter, e.g. /dev/ttyUSB0")
    ap.add_argument("--parity", choices=("N", "E", "O"), default="E", help="parity (default: E)")
    ap.add_argument("--stop-bits", type=int, choices=(1, 2), default=None,
                    help="stop bits (default: 1, or 2 without parity)")
    ap.add_argument("--timeout", type=float, default=0.3, help="seconds to wait for each answer (default: 0.3)")
    ap.add_argument("--json", action="store_true", help="print JSON")


# ---------------------------------------------------------------- edgectl read
def add_arguments(ap: argparse.ArgumentParser) -> None:
    bus_arguments(ap)
    ap.add_argument("--baud", type=int, default=9600, help="baud rate (default: 9600)")
    ap.add_argument("--slave", type=int, default=1, help="slave id (default: 1)")
    ap.add_argument("--profile", required=True, choices=("elevator", "water_meter"), help="the device's register map")
    ap.add_argument("--word-order", choices=regmap.ORDERS, default="ABCD",
                    help="order of the bytes of 32-bit values (default: ABCD)")


def run(args: argparse.Namespace) -> int:
    try:
        with Bus(args.port, args.baud, args.parity, args.stop_bits, args.timeout) as bus:
            reading = read_device(bus, args.slave, args.profile, args.word_order)
    except BusError as e:
        print(json.dumps({"error": str(e)}) if args.json else "edgectl read: %s" % e,
              file=sys.stdout if args.json else sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"slave": args.slave, "profile": args.profile, "reading": reading}))
        return 0
    prof = load_profile(args.profile)
    print("slave %d (%s) on %s at %s:" % (args.slave, args.profile, args.port,
                                          line_settings(args.baud, args.parity, args.stop_bits)))
    for name, address, kind, scale in ((r[0], r[1], r[2], r[3]) for r in prof.REGISTERS):
        print("  %-12s %-10s (register %d, %s x %g)" % (name, reading.get(name), address, kind, scale))
    return 0
