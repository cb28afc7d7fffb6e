"""edgectl provision keeps a device's boot counter rising after its flash was erased
(edgectl flash erases it all): the board would start again at boot 1 and its new events
would reuse ids the gateway already holds, and be dropped as duplicates. Every part real,
as in tests/test_provision.py."""
import json
import os

from edge.codes import code_of
from gateway.store import EventRow, Store
from test_provision import edgectl, site, virtual_board  # noqa: F401 (fixtures)

DEVICE = "elev-erase"


def test_a_board_provisioned_again_after_a_flash_erase_boots_above_what_the_gateway_saw(
        tmp_path, site, virtual_board):  # noqa: F811
    gw_data = os.path.join(site.workdir, "gateway")
    # what the gateway holds from the board's life before the erase: up to boot 41
    store = Store.in_dir(gw_data)
    store.commit([EventRow(DEVICE, 41, 3, code_of("device.boot"), "device.boot", "report", "report",
                           1_700_000_000, True, {"version": 1})])
    store.close()
    out = edgectl("provision", "--board", "virtual", "--port", virtual_board["console"],
                  "--broker", "127.0.0.1:%d" % site.broker_port, "--gateway-data", gw_data,
                  "--build-dir", str(tmp_path / "build"), "--device-id", DEVICE, "--profile", "elevator",
                  "--bus-port", virtual_board["bus"], "--slave", "2", "--site", "rated_speed=1.0",
                  "--site", "floors=-1,12")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "boot counter above 41" in out.stdout
    assert json.load(open(os.path.join(virtual_board["flash"], "config.json")))["boot_floor"] == 41
    # (the seeded row may reach the platform too: 41 is not the board's)
    boots = lambda ev: {e["boot"] for e in ev if e["device"] == DEVICE and e["type"] == "device.boot"} - {41}
    events = site.wait_for(lambda ev: boots(ev), timeout=60)
    assert boots(events) and min(boots(events)) == 42, boots(events)
