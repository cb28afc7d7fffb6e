# Protected-building structure profile: one measuring point's tilt, crack width,
# settlement and vibration, four sensors on one RS-485 bus, each its own slave, read in
# one poll; and the telemetry code. Detector thresholds live in
# edge/detect/structure.py (PARAMS). Sources of each map and how sure they are:
# docs/register-maps.md and docs/structure.md.

NAME = "structure"
PERIOD_S = 600          # structures move over days; vibration alarms have 1800 s
FUNCTION = 3            # read holding registers
TELEMETRY = 0x05        # edge.codes: telemetry.structure

# The sensors' default slave ids, by probe number (the fifth column below); a site's own
# ids are the device config's bus.slaves, in the same order. Both WitMotion sensors ship
# as 0x50 and the gauges as 1: an installer renumbers them (with the vendors' tools;
# the agent never writes) before wiring them together.
SLAVES = (0x50, 0x51, 1, 2)

# (field, register address, type, scale, probe): value = raw * scale, read from the
# slave SLAVES[probe] (or bus.slaves[probe]); one block read a probe. Fields in the
# order of telemetry.structure, which device.sensor_health's field index follows.
REGISTERS = (
    ("tilt_x", 0x3D, "i16", 180 / 32768, 0),    # WitMotion WT901C-485 roll: raw / 32768 x 180 deg
    ("tilt_y", 0x3E, "i16", 180 / 32768, 0),    # WT901C-485 pitch
    ("crack", 0, "i16", 0.01, 2),               # draw-wire crack gauge: 0.01 mm (integrator decoder)
    ("settle", 0, "f32", 1, 3),                 # static level gauge: mm, float ABCD (integrator decoder)
    ("vib", 0x3A, "u16", 1, 1),                 # WitMotion WTVB01-485 VX: vibration velocity, mm/s
)

# Telemetry policy: a sample when a value moves beyond its deadband (at most one a
# poll), and one an hour otherwise.
TELEMETRY_WATCH = {"tilt_x": 0.005, "tilt_y": 0.005, "crack": 0.05, "settle": 0.5, "vib": 2.0}
TELEMETRY_MIN_S = 600
TELEMETRY_HEARTBEAT_S = 3600
