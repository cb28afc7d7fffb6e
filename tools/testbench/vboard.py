"""Boards: their descriptions (boards/*.json), mpremote on a board's serial port, and the
virtual board that the tests and a first try without hardware use.

The virtual board is the MicroPython unix port behind a pty (socat), running in its own
directory, which is its flash. Like an ESP32 it runs main.py when it powers up and gives
a REPL after; Ctrl-C from mpremote interrupts the agent. A supervisor process holds it
and can power-cycle it (SIGHUP), and can play a simulated sensor on a second pty pair:

    DIR/flash/        the board's filesystem (cwd of the micropython process)
    DIR/console       the board's serial console (give it to mpremote, edgectl provision --port)
    DIR/bus/A         the sensor bus as the board sees it (edgectl provision --bus-port)
    DIR/board.json    pid of the supervisor, paths, the simulated sensor's settings
    DIR/board.log     the supervisor's and the simulator's output
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

from tools import runtime

BOARDS_DIR = os.path.join(runtime.ROOT, "boards")
DEFAULT_VIRTUAL_DIR = "virtual-board"
# after Ctrl-C has stopped the agent, its modules, and asyncio's queue of its tasks, still
# fill the heap: drop them, so that copying files (mpremote hashes each one on the board)
# and the self-test have room. (mpremote without `resume` would soft-reset instead, which
# the unix port cannot do.)
UNLOAD = ("import sys, gc\n"
          "globals().pop('main', None)\n"
          "for m in list(sys.modules):\n"
          " del sys.modules[m]\n"
          "gc.collect()\n")
# what a freshly flashed board does at power-up: run main.py if there is one, then the REPL
BOOT = """# the virtual board's boot ROM, written by tools/board.py
import os, sys
sys.path[0] = ''
if 'main.py' in os.listdir():
    try:
        import main
    except Exception as e:
        sys.print_exception(e)
"""


class BoardError(Exception):
    """Talking to a board failed; the message says what to check."""


def known_boards() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(BOARDS_DIR) if f.endswith(".json"))


def load_board(name: str) -> dict:
    path = os.path.join(BOARDS_DIR, name + ".json")
    if not os.path.exists(path):
        raise BoardError("unknown board %r; known boards: %s" % (name, ", ".join(known_boards())))
    with open(path) as fh:
        return json.load(fh)


def mpremote() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "mpremote")
    return here if os.path.exists(here) else "mpremote"


# ---------------------------------------------------------------- mpremote
def explain(port: str, output: str) -> str:
    """mpremote's last words, as something an installer can act on."""
    if "failed to access" in output or "no device found" in output:
        return ("nothing answers on %s: check that the board is plugged in and the port is right "
                "(ls /dev/ttyUSB* /dev/ttyACM*), and that no other program (a serial monitor, "
                "edgectl logs) holds the port" % port)
    if "could not enter raw repl" in output:
        return ("the board on %s does not give a MicroPython prompt: flash MicroPython first "
                "(edgectl flash), or press its reset button and try again" % port)
    last = [line for line in output.strip().splitlines() if line.strip()]
    return "mpremote on %s failed: %s" % (port, last[-1] if last else "no output")


