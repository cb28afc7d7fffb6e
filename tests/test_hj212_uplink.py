"""The HJ 212 uplink end to end: signed device events through a real mosquitto into a real
gateway, to the reference platform as JSON events and as HJ 212 packets over TCP
(gateway/hj212_uplink.py, gateway/hj212_platform.py); unacknowledged packets survive a
restart."""
from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from gateway import auth
from gateway.hj212_platform import Hj212Server
from gateway.hj212_uplink import Hj212Config
from gateway.platform import PlatformDB, PlatformServer
from gateway.registry import Registry
from gateway.service import Gateway, GatewayConfig
from rig import Publisher, signed_event

SECRET = "33" * 32
DEVICE = "wq-001"
MN = "010000A8900016F000169DC0"
WAIT_S = 10.0
T0 = 1_700_000_400                    # a 10-minute boundary


def setup(tmp_path: Path) -> None:
    reg = Registry.in_dir(tmp_path / "gw")
    reg.add(DEVICE, "water_quality", SECRET, replace=True)
    reg.save()
    db = PlatformDB(tmp_path / "platform.sqlite")
    db.add_gateway("gw-test").save(tmp_path / "gw" / auth.FILENAME)
    db.close()


def episode() -> list[bytes]:
    """A river sonde's ammonia episode: 12 readings a minute apart, NH3-N rising past the
    class III limit, a pH calibration visit reported, the alarm, one poll that failed."""
    out = []
    for i in range(12):
        values = {"ph": 7.2, "do": 6.1, "nh3n": 0.4 + 0.15 * i, "tp": 0.12, "temp": 14.0, "turb": 8.0}
        if i == 5:
            values["do"] = None       # the DO probe did not answer
        out.append(signed_event(DEVICE, SECRET, "telemetry.water_quality", i + 1, values, t=T0 + 60 * i))
    out.append(signed_event(DEVICE, SECRET, "device.sensor_health", 20,
                            {"kind": 3, "field": 0, "duration_s": 120}, t=T0 + 60 * 11))
    out.append(signed_event(DEVICE, SECRET, "wq.pollution", 21, {"param": 2, "value": 1.9, "limit": 1.0,
                                                                 "class": 3}, action="raise", t=T0 + 60 * 11))
    return out


async def publish(gw: Gateway, payloads: list[bytes]) -> None:
    assert gw.broker_address is not None
    pub = await asyncio.to_thread(Publisher, gw.broker_address.host, gw.broker_address.port)
    try:
        for p in payloads:
            await asyncio.to_thread(pub.publish, "dev/%s/ev" % DEVICE, p)
    finally:
        await asyncio.to_thread(pub.close)


def config(tmp_path: Path, p: PlatformServer, hj: Hj212Server, broker: str, **hj_cfg: Any) -> GatewayConfig:
    return GatewayConfig(data_dir=tmp_path / "gw", platform_url=p.url, broker=broker, gateway_id="gw-test",
                         backoff_min=0.05, backoff_max=0.2,
                         hj212=Hj212Config("127.0.0.1:%d" % hj.port, mn={DEVICE: MN}, **hj_cfg))


def test_a_pollution_episode_reaches_the_platform_as_events_and_as_hj212(tmp_path: Path, mosquitto: Any) -> None:
    setup(tmp_path)

    async def main() -> None:
        async with PlatformServer(tmp_path / "platform.sqlite") as p, \
                Hj212Server(tmp_path / "platform.sqlite") as hj:
            async with Gateway(config(tmp_path, p, hj, mosquitto.url)) as gw:
                await publish(gw, episode())
                # 12 real-time packets, one closed 10-minute period (the 11th reading is past it)
                await gw.metrics.wait_until(lambda: gw.metrics.get("hj212.acked") >= 13, WAIT_S)
                await gw.metrics.wait_until(lambda: len(p.platform.db.list(device=DEVICE)) >= 14, WAIT_S)
                assert gw.hj212 is not None
                assert (await gw.db.call(gw.hj212.counts))["unacked"] == 0
            events = p.platform.db.list(device=DEVICE)
            assert "wq.pollution" in [e["type"] for e in events]
            rt = hj.packets("2011")
            assert len(rt) == 12 and {r["mn"] for r in rt} == {MN} and {r["st"] for r in rt} == {"21"}
            assert [r["cp"]["w21003-Rtd"] for r in rt][-1] == "2.05"
            assert rt[5]["cp"]["w01009-Flag"] == "B" and "w01009-Rtd" not in rt[5]["cp"]
            [minute] = hj.packets("2051")
            assert minute["data_time"] == "20231115062000"      # the period's start, Beijing time
            assert minute["cp"]["w21003-Max"] == "1.75" and minute["cp"]["w01009-Flag"] == "B"
            assert hj.refused == {}
    asyncio.run(main())


