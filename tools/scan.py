"""`edgectl scan`: which Modbus slave ids answer on a bus, at one or more baud rates.

A slave that answers with a Modbus exception counts as found: it heard its id. Reads
one register at the start of the chosen map (default: holding register 0).

--protocol cjt188: which CJ/T 188 water meter answers, and its address: the read-address
request at the wildcard address (C 03, DI 810A), then, if nothing answers, a 901F read
there (docs/cjt188.md). Only a meter alone on the bus can be found so; with several,
their answers collide: read each by the address on its label.
"""
from __future__ import annotations

import argparse

from edge import line, reads
from edge.config import ConfigError
from edge.profiles import NAMES
from tools.common.report import Reporter, StepFailed
from tools.common.rs485 import Bus, BusError, bus_arguments, line_settings, load_map, meter_arguments, open_meter


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


def scan_meters(args: argparse.Namespace, baud: int) -> list[dict]:
    """The CJ/T 188 meter that answers at the wildcard address, at one baud rate."""
    from edge import cjt188
    from edge.cjt188_tools import address_request, address_text

    def answered_by(req, frame):
        cjt188.parse_reply(req, frame)
        return address_text(cjt188.parse(frame)[1])

    # any meter type, unless one is given
    kind = cjt188.ANY_TYPE if args.meter_type is None else args.meter_type
    master, uart = open_meter(args.port, baud, args.parity, args.stop_bits, args.timeout, cjt188.WILDCARD,
                              args.di_order, kind)
    try:
        for what, req in (("read address", address_request(args.di_order)), ("901F", master.request)):
            try:
                return [{"address": master.transact(req, answered_by), "baud": baud, "answer": what}]
            except cjt188.ErrorReply:
                continue          # it heard, but reads no address: the 901F read may name it
            except cjt188.Cjt188Error as e:
                if not isinstance(e, cjt188.Timeout):
                    return [{"address": None, "baud": baud, "answer": "garbled (%s): several meters, or the "
                             "wrong baud rate" % e}]
    finally:
        uart.close()
    return []


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
    meter_arguments(ap)
    ap.add_argument("--baud", type=_bauds, default=None, metavar="BAUD[,BAUD...]",
                    help="baud rate(s) to try (default: %d, or %d with --protocol cjt188)" % (
                        line.baud(), line.baud("cjt188")))
    ap.add_argument("--ids", type=_ids, default=range(1, 248), metavar="FIRST-LAST",
                    help="slave ids to try (default: 1-247)")
    ap.add_argument("--profile", choices=NAMES, default=None,
                    help="read the first register of this profile's map (default: holding register 0)")
    ap.add_argument("--map", default=None,
                    help="read the first register of this map: a shipped map's name (edge/maps) or a map file")


def run(args: argparse.Namespace) -> int:
    args.baud = args.baud or [line.baud(args.protocol)]
    if args.protocol == "cjt188":
        return _run_meters(args)
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


def _run_meters(args: argparse.Namespace) -> int:
    rep = Reporter(json_mode=args.json, total=len(args.baud))
    found: list[dict] = []
    try:
        for baud in args.baud:
            where = line_settings(baud, args.parity, args.stop_bits)
            with rep.step("scan", "a CJ/T 188 meter at %s" % where) as st:
                try:
                    here = scan_meters(args, baud)
                except BusError as e:
                    raise StepFailed(str(e)) from None
                found += here
                st.done(", ".join("meter %s (%s)" % (f["address"], f["answer"]) for f in here)
                        or "no meter answered", found=here)
    except StepFailed as e:
        rep.summary(False, "edgectl scan: %s" % e, error=str(e))
        return 1
    meters = [f for f in found if f["address"]]
    if not meters:
        rep.summary(False, "no CJ/T 188 meter answered on %s: check the wiring (M-Bus, or A/B on RS-485), the "
                           "meter's power, the baud rate (--baud 2400,1200), the DI order (--di-order 2018) and "
                           "the meter type (--meter-type)" % args.port, found=found)
        return 1
    rep.summary(True, "found: %s" % ", ".join("meter %s at %d baud" % (f["address"], f["baud"]) for f in meters),
                found=found)
    return 0
