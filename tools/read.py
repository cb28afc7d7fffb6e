"""`edgectl read`: read one Modbus device once from this machine's RS-485 adapter and print
its decoded readings (tools/common/rs485.py holds the bus).
"""
from __future__ import annotations

import argparse
import json
import sys

from edge import line, regmap
from edge.profiles import NAMES
from tools.common.rs485 import Bus, BusError, bus_arguments, line_settings, read_device
from tools.common.rs485 import load_profile

def add_arguments(ap: argparse.ArgumentParser) -> None:
    bus_arguments(ap)
    ap.add_argument("--baud", type=int, default=line.BAUD, help="baud rate (default: %(default)s)")
    ap.add_argument("--slave", type=int, default=1, help="slave id (default: 1)")
    ap.add_argument("--profile", required=True, choices=NAMES, help="the device's register map")
    ap.add_argument("--word-order", choices=regmap.ORDERS, default=regmap.ORDERS[0],
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
