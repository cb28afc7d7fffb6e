"""Elevator supervision end to end (docs/elevator-supervision.md): signed maintenance
sessions from a device stand-in over real mosquitto, the real gateway and its SQLite
store, the real platform receiver. A maintenance company's claim is checked against the
sessions (gateway/maintenance.py, GET /v1/maintenance/check); the gateway raises and
clears overdue maintenance and inspection (gateway/supervision.py) across a restart.

Time: the sessions are dated in the past (a session that ended 16 days ago), so the
gateway's own clock makes them overdue; nothing waits 15 days."""
from __future__ import annotations

import asyncio
import datetime
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp

from gateway.broker import device_password
from gateway.platform import PlatformServer
from gateway.registry import Registry
from gateway.service import Gateway, GatewayConfig
from rig import Publisher, signed_event
from test_platform import Client

DEVICE = "elev-001"
SECRET = "11" * 32
GATEWAY_ID = "gw-test"
WAIT_S = 10.0
DAY = 86400
NOW = int(time.time())


def provision(data: Path, **extra: Any) -> None:
    """devices.json with the elevator (extra: e.g. inspection_due)."""
    reg = Registry.in_dir(data)
    if data.joinpath("devices.json").exists():
        reg.load()
    reg.add(DEVICE, "elevator", SECRET, replace=True, **extra)
    reg.save()


class Site:
    """The running parts of one scenario: the platform, the gateway, the device stand-in."""

    def __init__(self, platform: PlatformServer, gw: Gateway, pub: Publisher) -> None:
        self.platform, self.gw, self.pub = platform, gw, pub
        self.seq = 0

    async def session(self, start: int, minutes: int, doors: int = 6, floors: int = 4) -> str:
        """The device reports one maintenance session (raise at its start, clear with the
        summary at its end); its id at the platform, once the gateway stored both."""
        end = start + minutes * 60
        stored = self.gw.metrics.get("ingest.stored")
        for action, values, t in (("raise", {"start": start}, start + 10),
                                  ("clear", {"start": start, "end": end, "duration_s": end - start,
                                             "door_cycles": doors, "floors_served": floors}, end + 10)):
            self.seq += 1
            payload = signed_event(DEVICE, SECRET, "elevator.maintenance", self.seq, values, action=action, t=t)
            await asyncio.to_thread(self.pub.publish, "dev/%s/ev" % DEVICE, payload)
        await self.gw.metrics.wait_until(lambda: self.gw.metrics.get("ingest.stored") >= stored + 2, WAIT_S)
        return "%s:1:%d" % (DEVICE, self.seq)

    async def uploaded(self, n: int) -> None:
        """Until the platform has accepted n events in all."""
        m = self.platform.platform.metrics
        await m.wait_until(lambda: m.get("platform.accepted") >= n, WAIT_S)

    def at_platform(self, type_: str) -> list[dict[str, Any]]:
        return self.platform.platform.db.list(DEVICE, type_)


@asynccontextmanager
async def platform_running(tmp_path: Path) -> AsyncIterator[PlatformServer]:
    async with PlatformServer(tmp_path / "platform.sqlite") as p:
        p.add_gateway(GATEWAY_ID, tmp_path / "gw")
        p.platform.db.import_keys({DEVICE: (SECRET, None, None)})   # so it checks the device's MACs
        yield p


@asynccontextmanager
async def gateway_running(tmp_path: Path, p: PlatformServer, broker: str) -> AsyncIterator[Site]:
    cfg = GatewayConfig(data_dir=tmp_path / "gw", platform_url=p.url, broker=broker, gateway_id=GATEWAY_ID,
                        backoff_max=1.0)
    async with Gateway(cfg) as gw:
        pub = await asyncio.to_thread(Publisher, "127.0.0.1", int(broker.rsplit(":", 1)[1]),
                                      DEVICE, DEVICE, device_password(SECRET))
        try:
            yield Site(p, gw, pub)
        finally:
            await asyncio.to_thread(pub.close)


def at(day: int, hour: int) -> int:
    """A time `day` days before today's midnight UTC, at `hour`."""
    return NOW - NOW % DAY - day * DAY + hour * 3600


