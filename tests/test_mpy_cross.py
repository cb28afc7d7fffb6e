"""Every module under edge/ compiles with mpy-cross, as shipped to boards: this catches
syntax MicroPython does not accept (and the ESP32 HAL, which cannot run here)."""
from __future__ import annotations

import os
import subprocess
import sys

import edge

EDGE = os.path.dirname(os.path.abspath(edge.__file__))


def mpy_cross() -> str:
    path = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    assert os.path.exists(path), "mpy-cross is not installed next to %s: run `make setup`" % sys.executable
    return path


def test_every_edge_module_compiles(tmp_path):
    sources = sorted(os.path.join(d, f) for d, _, files in os.walk(EDGE) for f in files if f.endswith(".py"))
    assert len(sources) > 5
    failed = []
    for i, src in enumerate(sources):
        out = subprocess.run([mpy_cross(), "-o", str(tmp_path / ("%d.mpy" % i)), src],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            failed.append("%s: %s" % (os.path.relpath(src, EDGE), (out.stderr or out.stdout).strip()))
    assert not failed, "mpy-cross rejects:\n" + "\n".join(failed)
