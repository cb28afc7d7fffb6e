# A CJ/T 188 meter for mp_bench (MicroPython): the agent's own master on a line that
# answers each request with the trace's current frame (its length and the frame as one number). A module
# of its own, so a Modbus agent's bench does not carry this code on the heap it measures.


class TraceUart:
    def __init__(self, trace):
        self.trace = trace
        self.pending = b""

    def write(self, request):
        words = self.trace.words
        self.pending = b"" if words is None else words[1].to_bytes(words[0], "big")   # length, the frame as a number

    def read(self, n, timeout_ms):
        got = self.pending[:n]
        self.pending = self.pending[n:]
        return got

    def flush_input(self):
        self.pending = b""


def master(trace, bus):
    from edge.cjt188_bus import Master
    m = Master(TraceUart(trace), bus, 11)
    m._silence_ms = 0       # the trace answers at once; a real line's gap would only slow the bench
    return m
