"""Start and stop a private mosquitto broker on a loopback port (tests, demo, bench).

The broker runs from a config file in a scratch directory and is stopped by its own PID,
never by name, so a system broker or another user's broker is never touched.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

from tools.common.procs import free_port, stop, wait_port  # noqa: F401 (wait_port: the API)


def binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if not found:
        raise RuntimeError("mosquitto is not installed: run `make setup` (apt-get install mosquitto)")
    return found


# The largest packet a device or the gateway sends is an acknowledgement of about 1 KiB:
# a bigger one disconnects its sender, and is never queued for the gateway.
MAX_PACKET_SIZE = 16384


@dataclass(frozen=True)
class ServerTls:
    """The listener's TLS files (PEM): the CA that signed its certificate, the certificate
    (its names must include the host the clients connect to) and its key."""
    ca: str
    cert: str
    key: str


class Mosquitto:
    """with Mosquitto(workdir) as broker: broker.port ...; extra: more mosquitto.conf lines.
    persistence=False: a broker that forgets sessions and queues when it stops.
    tls: a TLS-only listener (TLS 1.2 or later); a plain client is dropped at its first byte."""

    def __init__(self, workdir: str, port: int | None = None, extra: str = "", anonymous: bool = True,
                 persistence: bool = True, tls: ServerTls | None = None,
                 max_packet_size: int = MAX_PACKET_SIZE):
        self.workdir = workdir
        self.fixed_port = port is not None
        self.port = port or free_port()
        self.extra = extra
        self.anonymous = anonymous
        self.persistence = persistence
        self.tls = tls
        self.max_packet_size = max_packet_size      # 0: mosquitto's own limit (256 MiB)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return "%s://127.0.0.1:%d" % ("mqtts" if self.tls else "mqtt", self.port)

    def start(self) -> "Mosquitto":
        # a free port can be taken between free_port() and mosquitto's bind: try another
        for attempt in range(1 if self.fixed_port else 3):
            if self._start_once():
                return self
            self.port = free_port()
        with open(os.path.join(self.workdir, "mosquitto.log"), errors="replace") as fh:
            raise RuntimeError("mosquitto did not start:\n" + fh.read()[-2000:])

    def _start_once(self) -> bool:
        os.makedirs(self.workdir, exist_ok=True)
        conf = os.path.join(self.workdir, "mosquitto.conf")
        with open(conf, "w") as fh:
            fh.write("listener %d 127.0.0.1\n" % self.port)
            if self.tls:
                fh.write("cafile %s\ncertfile %s\nkeyfile %s\ntls_version tlsv1.2\n"
                         % tuple(os.path.abspath(f) for f in (self.tls.ca, self.tls.cert, self.tls.key)))
            fh.write("allow_anonymous %s\n" % ("true" if self.anonymous else "false"))
            if self.max_packet_size:
                fh.write("max_packet_size %d\n" % self.max_packet_size)
            if self.persistence:
                fh.write("persistence true\npersistence_location %s/\n" % self.workdir)
            else:
                fh.write("persistence false\n")
            if os.geteuid() == 0:
                # started as root, mosquitto drops to the "mosquitto" user, which cannot
                # write its persistence file here: queued messages would die with a restart
                fh.write("user root\n")
            # the gateway's session queues everything while it is away (docs/delivery.md):
            # no count cap (the default 1000 would drop the rest), and a save every 10 s
            # so a broker crash loses at most that much of what it acknowledged
            fh.write("max_queued_messages 0\nmax_queued_bytes 0\nautosave_interval 10\n")
            fh.write(self.extra)
        path = os.path.join(self.workdir, "mosquitto.log")
        self.log = open(path, "ab")
        since = self.log.tell()
        self.proc = subprocess.Popen([binary(), "-c", conf], stdout=self.log, stderr=subprocess.STDOUT)
        # ready when its own log says so (a port that answers may be somebody else's)
        deadline = time.monotonic() + 10
        while self.proc.poll() is None and time.monotonic() < deadline:
            with open(path, "rb") as fh:
                fh.seek(since)
                if b" running" in fh.read():
                    return True
            time.sleep(0.05)
        self.stop()      # it exited (the port was taken, or a bad config line) or hung
        return False

    def stop(self) -> None:
        stop(self.proc)
        if self.proc:
            self.log.close()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut would: nothing is saved on the way out."""
        stop(self.proc, 0.1, signal.SIGKILL)
        if self.proc:
            self.log.close()
        self.proc = None

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
