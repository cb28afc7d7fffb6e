# boot.py for ESP32 boards, copied by `edgectl provision`: join the site's Wi-Fi (from
# wifi.json, written by provision, never printed) before main.py starts the agent. The
# station reconnects by itself after a drop; the agent's link retries the broker.
import json
import time

import network


def join(path="wifi.json", timeout_ms=20000):
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return None          # no Wi-Fi configured: a wired or test board
    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    if not sta.isconnected():
        sta.connect(cfg["ssid"], cfg["password"])
        start = time.ticks_ms()
        # a deadline: a board out of range still starts its agent, which keeps its events
        while not sta.isconnected() and time.ticks_diff(time.ticks_ms(), start) < timeout_ms:
            time.sleep_ms(200)
    up = sta.isconnected()
    print("wifi %s: %s" % (cfg["ssid"], sta.ifconfig()[0] if up else "NOT connected, check the SSID, "
                           "the password and the signal"))
    return up


join()
del join
