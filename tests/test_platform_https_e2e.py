"""The gateway and the platform as processes, as an installer runs them: the platform
provisioned with `platform add-gateway` and serving HTTPS (`--cert`, `--key`), the gateway
uploading with `--platform-credentials` and checking the platform's certificate with
`--platform-ca`, events published to a real mosquitto; the platform read with signed GETs."""
from __future__ import annotations

import time
from pathlib import Path

from gateway.cli import main as gateway_cli
from rig import Publisher, free_port, signed_event, start_mosquitto, stop_mosquitto
from tools.testbench.pki import make_ca
from tools.testbench.services import add_gateway, platform_get, start_gateway, start_platform

SECRET = "4d" * 32
DEADLINE_S = 30.0


def test_events_reach_the_https_platform_from_a_provisioned_gateway(tmp_path: Path) -> None:
    ca = make_ca(str(tmp_path / "pki"))
    tls = ca.issue(str(tmp_path / "pki"), "platform")
    assert gateway_cli(["devices", "add", "elev-001", "--profile", "elevator", "--secret", SECRET,
                        "--data", str(tmp_path / "gw")]) == 0
    db, creds = str(tmp_path / "platform.sqlite"), str(tmp_path / "gw-site.json")
    add_gateway(db, "gw-site", creds)
    broker, port = start_mosquitto(tmp_path)
    services = []
    try:
        platform_port = free_port()
        services.append(start_platform(platform_port, db, str(tmp_path / "platform.log"), tls=tls))
        url = "https://localhost:%d" % platform_port
        gateway, _ = start_gateway(str(tmp_path / "gw"), "mqtt://127.0.0.1:%d" % port, url,
                                   str(tmp_path / "gateway.log"), ["--platform-ca", ca.cert], creds)
        services.append(gateway)
        pub = Publisher("127.0.0.1", port)
        try:
            pub.publish_many([("dev/elev-001/ev", signed_event("elev-001", SECRET, "elevator.entrapment", seq,
                                                               {"floor": 7, "duration_s": 61}, action="raise"))
                              for seq in range(5)])
        finally:
            pub.close()
        deadline = time.monotonic() + DEADLINE_S
        while platform_get(url, "/v1/counts", creds, ca.cert)["total"] < 5:
            assert time.monotonic() < deadline, gateway.log_tail()
            time.sleep(0.2)
        events = platform_get(url, "/v1/events?device=elev-001", creds, ca.cert)["events"]
        assert [(e["seq"], e["gateway"], e["verified"]) for e in events] == [(s, "gw-site", "no_key") for s in range(5)]
    finally:
        for service in reversed(services):
            service.stop()
        stop_mosquitto(broker)