def test_an_unacknowledged_packet_is_sent_again_after_a_restart(tmp_path: Path, mosquitto: Any) -> None:
    setup(tmp_path)

    async def main() -> None:
        async with PlatformServer(tmp_path / "platform.sqlite") as p, \
                Hj212Server(tmp_path / "platform.sqlite") as hj:
            hj.ack = False                                       # the platform's 9014s are lost
            async with Gateway(config(tmp_path, p, hj, mosquitto.url, overtime=1, recount=1)) as gw:
                await publish(gw, episode()[:1])
                await gw.metrics.wait_until(lambda: gw.metrics.get("hj212.timeouts") >= 2, WAIT_S)
                assert gw.metrics.get("hj212.acked") == 0
            hj.ack = True
            async with Gateway(config(tmp_path, p, hj, mosquitto.url)) as gw:
                await gw.metrics.wait_until(lambda: gw.metrics.get("hj212.acked") == 1, WAIT_S)
            # the same packet (same QN) three times at the platform, stored once
            assert len(hj.packets("2011")) == 1 and hj.accepted == 3
        conn = sqlite3.connect(tmp_path / "gw" / "events.sqlite")
        assert conn.execute("SELECT count(*), count(acked_at), max(tries) FROM hj212_out").fetchone() == (1, 1, 3)
    asyncio.run(main())


def test_the_platform_sets_the_timeout_and_retries_which_outlive_a_restart(tmp_path: Path, mosquitto: Any) -> None:
    setup(tmp_path)

    async def until(check: Any) -> None:
        for _ in range(int(WAIT_S / 0.05)):
            if check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("timed out")

    async def main() -> None:
        async with PlatformServer(tmp_path / "platform.sqlite") as p, \
                Hj212Server(tmp_path / "platform.sqlite") as hj:
            async with Gateway(config(tmp_path, p, hj, mosquitto.url, password="654321")) as gw:
                await publish(gw, episode()[:1])                 # the site connects to send it
                await gw.metrics.wait_until(lambda: gw.metrics.get("hj212.acked") == 1, WAIT_S)
                assert gw.hj212 is not None
                hj.set_timeouts(7, 4, pw="123456")               # not this site's password
                await until(lambda: hj.replies)
                assert hj.replies == [("9011", {"QnRtn": "3"})]
                assert (gw.hj212.overtime, gw.hj212.recount) == (10, 3)      # Table 1's defaults
                hj.set_timeouts(7, 4, pw="654321")
                await until(lambda: len(hj.replies) == 3)
                assert hj.replies[1:] == [("9011", {"QnRtn": "1"}), ("9012", {"ExeRtn": "1"})]
                assert (gw.hj212.overtime, gw.hj212.recount) == (7, 4)
                assert gw.metrics.get("hj212.commands_refused") == 1
            async with Gateway(config(tmp_path, p, hj, mosquitto.url, password="654321")) as gw:
                assert gw.hj212 is not None
                await until(lambda: gw.hj212 is not None and gw.hj212.overtime == 7)
                assert gw.hj212.recount == 4
    asyncio.run(main())


def test_the_hj212_uplink_is_refused_in_clear_off_loopback_and_without_a_password_file(
        tmp_path: Path, capsys: Any) -> None:
    from gateway.cli import main
    setup(tmp_path)
    base = ["run", "--data", str(tmp_path / "gw"), "--broker", "mqtt://127.0.0.1:1", "--gateway-id", "gw-test"]
    pw = tmp_path / "hj212-password"
    pw.write_text("654321\n")
    pw.chmod(0o600)
    cases = [
        (["--hj212", "192.0.2.10:6000", "--hj212-password-file", str(pw)],
         "HJ 212-2017 has no encryption", "--insecure-plain-hj212"),
        (["--hj212", "127.0.0.1:6000"], "--hj212 needs --hj212-password-file FILE", "6 characters"),
    ]
    for args, *expected in cases:
        assert main(base + args) == 2, args
        err = capsys.readouterr().err
        assert all(e in err for e in expected), err
    pw.chmod(0o644)                      # others may read it: refused, saying how to fix it
    assert main(base + ["--hj212", "127.0.0.1:6000", "--hj212-password-file", str(pw)]) == 2
    assert "mode 0644 lets other users read the password; chmod 600" in capsys.readouterr().err