def test_maintenance_claims_are_checked_against_the_sessions(tmp_path: Path, mosquitto: Any) -> None:
    provision(tmp_path / "gw")

    async def main() -> None:
        async with platform_running(tmp_path) as p, gateway_running(tmp_path, p, mosquitto.url) as site:
            genuine = await site.session(at(10, 9), minutes=50)
            short = await site.session(at(5, 14), minutes=4, doors=1, floors=1)
            await site.uploaded(4)
            regulator = p.add_gateway("regulator-1")         # the district's own signed client
            async with aiohttp.ClientSession() as http:
                client = Client(http, p.url, regulator)

                async def claim(kind: str, start: int, end: int) -> dict[str, Any]:
                    status, answer = await client.get("/v1/maintenance/check", device=DEVICE, kind=kind,
                                                      start=str(start), end=str(end))
                    assert status == 200, answer
                    return answer

                # the company's half-monthly record for the morning of the genuine session
                ok = await claim("half_monthly", at(10, 8), at(10, 12))
                assert ok["result"] == "confirmed" and [s["id"] for s in ok["sessions"]] == [genuine]
                assert ok["sessions"][0]["duration_s"] == 50 * 60 and ok["sessions"][0]["verified"] == "mac_ok"
                # the same 50 minutes are not a year's work
                assert (await claim("yearly", at(10, 0), at(10, 23)))["result"] == "too_short"
                # a quarterly record for the afternoon the car was in inspection mode 4 minutes
                faked = await claim("quarterly", at(5, 13), at(5, 17))
                assert faked["result"] == "too_short" and [s["id"] for s in faked["sessions"]] == [short]
                assert faked["min_duration_s"] == 30 * 60
                # a record for a day the car never left normal service
                none = await claim("half_monthly", at(3, 8), at(3, 18))
                assert none["result"] == "no_session" and none["sessions"] == []

                status, answer = await client.get("/v1/maintenance/check", device=DEVICE, kind="weekly",
                                                  start="1", end="2")
                assert status == 400 and "kind: must be one of half_monthly" in answer["error"]
                assert (await Client(http, p.url, None).get("/v1/maintenance/check", device=DEVICE,
                                                            kind="yearly", start="1", end="2"))[0] == 401
    asyncio.run(main())

    def cli(kind: str, start: int, end: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli", "platform", "check-maintenance",
                               "--db", str(tmp_path / "platform.sqlite"), "--device", DEVICE, "--kind", kind,
                               "--start", str(start), "--end", str(end)], capture_output=True, text=True,
                              timeout=60)
    confirmed = cli("half_monthly", at(10, 8), at(10, 12))
    assert confirmed.returncode == 0 and ": confirmed" in confirmed.stdout, confirmed.stderr
    assert "50 min" in confirmed.stdout
    refused = cli("quarterly", at(5, 13), at(5, 17))
    assert refused.returncode == 1 and ": too_short" in refused.stdout


def test_overdue_maintenance_survives_a_restart_and_clears_on_the_next_session(tmp_path: Path,
                                                                             mosquitto: Any) -> None:
    provision(tmp_path / "gw")

    async def main() -> None:
        async with platform_running(tmp_path) as p:
            async with gateway_running(tmp_path, p, mosquitto.url) as site:
                last = at(16, 9)
                await site.session(last, minutes=40)           # 16 days ago: the 15 are over
                checked = await site.gw.supervisor.check()
                assert [(e.type, e.action) for e in checked.events] == [("elevator.maintenance_overdue", "raise")]
                await site.uploaded(3)
                raised = site.at_platform("elevator.maintenance_overdue")
                assert [(e["action"], e["verified"]) for e in raised] == [("raise", "gateway")]
                assert raised[0]["values"] == {"last_session": last + 40 * 60, "due": last + 40 * 60 + 15 * DAY,
                                               "interval_d": 15}
                # the device's own reports stay what they were: signed by it, checked
                assert {e["verified"] for e in site.at_platform("elevator.maintenance")} == {"mac_ok"}

            async with gateway_running(tmp_path, p, mosquitto.url) as site:   # the gateway restarted
                await site.gw.supervisor.check()                # (it checked once as it started, too)
                assert site.gw.metrics.get("supervision.maintenance_overdue.raise") == 0   # not raised again
                site.seq = 2
                await site.session(NOW - 3 * 3600, minutes=5, doors=1)       # too short to count
                assert (await site.gw.supervisor.check()).events == []
                done = NOW - 3600 - 35 * 60
                await site.session(done, minutes=35)
                checked = await site.gw.supervisor.check()
                assert [(e.type, e.action) for e in checked.events] == [("elevator.maintenance_overdue", "clear")]
                await site.uploaded(8)
                cleared = site.at_platform("elevator.maintenance_overdue")
                assert [e["action"] for e in cleared] == ["raise", "clear"]
                assert cleared[1]["values"]["last_session"] == done + 35 * 60
                assert (await site.gw.supervisor.check()).events == []
            # one alarm, one clear, whatever the restarts
            assert p.platform.db.counts(DEVICE)["devices"][DEVICE]["elevator.maintenance_overdue"] == 2
    asyncio.run(main())


