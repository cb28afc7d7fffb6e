# Pipeline benchmark, run under the MicroPython unix port by `edgectl bench`:
#   micropython -X heapsize=96k -m tools.mp_bench PROFILE TRACE.jsonl[.gz]
# Times one sample's full on-device path (register words -> reading -> filters and
# detectors -> signed events) and tracks the live heap. Prints one JSON line.
import gc
import sys

from edge import agent, codec, regmap    # the whole agent's code counts against the heap
from edge.bus import Master
from edge.link import Link
from edge.clock import ticks_diff
from edge.pipeline import Pipeline, load_module
from edge.replay import Trace
from edge.state import MemoryStore

try:
    from time import ticks_us
except ImportError:
    import time

    def ticks_us():
        return int(time.perf_counter() * 1e6)


def main(argv):
    profile, path = argv[1], argv[2]
    prof = load_module("edge.profiles." + profile)
    trace = Trace(path)
    pipe = Pipeline(profile, trace.site, None, MemoryStore())
    signer = codec.Signer(b"bench-secret-0123456789abcdef")
    first = regmap.span(prof.REGISTERS)[0]
    gc.collect()
    base = gc.mem_alloc()
    peak = base
    total_us = 0
    n = 0
    events = 0
    seq = 0
    for t_row, r in trace.rows():
        words = regmap.encode(prof.REGISTERS, r, "ABCD") if r is not None else None
        t0 = ticks_us()
        reading = regmap.decode(prof.REGISTERS, words, "ABCD", first) if words is not None else None
        for t, code, action, values in pipe.step(t_row, reading):
            seq += 1
            codec.encode(signer, code, action, 1, seq, t, values)
            events += 1
        total_us += ticks_diff(ticks_us(), t0)
        n += 1
        if n % 200 == 0:
            gc.collect()
            used = gc.mem_alloc()
            if used > peak:
                peak = used
    gc.collect()
    print('{"profile": "%s", "samples": %d, "events": %d, "us_per_sample": %.1f, '
          '"heap_live_peak": %d, "heap_after_import": %d, "heap_total": %d}' % (
              profile, n, events, total_us / max(n, 1), peak, base, gc.mem_alloc() + gc.mem_free()))


if __name__ == "__main__":
    main(sys.argv)
