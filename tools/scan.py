"""`edgectl scan`: which Modbus slave ids answer on a bus, at one or more baud rates.

A slave that answers with a Modbus exception counts as found: it heard its id. Reads
one register at the start of the chosen map (default: holding register 0).
"""
from __future__ import annotations

import argparse

from edge import line, reads
from edge.config import ConfigError
from edge.profiles import NAMES
from tools.common.report import Reporter, StepFailed
from tools.common.rs485 import Bus, BusError, bus_arguments, line_settings, load_map


def scan(bus: Bus, ids: range, function: int = 3, address: int = 0, progress=None) -> list[dict]:
    found = []
    for i, slave in enumerate(ids):
        result = bus.read(slave, function, address, 1)
        if result is not None:
            found.append({"slave": slave, "baud": bus.baud,
                          "answer": "registers" if isinstance(result, list) else
                          "exception %d" % result.exception_code})
        if progress:
            progress(i + 1, len(ids), "ids, %d found" % len(found))
    return found


def _ids(text: str) -> range:
    lo, _, hi = text.partition("-")
    try:
        r = range(int(lo), int(hi or lo) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not FIRST-LAST, e.g. 1-247" % text) from None
    if not r or r.start < 1 or r.stop > 248:
        raise argparse.ArgumentTypeError("slave ids are 1..247, not %r" % text)
    return r


def _bauds(text: str) -> list[int]:
    try:
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a baud rate or a list like 9600,19200" % text) from None


def add_arguments(ap: argparse.ArgumentParser) -> None:
    bus_arguments(ap)
    ap.add_argument("--baud", type=_bauds, default=[line.BAUD], metavar="BAUD[,BAUD...]",
                    help="baud rate(s) to try (default: %d)" % line.BAUD)
    ap.add_argument("--ids", type=_ids, default=range(1, 248), metavar="FIRST-LAST",
                    help="slave ids to try (default: 1-247)")
    ap.add_argument("--profile", choices=NAMES, default=None,
                    help="read the first register of this profile's map (default: holding register 0)")
    ap.add_argument("--map", default=None,
                    help="read the first register of this map: a shipped map's name (edge/maps) or a map file")


def run(args: argparse.Namespace) -> int:
    function, address = 3, 0
    if args.profile or args.map:
        try:
            m = load_map(args.map, args.profile)
        except ConfigError as e:
            print("edgectl scan: %s" % e)
            return 2
        function, address = reads.blocks(m["fields"])[0][1:3]   # (the first probe's first read)
    rep = Reporter(json_mode=args.json, total=len(args.baud))
    found: list[dict] = []
    try:
        for baud in args.baud:
            with rep.step("scan", "slave ids %d-%d at %s" % (args.ids.start, args.ids.stop - 1,
                                                             line_settings(baud, args.parity, args.stop_bits))) as st:
                try:
                    with Bus(args.port, baud, args.parity, args.stop_bits, args.timeout) as bus:
                        here = scan(bus, args.ids, function, address, st.progress)
                except BusError as e:
                    raise StepFailed(str(e)) from None
                found += here
                st.done("%s at %s" % (", ".join("slave %d (%s)" % (f["slave"], f["answer"]) for f in here)
                                      or "no slave answered", line_settings(baud, args.parity, args.stop_bits)),
                        found=here)
    except StepFailed as e:
        rep.summary(False, "edgectl scan: %s" % e, error=str(e))
        return 1
    if not found:
        rep.summary(False, "no slave answered on %s: check the A/B wiring (swap A and B if unsure), "
                           "the sensor's power, and try other baud rates (--baud 2400,4800,9600,19200) "
                           "and parity (--parity N)" % args.port, found=[])
        return 1
    rep.summary(True, "found: %s" % ", ".join("slave %d at %d baud" % (f["slave"], f["baud"]) for f in found),
                found=found)
    return 0
