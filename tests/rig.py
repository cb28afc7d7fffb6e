# Test rig helpers that start real parts on loopback. This part: a private mosquitto
# broker per test (free port, temp config, no persistence), stopped by its PID.
#
#   proc, port = start_mosquitto(tmp_path)
#   ...
#   stop_mosquitto(proc)
from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

MOSQUITTO = os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto")
READY_TIMEOUT_S = 5.0


class MosquittoError(RuntimeError):
    """mosquitto could not be started; the message carries its own output."""


def free_port() -> int:
    """A port that was free a moment ago (the caller retries if it is taken since)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_once(tmpdir: Path, port: int, extra_conf: str) -> tuple[subprocess.Popen[bytes], list[str]]:
    conf = tmpdir / ("mosquitto-%d.conf" % port)
    conf.write_text("listener %d 127.0.0.1\n"
                    "allow_anonymous true\n"
                    "persistence false\n"
                    "log_dest stderr\n"
                    "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
                    "%s" % (port, extra_conf))
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        # Reads mosquitto's log until it exits: keeps the pipe from filling up, and
        # tells us the moment it says it is running (no polling of the port).
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            if line.endswith(" running"):
                ready.set()
        ready.set()   # exited: wake the waiter, which then sees the exit code

    threading.Thread(target=drain, name="mosquitto-%d-log" % port, daemon=True).start()
    if not ready.wait(READY_TIMEOUT_S):
        stop_mosquitto(proc)
        raise MosquittoError("mosquitto on port %d not running after %.0f s:\n%s"
                             % (port, READY_TIMEOUT_S, "\n".join(lines)))
    if not any(line.endswith(" running") for line in lines):
        proc.wait(READY_TIMEOUT_S)   # its log ended without "running": it is exiting
    return proc, lines


def start_mosquitto(tmpdir: str | Path, port: int | None = None,
                    extra_conf: str = "") -> tuple[subprocess.Popen[bytes], int]:
    """Start mosquitto on 127.0.0.1 (a free port unless given); return (proc, port).

    Fails loudly (MosquittoError with mosquitto's own output) if it cannot start.
    extra_conf: more mosquitto.conf lines, e.g. "max_queued_messages 10000\\n".
    """
    tmpdir = Path(tmpdir)
    if not os.access(MOSQUITTO, os.X_OK):
        raise MosquittoError("%s not found or not executable: run `make setup` (apt-get install mosquitto)"
                             % MOSQUITTO)
    attempts = 1 if port is not None else 3
    last: list[str] = []
    for _ in range(attempts):
        p = port if port is not None else free_port()
        proc, lines = _start_once(tmpdir, p, extra_conf)
        if proc.poll() is None:
            return proc, p
        last = lines
        # a free port can be taken between free_port() and mosquitto's bind: try another
        if not any("in use" in line for line in lines):
            break
    raise MosquittoError("mosquitto exited at start:\n%s" % "\n".join(last))


def stop_mosquitto(proc: subprocess.Popen[bytes]) -> None:
    """Stop the broker we started, by its PID; kill it if it does not exit in 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stderr is not None:
        proc.stderr.close()


# ---- a device stand-in on MQTT: signed events published with paho ---------------------

def signed_event(secret_hex: str, type_name: str, seq: int, values: dict[str, float] | None = None,
                 action: str = "report", boot: int = 1, t: int = 1_700_000_000,
                 clock_set: bool = True) -> bytes:
    """One edge.codec event as a device would send it (values by field name)."""
    from edge import codec
    from edge.codes import ACTIONS, code_of
    code = code_of(type_name)
    payload: bytes = codec.encode(codec.Signer(bytes.fromhex(secret_hex)), code, ACTIONS.index(action),
                        boot, seq, t, codec.values_of(code, values or {}), clock_set)
    return payload


class Publisher:
    """A paho client that publishes QoS 1 and waits for the broker's PUBACK.

    Blocking: from async code call it through asyncio.to_thread.
    """

    def __init__(self, host: str, port: int, client_id: str = "test-publisher") -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311)
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.connect(host, port, 30)
        self.client.loop_start()
        if not connected.wait(READY_TIMEOUT_S):
            self.close()
            raise RuntimeError("publisher: no CONNACK from %s:%d" % (host, port))

    def publish(self, topic: str, payload: bytes, retain: bool = False, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(READY_TIMEOUT_S)

    def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """Send all, then wait for every PUBACK: a burst, as a reconnecting device sends."""
        infos = [self.client.publish(t, p, qos=1) for t, p in messages]
        for info in infos:
            info.wait_for_publish(READY_TIMEOUT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _find_corpus() -> str:
    """The labelled traces the tests and benchmarks read (never the product): $CORPUS_DIR,
    else ../shared/corpus beside the checkout, else the workplace's /work/shared/corpus."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.environ.get("CORPUS_DIR"), os.path.join(here, "..", "..", "shared", "corpus"),
                      "/work/shared/corpus"):
        if candidate and os.path.isdir(os.path.join(candidate, "dev")):
            return os.path.abspath(candidate)
    raise RuntimeError("the labelled corpus is not found: set CORPUS_DIR to the folder holding dev/")


CORPUS = _find_corpus()
