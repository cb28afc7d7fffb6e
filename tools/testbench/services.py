"""The gateway and the reference platform receiver as child processes (`edge-gateway run`
and `edge-gateway platform`), for the site runner, the benchmarks and the tests: started
with their output in a log file, ready when they listen, stopped by their PIDs. The
gateway is provisioned on the platform as an installer would (`platform add-gateway`),
and the platform is read with a gateway's signed requests (platform_get).
"""
from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.request
from typing import Any, Sequence
from urllib.parse import urlsplit

from gateway import auth
from tools.common.procs import free_port, stop, wait_port
from tools.testbench.pki import Pair


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


def add_gateway(db: str, gateway_id: str, out: str) -> str:
    """Let gateway_id upload to the platform whose database is db (made if need be; the
    platform may be running). Returns out, the file its credentials went to (0600)."""
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "platform", "add-gateway", gateway_id,
                           "--db", db, "--out", out, "--replace"], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError("platform add-gateway %s failed: %s" % (gateway_id, done.stderr.strip()))
    return out


def start_platform(port: int, db: str, log: str | None, print_events: bool = False,
                   tls: Pair | None = None) -> Service:
    """tls: serve HTTPS with this certificate."""
    args = ["platform", "--listen", "127.0.0.1:%d" % port, "--db", db]
    args += ["--cert", tls.cert, "--key", tls.key] if tls else []
    return Service("platform", args + (["--print"] if print_events else []), log, port)


def start_gateway(data: str, broker: str, platform_url: str, log: str | None,
                  extra: Sequence[str] = (), credentials: str | None = None) -> tuple[Service, int]:
    """The gateway with its status page on a free port, which opens only once the broker
    has confirmed the subscription: when this returns, no event published is missed.
    credentials: its platform credentials file (default: the one in data). Returns the
    service and the status port."""
    status = free_port()
    args = ["run", "--data", data, "--broker", broker, "--platform", platform_url,
            "--status-listen", "127.0.0.1:%d" % status, *extra]
    args += ["--platform-credentials", credentials] if credentials else []
    return Service("gateway", args, log, status), status


def platform_get(url: str, path: str, credentials: str, ca: str | None = None, timeout: float = 10) -> Any:
    """GET url + path (with its query) signed with a gateway's credentials file; the JSON answer.
    ca: the CA file of an https:// platform's certificate."""
    creds = auth.Credentials.load(credentials)
    headers = auth.sign(creds, "GET", urlsplit(url).path.rstrip("/") + path)
    context = ssl.create_default_context(cafile=ca) if url.startswith("https:") else None
    request = urllib.request.Request(url.rstrip("/") + path, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout, context=context) as r:
        return json.load(r)
