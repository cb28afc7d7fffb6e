# Elevator monitor profile: its poll period, reading fields and telemetry code. Detector
# thresholds live in edge/detect/elevator.py (PARAMS); the register map in
# edge/maps/elevator.json (docs/register-maps.md).

NAME = "elevator"
PERIOD_S = 1            # poll once a second: door/overspeed alarms have a 5 s budget
TELEMETRY = 0x01        # edge.codes: telemetry.elevator, whose fields a reading has

# The register map is data: edge/maps/elevator.json (or the device config's "map",
# docs/register-maps.md); it must give every telemetry field but these. "ebike" (the AI
# camera module's detection, map elevator-ebike) is not in telemetry: it is read for the
# detector alone, and a map without it is a car without a camera
OPTIONAL = ("ebike",)

# Telemetry policy: a sample when one of these moves beyond its deadband (at most one a
# second), and a heartbeat every minute otherwise.
TELEMETRY_WATCH = {"mode": 0, "floor": 0, "door": 0, "fault": 0}
TELEMETRY_MIN_S = 1
TELEMETRY_HEARTBEAT_S = 60
