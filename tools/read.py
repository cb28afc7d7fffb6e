"""`edgectl read`: read one Modbus device once from this machine's RS-485 adapter and print
its decoded readings by a register map: the profile's, a shipped one (edge/maps) or a
map file (tools/common/rs485.py holds the bus; docs/register-maps.md the maps). With
--protocol cjt188: one CJ/T 188 water meter's 901F reply, decoded (docs/cjt188.md).
"""
from __future__ import annotations

import argparse
import json
import sys

from edge import line, regmap
from edge.config import ConfigError
from edge.profiles import NAMES
from tools.common.rs485 import (VALVES, Bus, BusError, bus_arguments, line_settings, load_map, meter_arguments,
                                meter_problem, open_meter, read_device)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    bus_arguments(ap)
    meter_arguments(ap)
    ap.add_argument("--address", default=None,
                    help="cjt188: the meter's 14 digits, maker then meter number, e.g. 78330011223344 "
                         "(default: the wildcard, which only a meter alone on the bus may answer)")
    ap.add_argument("--baud", type=int, default=None,
                    help="baud rate (default: %d, or %d with --protocol cjt188)" % (line.baud(), line.baud("cjt188")))
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

    if args.protocol == "cjt188":
        return _read_meter(args, fail)
    args.baud = args.baud or line.baud()
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


def _read_meter(args: argparse.Namespace, fail) -> int:
    from edge import cjt188
    from edge.cjt188_tools import address_text
    address = args.address or cjt188.WILDCARD
    try:
        cjt188.address_bytes(address)
    except ValueError as e:
        return fail("--address: %s" % e)
    if args.map or args.profile not in (None, "water_meter"):
        return fail("a CJ/T 188 meter is a water_meter, read without a register map")
    baud = args.baud or line.baud("cjt188")
    try:
        master, uart = open_meter(args.port, baud, args.parity, args.stop_bits, args.timeout, address,
                                  args.di_order, args.meter_type)
    except BusError as e:
        return fail(str(e))
    try:
        # the address the meter answered with, beside its data (the request may be the wildcard's)
        data, who = master.transact(master.request, lambda req, frame: (
            cjt188.parse_reply(req, frame), address_text(cjt188.parse(frame)[1])))
        total, settled, clock, st1, st2 = cjt188.meter_data(data)
    except cjt188.Cjt188Error as e:
        return fail(meter_problem(e, "meter " + address, args.port, baud, args.parity, args.stop_bits))
    finally:
        uart.close()
    reading = {"total": total, "settled": settled, "clock": "%04d-%02d-%02d %02d:%02d:%02d" % clock,
               "valve": VALVES[st1 & 3], "battery_low": bool(st1 & 4), "st1": st1, "st2": st2}
    if args.json:
        print(json.dumps({"protocol": "cjt188", "address": who, "reading": reading}))
        return 0
    print("CJ/T 188 meter %s on %s at %s:" % (who, args.port, line_settings(baud, args.parity, args.stop_bits)))
    print("  total          %.2f m3" % total)
    print("  settled        %.2f m3 (the total on the last settlement date)" % settled)
    print("  clock          %s (the meter's own)" % reading["clock"])
    print("  valve          %s" % reading["valve"])
    print("  battery        %s" % ("LOW" if st1 & 4 else "normal"))
    print("  status         ST1 %02x, ST2 %02x (ST2 and ST1 D3-D7: the maker's own flags)" % (st1, st2))
    return 0
