"""The gateway and the reference platform receiver as child processes (`edge-gateway run`
and `edge-gateway platform`), for the site runner, the benchmarks and the tests: started
with their output in a log file, ready when they listen, stopped by their PIDs.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Sequence

from tools.common.procs import free_port, stop, wait_port


class Service:
    """One `edge-gateway` child. log: a file its output goes to (None: this terminal)."""

    def __init__(self, name: str, args: Sequence[str], log: str | None, ready_port: int,
                 timeout: float = 30, cwd: str | None = None) -> None:
        self.name = name
        self.log_path = log
        out = open(log, "ab") if log else None
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", *args], stdout=out,
                                     stderr=subprocess.STDOUT if out else None, cwd=cwd,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        if out:
            out.close()
        try:
            wait_port(ready_port, timeout, proc=self.proc)
        except RuntimeError as e:
            self.stop()
            raise RuntimeError("%s did not come up (%s):\n%s" % (name, e, self.log_tail())) from None

    def log_tail(self, n: int = 3000) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, errors="replace") as fh:
            return fh.read()[-n:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        stop(self.proc, timeout, sig)

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut would, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(15)


def start_platform(port: int, db: str, log: str | None, print_events: bool = False) -> Service:
    args = ["platform", "--listen", "127.0.0.1:%d" % port, "--db", db]
    return Service("platform", args + (["--print"] if print_events else []), log, port)


def start_gateway(data: str, broker: str, platform_url: str, log: str | None,
                  extra: Sequence[str] = ()) -> tuple[Service, int]:
    """The gateway with its status page on a free port, which opens only once the broker
    has confirmed the subscription: when this returns, no event published is missed.
    Returns the service and the status port."""
    status = free_port()
    args = ["run", "--data", data, "--broker", broker, "--platform", platform_url,
            "--status-listen", "127.0.0.1:%d" % status, *extra]
    return Service("gateway", args, log, status), status
