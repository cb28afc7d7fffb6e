# The edge agent: poll the sensor at its profile's period, run the pipeline, sign the
# events and send them at QoS 1. Two asyncio tasks: polling never waits for the
# network, and sending never delays a poll by more than one publish.
#   micropython -m edge.agent config.json     (unix port, ESP32 main.py does the same)
import sys
import time

from edge import codec, regmap
from edge.clock import ticks_ms, ticks_add, ticks_diff, sleep_ms
from edge.codes import CODES, REPORT, code_of
from edge.modbus import ModbusError
from edge.pipeline import Pipeline, load_module

VERSION = 1
FAULT_REPORT_S = 60       # while a bus keeps failing, one comm_fault report a minute
OUTBOX_MAX = 64           # events kept in RAM while the broker is away (a flash outbox is issue 4)


def log(*args):
    # one line per fact, for technicians following the board's output (edgectl logs)
    print(*args)


class Agent:
    def __init__(self, cfg, master, link, store, now=time.time):
        self.cfg = cfg
        clock = cfg.get("clock") or {}
        self.speed = clock.get("speed", 1)
        if clock:
            anchor, origin, speed, real = clock["anchor"], clock["origin"], self.speed, now
            now = lambda: origin + (real() - anchor) * speed
        self.prof = load_module("edge.profiles." + cfg["profile"])
        self.master = master
        self.link = link
        self.now = now
        self.signer = codec.Signer(bytes.fromhex(cfg["secret"]))
        site = dict(cfg.get("site") or {})
        site["utc_offset_s"] = cfg.get("utc_offset_s", 28800)
        self.pipeline = Pipeline(cfg["profile"], site, cfg.get("params"), store, cfg.get("telemetry", True))
        self.first, self.count = regmap.span(self.prof.REGISTERS)
        self.boot = self._next_boot(store)
        self.seq = 0
        self.outbox = []          # (is_telemetry, payload)
        self.dropped = [0, 0]     # telemetry, alarms dropped since the last report
        self.faults = 0           # failed polls in the current streak
        self.fault_reported = None
        self.fault_kind = 0
        self.polls = 0
        self.wake = None

    @staticmethod
    def _next_boot(store):
        raw = store.load("boot")
        boot = (int(raw) if raw else 0) + 1
        store.save("boot", str(boot).encode())
        return boot

    # ---------------------------------------------------------------- polling
    def read(self):
        """One poll: the decoded reading, or None when the device did not answer well."""
        bus = self.cfg["bus"]
        try:
            words = self.master.read_registers(bus["slave"], self.prof.FUNCTION, self.first, self.count)
        except ModbusError as e:
            self._fault(e)
            return None
        self.faults = 0
        return regmap.decode(self.prof.REGISTERS, words, bus["word_order"], self.first)

    def _fault(self, e):
        self.faults += 1
        t = self.now()
        # report the start of a streak, a change of kind, and a reminder a minute
        if self.faults == 1 or e.kind != self.fault_kind or t - self.fault_reported >= FAULT_REPORT_S:
            self.fault_reported = t
            self.fault_kind = e.kind
            detail = getattr(e, "code", 0)
            log("bus fault: %s (%d failed polls)" % (e, self.faults))
            self.emit(t, code_of("device.comm_fault"), REPORT, (e.kind, detail, self.faults))

    def poll_once(self):
        r = self.read()
        self.polls += 1
        for t, code, action, values in self.pipeline.step(self.now(), r):
            self.emit(t, code, action, values)

    async def poll_loop(self):
        period_ms = int(self.prof.PERIOD_S * 1000 / self.speed)
        due = ticks_ms()
        while True:
            self.poll_once()
            due = ticks_add(due, period_ms)
            wait = ticks_diff(due, ticks_ms())
            if wait < 0:          # a slow bus: skip missed slots rather than bunch polls
                due = ticks_ms()
                wait = 0
            await sleep_ms(wait)

    # ---------------------------------------------------------------- events
    def emit(self, t, code, action, values):
        self.seq += 1
        payload = codec.encode(self.signer, code, action, self.boot, self.seq, t, values)
        name, kind, _ = CODES[code]
        if kind != "telemetry":
            log("event %s %s seq=%d %s" % (("report", "raise", "clear")[action], name, self.seq, list(values)))
        self._queue(kind == "telemetry", payload)

    def _queue(self, telemetry, payload):
        if len(self.outbox) >= OUTBOX_MAX:
            # full: drop the oldest telemetry first; an alarm goes only if nothing else can
            for i in range(len(self.outbox)):
                if self.outbox[i][0]:
                    del self.outbox[i]
                    self.dropped[0] += 1
                    break
            else:
                del self.outbox[0]
                self.dropped[1] += 1
        self.outbox.append((telemetry, payload))
        if self.wake is not None:
            self.wake.set()

    def _report_drops(self):
        if self.dropped[0] or self.dropped[1]:
            d = self.dropped
            self.dropped = [0, 0]
            log("outbox overflowed: dropped %d telemetry, %d alarms" % (d[0], d[1]))
            self.emit(self.now(), code_of("device.outbox_drop"), REPORT, (d[0], d[1]))

    async def send_loop(self):
        import asyncio
        self.wake = asyncio.Event()
        while True:
            if not self.outbox:
                self.wake.clear()
                await self.wake.wait()
            if not self.link.up:
                wait = self.link.wait_ms()
                if wait:
                    await sleep_ms(wait)
                    continue
                try:
                    self.link.connect()
                except OSError:
                    continue
                self._report_drops()
            try:
                self.link.publish(self.outbox[0][1])
            except OSError:
                continue
            self.outbox.pop(0)
            await sleep_ms(0)   # let a due poll run between publishes

    async def run(self):
        import asyncio
        log("agent %s: profile %s, boot %d, bus %s at %d baud, slave %d" % (
            self.cfg["device_id"], self.cfg["profile"], self.boot, self.cfg["bus"]["port"],
            self.cfg["bus"]["baud"], self.cfg["bus"]["slave"]))
        self.emit(self.now(), code_of("device.boot"), REPORT, (VERSION,))
        await asyncio.gather(self.poll_loop(), self.send_loop())


