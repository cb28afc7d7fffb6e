# The edge agent: poll the sensor at its profile's period, run the pipeline, sign the
# events, store them in the flash outbox, send them at QoS 1 and forget them once the
# gateway acknowledges committing them (edge/ack.py), in one loop that waits on the link
# until the nearest deadline. Polling never waits for the network: between two polls the
# loop does at most one network exchange at a time, each with its own deadline. A
# watchdog is fed only while polls keep coming. (One loop instead of asyncio tasks: every
# network call blocks with a deadline anyway, and asyncio costs 7 KB of a board's heap.)
#   micropython -m edge.agent config.json state/   (an ESP32's main.py does the same)
import gc
import sys
import time

from edge import ack, event
from edge.bus import BusError
from edge.clock import const, ticks_ms, ticks_diff, ticks_add, sleep_ms
from edge.codes import ACTIONS, CODES, FIELD_MAX, REPORT   # own reports by code number, as the profiles give theirs
from edge.pipeline import Pipeline, load_module

VERSION = 1
_FAULT_REPORT_S = const(60)      # while a bus or a reading keeps failing, one report a minute
_ACK_WAIT_MS = const(10000)      # no acknowledgement for this long: send the unacknowledged again
_ACK_WAIT_MAX_MS = const(60000)  # ... backing off to this while the gateway stays away


def log(*args):
    # one line per fact, for technicians following the board's output (edgectl logs)
    print(*args)


