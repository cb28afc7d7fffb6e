"""`edgectl board`: start, reset, stop or show the virtual board (tools/testbench/vboard.py),
a board to provision and try things on without hardware.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from edge import line
from edge.profiles import NAMES
from tools.common import runtime
from tools.common.boards import BoardError
from tools.common.deploy import format_package_json, package_json
from tools.testbench.vboard import (DEFAULT_VIRTUAL_DIR, Supervisor, info, reset_virtual, start_virtual,
                                    stop_virtual)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    sub = ap.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = sub.add_parser("start", help="start a virtual board in the background, with a simulated sensor",
                           description="Start the MicroPython unix port behind a pty as a board you can "
                                       "provision, with a simulated Modbus sensor on its bus.")
    start.add_argument("--dir", default=DEFAULT_VIRTUAL_DIR, help="the board's directory (default: %(default)s)")
    start.add_argument("--sensor", default="elevator", choices=NAMES + ("none",),
                       help="the simulated sensor on its bus (default: %(default)s)")
    start.add_argument("--slave", type=int, default=1, help="the sensor's slave id (default: 1)")
    start.add_argument("--baud", type=int, default=line.BAUD, help="the sensor's baud rate (default: %(default)s)")
    for name, text in (("stop", "stop the virtual board"), ("reset", "power-cycle the virtual board"),
                       ("status", "show the virtual board's console and bus")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--dir", default=DEFAULT_VIRTUAL_DIR, help="the board's directory (default: %(default)s)")
    pkg = sub.add_parser("package-json", help="rewrite package.json (mip) from the modules under edge/")
    pkg.add_argument("--dir", default=runtime.ROOT, help=argparse.SUPPRESS)
    serve = sub.add_parser("serve", help="run a virtual board in the foreground (what start runs)")
    serve.add_argument("dir")
    serve.add_argument("--sensor", choices=NAMES)
    serve.add_argument("--slave", type=int, default=1)
    serve.add_argument("--baud", type=int, default=line.BAUD)
    serve.add_argument("--heap", default="128k")
    ap.add_argument("--json", action="store_true", help="print the board's description as JSON")


def describe(board: dict) -> str:
    text = "virtual board running (pid %d)\n  console: %s\n  flash:   %s" % (
        board["pid"], board["console"], board["flash"])
    if board.get("bus"):
        text += "\n  sensor:  %s, slave %d at %d baud on %s" % (
            board["sensor"], board["slave"], board["baud"], board["bus"])
    return text


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "package-json":
            path = os.path.join(runtime.ROOT, "package.json")
            with open(path, "w") as fh:
                fh.write(format_package_json(package_json()))
            print("wrote %s" % path)
            return 0
        if args.action == "serve":
            return Supervisor(args.dir, args.sensor, args.slave, args.baud, args.heap).serve()
        if args.action == "start":
            board = start_virtual(args.dir, None if args.sensor == "none" else args.sensor, args.slave, args.baud)
        elif args.action == "stop":
            ok = stop_virtual(args.dir)
            print("virtual board in %s stopped" % args.dir if ok else "no virtual board runs in %s" % args.dir)
            return 0
        else:
            board = info(args.dir)
            if board is None:
                print("no virtual board runs in %s: start one with `edgectl board start`" % args.dir, file=sys.stderr)
                return 1
            if args.action == "reset":
                reset_virtual(board)
    except BoardError as e:
        print("edgectl board: %s" % e, file=sys.stderr)
        return 1
    print(json.dumps(board) if args.json else describe(board))
    if args.action == "start" and not args.json:
        print("next: edgectl provision --board virtual --port %s --device-id NAME --profile %s%s" % (
            board["console"], board.get("sensor") or "elevator",
            " --bus-port %s" % board["bus"] if board.get("bus") else ""))
    return 0
