# Elevator detector: entrapment, door open while moving, overspeed, stop outside the
# door zone, maintenance sessions, and e-bikes in the car (when an AI camera module is on
# the bus), from one 1 Hz poll of the controller interface;
# a presence sensor stuck on and a frozen controller are device-health reports.
# Rules and the reason for every number: docs/filters.md. Field filters are tables
# (edge/filters.py); this module only says how the cleaned fields make an incident.
from edge.alarm import Alarm
from edge.clock import const
from edge.codes import REPORT
from edge.detect.health import Frozen
from edge.filters import build_chain

# name: default,  # why (one line). Times in seconds, speeds in m/s; all overridable per
# device. Reasons are comments so they cost no RAM on a board; docs/filters.md lists them.
PARAMS = {
    "overspeed_ratio": 1.15,  # overspeed is speed above 115 % of rated: where a governor may first trip (EN 81-20 5.6.2.2)
    "speed_max_ratio": 2.0,  # a reading above twice rated speed is a register glitch (0xFFFF = 655.35 m/s), not motion: the governor trips well before
    "overspeed_n": 2,  # polls in a row above the limit: one glitch sample never raises, a real overspeed lasts seconds (1 s latency)
    "door_moving_n": 2,  # polls in a row with the door open while moving: door-contact bounce lasts one poll
    "move_n": 2,  # polls in a row showing motion before a stop ends: a one-poll speed or dir glitch is not a trip
    "move_min_speed": 0.05,  # slower than this the car is stopped; re-levelling creeps at about 0.07-0.2 m/s
    "relevel_max_speed": 0.8,  # doors may open in the zone only below 0.8 m/s (pre-opening, EN 81-20 5.12.1.4); faster, an open door is a hazard whatever the zone reads
    "door_open_s": 2,  # a door must read open this long to count as opened (someone could leave); contact bounce lasts one poll
    "entrapment_s": 30,  # stopped, doors shut, someone aboard this long is trapped: normal boarding waits are under 10 s; 30 s as platforms use (STANDARDS 1.4)
    "occupied_n": 8,  # presence in 8 of 10 polls is a person: sensor flicker in an empty car lasts at most about 5 s
    "occupied_m": 10,  # window of the presence vote, in polls
    "occupied_window_s": 30,  # a passenger boards through an open door: presence counts only this soon after the doors shut, and a car that leaves later answers a call; later flicker in a shut car is nobody
    "empty_before_s": 10,  # someone boarded only if the car read empty (two polls) this soon before its doors opened or while open: presence on across the whole door cycle saw nobody come in
    "shut_occupied_s": 2,  # a passenger is inside as the doors shut: presence must read on this close to the shut (so in 99.99 % of ridden trips); a burst that starts later in a shut car is flicker
    "occupied_stuck_s": 600,  # nobody rides or waits 10 min: presence on that long, or through two door cycles, without the car once reading empty is a stuck sensor (one report, never trusted)
    "frozen_s": 60,  # a moving car changes floor, zone or speed within seconds (7 s at most in the dev traces): every field unchanged this long while it 'moves' is a frozen controller (one report)
    "stop_outside_s": 40,  # a car stopped outside the door zone this long is stuck: an overshoot is re-levelled within about 10 s
    "zone_in_s": 2,  # the zone must read inside this long to end a stop outside it; one-poll zone flicker does not
    "gap_s": 5,  # a silence longer than this may hide a door cycle: a passenger seen before it may have left, and the stop is kept only if the car is where it was
    "maint_on_s": 10,  # inspection mode must hold this long to be a session, so a mis-turned key or a glitch is not reported
    "maint_off_s": 30,  # a session ends after this long out of inspection, so a short switch back to normal stays one session
    "hold_fast_s": 10,  # overspeed and door-moving alarms clear after this long without the condition: one clear per incident
    "ebike_vote_n": 2,  # an e-bike is seen while the camera detects one in 2 of its last ebike_vote_m polls: one frame's false detection is no e-bike
    "ebike_vote_m": 30,  # ... and is gone after about 30 s without two: a bike half out of view at the door flickers for seconds, and a stop's one report waits for the end (at most 30 polls)
    "hold_slow_s": 60,  # entrapment and stop-outside-zone alarms clear after this long without the condition: a re-levelling creep or a door bounce does not clear and raise again
}

# Per field: impossible values become unknown before any rule sees them.
FILTERS = {
    "mode": (("range", 0, 3),),
    "dir": (("range", -1, 1),),
    "speed": (("range", 0, "speed_max"),),
    "floor": (("range", "floor_lo", "floor_hi"), ("filter_out", 0)),   # there is no floor 0
    "door": (("range", 0, 1),),
    "zone": (("range", 0, 1),),
    "occupied": (("range", 0, 1),),   # stuck on: judged in step(), off for hours is an empty car
}
FIELDS = ("mode", "dir", "speed", "floor", "door", "zone", "occupied")

