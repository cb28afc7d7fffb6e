"""A virtual RS-485 bus: two linked raw ptys made by socat, for the simulator, tests and demo.

    with VirtualBus() as bus:      # bus.a for the master (agent), bus.b for the slave
        ...
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading

from tools.common.procs import stop


class VirtualBus:
    """socat pty pair in a temporary directory; socat is stopped by its own PID."""

    def __init__(self, directory: str | None = None, timeout_s: float = 5.0) -> None:
        self.directory = directory
        self.timeout_s = timeout_s
        self.a = ""
        self.b = ""
        self.proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._ready = threading.Event()
        self.log: list[str] = []

    def start(self) -> "VirtualBus":
        socat = shutil.which("socat")
        if not socat:
            raise RuntimeError("socat is not installed: run `make setup` (apt-get install socat)")
        if self.directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="vbus-")
            self.directory = self._tmp.name
        os.makedirs(self.directory, exist_ok=True)
        self.a = os.path.join(self.directory, "A")
        self.b = os.path.join(self.directory, "B")
        self.proc = subprocess.Popen(
            [socat, "-d", "-d", f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # socat says when both ptys and links exist; a thread keeps reading so its
        # stderr pipe never fills and stalls the bus
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._ready.wait(self.timeout_s) or not (os.path.exists(self.a) and os.path.exists(self.b)):
            self.stop()
            raise RuntimeError("socat did not create the pty pair: " + " | ".join(self.log[-5:]))
        return self

    def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip())
            if "starting data transfer loop" in line:
                self._ready.set()
        self._ready.set()  # socat exited: wake start() so it can report why

    def stop(self) -> None:
        stop(self.proc, self.timeout_s)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "VirtualBus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