class Mpremote:
    """`mpremote connect PORT resume ...`: resume skips the soft reset, which the unix
    port does not have and which would restart a running agent on an ESP32."""

    def __init__(self, port: str) -> None:
        self.port = port

    def argv(self, *cmds: str) -> list[str]:
        return [mpremote(), "connect", self.port, "resume", *cmds]

    def run(self, cmds: list[str], timeout: float = 60, on_line: Callable[[str], None] | None = None) -> str:
        """Run mpremote, feeding each line of its output to on_line; its output, or BoardError.
        A board busy stopping its agent may miss the first Ctrl-A: that is tried once more."""
        try:
            return self._run(cmds, timeout, on_line)
        except BoardError as e:
            if "MicroPython prompt" not in str(e):
                raise
            time.sleep(1)
            return self._run(cmds, timeout, on_line)

    def _run(self, cmds: list[str], timeout: float, on_line: Callable[[str], None] | None) -> str:
        proc = subprocess.Popen(self.argv(*cmds), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace")
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        lines = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if on_line:
                    on_line(line.rstrip("\n"))
            proc.wait()
        finally:
            timer.cancel()
        out = "".join(lines)
        if proc.returncode == -signal.SIGKILL:
            raise BoardError("the board on %s did not finish within %.0f s: %s" % (
                self.port, timeout, (out.strip().splitlines() or ["no output"])[-1]))
        if proc.returncode != 0:
            raise BoardError(explain(self.port, out))
        return out

    def exec(self, code: str, timeout: float = 30) -> str:
        return self.run(["exec", code], timeout)

    def cat(self, path: str) -> str | None:
        """A file's text, or None when the board has no such file."""
        try:
            return self.run(["fs", "cat", ":" + path], 20)
        except BoardError as e:
            if "No such file" in str(e) or "ENOENT" in str(e):
                return None
            raise

    def put(self, files: list[tuple[str, str]], on_progress: Callable[[int, int], None] | None = None,
            timeout: float = 300) -> int:
        """Copy (local, board path) pairs in one connection, directories made first.
        mpremote skips a file whose hash already matches; returns how many were copied."""
        dirs = set()
        for _, dest in files:
            parts = dest.split("/")[:-1]
            dirs.update("/".join(parts[:i + 1]) for i in range(len(parts)))
        dirs = sorted(dirs)
        mkdirs = UNLOAD + ("import os\nfor d in %r:\n try: os.mkdir(d)\n except OSError: pass" % (dirs,))
        cmds = ["exec", mkdirs]
        for src, dest in files:
            cmds += ["+", "fs", "cp", src, ":" + dest]
        done = [0, 0]   # files seen, files up to date

        def line(text: str) -> None:
            if text.startswith("cp "):
                done[0] += 1
                if on_progress:
                    on_progress(done[0], len(files))
            elif text.startswith("Up to date"):
                done[1] += 1
        self.run(cmds, timeout, line)
        return done[0] - done[1]


# ---------------------------------------------------------------- mip
def package_json() -> dict:
    """What `mpremote mip install github:OWNER/REPO` reads from package.json at the repo
    root: every agent module, by a URL relative to the package.json. No deps: the agent
    speaks MQTT itself (edge/link.py). Kept in step with edge/ by tests/test_provision.py."""
    files = sorted(os.path.relpath(os.path.join(d, f), runtime.ROOT)
                   for d, _, fs in os.walk(os.path.join(runtime.ROOT, "edge")) for f in fs if f.endswith(".py"))
    import configparser
    meta = configparser.ConfigParser()
    meta.read(os.path.join(runtime.ROOT, "setup.cfg"))
    return {"version": meta["metadata"]["version"], "urls": [[f, f] for f in files], "deps": []}


def format_package_json(pkg: dict) -> str:
    """One file a line, so a diff shows which module came or went."""
    urls = ",\n".join("  " + json.dumps(u) for u in pkg["urls"])
    return '{\n "version": %s,\n "urls": [\n%s\n ],\n "deps": %s\n}\n' % (
        json.dumps(pkg["version"]), urls, json.dumps(pkg["deps"]))


# ---------------------------------------------------------------- the virtual board
def info(directory: str) -> dict | None:
    """The running virtual board in directory, or None."""
    try:
        with open(os.path.join(directory, "board.json")) as fh:
            data = json.load(fh)
        os.kill(data["pid"], 0)
    except (OSError, ValueError, KeyError):
        return None
    return data


def info_for_console(port: str) -> dict | None:
    """The virtual board whose console is port (DIR/console), or None."""
    return info(os.path.dirname(os.path.abspath(port)))


class Supervisor:
    """Holds one virtual board: its console (socat + micropython), power cycles, and an
    optional simulated sensor. Runs in the foreground of `edgectl board serve`."""

    def __init__(self, directory: str, sensor: str | None, slave: int, baud: int, heap: str) -> None:
        self.dir = os.path.abspath(directory)
        self.flash = os.path.join(self.dir, "flash")
        self.console = os.path.join(self.dir, "console")
        self.sensor = sensor
        self.slave = slave
        self.baud = baud
        self.heap = heap
        self.socat: subprocess.Popen | None = None
        self.sim: subprocess.Popen | None = None
        self.bus = None
        self.boots = 0
        self.reset_wanted = threading.Event()
        self.stop_wanted = threading.Event()

    def power_on(self) -> None:
        env = runtime.micropython_env()
        # like a board's sys.path: '', .frozen, lib
        env["MICROPYPATH"] = ".frozen:" + os.path.join(self.flash, "lib")
        rom = os.path.join(self.dir, "boot-rom.py")
        with open(rom, "w") as fh:
            fh.write(BOOT)
        cmd = "%s -X heapsize=%s -i %s" % (runtime.micropython(), self.heap, rom)
        # isig: Ctrl-C from mpremote interrupts a running main.py, as on a real board
        self.socat = subprocess.Popen(
            ["socat", "-d", "-d", "pty,raw,echo=0,link=%s" % self.console,
             "EXEC:%s,pty,raw,echo=0,isig=1,stderr,setsid,ctty" % cmd],
            cwd=self.flash, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        ready = threading.Event()

        def read_log(proc: subprocess.Popen) -> None:
            for line in proc.stderr:
                if "starting data transfer loop" in line:
                    ready.set()
            ready.set()
        threading.Thread(target=read_log, args=(self.socat,), daemon=True).start()
        if not ready.wait(10) or self.socat.poll() is not None:
            raise BoardError("socat did not open the virtual board's console")
        self.boots += 1
        data = {"pid": os.getpid(), "console": self.console, "flash": self.flash,
                "heap": self.heap, "sensor": self.sensor, "boots": self.boots}
        if self.bus is not None:
            data.update(bus=self.bus.a, slave=self.slave, baud=self.baud)
        _write_json(os.path.join(self.dir, "board.json"), data)

    def power_off(self) -> None:
        stop(self.socat)
        self.socat = None

    def start_sensor(self) -> None:
        from tools import scenarios
        from tools.vbus import VirtualBus
        self.bus = VirtualBus(os.path.join(self.dir, "bus")).start()
        trace = os.path.join(self.dir, "sensor.jsonl.gz")
        if self.sensor == "elevator":
            scenarios.write(trace, *scenarios.elevator(seconds=3600, entrapment_at=None))
        else:
            scenarios.write(trace, *scenarios.water_meter(seconds=3600, flow_from=None))
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "tools.simulate", "--profile", self.sensor, "--trace", trace,
             "--port", self.bus.b, "--slave", str(self.slave), "--baud", str(self.baud)],
            cwd=runtime.ROOT, stdout=sys.stdout, stderr=subprocess.STDOUT)

    def serve(self) -> int:
        os.makedirs(self.flash, exist_ok=True)
        signal.signal(signal.SIGHUP, lambda *a: self.reset_wanted.set())
        signal.signal(signal.SIGTERM, lambda *a: self.stop_wanted.set())
        signal.signal(signal.SIGINT, lambda *a: self.stop_wanted.set())
        try:
            if self.sensor:
                self.start_sensor()
            self.power_on()
            print("virtual board up: console %s, flash %s" % (self.console, self.flash), flush=True)
            while not self.stop_wanted.is_set():
                if self.reset_wanted.wait(0.2):
                    self.reset_wanted.clear()
                    print("virtual board: reset (power cycle)", flush=True)
                    self.power_off()
                    self.power_on()
                elif self.socat is not None and self.socat.poll() is not None:
                    # the micropython process exited (sys.exit, Ctrl-D): power it up again
                    self.power_on()
        finally:
            self.power_off()
            stop(self.sim)
            if self.bus is not None:
                self.bus.stop()
            try:
                os.remove(os.path.join(self.dir, "board.json"))
            except OSError:
                pass
        return 0