class Agent:
    def __init__(self, cfg, master, link, store, outbox, now=time.time):
        # While the pipeline is built, collect after every KB allocated (MicroPython's
        # gc.threshold): each import's garbage is gone before the next long-lived object
        # is placed, so those fill the holes instead of scattering new ones. On a heap
        # left fragmented, building the detector fails with KBs free and no 600 B piece.
        threshold = getattr(gc, "threshold", None)
        if threshold:
            before = threshold()
            threshold(1024)
        # what the loop needs from the config; the rest is garbage once built
        self.device_id = cfg["device_id"]
        self.profile = cfg["profile"]
        self.bus = cfg["bus"]
        self.log_telemetry = cfg.get("log_telemetry", False)
        clock = cfg.get("clock") or {}
        self.speed = clock.get("speed", 1)
        if clock:
            anchor, origin, speed, real = clock["anchor"], clock["origin"], self.speed, now
            now = lambda: origin + (real() - anchor) * speed
        self.prof = load_module("edge.profiles." + cfg["profile"])
        self.master = master
        self.link = link
        self.outbox = outbox
        self.now = now
        self.signer = event.Signer(bytes.fromhex(cfg["secret"]), self.device_id)
        site = dict(cfg.get("site") or {})
        site["utc_offset_s"] = cfg.get("utc_offset_s", 28800)
        self.pipeline = Pipeline(cfg["profile"], site, cfg.get("params"), store, cfg.get("telemetry", True))
        # the reads of the map's blocks that hold the profile's fields (edge/reads.py,
        # dropped once used: made after the pipeline, they split no space it needs);
        # probe i answers as slaves[i]
        reads = cfg.get("reads")
        if reads is None:
            from edge import reads as cut
            reads = cut.reads(cfg)
            del cut
            sys.modules.pop("edge.reads", None)
        self.blocks, self.slaves, self.fields = reads
        self.period_ms = int(self.prof.PERIOD_S * 1000 / self.speed)
        self.boot = self._next_boot(store, cfg.get("boot_floor", 0))
        self.seq = 0
        self.faults = 0           # failed polls in the current streak
        self.fault_reported = None
        self.fault_kind = 0
        self.poll_faults = [0, 0, 0]   # since the last device.poll_fault: NaN, out of range, errors
        self.poll_fault_at = None
        self.error = None             # the last poll error logged
        self.polls = 0
        self.polled_at = ticks_ms()
        self.acked_at = ticks_ms()    # the last acknowledgement, or the first send after one
        self.ack_wait = _ACK_WAIT_MS
        self.bad_acks = 0
        link.on_message = self.on_ack
        link.sub_topic = ack.topic(self.device_id)
        if threshold:
            threshold(before)   # by default -1: the loop collects only when the heap is full

    @staticmethod
    def _next_boot(store, floor):
        # floor: the last boot the gateway has seen, written by edgectl provision, so a
        # board whose flash was erased never reuses an old (boot, seq)
        raw = store.load("boot")
        boot = max(int(raw) if raw else 0, floor) + 1
        store.save("boot", str(boot).encode())
        return boot

    # ---------------------------------------------------------------- polling
    def read(self):
        """One poll: the decoded reading, or None when the device did not answer well. A
        field the meter gave no number for (NaN, infinity) is None, and counted."""
        r = None
        for probe, fc, first, count, table in self.blocks:
            # the master decodes its protocol's reply (edge/bus.py, edge/cjt188_bus.py); a
            # CJ/T 188 meter's is one block, and its master reads the agent's clock
            try:
                got = self.master.read(self.slaves[probe], fc, first, count, table, self)
            except BusError as e:
                self._fault(e)
                continue
            for f in got:
                if got[f] is None:
                    self.poll_faults[0] += 1
            if r is None:
                r = {}
            r.update(got)
        if r is None:
            return None
        self.faults = 0
        for f in self.fields:
            if f not in r:
                r[f] = None      # a probe that did not answer, a field the map lacks: not read
        return r

    def _fault(self, e):
        self.faults += 1
        t = self.now()
        # report the start of a streak, a change of kind, and a reminder a minute
        if self.faults == 1 or e.kind != self.fault_kind or t - self.fault_reported >= _FAULT_REPORT_S:
            self.fault_reported = t
            self.fault_kind = e.kind
            log("bus fault: %s (%d failed polls)" % (e, self.faults))
            self.emit(t, 0x11, REPORT, (e.kind, getattr(e, "code", 0), self.faults))   # device.comm_fault

    def poll_once(self):
        # Whatever a poll raises (a bug, a reading nothing foresaw, a serial adapter pulled
        # out) is counted and reported, and the loop goes on: the next poll, the sending,
        # the watchdog. A read that raised is a failed poll for the pipeline (comm loss).
        try:
            r = self.read()
        except Exception as e:
            self._error(e)
            r = None
        self.polls += 1
        try:
            for t, code, action, values in self.pipeline.step(self.now(), r):
                self.emit(t, code, action, values)
        except Exception as e:
            self._error(e)
        self.report_faults()
        self.report_drops()
        self.polled_at = ticks_ms()

    def _error(self, e):
        what = "%s %s" % (type(e).__name__, e)
        if not self.poll_faults[2] or what != self.error:   # once a report, and each new error
            log("poll failed: " + what)
            self.error = what
        self.poll_faults[2] += 1

    def report_faults(self):
        """Values sent as unknown and polls that raised, as one device.poll_fault: at
        once after a quiet spell, then at most one a minute while they go on."""
        c = self.poll_faults
        if c[0] or c[1] or c[2]:
            t = self.now()
            if self.poll_fault_at is None or t - self.poll_fault_at >= _FAULT_REPORT_S:
                self.poll_faults = [0, 0, 0]
                self.poll_fault_at = t
                self.emit(t, 0x14, REPORT, c)   # device.poll_fault

    # ---------------------------------------------------------------- events
    def emit(self, t, code, action, values):
        """Sign an event and store it in the outbox: from here on it survives a reboot. A
        value its field cannot carry (edge.codes.FIELD_MAX) goes as unknown, counted."""
        name, kind, fields = CODES[code]
        for i in range(len(values)):
            v = values[i]
            if v is not None and not abs(v * 10 ** fields[i][1]) < FIELD_MAX:   # NaN too
                values = list(values)   # the caller's may be a tuple, or its own state
                values[i] = None
                self.poll_faults[1] += 1
        self.seq += 1
        payload = event.encode(self.signer, code, action, self.boot, self.seq, t, values)
        self.outbox.append(kind != "telemetry", payload)
        if kind != "telemetry" or self.log_telemetry:   # logged once stored: a promise kept
            log("event %s %s seq=%d %s" % (ACTIONS[action], name, self.seq, list(values)))

    def report_drops(self):
        """What the outbox dropped since the last call, as one device.outbox_drop event.
        Called after each poll and each send step, never from emit: if the report itself
        cannot be stored, it is counted and reported next time, not in a loop."""
        d = self.outbox.dropped
        if d[0] or d[1]:
            self.outbox.dropped = [0, 0]
            log("outbox full: dropped %d telemetry, %d alarms" % (d[0], d[1]))
            self.emit(self.now(), 0x13, REPORT, d)   # device.outbox_drop

    def send_one(self):
        """One network step: connect, publish the next event, or ping an idle link.
        Oldest first, alarms before telemetry, a window of each out at once; an event
        leaves the outbox only once the gateway has acknowledged committing it. Returns
        how long the network has nothing to do (ms, 0: call again at once)."""
        link = self.link
        ob = self.outbox
        if not link.up:
            wait = link.wait_ms()   # backing off after a failure
            if not wait and self._net(link.connect):
                # what was in flight may have died with the broker or the connection
                ob.rewind()
                self.acked_at = ticks_ms()
            return wait
        if ob.inflight and ticks_diff(ticks_ms(), self.acked_at) >= self.ack_wait:
            log("no acknowledgement from the gateway for %d ms: sending %d events again" % (
                self.ack_wait, ob.inflight))
            ob.rewind()
            self.acked_at = ticks_ms()
            self.ack_wait = min(2 * self.ack_wait, _ACK_WAIT_MAX_MS)
        head = ob.next()
        self.report_drops()
        if head is None:
            wait = link.ping_in_ms()
            if not wait:
                self._net(link.ping)
            if ob.inflight:
                wait = min(wait, self.ack_wait - ticks_diff(ticks_ms(), self.acked_at))
            return max(wait, 1)
        q, payload = head
        if not ob.inflight:
            self.acked_at = ticks_ms()   # the wait for an acknowledgement starts now
        # a resend after a failure or a reboot may have arrived before: DUP says so
        if self._net(link.publish, payload, None, False, q.dup):
            q.sent(payload)
        else:
            q.failed()      # it may have reached the broker: DUP next time
        return 0

    def on_ack(self, payload):
        """The gateway's acknowledgement (edge/ack.py): forget what it committed."""
        ranges = ack.decode(self.signer, payload)
        if ranges is None:
            self.bad_acks += 1
            log("ignored an acknowledgement that is not signed with this device's key")
            return
        if self.outbox.acked(ranges):
            self.acked_at = ticks_ms()
            self.ack_wait = _ACK_WAIT_MS

    @staticmethod
    def _net(call, *args):
        """A blocking link call (each has its own deadline); False if the link went down."""
        try:
            call(*args)
            return True
        except OSError:
            return False

    def healthy(self):
        """A poll finished within two periods, plus the bus's and the network's deadlines."""
        return ticks_diff(ticks_ms(), self.polled_at) <= 2 * self.period_ms + 3 * self.link.timeout_ms

    def run(self, wdt=None):
        bus = self.bus
        log("agent %s: profile %s, boot %d, bus %s at %d baud, slave %s, outbox %d unsent" % (
            self.device_id, self.profile, self.boot, bus["port"], bus["baud"], bus.get("address") or bus["slave"],
            self.outbox.count))    # a CJ/T 188 meter's address, else the Modbus slave id
        self.emit(self.now(), 0x12, REPORT, (VERSION,))   # device.boot
        due = ticks_ms()
        fed = True
        while True:
            wait = ticks_diff(due, ticks_ms())
            if wait <= 0:
                self.poll_once()
                due = ticks_add(due, self.period_ms)
                if ticks_diff(due, ticks_ms()) < 0:   # a slow bus: skip missed slots rather than bunch polls
                    due = ticks_ms()
                wait = 0
            idle = self.send_one()
            if wdt is not None:
                ok = self.healthy()
                if ok:
                    wdt.feed()
                elif fed:
                    log("watchdog: not fed, last poll %d ms ago" % ticks_diff(ticks_ms(), self.polled_at))
                fed = ok
                idle = min(idle, wdt.timeout_ms // 4)
            if idle and wait:
                if self.link.up:
                    self._net(self.link.wait, min(idle, wait))   # acknowledgements arrive meanwhile
                else:
                    sleep_ms(min(idle, wait))


def main(argv):
    """Start the agent from a config file and run it until stopped; returns the exit
    status. Start-up (edge/boot.py, with the config schema) is unloaded before the
    pipeline is built, so none of it takes RAM while the agent runs."""
    import edge.boot
    cfg, parts = edge.boot.start(argv, log)
    edge.boot.unload("edge.boot")
    gc.collect()   # also the start-up garbage, so the pipeline lands in one piece
    if cfg is None:
        return parts
    agent = Agent(cfg, *parts)
    wdt = None
    if cfg["watchdog_ms"]:
        from edge import hal
        # started only now that start-up succeeded: an ESP32 watchdog cannot be stopped
        wdt = hal.Watchdog(cfg["watchdog_ms"])
    del cfg, parts
    try:
        agent.run(wdt)
    except KeyboardInterrupt:
        pass
    finally:
        agent.outbox.commit()   # a clean stop resends nothing
        agent.link.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
