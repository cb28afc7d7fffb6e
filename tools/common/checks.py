"""What the board's self-test and the broker say, as an installer reads it: the self-test's
report judged into what worked and what to do, and a watch on dev/<id>/status as the
gateway user that proves the device's password and ACL together.
"""
from __future__ import annotations

import os
import threading
import time

from edge.ids import TOOL_CLIENT_PREFIX
from tools.common import credentials as acl
from tools.common.report import StepFailed
from tools.common.rs485 import line_settings

# what the self-test's bus error kinds mean on site: {who} is the device on the bus (a
# Modbus slave, a CJ/T 188 meter), {find} how to find its id or address
BUS_ADVICE = {
    "timeout": "no answer from {who} on {port} at {line}: check the A/B wiring, {find} and the baud rate",
    "crc": "replies from {who} on {port} fail their check at {line}: check the baud rate and parity, "
           "the 120 ohm termination at both ends and the cable shield",
    "frame": "malformed replies on {port} at {line}: two devices may answer as {who}, or the baud rate is "
             "wrong; check {find}",
    "exception": "{who} on {port} refused the read ({detail}): it is probably not a device of "
                 "profile {profile}, or its register map differs; check --profile and {find}",
    "open": "the board cannot open its sensor port {port} ({detail}): check --bus-port",
}



def judge(report: dict, cfg: dict, seen: bool | None = None, why_unseen: str = "") -> tuple[list[str], list[str]]:
    """The self-test's result as (what worked, what is wrong and what to do). seen: whether
    the gateway user saw the board's "online" (None: could not watch)."""
    good, bad = [], []
    if not report["config"]["ok"]:
        return good, ["the board rejected its config: %s" % report["config"]["detail"]]
    b = cfg["bus"]
    line = line_settings(b["baud"], b["parity"], b["stop"])
    bus = report["bus"]
    if b.get("protocol") == "cjt188":
        who, find = "meter %s" % b["address"], "the meter's address (edgectl scan --protocol cjt188)"
    else:
        who, find = "slave %d" % b["slave"], "the slave id (edgectl scan)"
    if bus["ok"]:
        reading = ", ".join("%s=%s" % kv for kv in sorted(bus["reading"].items()))
        good.append("%s answered on %s (%s)" % (who, b["port"], reading))
    else:
        advice = BUS_ADVICE.get(bus["error"], "the sensor read failed on {port}: {detail}")
        bad.append(advice.format(who=who, find=find, port=b["port"], line=line, profile=cfg["profile"],
                                 detail=bus.get("detail", "")))
    br = report["broker"]
    where = "%s:%d" % (cfg["broker"]["host"], cfg["broker"]["port"])
    dev = cfg["device_id"]
    if br["ok"] and seen:
        good.append("connected to the broker at %s as %s; the gateway user saw it on dev/%s/status" % (
            where, dev, dev))
    elif br["ok"] and seen is None:
        good.append("connected to the broker at %s as %s (topic permissions not checked: %s)" % (
            where, dev, why_unseen))
    elif br["ok"]:
        bad.append("the broker at %s let %s in, but what it published on dev/%s/status did not reach the "
                   "gateway user: the ACL file lacks its lines or the broker has not reloaded it (systemctl "
                   "reload mosquitto, or kill -HUP its pid)" % (where, dev, dev))
    elif br["error"] == "unreachable":
        bad.append("the board cannot reach the broker at %s (%s): check --broker, the network between the "
                   "board and the gateway, and that the broker runs" % (where, br.get("detail", "")))
    elif br["error"] == "refused":
        bad.append("the broker at %s refused %s's user name or password (%s): the broker has not read "
                   "the new password file; reload it (systemctl reload mosquitto, or kill -HUP its pid) and "
                   "run provision again" % (where, dev, br.get("detail", "")))
    return good, bad


class OnlineWatch:
    """Watch dev/<id>/status as the gateway user for a live "online": published by the
    self-test's connection, then by the agent once it has started with its credentials.
    Retained messages are the past and are ignored."""

    def __init__(self, cfg: dict, auth: acl.BrokerAuth, broker_ca: str | None = None) -> None:
        self.device_id = cfg["device_id"]
        self.online = False
        self.client = None
        self.why = ""
        self.event = threading.Event()
        self.t0 = time.monotonic()
        if not os.path.exists(os.path.join(auth.dir, "gateway.password")):
            self.why = "no gateway password in %s to watch the broker with" % auth.dir
            return
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="%sprovision-%s" % (TOOL_CLIENT_PREFIX, os.getpid()))
        c.username_pw_set(acl.GATEWAY_USER, auth.gateway_password())
        if cfg["broker"].get("tls"):
            if not broker_ca:
                self.why = "the broker speaks TLS: give --broker-ca to watch it from here"
                return
            c.tls_set(ca_certs=broker_ca)
        subscribed = threading.Event()
        c.on_connect = lambda cl, u, f, reason, p: (
            cl.subscribe("dev/%s/status" % self.device_id, 1) if not reason.is_failure else None)
        c.on_subscribe = lambda *a: subscribed.set()
        c.on_message = self._message
        try:
            c.connect(cfg["broker"]["host"], cfg["broker"]["port"], 30)
        except OSError as e:
            self.why = "this machine cannot reach the broker (%s)" % e
            return
        c.loop_start()
        if not subscribed.wait(5):
            c.loop_stop()
            self.why = "the broker did not let the gateway user subscribe from here"
            return
        self.client = c

    def _message(self, client, userdata, msg) -> None:
        if not msg.retain and msg.payload == b"online":
            self.online = True
            self.event.set()

    def seen(self, timeout: float) -> bool:
        return self.event.wait(timeout)

    def arm(self) -> None:
        """Forget what was seen so far: the next "online" is the agent's."""
        self.event.clear()
        self.online = False
        self.t0 = time.monotonic()

    def wait(self, timeout: float, step) -> str:
        if self.client is None:
            return "not confirmed: " + self.why
        while not self.event.wait(0.2):
            waited = time.monotonic() - self.t0
            if waited > timeout:
                raise StepFailed("the agent did not come online at the broker within %.0f s: follow its "
                                 "output with edgectl logs to see why" % timeout)
            step.progress(int(waited), int(timeout), "s waiting for the agent to connect")
        return "%s is online at the broker (%.1f s after the reset)" % (self.device_id, time.monotonic() - self.t0)

    def close(self) -> None:
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()
