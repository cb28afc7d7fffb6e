"""The broker credentials edgectl provision writes, enforced by a real mosquitto: a device
publishes only under its own topics, and wrong or borrowed credentials are refused."""
import os
import shutil
import stat
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tools.common import credentials as acl

SECRET_A = "aa" * 32
SECRET_B = "bb" * 32


def _client(client_id, user, password):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    c.username_pw_set(user, password)
    return c


def _connect(port, client_id, user, password):
    """(client, reason code of the CONNACK); the client is looping when accepted."""
    c = _client(client_id, user, password)
    done = threading.Event()
    result = {}

    def on_connect(client, userdata, flags, reason, props):
        result["reason"] = reason
        done.set()
    c.on_connect = on_connect
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    assert done.wait(5), "no CONNACK"
    if result["reason"].is_failure:
        c.loop_stop()
    else:
        # paho calls on_connect a moment before it counts itself connected
        deadline = time.monotonic() + 5
        while not c.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
    return c, result["reason"]


@pytest.fixture
def broker(tmp_path):
    auth = acl.BrokerAuth(str(tmp_path / "mosquitto"))
    auth.add_device("dev-a", SECRET_A)
    auth.add_device("dev-b", SECRET_B)
    b = acl.start_broker(auth)
    try:
        yield auth, b.port
    finally:
        b.stop()


def test_a_device_cannot_publish_or_subscribe_under_another_devices_topics(broker):
    auth, port = broker
    gw, reason = _connect(port, "gw", acl.GATEWAY_USER, auth.gateway_password())
    assert not reason.is_failure, reason
    got = []
    subscribed = threading.Event()
    gw.on_message = lambda c, u, msg: got.append((msg.topic, msg.payload))
    gw.on_subscribe = lambda *a: subscribed.set()
    gw.subscribe([("dev/+/ev", 1), ("dev/+/status", 1)])
    assert subscribed.wait(5)

    # dev-a's credentials, publishing as dev-b: mosquitto drops the message (MQTT 3.1.1 has
    # no way to say no; it acknowledges it, and now and then it also drops the connection)
    forger, reason = _connect(port, "forger", "dev-a", acl.device_password(SECRET_A))
    assert not reason.is_failure, reason
    try:
        forger.publish("dev/dev-b/ev", b"forged", qos=1).wait_for_publish(5)
    except RuntimeError:
        pass
    forger.loop_stop()
    a, reason = _connect(port, "dev-a", "dev-a", acl.device_password(SECRET_A))
    assert not reason.is_failure, reason
    a.publish("dev/dev-a/ev", b"mine", qos=1).wait_for_publish(5)
    # dev-a listens to dev-b's commands: mosquitto grants the subscription, then delivers nothing
    heard = []
    a.on_message = lambda c, u, msg: heard.append(msg.topic)
    suback = threading.Event()
    a.on_subscribe = lambda *args: suback.set()
    a.subscribe([("dev/dev-b/cmd/#", 1), ("dev/dev-a/cmd/#", 1)])
    assert suback.wait(5)
    gw.publish("dev/dev-b/cmd/reboot", b"x", qos=1).wait_for_publish(5)
    gw.publish("dev/dev-a/cmd/reboot", b"x", qos=1).wait_for_publish(5)

    deadline = threading.Event()
    while not got and not deadline.wait(0.05):
        pass
    deadline.wait(0.5)   # a forged message, were it forwarded, would be here by now
    assert got == [("dev/dev-a/ev", b"mine")]
    assert heard == ["dev/dev-a/cmd/reboot"], "dev-a heard another device's commands"
    a.loop_stop()
    a.disconnect()
    gw.loop_stop()
    gw.disconnect()


@pytest.mark.parametrize("user,password", [
    ("dev-a", "not-the-password"),                 # a wrong password
    ("dev-b", acl.device_password(SECRET_A)),      # another device's password
    ("dev-c", acl.device_password(SECRET_A)),      # a user mosquitto does not know
    (None, None),                                  # anonymous
])
def test_wrong_or_borrowed_credentials_are_refused(broker, user, password):
    _, port = broker
    _, reason = _connect(port, "intruder", user, password)
    assert reason.is_failure
    assert str(reason) in ("Not authorized", "Bad user name or password"), str(reason)


def test_files_are_private_idempotent_and_read_by_mosquitto_passwd(tmp_path):
    auth = acl.BrokerAuth(str(tmp_path / "m"))
    assert auth.add_device("dev-a", SECRET_A) is True
    assert auth.add_device("dev-a", SECRET_A) is False    # nothing to change: no reload needed
    assert auth.add_device("dev-a", SECRET_B) is True     # rotated
    acl_text = open(auth.acl).read()
    assert acl_text.count("user dev-a") == 1
    for path in (auth.passwd, auth.acl):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    # the hash format is mosquitto_passwd's own (it comes with mosquitto, which the suite needs)
    passwd = shutil.which("mosquitto_passwd")
    assert passwd, "mosquitto_passwd is not on PATH: install mosquitto (it ships the tool)"
    other = str(tmp_path / "other")
    subprocess.run([passwd, "-c", "-b", other, "x", "s3cret"], check=True, capture_output=True)
    hashed = open(other).read().strip().split(":", 1)[1]
    assert acl.check_password("s3cret", hashed)
    assert not acl.check_password("wrong", hashed)
    assert acl.check_password(acl.device_password(SECRET_B), open(auth.passwd).read().split(":", 1)[1].strip())