def build(cfg, state_dir):
    """The agent with this runtime's hardware: UART, Modbus master, MQTT link, flash."""
    from edge import hal
    from edge.bus import Master
    from edge.link import Link
    from edge.state import FileStore
    bus = cfg["bus"]
    uart = hal.open_uart(bus)
    master = Master(uart, bus["baud"], bus["timeout_ms"], bus["retries"])
    link = Link(cfg["broker"], cfg["device_id"], log)
    return Agent(cfg, master, link, FileStore(state_dir), hal.now)


def load_config(path):
    """Validate the config, then unload the validator: its schema table is ~9 KB of RAM
    that a running agent never needs again."""
    import gc
    import edge
    from edge import config
    try:
        return config.load(path), None
    except config.ConfigError as e:
        return None, str(e)
    finally:
        del config
        sys.modules.pop("edge.config", None)
        try:
            delattr(edge, "config")
        except AttributeError:
            pass
        gc.collect()


def main(argv):
    import asyncio
    path = argv[1] if len(argv) > 1 else "config.json"
    if path in ("-h", "--help"):
        print("usage: agent.py [CONFIG_JSON] [STATE_DIR]\n"
              "Runs the edge agent: polls the sensor, filters alarms, publishes events.")
        return 0
    cfg, error = load_config(path)
    if error:
        print("config error: %s" % error)
        return 2
    state_dir = argv[2] if len(argv) > 2 else "state"
    try:
        agent = build(cfg, state_dir)
    except OSError as e:
        print("cannot open the sensor bus %s: %s; check the port and its permissions" % (cfg["bus"]["port"], e))
        return 3
    try:
        asyncio.run(agent.run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
