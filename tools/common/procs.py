"""Child processes and loopback ports, for every command and test that starts something:
stop a child we started (by its PID, never by name), find a free loopback port, wait
until something listens on one.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import time


def stop(proc: subprocess.Popen | None, timeout: float = 5, sig: int = signal.SIGTERM) -> None:
    """Stop a process we started: sig (SIGTERM), then SIGKILL if it has not exited after
    timeout seconds. Nothing when it already exited."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (someone may take it before we bind: callers retry)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1",
              proc: subprocess.Popen | None = None) -> None:
    """Return once a TCP connect to host:port succeeds; RuntimeError after timeout, or
    at once when proc (the process that should listen there) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("%s exited with %s before listening on %s:%d" % (
                    " ".join(map(str, proc.args)), proc.returncode, host, port)) from None
            if time.monotonic() > deadline:
                raise RuntimeError("nothing is listening on %s:%d after %.0f s" % (host, port, timeout)) from None
            time.sleep(0.05)