def _write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def stop(proc: subprocess.Popen | None, timeout: float = 5) -> None:
    """Stop a process we started, by its PID."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_virtual(directory: str = DEFAULT_VIRTUAL_DIR, sensor: str | None = "elevator", slave: int = 1,
                  baud: int = 9600, heap: str | None = None, timeout: float = 20) -> dict:
    """Start a virtual board in the background (or find the one running there)."""
    running = info(directory)
    if running:
        return running
    os.makedirs(directory, exist_ok=True)
    heap = heap or "%dk" % load_board("virtual").get("heap_kb", 128)
    log = open(os.path.join(directory, "board.log"), "ab")
    argv = [sys.executable, "-m", "tools.edgectl", "board", "serve", os.path.abspath(directory),
            "--slave", str(slave), "--baud", str(baud), "--heap", heap]
    if sensor:
        argv += ["--sensor", sensor]
    proc = subprocess.Popen(argv, cwd=runtime.ROOT, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = info(directory)
        if found:
            return found
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    stop(proc)
    with open(os.path.join(directory, "board.log"), errors="replace") as fh:
        raise BoardError("the virtual board did not start:\n" + fh.read()[-2000:])


def stop_virtual(directory: str = DEFAULT_VIRTUAL_DIR, timeout: float = 10) -> bool:
    found = info(directory)
    if not found:
        return False
    os.kill(found["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and info(directory):
        time.sleep(0.1)
    return True


def reset_virtual(board: dict, timeout: float = 10) -> None:
    """Power-cycle a virtual board and wait until its console is back."""
    directory = os.path.dirname(board["console"])
    os.kill(board["pid"], signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = info(directory)
        if now and now.get("boots", 0) > board.get("boots", 0):
            return
        time.sleep(0.05)
    raise BoardError("the virtual board did not come back after a reset (see board.log)")


# ---------------------------------------------------------------- edgectl board
def add_arguments(ap: argparse.ArgumentParser) -> None:
    sub = ap.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = sub.add_parser("start", help="start a virtual board in the background, with a simulated sensor",
                           description="Start the MicroPython unix port behind a pty as a board you can "
                                       "provision, with a simulated Modbus sensor on its bus.")
    start.add_argument("--dir", default=DEFAULT_VIRTUAL_DIR, help="the board's directory (default: %(default)s)")
    start.add_argument("--sensor", default="elevator", choices=("elevator", "water_meter", "none"),
                       help="the simulated sensor on its bus (default: %(default)s)")
    start.add_argument("--slave", type=int, default=1, help="the sensor's slave id (default: 1)")
    start.add_argument("--baud", type=int, default=9600, help="the sensor's baud rate (default: 9600)")
    for name, text in (("stop", "stop the virtual board"), ("reset", "power-cycle the virtual board"),
                       ("status", "show the virtual board's console and bus")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--dir", default=DEFAULT_VIRTUAL_DIR, help="the board's directory (default: %(default)s)")
    pkg = sub.add_parser("package-json", help="rewrite package.json (mip) from the modules under edge/")
    pkg.add_argument("--dir", default=runtime.ROOT, help=argparse.SUPPRESS)
    serve = sub.add_parser("serve", help="run a virtual board in the foreground (what start runs)")
    serve.add_argument("dir")
    serve.add_argument("--sensor", choices=("elevator", "water_meter"))
    serve.add_argument("--slave", type=int, default=1)
    serve.add_argument("--baud", type=int, default=9600)
    serve.add_argument("--heap", default="128k")
    ap.add_argument("--json", action="store_true", help="print the board's description as JSON")


def describe(board: dict) -> str:
    text = "virtual board running (pid %d)\n  console: %s\n  flash:   %s" % (
        board["pid"], board["console"], board["flash"])
    if board.get("bus"):
        text += "\n  sensor:  %s, slave %d at %d baud on %s" % (board["sensor"], board["slave"], board["baud"], board["bus"])
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
