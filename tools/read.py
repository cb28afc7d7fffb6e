"""`edgectl read`: read one Modbus device once from this machine's RS-485 adapter and print
its decoded readings by a register map: the profile's, a shipped one (edge/maps) or a
map file (tools/common/rs485.py holds the bus; docs/register-maps.md the maps).
"""
from __future__ import annotations

import argparse
import json
import sys

from edge import line, regmap
from edge.config import ConfigError
from edge.profiles import NAMES
from tools.common.rs485 import Bus, BusError, bus_arguments, line_settings, load_map, read_device


def add_arguments(ap: argparse.ArgumentParser) -> None:
    bus_arguments(ap)
    ap.add_argument("--baud", type=int, default=line.BAUD, help="baud rate (default: %(default)s)")
    ap.add_argument("--slave", type=int, default=None, help="slave id (default: the map's)")
    ap.add_argument("--profile", choices=NAMES, help="the device's profile: its map, or the fields --map must give")
    ap.add_argument("--map", help="the register map: a shipped map's name (edge/maps) or a map file")
    ap.add_argument("--word-order", choices=regmap.ORDERS, default=None,
                    help="order of the bytes of 32-bit values (default: the map's, else ABCD)")


def run(args: argparse.Namespace) -> int:
    def fail(why: str) -> int:
        print(json.dumps({"error": why}) if args.json else "edgectl read: %s" % why,
              file=sys.stdout if args.json else sys.stderr)
        return 1

    if not (args.profile or args.map):
        return fail("give --profile, --map or both")
    try:
        m = load_map(args.map, args.profile)
    except ConfigError as e:
        return fail(str(e))
    try:
        with Bus(args.port, args.baud, args.parity, args.stop_bits, args.timeout) as bus:
            reading = read_device(bus, args.slave, m, args.word_order)
    except BusError as e:
        return fail(str(e))
    slaves = m["slaves"] if len(m["slaves"]) > 1 else [args.slave or m["slaves"][0]]
    what = args.map or args.profile
    if args.json:
        print(json.dumps({"slave": slaves[0], "slaves": slaves, "map": what, "profile": args.profile,
                          "reading": reading}))
        return 0
    print("slave %s (%s) on %s at %s:" % (",".join(map(str, slaves)), what, args.port,
                                          line_settings(args.baud, args.parity, args.stop_bits)))
    seen = set()
    for f in m["fields"]:
        name = f["name"]
        print("  %-14s %-12s (%sregister %d, %s x %g%s)" % (
            name if name not in seen else "", reading.get(name) if name not in seen else "+",
            "slave %d " % slaves[f["probe"]] if len(slaves) > 1 else "", f["address"], f["type"], f["scale"],
            ", " + f["unit"] if f.get("unit") else ""))
        seen.add(name)
    return 0
