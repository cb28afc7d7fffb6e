"""A power cut while the broker is away loses nothing: the agent (MicroPython unix port,
.mpy in a 96 KiB heap) keeps polling into its flash outbox while mosquitto is down, is
killed with SIGKILL (nothing flushed, nothing closed), and after it boots again every
event of the first boot reaches the platform exactly once, before the new boot's. Real
pymodbus slave on a pty, real mosquitto, the gateway and the platform receiver."""
from __future__ import annotations

import re
import time

from tools.testbench import scenarios
from tools.common import runtime
from tools.testbench.site import Device, Site

DEVICE = "elev-cut"


def mine(events: list[dict], boot: int | None = None) -> list[dict]:
    return [e for e in events if e["device"] == DEVICE and (boot is None or e["boot"] == boot)]


def test_events_stored_before_a_power_cut_are_delivered_once_after_it(tmp_path):
    trace = scenarios.write(str(tmp_path / "elev.jsonl.gz"), *scenarios.elevator(seconds=3600, entrapment_at=None))
    device = Device(DEVICE, "elevator", trace, speed=4, heap=runtime.AGENT_HEAP)
    with Site(str(tmp_path / "site"), [device]) as site:
        site.wait_for(lambda ev: len(mine(ev, 1)) >= 3, timeout=60)
        assert site.mosquitto is not None
        site.mosquitto.stop()
        before = max(e["seq"] for e in mine(site.platform_events(), 1))
        time.sleep(10)                       # 40 s of trace: telemetry piles up on flash
        site.kill("agent-" + DEVICE)         # SIGKILL: the power goes
        site.mosquitto.start()
        site.start_agent(device)

        def second_boot_sent(ev: list[dict]) -> bool:
            # each log is sent in order: boot 2's first telemetry and its boot report
            # come after everything boot 1 left in the outbox
            types = {e["type"] for e in mine(ev, 2)}
            return {"device.boot", "telemetry.elevator"} <= types
        site.wait_for(second_boot_sent, timeout=120)
        time.sleep(2)                        # the uplink's last batch
        events = site.platform_events()
        log = site.log_of("agent-" + DEVICE)

    unsent = [int(n) for n in re.findall(r"boot 2, .* outbox (\d+) unsent", log)]
    assert unsent and unsent[0] > 0, "the reboot found nothing in the outbox:\n" + log[-2000:]
    first = mine(events, 1)
    seqs = sorted(e["seq"] for e in first)
    assert len(seqs) == len(set(seqs)), "an event reached the platform twice"
    assert seqs == list(range(1, seqs[-1] + 1)), "boot 1 has gaps: %s" % sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
    assert seqs[-1] > before + 5, "nothing stored during the outage was delivered after the reboot"
    logged = {int(m) for m in re.findall(r"^event \S+ \S+ seq=(\d+)", log.split("boot 2,")[0], re.M)}
    assert logged <= set(seqs), "an event the agent logged as stored never arrived"
    second = sorted(e["seq"] for e in mine(events, 2))
    assert second[0] == 1 and len(second) == len(set(second))
