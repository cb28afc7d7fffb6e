# Agent benchmark, run under the MicroPython unix port by `edgectl bench`:
#   micropython -X heapsize=96k -m tools.testbench.mp_bench PROFILE WORDS_TRACE STATE_DIR
# Runs the real agent (edge.agent.Agent with its flash outbox in STATE_DIR) over a trace
# of register words: a master that answers from the trace, a broker that acknowledges
# at once, the trace's time as the clock. Times each poll's whole path (words -> reading
# -> filters and detectors -> signed events -> flash -> sent) and, apart, the outbox's
# share per event; tracks the live heap. The words come encoded (edgectl bench does it),
# so no simulator code is on the measured heap. Prints one JSON line.
#   WORDS_TRACE: a JSON header line {"profile", "site", "start", "map"}, then "t w0 w1
#   ..." per poll ("t -" for a poll that failed); map: the profile's register map as
#   edgectl provision puts it in a board's config. Start-up (edge.boot: the config
#   checked, the map cut into reads) runs as on a board, before the agent is built.
#   A CJ/T 188 meter's trace (PROFILE water_meter:cjt188) has its bus config in the
#   header ("bus") and a reply frame per poll (its length, and the frame as one number):
#   the real CJ/T 188 master reads it
#   (tools/testbench/mp_meter.py).
import gc
import json
import sys

# what edge.agent loads before its start-up; the hardware's modules come after it (main)
from edge import ack, agent
from edge.clock import ticks_diff

try:
    from time import ticks_us
except ImportError:
    import time

    def ticks_us():
        return int(time.perf_counter() * 1e6)


class TraceMaster:
    """A bus whose slave answers each poll with the next line of the trace: a
    multi-probe profile's blocks come one after the other in the line, in the order
    the agent reads them."""

    def __init__(self, src, start):
        self.src = src
        self.start = start
        self.t = start
        self.words = None
        self.at = 0

    def advance(self):
        line = self.src.readline()
        if not line:
            return False
        parts = line.split()
        self.t = self.start + (float(parts[0]) if "." in parts[0] else int(parts[0]))
        self.words = None if parts[1] == "-" else [int(w) for w in parts[1:]]
        self.at = 0
        return True


    def read(self, slave, fc, addr, count, table, agent):
        # as edge.bus.Master reads a block: words decoded by the table
        if self.words is None:
            from edge.modbus import ModbusTimeout
            raise ModbusTimeout("no reply")
        self.at += count
        from edge import regmap
        return regmap.decode(table, self.words[self.at - count:self.at], "ABCD", addr)




def start(profile, site, regmap, path, bus):
    """The config, through the agent's own start-up (edge.boot, first, as on a board: the
    config checked, then unloaded). The names it interns stay on the heap for good."""
    site = dict(site)
    with open(path, "w") as f:
        json.dump({"device_id": "bench-1", "secret": "62656e6368" * 4, "profile": profile,
                   "bus": bus or {"port": "trace", "baud": 9600, "slave": 1}, "map": regmap,
                   "broker": {"host": "127.0.0.1", "keepalive": 60}, "site": site,
                   "utc_offset_s": site.pop("utc_offset_s")}, f)
    from edge import boot
    cfg, error = boot.load_config(path)
    if error:
        raise ValueError(error)
    boot.unload("edge.boot")
    return cfg


def main(argv):
    label, path, state = argv[1], argv[2], argv[3]
    src = open(path)
    header = json.loads(src.readline())
    profile = header["profile"]
    cfg = start(profile, header["site"], header.pop("map"), state + ".json", header.get("bus"))
    gc.collect()
    from edge import hal  # noqa: F401 (the agent's own code counts, though bus and broker are faked)
    trace = master = TraceMaster(src, header["start"])
    if "protocol" in cfg["bus"]:
        # a CJ/T 188 meter: its own master, reading the trace's frames as its UART
        from tools.testbench import mp_meter
        master = mp_meter.master(trace, cfg["bus"])
    else:
        from edge import bus, modbus  # noqa: F401 (the agent's own code counts)
    from edge.link import Link
    from edge.outbox import Outbox
    from edge.state import MemoryStore
    outbox = Outbox(state, 64 * 1024, 4096)
    timed = [0]
    append = outbox.append

    def timed_append(alarm, payload):
        t0 = ticks_us()
        append(alarm, payload)
        timed[0] += ticks_diff(ticks_us(), t0)

    outbox.append = timed_append
    # the agent's own link, with a broker that acknowledges every publish at once, and a
    # gateway that acknowledges after each step what the agent has out (one event per
    # outbox log, until acknowledged)
    link = Link(cfg["broker"], cfg["device_id"], lambda *a: None)
    link.sock = True
    link.publish = lambda *args: None
    link.ping_in_ms = lambda: 60000
    gc.collect()   # as edge.agent.build does before the pipeline loads
    a = agent.Agent(cfg, master, link, MemoryStore(), outbox, lambda: trace.t)
    agent.log = lambda *args: None
    gc.collect()
    base = gc.mem_alloc()
    peak = base
    total_us = 0
    n = 0
    while trace.advance():
        t0 = ticks_us()
        a.poll_once()
        while outbox.count:
            a.send_one()
            for log in (outbox.alarms, outbox.telemetry):
                if log.out:     # [boot, seq, ...]: what the step published
                    a.on_ack(ack.encode(a.signer, [(log.out[-1][0], log.out[-1][1], 1)]))
        total_us += ticks_diff(ticks_us(), t0)
        n += 1
        if n % 200 == 0:
            gc.collect()
            used = gc.mem_alloc()
            if used > peak:
                peak = used
    gc.collect()
    total = gc.mem_alloc() + gc.mem_free()
    # the line's start written before the names are probed: the probe may take the
    # heap's last pool, and leave too little for a long string
    print('{"profile": "%s", "samples": %d, "events": %d, "us_per_sample": %.1f, "us_per_stored_event": %.1f, '
          '"heap_live_peak": %d, "heap_after_start": %d, "heap_total": %d, ' % (
              label, n, a.seq, total_us / max(n, 1), timed[0] / max(a.seq, 1), peak, base, total), end="")
    room, pool = qstr_room()
    print('"qstr_room": %d, "qstr_pool": %d}' % (room, pool))


def qstr_room(limit=1500):
    """(names, bytes): how many more names the agent can intern before MicroPython
    allocates its next pool of them, and that pool's size. Every identifier of every
    module loaded (and every short string constant) is interned for good, in pools that
    double: one name too many costs a new pool at once (7 KB at about 620 names on the
    64-bit unix port). Measured by interning fresh names until the heap jumps."""
    probe = object()
    gc.collect()
    last = gc.mem_alloc()
    for i in range(limit):
        try:
            hasattr(probe, "q_%d" % i)     # an attribute name is interned, found or not
        except MemoryError:
            return i, 0                    # the next pool does not even fit
        now = gc.mem_alloc()
        if now - last > 2048:          # a name and its garbage take tens of bytes
            return i, now - last
        last = now
    return limit, 0


if __name__ == "__main__":
    main(sys.argv)
