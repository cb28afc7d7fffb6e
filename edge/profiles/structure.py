# Protected-building structure profile: one measuring point's tilt, crack width,
# settlement and vibration, four sensors on one RS-485 bus, each its own slave, read in
# one poll; its poll period, reading fields and telemetry code. Detector thresholds live in
# edge/detect/structure.py (PARAMS). Sources of each map and how sure they are:
# docs/register-maps.md and docs/structure.md.

NAME = "structure"
PERIOD_S = 600          # structures move over days; vibration alarms have 1800 s
TELEMETRY = 0x05        # edge.codes: telemetry.structure, whose fields a reading has

# The register map is data: edge/maps/structure.json names a map a sensor, and sensor i
# answers as the device config's bus.slaves[i] (default: the map's slaves 0x50, 0x51,
# 1, 2: an installer renumbers the sensors with the vendors' tools before wiring them
# together); or the device config's "map" (docs/register-maps.md). It must give every
# telemetry field but these
OPTIONAL = ()

# Telemetry policy: a sample when a value moves beyond its deadband (at most one a
# poll), and one an hour otherwise.
TELEMETRY_WATCH = {"tilt_x": 0.005, "tilt_y": 0.005, "crack": 0.05, "settle": 0.5, "vib": 2.0}
TELEMETRY_MIN_S = 600
TELEMETRY_HEARTBEAT_S = 3600
