"""gateway/quota.py and the store's pruning: the disk-quota policy on a real SQLite file."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from gateway.metrics import Metrics
from gateway.quota import Housekeeper, QuotaConfig, enforce
from gateway.service import Gateway, GatewayConfig
from gateway.sqlite import DbThread
from gateway.store import EventRow, Store
from rig import Publisher, signed_event
from test_gateway_ingest import DEVICE, SECRET, make_registry

TELEMETRY = {"floor": 3, "speed": 1.25, "mode": 1, "door": 0}


def tele(seq: int) -> EventRow:
    return EventRow("elev-001", 1, seq, 1, "telemetry.elevator", "telemetry", "report",
                    1_700_000_000 + seq, True, TELEMETRY)


def alarm(seq: int) -> EventRow:
    return EventRow("elev-001", 1, seq, 0x20, "elevator.entrapment", "alarm", "raise",
                    1_700_000_000 + seq, True, {"floor": 7, "duration_s": 61})


def filled(tmp_path: Path, telemetry: int = 3000, alarms: int = 200, uploaded: int = 1000) -> Store:
    """telemetry events 0..telemetry-1, then alarms; the first `uploaded` already uploaded."""
    store = Store.in_dir(tmp_path)
    store.commit([tele(i) for i in range(telemetry)], now=1000.0)
    store.commit([alarm(telemetry + i) for i in range(alarms)], now=2000.0)
    store.mark_uploaded([tele(i) for i in range(uploaded)], now=3000.0)
    return store


def seqs(store: Store, kind: str) -> list[int]:
    return [r.seq for r in store.events() if r.kind == kind]


def test_over_quota_uploaded_go_first_then_oldest_telemetry_never_alarms(tmp_path: Path) -> None:
    store = filled(tmp_path)
    quota = int(store.used_bytes() * 0.7)
    r = enforce(store, quota)
    assert r.pruned == 1000                       # all uploaded history went first ...
    dropped = r.dropped["telemetry"]
    assert dropped > 0                            # ... and it was not enough
    assert not r.over and store.used_bytes() <= quota
    # the oldest pending telemetry went; the newest stays, and every alarm
    assert seqs(store, "telemetry") == list(range(1000 + dropped, 3000))
    assert seqs(store, "alarm") == list(range(3000, 3200))
    assert store.counts()["dropped"] == dropped
    assert store.stream_counts() == {"alarms": {"pending": 200, "dropped": 0},
                                     "telemetry": {"pending": 2000 - dropped, "dropped": dropped}}


def test_under_quota_nothing_is_touched(tmp_path: Path) -> None:
    store = filled(tmp_path)
    r = enforce(store, store.used_bytes() + 1)
    assert (r.pruned, r.dropped, r.over) == (0, {}, False)
    assert store.counts()["stored"] == 3200


def test_only_alarms_left_they_are_kept_over_the_quota(tmp_path: Path) -> None:
    store = filled(tmp_path)
    r = enforce(store, 4096)
    assert r.over
    assert seqs(store, "telemetry") == []
    assert seqs(store, "alarm") == list(range(3000, 3200))
    # and the store keeps accepting alarms
    assert store.commit([alarm(5000)]).inserted == 1


def test_retention_deletes_only_events_uploaded_before_the_cut(tmp_path: Path) -> None:
    store = filled(tmp_path, telemetry=10, alarms=0, uploaded=4)
    store.mark_uploaded([tele(4), tele(5)], now=9000.0)        # uploaded later
    assert store.prune_settled(older_than=5000.0) == 4
    assert seqs(store, "telemetry") == list(range(4, 10))
    assert store.counts()["pending"] == 4


def test_housekeeper_counts_drops_and_warns_when_only_alarms_are_left(tmp_path: Path, caplog: Any) -> None:
    store = filled(tmp_path, telemetry=500, alarms=100, uploaded=0)

    async def main() -> Metrics:
        db, metrics = DbThread("test-db"), Metrics()
        try:
            keeper = Housekeeper(QuotaConfig(max_bytes=4096), store, db, metrics)
            await keeper.check_quota()
            await keeper.check_quota()              # still over: no second warning within 5 min
        finally:
            db.close()
        return metrics
    with caplog.at_level(logging.WARNING, logger="gateway.quota"):
        metrics = asyncio.run(main())
    assert metrics.get("quota.dropped.telemetry") == 500
    assert metrics.states["quota_exceeded"] == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "STORE OVER QUOTA" in errors[0] and "Still accepting" in errors[0]
    assert any("DROPPED 500 pending telemetry events" in r.getMessage() for r in caplog.records)
    assert seqs(store, "alarm") == list(range(500, 600))


def test_running_gateway_over_quota_drops_telemetry_keeps_alarms(tmp_path: Path, mosquitto: Any) -> None:
    """Platform down, a small quota: the gateway drops old telemetry, keeps every alarm,
    and says so on its status page."""
    make_registry(tmp_path / "gw")

    async def main() -> None:
        cfg = GatewayConfig(data_dir=tmp_path / "gw", platform_url="http://127.0.0.1:9", broker=mosquitto.url,
                            gateway_id="gw-quota", max_db_mb=0.3)
        async with Gateway(cfg) as gw:
            pub = await asyncio.to_thread(Publisher, mosquitto.host, mosquitto.port)
            messages = [("dev/%s/ev" % DEVICE, signed_event(DEVICE, SECRET, "telemetry.elevator", i, TELEMETRY))
                        for i in range(6000)]
            messages[::500] = [("dev/%s/ev" % DEVICE, signed_event(DEVICE, SECRET, "elevator.entrapment", i,
                                                                   {"floor": 7}, action="raise"))
                               for i in range(0, 6000, 500)]
            await asyncio.to_thread(pub.publish_many, messages)
            await asyncio.to_thread(pub.close)
            m = gw.metrics
            await m.wait_until(lambda: m.get("ingest.stored") == 6000 and m.get("quota.dropped.telemetry") > 0, 10)
            streams = await gw.stream_counts()
            assert streams["alarms"] == {"pending": 12, "dropped": 0}
            assert streams["telemetry"]["dropped"] == m.get("quota.dropped.telemetry")
            assert m.states["quota_exceeded"] == 0
            assert gw.store is not None
            alarms = [r.seq for r in await gw.db.call(gw.store.events) if r.kind == "alarm"]
            assert alarms == list(range(0, 6000, 500))
    asyncio.run(main())


def test_housekeeper_says_when_it_deleted_rows(tmp_path: Path) -> None:
    """The upload lanes read pending rows once and keep them (gateway/uplink.py); after a
    delete they must read again, so the housekeeper tells them, and only then."""
    store = filled(tmp_path, telemetry=500, alarms=0, uploaded=100)    # uploaded in 1970
    deletes: list[str] = []

    async def main() -> None:
        db = DbThread("test-db")
        try:
            def keeper(max_bytes: int | None) -> Housekeeper:
                return Housekeeper(QuotaConfig(max_bytes, retention_s=86400.0), store, db, Metrics(),
                                   on_delete=lambda: deletes.append("deleted"))
            await keeper(store.used_bytes() * 2).check_quota()
            assert deletes == []                          # under the quota: nothing to delete
            assert await keeper(None).prune_retention() == 100
            assert deletes == ["deleted"]
            assert await keeper(None).prune_retention() == 0
            assert deletes == ["deleted"]
            await keeper(4096).check_quota()              # over: pending telemetry dropped
            assert deletes == ["deleted"] * 2
        finally:
            db.close()
    asyncio.run(main())
