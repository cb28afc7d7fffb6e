"""`edgectl logs`: follow what a board prints on its serial console (the agent logs one
line per fact: start, broker connection, bus faults, alarms). Read-only: it never sends a
byte, so the agent keeps running. On a Raspberry Pi the agent runs under systemd:
`journalctl -fu citynet-edge-agent` shows the same lines.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Callable, Iterator

import serial


def open_console(port: str, baud: int = 115200) -> serial.Serial:
    """Open without touching DTR and RTS: on ESP32 dev boards they drive EN and GPIO0,
    and a careless open resets the board or holds it in its bootloader."""
    s = serial.Serial()
    s.port = port
    s.baudrate = baud
    s.timeout = 0.2
    s.dtr = False
    s.rts = False
    try:
        s.open()
    except serial.SerialException as e:
        raise OSError("cannot open %s: %s; check the port (ls /dev/ttyUSB* /dev/ttyACM*) and that no "
                      "other program (mpremote, a serial monitor) holds it" % (port, e)) from None
    return s


def lines(console: serial.Serial, deadline: float | None = None) -> Iterator[str]:
    """Lines as they arrive, until the deadline (monotonic) if one is given."""
    buf = b""
    while deadline is None or time.monotonic() < deadline:
        chunk = console.read(512)
        if not chunk:
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode("utf-8", "replace").rstrip("\r")


def wait_for(port: str, pattern: str, timeout: float, baud: int = 115200,
             console: serial.Serial | None = None) -> tuple[bool, list[str]]:
    """Read the console until a line matches pattern: (matched, the lines seen)."""
    own = console is None
    console = console or open_console(port, baud)
    seen: list[str] = []
    try:
        for line in lines(console, time.monotonic() + timeout):
            seen.append(line)
            if re.search(pattern, line):
                return True, seen
    finally:
        if own:
            console.close()
    return False, seen


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--port", required=True, help="the board's serial console, e.g. /dev/ttyUSB0 "
                                                  "(a virtual board: virtual-board/console)")
    ap.add_argument("--baud", type=int, default=115200, help="console baud rate (default: 115200, MicroPython's)")
    ap.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    ap.add_argument("--grep", default=None, metavar="REGEX", help="show only lines that match")
    ap.add_argument("--timestamps", action="store_true", help="prefix each line with the local time")


def run(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    try:
        console = open_console(args.port, args.baud)
    except OSError as e:
        print("edgectl logs: %s" % e, file=sys.stderr)
        return 1
    print("following %s (Ctrl-C stops; nothing is sent to the board)" % args.port, file=sys.stderr)
    deadline = time.monotonic() + args.seconds if args.seconds else None
    try:
        for line in lines(console, deadline):
            if args.grep and not re.search(args.grep, line):
                continue
            out(time.strftime("%H:%M:%S ") + line if args.timestamps else line)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    except serial.SerialException as e:
        print("edgectl logs: %s went away (%s): was the board unplugged or reset?" % (args.port, e), file=sys.stderr)
        return 1
    finally:
        console.close()
    return 0
