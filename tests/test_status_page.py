"""The status page (gateway/status.py, gateway/status.html): what it shows, from a real
gateway's store; its login rule; and the page itself in headless Chromium against a
whole simulated site, at a desktop's and a phone's size, with screenshots kept."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gateway import auth
from gateway.registry import Registry
from gateway.service import Gateway
from gateway.status import collect, online_rate
from gateway.store import EventRow, Store
from rig import Publisher, signed_event
from test_gateway_ingest import DEVICE, SECRET, WAIT_S, run_with_gateway
from tools.testbench import scenarios
from tools.testbench.browser import Browser
from tools.testbench.site import Device, Site

PASSWORD = "correct horse battery"


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def basic(name: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (name, password)).encode()).decode()}


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_the_online_rate_is_the_share_of_the_day_online() -> None:
    day = 86400.0
    # online an hour before the window, offline for the first 6 h of it, then online
    history = [(-3600.0, "online"), (0.0, "offline"), (6 * 3600.0, "online")]
    assert online_rate(history, 0.0, day) == pytest.approx(0.75)
    # first heard of half-way through: only the time since counts
    assert online_rate([(day / 2, "online")], 0.0, day) == 1.0
    assert online_rate([], 0.0, day) is None


def test_an_alarm_is_active_by_the_device_order_not_by_arrival(tmp_path: Path) -> None:
    # a share group's instances, or a resend, can deliver a clear before its raise
    store = Store(tmp_path / "events.sqlite")
    try:
        def alarm(seq: int, action: str, type_: str = "elevator.overspeed", code: int = 0x22) -> EventRow:
            return EventRow(DEVICE, 1, seq, code, type_, "alarm", action, 1_700_000_000 + seq, True, {"speed": 2.1})
        store.commit([alarm(12, "clear")], now=100.0)
        store.commit([alarm(11, "raise")], now=101.0)            # arrives last, happened first
        store.commit([alarm(13, "raise", "elevator.entrapment", 0x20)], now=102.0)
        assert [a["type"] for a in collect(store, [], 200.0)["alarms"]] == ["elevator.entrapment"]
        store.commit([alarm(14, "raise")], now=103.0)            # raised again
        assert [a["id"] for a in collect(store, [], 200.0)["alarms"]] == [DEVICE + ":1:14", DEVICE + ":1:13"]
    finally:
        store.close()


def test_the_page_shows_devices_alarms_events_and_readings(tmp_path: Path, mosquitto: Any) -> None:
    async def body(gw: Gateway, pub: Publisher) -> None:
        topic = "dev/%s/ev" % DEVICE
        await asyncio.to_thread(pub.publish, "dev/%s/status" % DEVICE, b"online", True)
        events = [signed_event(DEVICE, SECRET, "device.boot", 1, {"version": 3}),
                  signed_event(DEVICE, SECRET, "device.comm_fault", 2, {"kind": 2, "count": 1}),
                  *[signed_event(DEVICE, SECRET, "telemetry.elevator", i, {"floor": i}) for i in range(3, 6)],
                  signed_event(DEVICE, SECRET, "elevator.door_open_moving", 6, {"floor": 4}, action="raise"),
                  signed_event(DEVICE, SECRET, "elevator.door_open_moving", 7, {"floor": 4}, action="clear"),
                  signed_event(DEVICE, SECRET, "elevator.entrapment", 8, {"floor": 2, "duration_s": 61},
                               action="raise")]
        for e in events:                      # one by one: the page orders events by arrival
            await asyncio.to_thread(pub.publish, topic, e)
        m = gw.metrics
        await m.wait_until(lambda: m.get("ingest.stored") == len(events), WAIT_S)
        await asyncio.to_thread(pub.publish, topic, events[1])   # sent again: its ack was lost
        await asyncio.to_thread(pub.publish, "dev/%s/status" % DEVICE, b"offline", True)
        await m.wait_until(lambda: m.get("ingest.duplicates") == 1 and m.get("ingest.status") == 2, WAIT_S)
        assert gw.status_url is not None
        status, headers, raw = await asyncio.to_thread(get, gw.status_url + "/api/status")
        assert status == 200 and headers["Cache-Control"] == "no-store"
        s = json.loads(raw)
        [dev] = s["devices"]
        assert (dev["id"], dev["status"], dev["firmware"], dev["profile"]) == (DEVICE, "offline", 3, "elevator")
        assert dev["link_24h"] == {"resends": 1, "comm_faults": 1, "poll_faults": 0, "outbox_drops": 0}
        assert 0.0 <= dev["online_24h"] < 1.0 and dev["last_seen"] >= dev["last_event"]
        # the door alarm was cleared: only the entrapment is active
        assert [(a["device"], a["type"]) for a in s["alarms"]] == [(DEVICE, "elevator.entrapment")]
        assert [e["type"] for e in s["events"][:2]] == ["elevator.entrapment", "elevator.door_open_moving"]
        assert s["streams"]["alarms"]["pending"] >= 1 and s["uplink"]["platform"].endswith("/v1/events")

        status, _, raw = await asyncio.to_thread(get, gw.status_url + "/api/readings?device=" + DEVICE)
        chart = json.loads(raw)
        assert chart["fields"][:3] == ["mode", "dir", "speed"]
        assert [p["values"]["floor"] for p in chart["points"]] == [3, 4, 5]      # oldest first
        status, _, raw = await asyncio.to_thread(get, gw.status_url + "/api/readings?device=nobody")
        assert status == 404 and b"not known to this gateway" in raw
        status, _, raw = await asyncio.to_thread(get, gw.status_url + "/api/readings?device=%s&limit=x" % DEVICE)
        assert status == 400 and b"limit" in raw
        status, headers, raw = await asyncio.to_thread(get, gw.status_url + "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html") and b"api/status" in raw
    run_with_gateway(tmp_path, mosquitto.url, body, status_listen="127.0.0.1:0")


def test_the_page_refuses_to_listen_beyond_loopback_without_logins_and_https(tmp_path: Path) -> None:
    data = str(tmp_path / "gw")
    done = cli("run", "--data", data, "--status-listen", "0.0.0.0:0")
    assert done.returncode == 2 and "--status-logins FILE" in done.stderr and "Traceback" not in done.stderr
    logins = str(tmp_path / "logins.json")
    assert cli("status-login", "add", "duty", "--file", logins, stdin=PASSWORD + "\n").returncode == 0
    done = cli("run", "--data", data, "--status-listen", "0.0.0.0:0", "--status-logins", logins)
    assert done.returncode == 2 and "--status-cert FILE --status-key FILE" in done.stderr
    done = cli("status-login", "add", "duty", "--file", logins, stdin="short\n")
    assert done.returncode == 2 and "at least 10" in done.stderr
    os.chmod(logins, 0o644)
    done = cli("run", "--data", data, "--status-listen", "127.0.0.1:0", "--status-logins", logins)
    assert done.returncode == 2 and "chmod 600" in done.stderr


def test_with_logins_every_page_asks_for_one(tmp_path: Path, mosquitto: Any) -> None:
    logins = tmp_path / "logins.json"
    done = cli("status-login", "add", "duty", "--file", str(logins), stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert logins.stat().st_mode & 0o777 == 0o600 and PASSWORD not in logins.read_text()   # a hash only

    async def body(gw: Gateway, pub: Publisher) -> None:
        assert gw.status_url is not None
        for path in ("/", "/api/status", "/metrics"):
            status, headers, _ = await asyncio.to_thread(get, gw.status_url + path)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
            status, _, _ = await asyncio.to_thread(get, gw.status_url + path, basic("duty", "wrong password"))
            assert status == 401
            status, _, _ = await asyncio.to_thread(get, gw.status_url + path, basic("nobody", PASSWORD))
            assert status == 401
            status, _, _ = await asyncio.to_thread(get, gw.status_url + path, basic("duty", PASSWORD))
            assert status == 200
    run_with_gateway(tmp_path, mosquitto.url, body, status_listen="127.0.0.1:0", status_logins=str(logins))


# ---- the page in a browser, against a whole site ----------------------------------------

DESKTOP = (1280, 900, False)
PHONE = (390, 844, True)
PAGE_S = 10.0          # the page polls every 3 s: what happened shows within this


def shown(device: str, status: str) -> str:
    return "document.querySelector('[data-device=\"%s\"]')?.dataset.status === '%s'" % (device, status)


def alarm_shown(device: str, type_: str) -> str:
    return "document.querySelector('[data-alarm=\"%s %s\"]') !== null" % (device, type_)


def gateway_json(site: Site, path: str) -> Any:
    return json.loads(get(site.status_urls["gateway"] + path)[2])


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_page_shows_a_device_going_offline_and_an_alarm_within_seconds(tmp_path: Path, size: Any) -> None:
    width, height, mobile = size
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print("\nscreenshots: %s" % shots)
    trapped = scenarios.write(str(tmp_path / "trapped.jsonl.gz"), *scenarios.elevator(seconds=900, entrapment_at=20))
    quiet = scenarios.write(str(tmp_path / "quiet.jsonl.gz"), *scenarios.elevator(seconds=900, entrapment_at=None))
    devices = [Device("elev-trap", "elevator", trapped, speed=4), Device("elev-quiet", "elevator", quiet, speed=4)]
    with Site(str(tmp_path / "site"), devices) as site, \
            Browser(tmp_path / "chromium", width, height, mobile=mobile) as browser:
        browser.open(site.status_urls["gateway"] + "/")
        browser.wait_for(" && ".join(shown(d.device_id, "online") for d in devices), 60)
        browser.wait_for("document.querySelector('#chart polyline') !== null", 60)   # readings drawn
        browser.screenshot(shots / "1-online.png")
        # a mark in this document: still there at the end, the page was never reloaded
        browser.evaluate("window.sameDocument = true")
        polls = browser.evaluate("Number(document.body.dataset.polls)")

        # a device dies: its broker connection drops, the broker publishes its will at once
        site.kill("agent-elev-quiet")
        browser.wait_for(shown("elev-quiet", "offline"), PAGE_S)
        assert browser.evaluate(shown("elev-trap", "online"))
        browser.screenshot(shots / "2-offline.png")

        # the entrapment: once the gateway has it, the page shows it within seconds, unreloaded
        deadline = time.monotonic() + 120
        while not gateway_json(site, "/api/status")["alarms"]:
            assert time.monotonic() < deadline, "no entrapment reached the gateway:\n" + site.log_of("agent-elev-trap")
            time.sleep(0.2)
        assert [a["type"] for a in gateway_json(site, "/api/status")["alarms"]] == ["elevator.entrapment"]
        browser.wait_for(alarm_shown("elev-trap", "elevator.entrapment"), PAGE_S)
        assert browser.evaluate("Number(document.body.dataset.polls)") > polls    # by polling, in
        assert browser.evaluate("window.sameDocument === true")                  # the same page
        assert browser.evaluate("document.getElementById('alarm-count').textContent") == "1"
        if mobile:
            # a phone: nothing wider than the screen, each device a card
            assert browser.evaluate("document.documentElement.scrollWidth") <= width
            assert browser.evaluate("getComputedStyle(document.querySelector('#devices thead')).display") == "none"
        browser.screenshot(shots / "3-alarm.png")
    for name in ("1-online.png", "2-offline.png", "3-alarm.png"):
        assert (shots / name).stat().st_size > 10_000, name
    print("screenshots kept: %s" % ", ".join(str(p) for p in sorted(shots.iterdir())))


def test_beyond_loopback_the_page_is_served_over_https_with_a_login(tmp_path: Path, mosquitto: Any) -> None:
    import ssl
    from tools.testbench.pki import make_ca
    ca = make_ca(str(tmp_path / "pki"))
    pair = ca.issue(str(tmp_path / "pki"), "status")
    logins = tmp_path / "logins.json"
    assert cli("status-login", "add", "duty", "--file", str(logins), stdin=PASSWORD + "\n").returncode == 0

    async def body(gw: Gateway, pub: Publisher) -> None:
        assert gw.status_url is not None and gw.status_url.startswith("https://0.0.0.0:")
        url = "https://127.0.0.1:%s/api/status" % gw.status_url.rsplit(":", 1)[1]
        context = ssl.create_default_context(cafile=ca.cert)

        def fetch(headers: dict[str, str]) -> int:
            request = urllib.request.Request(url, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10, context=context) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code
        assert await asyncio.to_thread(fetch, {}) == 401
        assert await asyncio.to_thread(fetch, basic("duty", PASSWORD)) == 200
        with pytest.raises(OSError):                         # plain HTTP gets nothing
            await asyncio.to_thread(urllib.request.urlopen, url.replace("https:", "http:"), None, 5)
    run_with_gateway(tmp_path, mosquitto.url, body, status_listen="0.0.0.0:0", status_logins=str(logins),
                     status_cert=pair.cert, status_key=pair.key)


def test_the_review_ranks_devices_by_dispatchs_outcomes_with_their_config(tmp_path: Path) -> None:
    # two cars trapping someone; dispatch finds one alarm false, the other real
    noisy = scenarios.write(str(tmp_path / "noisy.jsonl.gz"), *scenarios.elevator(seconds=900, entrapment_at=20))
    real = scenarios.write(str(tmp_path / "real.jsonl.gz"), *scenarios.elevator(seconds=900, entrapment_at=20))
    devices = [Device("elev-noisy", "elevator", noisy, speed=4), Device("elev-real", "elevator", real, speed=4)]
    with Site(str(tmp_path / "site"), devices) as site:
        def raised(events: list[dict]) -> list[dict]:
            return [e for e in events if e["type"] == "elevator.entrapment" and e["action"] == "raise"]
        alarms = {e["device"]: e["id"] for e in raised(site.wait_for(lambda ev: len(raised(ev)) == 2, timeout=120))}
        said = json.dumps({"outcomes": [{"id": alarms["elev-noisy"], "outcome": "false"},
                                        {"id": alarms["elev-real"], "outcome": "confirmed"}]}).encode()
        creds = auth.Credentials.load(site.credentials)
        request = urllib.request.Request(site.platform_url + "/v1/outcomes", data=said, headers={
            "Content-Type": "application/json", **auth.sign(creds, "POST", "/v1/outcomes", said)})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert json.load(r) == {"recorded": 2}

        review = gateway_json(site, "/api/review")
    assert review["error"] is None and review["days"] == 30
    first, second = review["devices"][:2]
    assert (first["device"], first["alarms"], first["false"], first["false_rate"]) == ("elev-noisy", 1, 1, 1.0)
    assert (second["device"], second["confirmed"], second["false_rate"]) == ("elev-real", 1, 0.0)
    # what this gateway's registry holds of each: the installer's record
    registry = Registry.in_dir(os.path.join(site.workdir, "gateway"))
    assert first["config"] == registry.get("elev-noisy").extra
