"""Boards as the installer's commands see them: their descriptions (boards/*.json) and
mpremote on a board's serial port.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

from tools.common import runtime

BOARDS_DIR = os.path.join(runtime.ROOT, "boards")
# after Ctrl-C has stopped the agent, its modules, and asyncio's queue of its tasks, still
# fill the heap: drop them, so that copying files (mpremote hashes each one on the board)
# and the self-test have room. (mpremote without `resume` would soft-reset instead, which
# the unix port cannot do.)
UNLOAD = ("import sys, gc\n"
          "globals().pop('main', None)\n"
          "for m in list(sys.modules):\n"
          " del sys.modules[m]\n"
          "gc.collect()\n")

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


