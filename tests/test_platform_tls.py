"""The uplink over HTTPS (issue 11, finding 4): the gateway checks the platform's
certificate against the site's CA, so no one in the path can answer for the platform
(a 400 marked events rejected for good, a 200 marked them uploaded though never stored);
plain HTTP only to loopback, or with a flag that says it is insecure. Real servers on
loopback, a CA of the test's own (tools/testbench/pki.py)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from edge import codec
from gateway import auth
from gateway.cli import main as gateway_cli
from gateway.http import check_transport
from gateway.metrics import Metrics
from gateway.platform import PlatformServer
from gateway.sqlite import DbThread
from gateway.store import EventRow, Store
from gateway.uplink import Uplink, UplinkConfig
from rig import free_port
from test_platform import payload
from tools.testbench.pki import make_ca

WAIT_S = 10.0


def rows(n: int) -> list[EventRow]:
    out = []
    for seq in range(n):
        raw = payload("elev-001", seq, floor=seq % 9)
        e = codec.decode(raw)
        out.append(EventRow("elev-001", 1, seq, e["code"], e["type"], e["kind"], e["action"], e["t"],
                            e["clock_set"], e["values"], raw))
    return out


async def upload(tmp: Path, url: str, creds: auth.Credentials | None, ca: str | None = None,
                 n: int = 3) -> tuple[Metrics, dict[str, int]]:
    """The gateway's uplink, on its own store of n events, until they are uploaded or
    the platform failed three times. Returns its counters and the store's totals."""
    store = Store(tmp / ("events-%s.sqlite" % id(creds)))
    db, metrics = DbThread("test-db"), Metrics()
    uplink = Uplink(UplinkConfig(url, creds.gateway if creds else "gw-1", credentials=creds, ca_file=ca,
                                 timeout=2.0, backoff_min=0.05, backoff_max=0.1), store, db, metrics)
    uplink.notify(await db.call(store.commit, rows(n)))
    task = asyncio.create_task(uplink.run())
    try:
        await metrics.wait_until(lambda: metrics.get("uplink.events") >= n or metrics.get("uplink.failures") >= 3,
                                 WAIT_S)
        return metrics, await db.call(store.counts)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        db.close()


def test_the_uplink_delivers_over_https_to_a_certificate_of_the_site_ca(tmp_path: Path) -> None:
    ca = make_ca(str(tmp_path / "pki"))
    server = ca.issue(str(tmp_path / "pki"), "platform")

    async def main() -> None:
        async with PlatformServer(tmp_path / "platform.sqlite", tls=(server.cert, server.key)) as p:
            assert p.url.startswith("https://")
            creds = p.add_gateway("gw-1")
            m, counts = await upload(tmp_path, p.url, creds, ca.cert)
            assert m.get("uplink.events") == 3 and counts["uploaded"] == 3
            assert p.platform.metrics.get("platform.accepted") == 3
    asyncio.run(main())


def test_an_unsigned_upload_is_refused_and_the_events_wait(tmp_path: Path, caplog: Any) -> None:
    async def main() -> None:
        async with PlatformServer(tmp_path / "platform.sqlite") as p:
            m, counts = await upload(tmp_path, p.url, None)
            assert m.get("uplink.events") == 0 and m.get("uplink.failures") >= 3
            assert counts["pending"] == 3 and counts["rejected"] == 0      # retried, never thrown away
            assert p.platform.metrics.get("platform.refused.missing") >= 3
            # given its credentials, the same gateway delivers them
            m, counts = await upload(tmp_path, p.url, p.add_gateway("gw-1"))
            assert counts["uploaded"] == 3
    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert any("HTTP 401" in r.getMessage() and "no Authorization header" in r.getMessage()
               for r in caplog.records if r.name == "gateway.uplink")


@pytest.mark.parametrize("answer", [200, 400])
def test_a_server_with_another_ca_s_certificate_cannot_answer_for_the_platform(
        tmp_path: Path, caplog: Any, answer: int) -> None:
    """Someone in the path, with a certificate of their own: their 200 would mark the events
    uploaded, their 400 rejected for good. The gateway does not believe either."""
    site_ca = make_ca(str(tmp_path / "site"))
    other = make_ca(str(tmp_path / "other")).issue(str(tmp_path / "other"), "platform")
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"accepted": 3, "duplicates": 0} if answer == 200 else {"error": "no"},
                                 status=answer)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/events", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(other.cert, other.key)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        try:
            url = "https://127.0.0.1:%d" % runner.addresses[0][1]
            m, counts = await upload(tmp_path, url, auth.Credentials.new("gw-1"), site_ca.cert)
        finally:
            await runner.cleanup()
        assert m.get("uplink.events") == 0 and m.get("uplink.rejected") == 0 and m.get("uplink.failures") >= 3
        assert counts == {"stored": 3, "uploaded": 0, "rejected": 0, "pending": 3, "dropped": 0}
        assert seen == []                 # not one request got through the handshake
    with caplog.at_level(logging.WARNING, logger="gateway.uplink"):
        asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.uplink"]
    assert len(lines) == 1 and "CERTIFICATE_VERIFY_FAILED" in lines[0], lines


def test_a_plain_http_client_gets_nothing_from_the_https_platform(tmp_path: Path, caplog: Any) -> None:
    ca = make_ca(str(tmp_path / "pki"))
    server = ca.issue(str(tmp_path / "pki"), "platform")

    async def main() -> None:
        async with PlatformServer(tmp_path / "platform.sqlite", tls=(server.cert, server.key)) as p:
            creds = p.add_gateway("gw-1")
            m, counts = await upload(tmp_path, p.url.replace("https://", "http://"), creds)
            assert m.get("uplink.events") == 0 and m.get("uplink.failures") >= 3 and counts["pending"] == 3
            assert p.platform.metrics.get("platform.posts") == 0
    with caplog.at_level(logging.WARNING, logger="gateway.uplink"):
        asyncio.run(main())
    assert any("unavailable" in r.getMessage() for r in caplog.records if r.name == "gateway.uplink")


def test_plain_http_only_to_loopback_unless_the_insecure_flag_is_given() -> None:
    for url in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080", "https://10.0.0.5"):
        check_transport(url)
    with pytest.raises(ValueError, match="--insecure-plain-http"):
        check_transport("http://10.0.0.5:8080")
    check_transport("http://10.0.0.5:8080", insecure_plain_http=True)


def test_run_refuses_plain_http_off_loopback_and_a_bad_ca_file(tmp_path: Path, capsys: Any) -> None:
    data = str(tmp_path / "gw")
    assert gateway_cli(["run", "--data", data, "--platform", "http://192.0.2.7:8080"]) == 2
    assert "--insecure-plain-http" in capsys.readouterr().err
    assert gateway_cli(["run", "--data", data, "--platform", "https://192.0.2.7",
                        "--platform-ca", str(tmp_path / "nope.pem")]) == 2
    assert "--platform-ca" in capsys.readouterr().err
    assert gateway_cli(["run", "--data", data, "--platform", "https://192.0.2.7"]) == 2
    assert "platform add-gateway" in capsys.readouterr().err          # no credentials yet


def test_run_refuses_credentials_of_another_gateway(tmp_path: Path, capsys: Any) -> None:
    data = tmp_path / "gw"
    data.mkdir()
    auth.Credentials.new("gw-1").save(data / auth.FILENAME)
    assert gateway_cli(["run", "--data", str(data), "--gateway-id", "gw-2",
                        "--broker", "mqtt://127.0.0.1:%d" % free_port()]) == 2
    assert "the credentials are for gateway gw-1, but this gateway's id is gw-2" in capsys.readouterr().err
