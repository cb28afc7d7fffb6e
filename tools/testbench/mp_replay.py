# Replays a recorded trace through the exact on-device pipeline, with the trace's time
# as the clock. Runs under the MicroPython unix port and CPython alike:
#   micropython tools/testbench/mp_replay.py TRACE.jsonl.gz OUT.events.jsonl [OVERRIDES_JSON]
import json
import sys

from edge.codes import CODES, ACTIONS
from edge.pipeline import Pipeline
from edge.state import MemoryStore


def _days_from_civil(y, m, d):
    # Howard Hinnant's algorithm: days since 1970-01-01 of a proleptic Gregorian date
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_iso(s):
    """'2026-03-02T00:00:00+08:00' -> (unix seconds, UTC offset in seconds)."""
    date, _, rest = s.partition("T")
    y, mo, d = [int(x) for x in date.split("-")]
    off = 0
    clock = rest
    for sign in ("+", "-"):
        if sign in rest:
            clock, _, tz = rest.partition(sign)
            hh, _, mm = tz.partition(":")
            off = (int(hh) * 3600 + int(mm or 0) * 60) * (1 if sign == "+" else -1)
            break
    if clock.endswith("Z"):
        clock = clock[:-1]
    parts = clock.split(":")
    secs = int(parts[0]) * 3600 + int(parts[1]) * 60 + int(float(parts[2]) if len(parts) > 2 else 0)
    return _days_from_civil(y, mo, d) * 86400 + secs - off, off


def open_trace(path):
    """A binary line reader over a gzip (or plain) JSON Lines trace."""
    f = open(path, "rb")
    if not path.endswith(".gz"):
        return f
    try:
        import deflate   # MicroPython
        return deflate.DeflateIO(f, deflate.GZIP)
    except ImportError:
        import gzip
        return gzip.GzipFile(fileobj=f)


def _num(v, dec):
    # fixed formatting so MicroPython and CPython write byte-identical files
    if dec == 0 or v == int(v):
        return "%d" % v
    return "%.*f" % (dec, v)


def format_event(t, code, action, values):
    name, _, fields = CODES[code]
    vals = []
    for i in range(len(fields)):
        if i < len(values) and values[i] is not None:
            vals.append('"%s": %s' % (fields[i][0], _num(values[i], fields[i][1])))
    return '{"t": %s, "type": "%s", "action": "%s", "values": {%s}}\n' % (
        _num(t, 3), name, ACTIONS[action], ", ".join(vals))


class Trace:
    """A trace being read: its header, its start (unix s), the site facts the pipeline
    needs, and its rows as (unix time, reading) one at a time (a board has no RAM for all)."""

    def __init__(self, path):
        self.src = open_trace(path)
        self.header = json.loads(self.src.readline())
        self.start, offset = parse_iso(self.header["start"])
        self.site = dict(self.header.get("config") or {})
        self.site["utc_offset_s"] = offset

    def rows(self):
        while True:
            line = self.src.readline()
            if not line:
                return
            if len(line) > 2:
                row = json.loads(line)
                yield self.start + row["t"], row["r"]


def replay(trace_path, out, overrides=None, telemetry=False):
    trace = Trace(trace_path)
    pipe = Pipeline(trace.header["profile"], trace.site, overrides, MemoryStore(), telemetry)
    n = 0
    for t_row, r in trace.rows():
        for t, code, action, values in pipe.step(t_row, r):
            if CODES[code][1] == "telemetry" and not telemetry:
                continue    # reports (maintenance, sensor health) are kept: the scorer skips them
            out.write(format_event(t - trace.start, code, action, values))
            n += 1
    return n


def main(argv):
    if len(argv) < 3 or argv[1] in ("-h", "--help"):
        print("usage: replay.py TRACE.jsonl.gz OUT.events.jsonl [OVERRIDES_JSON]")
        return 2
    overrides = json.loads(argv[3]) if len(argv) > 3 else None
    with open(argv[2], "w") as out:
        replay(argv[1], out, overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
