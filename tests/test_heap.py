"""Every profile's agent, as shipped (.mpy), runs within the heap budget of the smallest
board (tools/common/runtime.py AGENT_HEAP_KB), through its own start-up: the config checked
and unloaded, the pipeline built, polls, alarms, the flash outbox. The names each loaded
module interns stay for good, in pools that double (docs/heap.md): the room left before
the next pool is printed, and edgectl bench gives the full figures."""
import json

import pytest

from tools.common import runtime
from tools.testbench import bench

# and the water meter on CJ/T 188 (bench.CJT188): its own master and framing, not Modbus
PROFILES = ("elevator", "water_meter", "noise", "structure", "water_quality", bench.CJT188)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("heap"))
    mpy = runtime.compile_agent(work + "/mpy", extra=bench.BENCH_MODULES)
    return mpy, work, bench.profile_traces(work, days=0.25)


@pytest.mark.parametrize("profile", PROFILES)
def test_agent_runs_within_the_heap_budget(built, profile):
    mpy, work, traces = built
    proc = bench.run_agent(mpy, work, profile, traces[profile], runtime.AGENT_HEAP_KB)
    assert proc.returncode == 0, "the %s agent does not run in %d KiB:\n%s" % (
        profile, runtime.AGENT_HEAP_KB, proc.stderr[-2000:])
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    print("%s: heap peak %d B, %d names of room" % (profile, figures["heap_live_peak"], figures["qstr_room"]))
    assert figures["events"] > 0
    assert figures["heap_live_peak"] <= runtime.AGENT_HEAP_KB * 1024
