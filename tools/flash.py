"""`edgectl flash`: write MicroPython firmware into an ESP32 with esptool, with progress.

The chip, the offset of the image and the baud rate come from boards/<board>.json
("esptool"). The image is checked before esptool runs (an ESP image starts with 0xE9),
and esptool's failures are translated into what to do on site. Cannot be tested
against hardware here: the tests check the command line and the error handling.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

from tools.common import boards
from tools.common.report import Reporter, StepFailed

ESP_IMAGE_MAGIC = 0xE9
MIN_IMAGE = 64 * 1024     # a MicroPython image is over a megabyte; anything tiny is a wrong file
PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?) ?%")

# esptool's words -> what the installer does about them
ADVICE = (
    ("No serial data received", "the board did not answer on {port}: it is not in its bootloader. Hold BOOT, "
                                "press and release EN (RST), release BOOT, and run the same command again; "
                                "if it still fails, try another USB cable or --baud 115200"),
    ("Wrong boot mode", "the board on {port} is running, not in its bootloader: hold BOOT while you press EN, "
                        "then run again"),
    ("Permission denied", "you may not open {port}: add yourself to the dialout group "
                          "(sudo usermod -aG dialout $USER, then log in again)"),
    ("could not open port", "there is no serial port {port}: plug the board in and check the name "
                            "(ls /dev/ttyUSB* /dev/ttyACM*)"),
    ("Could not open", "there is no serial port {port}: plug the board in and check the name "
                       "(ls /dev/ttyUSB* /dev/ttyACM*)"),
    ("Wrong --chip",
     "the chip on {port} is not the {chip} this board has: pick the --board that matches it ({detail})"),
    ("does not fit", "the image is larger than the board's flash: use the firmware build for this board"),
)


def esptool() -> list[str]:
    here = os.path.join(os.path.dirname(sys.executable), "esptool")
    return [here] if os.path.exists(here) else [sys.executable, "-m", "esptool"]


def check_image(path: str) -> int:
    """The image's size, or StepFailed saying why this file cannot be right."""
    if not os.path.isfile(path):
        raise StepFailed("no firmware file at %s: download the MicroPython .bin for this board "
                         "and give its path with --firmware" % path)
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        magic = fh.read(1)
    if path.endswith((".uf2", ".elf", ".hex")) or not magic or magic[0] != ESP_IMAGE_MAGIC:
        raise StepFailed("%s is not an ESP32 firmware image (it does not start with byte 0xE9): use the "
                         "MicroPython .bin, not a .uf2, .elf or .hex" % path)
    if size < MIN_IMAGE:
        raise StepFailed("%s has only %d bytes: a MicroPython image is over 1 MB; the download is "
                         "incomplete or this is another file" % (path, size))
    return size


def build_argv(spec: dict, port: str, firmware: str, baud: int | None = None, erase: bool = True,
               attempts: int = 7) -> list[str]:
    """The exact esptool command line (esptool v5 spelling)."""
    tool = spec.get("esptool")
    if not tool:
        raise StepFailed("board %s is not flashed with esptool (it runs %s); flash only ESP32 boards"
                         % (spec["board"], spec["port"]))
    argv = esptool() + ["--chip", tool["chip"], "--port", port, "--baud", str(baud or tool["baud"]),
                        "--connect-attempts", str(attempts), "write-flash"]
    if erase:
        argv.append("--erase-all")
    return argv + [tool["offset"], firmware]


def explain(output: str, port: str, chip: str) -> str:
    for needle, advice in ADVICE:
        if needle.lower() in output.lower():
            detail = next((line.strip() for line in output.splitlines() if needle.lower() in line.lower()), "")
            return advice.format(port=port, chip=chip, detail=detail)
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    return "esptool failed: %s" % (errors[-1].strip() if errors else (output.strip().splitlines() or ["no output"])[-1])


def run_esptool(argv: list[str], port: str, chip: str, progress) -> None:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, errors="replace", bufsize=1)
    out = []
    assert proc.stdout is not None
    # esptool redraws its progress with \r: split on both line ends
    buf = ""
    while True:
        chunk = proc.stdout.read(64)
        if not chunk:
            break
        buf += chunk
        parts = re.split(r"[\r\n]", buf)
        buf = parts.pop()
        for part in parts:
            out.append(part)
            m = PERCENT.search(part)
            if m and "Writing" in part:
                progress(int(float(m.group(1))), 100, "% written")
    out.append(buf)
    if proc.wait() != 0:
        raise StepFailed(explain("\n".join(out), port, chip), esptool_exit=proc.returncode)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    esp = [b for b in boards.known_boards() if boards.load_board(b).get("esptool")]
    ap.add_argument("--board", required=True, choices=esp, help="which ESP32 board")
    ap.add_argument("--firmware", required=True, metavar="FILE", help="the MicroPython image (.bin) for this board")
    ap.add_argument("--port", required=True, help="the board's USB serial port, e.g. /dev/ttyUSB0")
    ap.add_argument("--baud", type=int, default=None, help="flashing baud rate (default: the board's, 460800)")
    ap.add_argument("--keep", action="store_true", help="do not erase the whole flash first (keeps files on it)")
    ap.add_argument("--dry-run", action="store_true", help="check the image and print the esptool command only")
    ap.add_argument("--json", action="store_true", help="one JSON object per step, and a summary, on stdout")


def run(args: argparse.Namespace) -> int:
    rep = Reporter(json_mode=args.json, total=2)
    spec = boards.load_board(args.board)
    try:
        with rep.step("image", "checking the firmware image") as st:
            size = check_image(args.firmware)
            argv = build_argv(spec, args.port, args.firmware, args.baud, not args.keep)
            st.done("%s, %d KB, for %s at offset %s" % (os.path.basename(args.firmware), size // 1024,
                                                          spec["esptool"]["chip"], spec["esptool"]["offset"]),
                    argv=argv)
        if args.dry_run:
            rep.summary(True, " ".join(argv), argv=argv)
            return 0
        with rep.step("flash", "writing with esptool") as st:
            run_esptool(argv, args.port, spec["esptool"]["chip"], st.progress)
            st.done("written and verified; the board has restarted into MicroPython")
    except StepFailed as e:
        rep.summary(False, "edgectl flash: %s" % e, error=str(e))
        return 1
    # the erase took the boot counter too: provision sets it above the gateway's last boot
    rep.summary(True, "flashed %s on %s: next, edgectl provision --board %s --port %s ... (where the gateway's "
                "data is: it keeps the device's boot counter above what the gateway has seen)" % (
                    args.board, args.port, args.board, args.port))
    return 0
