"""The virtual board that the tests and a first try without hardware use.

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

import json
import os
import signal
import subprocess
import sys
import threading
import time

from edge import line
from tools.common import runtime
from tools.common.boards import BoardError, load_board
from tools.common.procs import stop

DEFAULT_VIRTUAL_DIR = "virtual-board"
# what a freshly flashed board does at power-up: run main.py if there is one, then the REPL
BOOT = """# the virtual board's boot ROM, written by tools/testbench/vboard.py
import os, sys
sys.path[0] = ''
if 'main.py' in os.listdir():
    try:
        import main
    except Exception as e:
        sys.print_exception(e)
"""



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
            for text in proc.stderr:
                if "starting data transfer loop" in text:
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
        from tools.testbench import scenarios
        from tools.testbench.vbus import VirtualBus
        self.bus = VirtualBus(os.path.join(self.dir, "bus")).start()
        trace = os.path.join(self.dir, "sensor.jsonl.gz")
        if self.sensor == "elevator":
            scenarios.write(trace, *scenarios.elevator(seconds=3600, entrapment_at=None))
        else:
            scenarios.write(trace, *scenarios.water_meter(seconds=3600, flow_from=None))
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "tools.testbench.simulate", "--profile", self.sensor, "--trace", trace,
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


def start_virtual(directory: str = DEFAULT_VIRTUAL_DIR, sensor: str | None = "elevator", slave: int = 1,
                  baud: int = line.BAUD, heap: str | None = None, timeout: float = 20) -> dict:
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