def test_a_past_inspection_date_raises_until_a_new_one_is_provisioned(tmp_path: Path, mosquitto: Any) -> None:
    yesterday = datetime.date.fromtimestamp(NOW - DAY)
    provision(tmp_path / "gw", inspection_due=yesterday.isoformat())

    async def main() -> None:
        async with platform_running(tmp_path) as p, gateway_running(tmp_path, p, mosquitto.url) as site:
            await site.session(NOW - DAY, minutes=30)                    # maintained, only the inspection is late
            await site.gw.supervisor.check()                # (or the check the gateway made as it started)
            await site.uploaded(3)
            raised = site.at_platform("elevator.inspection_overdue")
            assert [(e["action"], e["verified"]) for e in raised] == [("raise", "gateway")]
            # overdue from the start of the day after the date provisioned (local time)
            overdue_from = datetime.datetime.fromtimestamp(raised[0]["values"]["due"])
            assert (overdue_from.date(), overdue_from.time()) == (yesterday + datetime.timedelta(days=1),
                                                                  datetime.time(0))
            assert site.at_platform("elevator.maintenance_overdue") == []
            # the inspection was done: the next due date is provisioned
            provision(tmp_path / "gw", inspection_due=(yesterday + datetime.timedelta(days=365)).isoformat())
            assert site.gw.registry is not None
            site.gw.registry.refresh()
            checked = await site.gw.supervisor.check()
            assert [(e.type, e.action) for e in checked.events] == [("elevator.inspection_overdue", "clear")]
            await site.uploaded(4)
            assert [e["action"] for e in site.at_platform("elevator.inspection_overdue")] == ["raise", "clear"]
    asyncio.run(main())


def test_gateway_made_events_stay_out_of_the_devices_logs(tmp_path: Path) -> None:
    """The store's replay marks and the boot counter edgectl provision starts from are the
    device's alone: a gateway-made event (boot 2**32) deleted by retention changes neither."""
    from gateway import own_events
    from gateway.store import EventRow, Store, last_boot
    store = Store.in_dir(tmp_path)
    first = EventRow(DEVICE, 3, 1, 0x24, "elevator.maintenance", "report", "raise", NOW, True, {"start": NOW})
    overdue = own_events.make(DEVICE, "elevator.maintenance_overdue", "raise", NOW - DAY, NOW,
                              {"last_session": None, "due": NOW - DAY, "interval_d": 15})
    store.commit([first, overdue])
    store.mark_uploaded([first, overdue])
    assert store.prune_settled() == 2
    later = EventRow(DEVICE, 3, 2, 0x24, "elevator.maintenance", "report", "clear", NOW, True, {"start": NOW})
    result = store.commit([later])
    assert (result.inserted, result.replays) == (1, ())
    store.close()
    assert last_boot(tmp_path, DEVICE) == 3


def test_a_session_on_the_virtual_board_confirms_a_claim_and_refuses_others(tmp_path: Path) -> None:
    """The agent as shipped (.mpy, 96k heap) on the virtual board reports a technician's
    inspection session; through mosquitto and the gateway it reaches the platform, where
    a maintenance company's claims are checked against it."""
    from tools.testbench import scenarios
    from tools.testbench.services import platform_get
    from tools.common import runtime
    from tools.testbench.site import Device, Site
    idle = {"mode": 0, "dir": 0, "speed": 0.0, "floor": 1, "door": 0, "zone": 1, "occupied": 0, "fault": 0}
    # in service for a minute, then 22 minutes in inspection (the doors cycled now and
    # then), then in service again
    rows = [(t, idle) for t in range(0, 60)]
    rows += [(t, dict(idle, mode=1, door=1 if t % 120 < 20 else 0)) for t in range(60, 60 + 1320)]
    rows += [(t, idle) for t in range(1380, 1500)]
    header = {"trace": "maintained", "profile": "elevator", "period_s": 1, "start": scenarios.START,
              "config": {"rated_speed": 1.75, "floors": [-1, 11]}}
    trace = scenarios.write(str(tmp_path / "maintained.jsonl.gz"), header, rows)
    device = Device("elev-kept", "elevator", trace, speed=60, heap=runtime.AGENT_HEAP)
    with Site(str(tmp_path / "site"), [device]) as site:
        def sessions(events: list[dict]) -> list[dict]:
            return [e for e in events if e["type"] == "elevator.maintenance" and e["action"] == "clear"]
        [session] = sessions(site.wait_for(lambda ev: sessions(ev), timeout=90))
        start, end = session["values"]["start"], session["values"]["end"]
        assert 1200 <= end - start <= 1320 + 60, session       # the technician's 22 minutes, as the device saw them

        def check(kind: str, since: int, until: int) -> dict:
            return platform_get(site.platform_url, "/v1/maintenance/check?device=elev-kept&kind=%s&start=%d&end=%d"
                                % (kind, since, until), site.credentials)
        # the half-monthly visit the company claims for that morning happened
        genuine = check("half_monthly", start - 600, end + 600)
        assert genuine["result"] == "confirmed" and [s["id"] for s in genuine["sessions"]] == [session["id"]]
        # a yearly overhaul in 22 minutes is not plausible; a visit the next day never happened
        assert check("yearly", start - 600, end + 600)["result"] == "too_short"
        assert check("half_monthly", end + 86400, end + 90000)["result"] == "no_session"
