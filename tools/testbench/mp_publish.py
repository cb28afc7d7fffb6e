# Publish-rate probe, run under the MicroPython unix port (or CPython) by `edgectl bench`:
#   micropython -m tools.testbench.mp_publish HOST PORT COUNT
# Publishes COUNT signed telemetry events at QoS 1 through the agent's own Link and
# prints one JSON line with the elapsed time.
import sys

from edge import event
from edge.clock import ticks_ms, ticks_diff
from edge.link import Link


def main(argv):
    host, port, count = argv[1], int(argv[2]), int(argv[3])
    link = Link({"host": host, "port": port, "keepalive": 60}, "bench-1", lambda *a: None)
    link.connect()
    signer = event.Signer(b"bench-secret-0123456789abcdef", "bench-1")
    payloads = [event.encode(signer, 0x01, 0, 1, i + 1, 1780000000 + i, [0, 1, 1.62, 7, 0, 0, 1, 0])
                for i in range(count)]
    start = ticks_ms()
    for p in payloads:
        link.publish(p)
    ms = ticks_diff(ticks_ms(), start)
    link.close()
    print('{"count": %d, "ms": %d, "bytes": %d}' % (count, ms, len(payloads[0])))


if __name__ == "__main__":
    main(sys.argv)