# Per derived condition: how long or how often it must hold before the rules trust it.
CONDITIONS = {
    "moving": (("n_of_m", "move_n", "move_n"),),
    "door_open": (("delayed_on", "door_open_s"),),
    "outside": (("delayed_off", "zone_in_s"),),
    "aboard": (("n_of_m", "occupied_n", "occupied_m"),),
    "overspeed": (("n_of_m", "overspeed_n", "overspeed_n"),),
    "door_moving": (("n_of_m", "door_moving_n", "door_moving_n"),),
    "session": (("delayed_on", "maint_on_s"), ("delayed_off", "maint_off_s")),
    "ebike": (("n_of_m", "ebike_vote_n", "ebike_vote_m"),),
}

_INSPECTION = const(1)  # mode 1: a technician drives the car
_OCCUPIED = const(6)   # the presence field's index in telemetry.elevator's fields (edge/codes.py), for device.sensor_health


class Detector:
    def __init__(self, site, params, store=None):
        rated = site.get("rated_speed")
        if not isinstance(rated, (int, float)) or rated <= 0:
            raise ValueError("site.rated_speed: required, a speed in m/s > 0; got %r" % (rated,))
        floors = site.get("floors") or (-99, 999)
        p = dict(params)
        p["speed_max"] = rated * p["speed_max_ratio"]
        p["floor_lo"] = floors[0]
        p["floor_hi"] = floors[1]
        # what step() reads on every poll, as attributes: the merged dict of every
        # parameter need not stay in RAM for the few it needs (and these attribute names
        # intern the PARAMS keys as qstrs, so the keys cost no string objects either)
        self.gap_s = p["gap_s"]
        self.move_min_speed = p["move_min_speed"]
        self.relevel_max_speed = p["relevel_max_speed"]
        self.occupied_window_s = p["occupied_window_s"]
        self.empty_before_s = p["empty_before_s"]
        self.shut_occupied_s = p["shut_occupied_s"]
        self.occupied_stuck_s = p["occupied_stuck_s"]
        self.entrapment_s = p["entrapment_s"]
        self.stop_outside_s = p["stop_outside_s"]
        self.rated = rated
        self.limit = rated * p["overspeed_ratio"]
        self.fields = []
        for f in FIELDS:
            self.fields.append(build_chain(FILTERS[f], p))
        c = {}
        for k in CONDITIONS:
            c[k] = build_chain(CONDITIONS[k], p)
        self.c = c
        self.frozen = Frozen(255, p["frozen_s"])    # field 255: the whole reading
        fast = p["hold_fast_s"]
        slow = p["hold_slow_s"]
        # codes by number, as the profiles give theirs: a board holds each name once, in edge/codes.py
        self.entrapment = Alarm(0x20, slow)      # elevator.entrapment
        self.door_moving = Alarm(0x21, fast)     # elevator.door_open_moving
        self.overspeed = Alarm(0x22, fast)       # elevator.overspeed
        self.stop_outside = Alarm(0x23, slow)    # elevator.stop_outside_zone
        self.maintenance = Alarm(0x24)           # elevator.maintenance
        self.last_t = None
        self.floor = None          # last known floor
        self.insp = False          # last known "mode is inspection"
        self.normal = True         # last known "mode is normal service"
        self.door_was_open = False
        self.trap_from = None      # when the stop of the raised entrapment began
        self.stuck_from = None     # when the stop of the raised stop-outside-zone began
        self.fault_since = None    # first poll of the current controller fault
        # what the presence sensor has shown, whatever the car does
        self.occ_last = None       # last known reading
        self.occ_t = None          # last poll it read someone
        self.empty_t = None        # last poll it read an empty car (the second of two in a row)
        self.on_since = None       # reading someone since, without once an empty car
        self.blind = 0             # door cycles in a row it read someone through
        self.stuck_told = False    # this stuck-on episode is reported
        self.bike = None           # an e-bike at this stop: [first seen, last seen, floor, reported]
        self._new_episode()
        self._new_session()

    def _new_episode(self):
        """Forget the current stop: what follows is judged from scratch."""
        self.stop_since = None     # first poll of the current stop
        self.stop_floor = None
        self.closed_since = None   # first poll with the door shut since it was last open
        self.board_until = None    # presence before this time is someone who boarded
        self.out_since = None      # since when the car is outside the door zone
        self.emptied = None        # the door cycle under way: the car read empty in it (or None: none seen)
        self.boarded = False       # the doors shut on someone, after the car read empty in the cycle
        self.aboard = False        # someone was seen in the car since the door shut
        self.maybe = False         # the doors shut on a reading that stayed on through the cycle: unknown
        self.left = False          # ... and the car left the landing soon after
        self.c["aboard"].reset()

    def _new_session(self):
        self.sess_start = None
        self.sess_end = None
        self.door_cycles = 0
        self.served = []

    def step(self, t, r, out):
        # a loop rather than a comprehension: on a board that is one more function in RAM
        v = []
        for i in range(len(FIELDS)):
            v.append(self.fields[i].step(t, None if r is None else r.get(FIELDS[i])))
        mode, dir_, speed, floor, door, zone, occ = v
        if r is None:
            return  # unknown: hold every state; comm loss is common.py's business
        # motion: speed if known, else the direction
        mv = None
        if speed is not None:
            mv = speed >= self.move_min_speed
        if dir_ is not None:
            mv = bool(mv) or dir_ != 0
        # every field the same for frozen_s while the car 'moves' (watched over answered
        # polls only): the controller froze, one device.sensor_health report; what it
        # repeats is unknown, and the time it hid the car is judged as a silence
        was = self.frozen.on
        gap = self.last_t is not None and t - self.last_t > self.gap_s
        if self.frozen.step(t, v if mv and (was or not gap) else None, out):
            self.last_t = t
            return
        c = self.c
        if gap or was:
            # unseen time: if the car was not parked here before, a trip and a door
            # cycle may have happened, so a passenger latched before it may be gone
            if not self.entrapment.active:
                self.aboard = False        # an alarm already up clears only on evidence
                self.maybe = False
                c["aboard"].reset()
            self.board_until = t           # no door was seen shutting: nobody boarded
            self.emptied = None
            self.on_since = None           # nor did the sensor read anyone in the meantime
            if self.stop_since is None or (floor is not None and floor != self.stop_floor):
                self.stop_since = None
                self.out_since = None
        self.last_t = t
        if floor is not None:
            self.floor = floor
        if mode is not None:
            self.insp = mode == _INSPECTION
            self.normal = mode == 0
        f = r.get("fault")
        if f == 0:
            self.fault_since = None
        elif f is not None and self.fault_since is None:
            self.fault_since = t

        # presence: someone, or an empty car on two known polls in a row
        if occ == 1:
            self.occ_t = t
            if self.on_since is None:
                self.on_since = t
        elif occ == 0 and self.occ_last == 0:
            self.empty_t = t
            self.on_since = None
            self.blind = 0
            self.stuck_told = False
        if occ is not None:
            self.occ_last = occ

        moving = c["moving"].step(t, mv)
        if moving:
            self.stop_since = None
            if self.maybe and not self.left and self.closed_since is not None:
                # off soon after the doors shut: whoever came in rides; after a long wait
                # with the doors shut it answers a call, and nobody boarded unseen
                self.left = t - self.closed_since <= self.occupied_window_s
                self.maybe = self.left
        elif mv is False and self.stop_since is None:
            self.stop_since = t
            self.stop_floor = self.floor

        # doors: opened once they read open for door_open_s; shut from the first closed poll
        door_open = c["door_open"].step(t, None if door is None else door == 1)
        opened = door_open and not self.door_was_open
        self.door_was_open = bool(door_open)
        if opened:
            # a door cycle at a landing (nobody boards a moving car): did the car read
            # empty just before its doors opened?
            self.emptied = None if moving else self.empty_t is not None and t - self.empty_t <= self.empty_before_s
        if door_open:
            self.closed_since = None
            self.aboard = False
            self.maybe = False
            if self.emptied is False and self.empty_t == t:
                self.emptied = True        # ... or while they are open
        elif door == 0 and self.closed_since is None:
            self.closed_since = t
            self.board_until = t + self.occupied_window_s
            c["aboard"].reset()   # only presence seen behind shut doors counts
            # someone inside as the doors shut: a boarding if the car read empty in the
            # cycle, else a reading that stayed on while people could leave, which says
            # nothing (a stuck sensor, or a rider staying on): who is inside is unknown
            on = self.occ_t is not None and t - self.occ_t <= self.shut_occupied_s
            self.boarded = on and self.emptied is True
            self.maybe = on and self.emptied is False
            self.left = False
            if self.maybe:
                self.blind += 1
            self.emptied = None

        # zone: outside from the first poll out, inside only after zone_in_s
        outside = c["outside"].step(t, None if zone is None else zone == 0)
        if not outside:
            self.out_since = None
        elif self.out_since is None:
            self.out_since = t

        # someone aboard: the presence vote just after the doors shut on a boarding
        seen = c["aboard"].step(t, occ)
        if seen and self.boarded and self.closed_since is not None and t < self.board_until:
            self.aboard = True

        # overspeed: never suppressed, a technician is at risk too
        over = c["overspeed"].step(t, None if speed is None else speed > self.limit)
        self.overspeed.update(t, over, out, (speed, self.rated))

        # door open while moving: outside the zone, or faster than doors may open
        hazard = None
        if door is not None and (speed is not None or dir_ is not None):
            if door != 1:
                hazard = False
            elif speed is not None:
                hazard = (speed >= self.move_min_speed and zone != 1) or speed > self.relevel_max_speed
            else:
                hazard = dir_ != 0 and zone == 0
        door_moving = c["door_moving"].step(t, hazard)

        # maintenance session: inspection mode, debounced both ways
        session = c["session"].step(t, None if mode is None else mode == _INSPECTION)

        # an e-bike in the car, from the camera's field (unknown when the map has none or
        # the camera does not answer; any value but 1 is none): one report a stop, once
        # the car leaves (or a silence hid a trip) or the vote says the bike is gone, with
        # the floor and how long it was seen there. The camera holds the doors; the agent
        # only watches. A technician's stop starts none.
        b = r.get("ebike")
        ebike = c["ebike"].step(t, None if b is None else b == 1)
        e = self.bike
        left = e is not None and (moving or self.floor != e[2])
        if e is not None and not e[3] and (left or ebike is False):
            e[3] = True
            out.append((t, 0x25, REPORT, (e[2], e[1] - e[0])))   # elevator.ebike
        if left:
            e = None
        if ebike and b == 1 and not moving and not (session or self.insp):
            if e is None:
                e = [t, t, self.floor, False]
            e[1] = t
        self.bike = e
        if self.insp:
            if self.sess_start is None:
                self.sess_start = t
            self.sess_end = t
        if session:
            if opened:
                self.door_cycles += 1
                if self.floor is not None and self.floor not in self.served:
                    self.served.append(self.floor)
            self.maintenance.update(t, True, out, (self.sess_start,))
        elif self.maintenance.active:
            s, e = self.sess_start, self.sess_end
            self.maintenance.update(t, False, out, (s, e, e - s, self.door_cycles, len(self.served)))
        if not session and not self.insp:
            self._new_session()

        if session or self.insp:
            # the technician has the car: the passenger alarms are theirs to judge, and
            # they are the presence the sensor reads
            self.entrapment.clear(t, out)
            self.door_moving.clear(t, out)
            self.stop_outside.clear(t, out)
            self._new_episode()
            self.on_since = None
            self.blind = 0
            return

        self.door_moving.update(t, door_moving, out, (self.floor, speed))

        # presence on far longer than any ride, or through two door cycles, without once
        # reading an empty car: a stuck sensor, one report an episode (a trapped person
        # who keeps moving is no stuck sensor)
        if self.entrapment.active:
            self.on_since = None
        elif occ == 1 and not self.stuck_told and (self.blind >= 2 or t - self.on_since >= self.occupied_stuck_s):
            self.stuck_told = True
            out.append((t, 0x15, REPORT, (2, _OCCUPIED, int(t - self.on_since))))   # device.sensor_health, kind 2: stuck sensor

        start = self._trap_start(t)
        trapped = start is not None and t - start >= self.entrapment_s
        if trapped and not self.entrapment.active:
            self.trap_from = start
        self.entrapment.update(t, trapped, out, (self.floor, t - self.trap_from if self.trap_from else None))

        stuck = False
        if start is None and self.stop_since is not None and self.out_since is not None:
            begin = max(self.stop_since, self.out_since)
            stuck = t - begin >= self.stop_outside_s
            if stuck and not self.stop_outside.active:
                self.stuck_from = begin
        self.stop_outside.update(t, stuck, out, (self.floor, t - self.stuck_from if self.stuck_from else None))

    def _trap_start(self, t):
        """When the entrapment of the current stop began to count, or None if nobody is
        known to be, or may be, inside. Someone seen boarding counts from the moment the
        car stood still behind shut doors. When the sensor cannot say (it read someone
        through the whole door cycle), only what keeps a rider in counts, and only if it
        came while a boarding was fresh, in normal service: the car left soon after and
        then stood without opening its doors (failing to open at a landing, or stuck
        between floors), or it never left but is outside the door zone or in a
        controller fault."""
        if self.stop_since is None or self.closed_since is None:
            return None
        start = max(self.stop_since, self.closed_since)
        if self.aboard:
            return start
        if not self.maybe or not self.normal:
            return None
        if self.left:
            return start
        w = self.closed_since + self.occupied_window_s
        for since in (self.out_since, self.fault_since):
            if since is not None and since <= w:
                return max(start, since)
        return None
